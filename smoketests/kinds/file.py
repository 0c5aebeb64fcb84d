"""file: a file is there, of the right kind, mode, owner and content.

    file:
      path: "${fact.opslab_root}/motd"
      exists: true            # the default; false: must not exist
      type: file              # file, directory, symlink, socket, pipe
      mode: "0644"            # a quoted octal text: YAML reads 0644 as the number 420
      owner: root
      group: root
      contains: "${param.message}"    # texts it must contain (one or a list)
      absent: "password"              # texts it must not contain
      matches: "^port = [0-9]+$"      # a regular expression some line must match
      sha256: 9f86d0...

``type: symlink`` looks at the link itself; everything else follows links.
Contents are read up to 16 MiB and never shown in a message (a file may
hold secrets): a message says which text was missing, not what was there.
``matches`` is tried in a child process, stopped at the check's timeout:
Python's regular expressions backtrack, a pattern such as ``(a+)+$`` can
take years on a long line, and while it runs it holds the interpreter's lock,
so no thread of the process could even notice the deadline.
"""

import hashlib
import os
import re
import stat
import sys
from typing import Any

from .. import child
from . import Context, Failed, Field, quoted, tail, text_list

FIELDS = {
    "path": Field((str,), required=True),
    "exists": Field((bool,)),
    "type": Field((str,), choices=("file", "directory", "symlink", "socket", "pipe")),
    # The type is checked before problem() sees it, so the note explains an unquoted mode.
    "mode": Field((str,), note='write it quoted, such as "0644" (YAML reads 0644 unquoted '
                  'as the number 420)'),
    "owner": Field((str, int)),
    "group": Field((str, int)),
    "contains": Field((str,), many=True),
    "absent": Field((str,), many=True),
    "matches": Field((str,)),
    "sha256": Field((str,)),
}
MAX_CONTENT = 16 * 1024 * 1024
_TYPES = {"file": stat.S_ISREG, "directory": stat.S_ISDIR, "symlink": stat.S_ISLNK,
          "socket": stat.S_ISSOCK, "pipe": stat.S_ISFIFO}
_MODE = re.compile(r"0?[0-7]{3,4}")
# What the child that tries ``matches`` runs: the content on its input, the pattern its
# argument; exit 0 when a line matches, 3 when none does (1 is Python's for an error).
_MATCH = ("import re, sys\n"
          "text = sys.stdin.buffer.read().decode('utf-8', 'replace')\n"
          "sys.exit(0 if re.search(sys.argv[1], text, re.MULTILINE) else 3)\n")
_NO_MATCH = 3


def problem(values: dict[str, Any], outside: bool) -> str | None:
    if outside:
        return "a file cannot be seen from outside: leave outside off"
    mode = values.get("mode")
    if isinstance(mode, str) and "${" not in mode and not _MODE.fullmatch(mode):
        return f"mode {quoted(mode)} is not an octal mode such as \"0644\""
    path = values.get("path")
    if isinstance(path, str) and "${" not in path and not path.startswith("/"):
        return f"path {quoted(path)} must be absolute"
    if isinstance(values.get("matches"), str):
        try:
            re.compile(values["matches"])
        except (re.error, RecursionError, OverflowError) as error:  # "((((...", "a{99999999999}"
            return f"matches is not a regular expression: {error}"
    digest = values.get("sha256")
    if isinstance(digest, str) and "${" not in digest \
            and not re.fullmatch(r"[0-9a-f]{64}", digest):
        return "sha256 must be 64 lowercase hexadecimal digits"
    return None


def check(values: dict[str, Any], context: Context) -> str:
    path = str(values["path"])
    if not path.startswith("/"):
        raise Failed(f"path {quoted(path)} must be absolute")
    kind = values.get("type")
    try:
        info = os.lstat(path) if kind == "symlink" else os.stat(path)
    except FileNotFoundError:
        if values.get("exists", True):
            raise Failed(f"{path} does not exist") from None
        return f"{path} does not exist"
    except OSError as error:
        raise Failed(f"{path}: {error.strerror}") from None
    if not values.get("exists", True):
        raise Failed(f"{path} exists")
    if kind is not None and not _TYPES[kind](info.st_mode):
        raise Failed(f"{path} is not a {kind}")
    if "mode" in values:
        wanted = int(str(values["mode"]), 8)
        if stat.S_IMODE(info.st_mode) != wanted:
            raise Failed(f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, not {wanted:04o}")
    _owner(path, info, values)
    if any(key in values for key in ("contains", "absent", "matches", "sha256")):
        _content(path, values, context)
    return f"{path} is as it should be"


def _owner(path: str, info: os.stat_result, values: dict[str, Any]) -> None:
    import grp
    import pwd

    for key, number, lookup in (("owner", info.st_uid, pwd.getpwuid),
                                ("group", info.st_gid, grp.getgrgid)):
        if key not in values:
            continue
        wanted = values[key]
        try:
            name = lookup(number)[0]
        except KeyError:
            name = str(number)
        if wanted not in (number, name, str(number)):
            raise Failed(f"{path} has {key} {name}, not {wanted}")


def _content(path: str, values: dict[str, Any], context: Context) -> None:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONTENT + 1)
    except OSError as error:
        raise Failed(f"{path} cannot be read: {error.strerror}") from None
    if len(data) > MAX_CONTENT:
        raise Failed(f"{path} is larger than {MAX_CONTENT // 1024 // 1024} MiB: "
                     f"its content is not checked")
    # A digest filled in from a reference was not checked for its form: any case will do.
    if "sha256" in values and hashlib.sha256(data).hexdigest() != str(values["sha256"]).lower():
        raise Failed(f"{path} has sha256 {hashlib.sha256(data).hexdigest()}, "
                     f"not {values['sha256']}")
    text = data.decode("utf-8", "replace")
    for piece in text_list(values.get("contains")):
        if piece not in text:
            raise Failed(f"{path} does not contain {quoted(piece)}")
    for piece in text_list(values.get("absent")):
        if piece in text:
            raise Failed(f"{path} contains {quoted(piece)}")
    if "matches" in values:
        _matches(path, str(values["matches"]), data, context)


def _matches(path: str, pattern: str, data: bytes, context: Context) -> None:
    """Fails unless a line of ``data`` matches ``pattern``, found in time (module doc)."""
    try:
        # -I -S: nothing of the environment, no site packages; just Python, quickly.
        ran = child.run([sys.executable, "-I", "-S", "-c", _MATCH, pattern], context.left(),
                        env={}, data=data)
    except child.TimedOut:
        raise Failed(f"matching {quoted(pattern)} against {path} took longer than "
                     f"{context.timeout:g} s and was stopped (a pattern that backtracks, "
                     f"such as (a+)+$, can take for ever)") from None
    except OSError as error:
        raise Failed(f"matches could not be tried: {error.strerror or error}") from None
    if ran.returncode == _NO_MATCH:
        raise Failed(f"no line of {path} matches {quoted(pattern)}")
    if ran.returncode != 0:
        # A pattern filled in from a reference was not compiled when the checks were read.
        lines = tail(ran.stderr, 500).strip().splitlines()
        raise Failed(f"matches could not be tried: {lines[-1] if lines else ran.returncode}")

"""A YAML file's document, through a JSON copy kept while the file is unchanged.

Importing PyYAML costs more than everything else a no-change ``opslab branch
sync`` or an ``opslab-enc`` run does (about 30 ms of a 100 ms budget; its
reader alone compiles a large regular expression at import). The
configuration file changes rarely, and the JSON module is imported anyway,
so the parsed document is kept as JSON in the user's cache directory
(``$XDG_CACHE_HOME/opslab/yaml``, else ``~/.cache/opslab/yaml``) and used
while the file's identity (device, inode, size, modification and change
times, as Python's own bytecode cache does with less) is the one it was
parsed from.

The copy is only an optimisation, never a second source: it is trusted only
when it is the caller's own file, not writable by anyone else, and anything
unusable about it (missing, stale, unreadable, foreign, corrupt, a cache
directory that cannot be written) means parsing the YAML as if it did not
exist. A document JSON cannot hold exactly (dates, keys that are not
strings, NaN) is never copied.
"""

import contextlib
import json
import os
import stat
from typing import Any

from opslab.files import write_atomic

# NAME_MAX is 255 on Linux file systems; ".json" and write_atomic's ".NAME.HEX" need room.
_LONGEST_NAME = 200


class YamlError(ValueError):
    """The file is not valid YAML (the message says where)."""


def load(path: str) -> Any:
    """The document in the YAML file ``path`` (None for an empty file).

    Raises OSError when the file cannot be read, UnicodeDecodeError when it
    is not UTF-8 text, YamlError when it is not YAML.
    """
    before = _identity(os.stat(path))
    copy = _copy_path(path)
    if copy is not None:
        cached = _read_copy(copy, before)
        if cached is not None:
            return cached[0]
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    document = parse(text)
    # Copied only if the file did not change while it was read.
    if copy is not None and _identity(os.stat(path)) == before:
        _write_copy(copy, before, document)
    return document


def parse(text: str) -> Any:
    """The document in YAML ``text``; raises YamlError."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as error:
        raise YamlError(str(error)) from None


def _identity(status: os.stat_result) -> list[int]:
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            status.st_ctime_ns]


def _copy_path(path: str) -> str | None:
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        home = os.environ.get("HOME") or ""
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    # The file's absolute path, quoted into one name (hashlib's import would cost a
    # tenth of what the copy saves); a path too long for one name is not copied.
    name = os.path.abspath(path).replace("%", "%25").replace("/", "%2F")
    if len(name) > _LONGEST_NAME:
        return None
    return os.path.join(base, "opslab", "yaml", f"{name}.json")


def _read_copy(copy: str, identity: list[int]) -> tuple[Any] | None:
    """(document,) from the copy if it is ours and of this identity, else None."""
    try:
        descriptor = os.open(copy, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        status = os.fstat(descriptor)
        if (status.st_uid != os.geteuid() or not stat.S_ISREG(status.st_mode)
                or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return None
        try:
            record = json.loads(stream.read())
        except (OSError, ValueError):
            return None
    if not isinstance(record, dict) or record.get("identity") != identity:
        return None
    return (record.get("document"),)


def _write_copy(copy: str, identity: list[int], document: Any) -> None:
    try:
        text = json.dumps({"identity": identity, "document": document}, allow_nan=False)
    except (TypeError, ValueError):
        return  # not JSON: dates, binary, NaN
    if json.loads(text)["document"] != document:
        return  # not exactly: keys that are not strings became strings
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(copy), mode=0o700, exist_ok=True)
        write_atomic(copy, text, 0o600, durable=False)

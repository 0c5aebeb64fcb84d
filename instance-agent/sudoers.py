"""The sudoers drop-in that gives a project's members sudo on its instances.

The API says who (``sudo`` in the target: the members of a non-global
project); this module only writes it down. The file is written beside its
final place under a name sudo ignores (sudo skips ``includedir`` files
whose names contain a dot), checked with ``visudo -cf``, and only then
renamed into place: a file that would lock everyone out of sudo, or let
the wrong people in, never becomes the one sudo reads.
"""

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from opslab.names import InvalidName, validate_user_name

VISUDO_TIMEOUT = 30.0


class SudoersError(Exception):
    """The drop-in could not be rendered, validated or installed; nothing was changed."""


def render(project: str, users: list[str]) -> str:
    """The drop-in's text for ``users`` of ``project``; empty when nobody gets sudo."""
    for user in users:
        try:
            validate_user_name(user)
        except InvalidName as error:
            raise SudoersError(f"refusing to grant sudo: {error}") from None
    if not users:
        return ""
    lines = [f"# Written by the opslab agent: members of project {project} get sudo on its",
             "# instances. Local changes are overwritten; change the project's members.",
             *(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL" for user in sorted(set(users)))]
    return "\n".join(lines) + "\n"


def installed(path: Path) -> str:
    """The drop-in's current text ("" when there is none)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError):
        return "\0unreadable"  # never equal to a rendering: rewrite it


def install(path: Path, text: str, visudo: str = "visudo") -> None:
    """Put ``text`` in place at ``path`` after ``visudo`` accepts it; "" removes the file."""
    if not text:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    try:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise SudoersError(f"cannot write the sudoers drop-in beside {path}: "
                           f"{error.strerror}") from None
    staged = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), 0o440)
            os.fsync(stream.fileno())
        _check(visudo, staged)
        os.replace(staged, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


def _check(visudo: str, staged: Path) -> None:
    try:
        process = subprocess.run([visudo, "-c", "-q", "-f", str(staged)], capture_output=True,
                                 text=True, timeout=VISUDO_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SudoersError(f"cannot run {visudo} to check the sudoers drop-in: {error}") from None
    if process.returncode != 0:
        detail = (process.stderr or process.stdout).strip().replace(str(staged), "drop-in")
        raise SudoersError(f"visudo refused the sudoers drop-in, which was not installed: "
                           f"{detail[-500:]}")

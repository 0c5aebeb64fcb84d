"""The sudoers drop-in that gives a project's members sudo on its instances.

The API says who (``sudo`` in the target: the members of a non-global
project); this module only writes it down. The file is written beside its
final place under a name sudo ignores (sudo skips ``includedir`` files
whose names contain a dot), checked with ``visudo -cf``, and only then
renamed into place: a file that would lock everyone out of sudo, or let
the wrong people in, never becomes the one sudo reads.

Every value written into the file is checked with opslab.names' one rule
for its kind (login names, the project name) before anything is written: a
line break in a comment would otherwise start a rule of its own, which
visudo accepts. And sudo grants to the local account of a name (as NSS
resolves it here), so a name is granted only when that account, if there
is one, is the person's own: not ``root``, not outside ``accounts.min_uid``
.. ``accounts.max_uid``, and with the person's directory ``uidNumber``
(opslab.accounts), whatever the API says.
"""

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from opslab.accounts import local_account_reason, system_account_reason
from opslab.config import AccountSettings
from opslab.names import InvalidName, validate_project_name, validate_user_name

VISUDO_TIMEOUT = 30.0


class SudoersError(Exception):
    """The drop-in could not be rendered, validated or installed; nothing was changed."""


def grantable(users: list[str], uid_numbers: dict[str, int | None],
              settings: AccountSettings) -> tuple[list[str], dict[str, str]]:
    """``users`` whose local account, if any, is their own; and why each left out was.

    sudo grants to the local account of a name: a person named like an
    account of this instance (``backup``, ``nobody``, the image's default
    user) would get sudo as that account. ``uid_numbers`` are the people's
    directory uidNumbers (the target's). Names that are not login names are
    left out too, so one bad name never keeps a stale file in place.
    """
    kept: list[str] = []
    left_out: dict[str, str] = {}
    for user in users:
        try:
            validate_user_name(user)
        except InvalidName as error:
            left_out[user[:40]] = str(error)
            continue
        reason = (system_account_reason(user, None, settings)
                  or local_account_reason(user, uid_numbers.get(user), settings))
        if reason:
            left_out[user] = reason
        else:
            kept.append(user)
    return kept, left_out


def render(project: str, users: list[str]) -> str:
    """The drop-in's text for ``users`` of ``project``; empty when nobody gets sudo."""
    _check_users(users)
    if not users:
        return ""
    try:
        validate_project_name(project)
    except InvalidName as error:
        raise SudoersError(f"refusing to write the sudoers drop-in: {error}") from None
    lines = [f"# Written by the opslab agent: members of project {project} get sudo on its",
             "# instances. Local changes are overwritten; change the project's members.",
             *(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL" for user in sorted(set(users)))]
    return "\n".join(lines) + "\n"


def _check_users(users: list[str]) -> None:
    for user in users:
        try:
            validate_user_name(user)
        except InvalidName as error:
            raise SudoersError(f"refusing to grant sudo: {error}") from None


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

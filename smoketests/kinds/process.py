"""process: a process runs (or does not).

    process: {name: nginx}                         # its name (comm), exactly
    process: {command: "http.server 8181", user: www-data}   # a text of its command line
    process: {name: telnetd, running: false}

``name`` is the kernel's name of the process (what ``pgrep -x`` matches; the
kernel keeps its first 15 characters, and a longer name is compared as cut
so); ``command`` a text its whole command line contains;
``user`` the user it runs as (its real uid, by name or number). At least
one of name and command. Read from ``/proc``: processes of other PID
namespaces are not seen.
"""

import os
import pwd
from typing import Any, NamedTuple

from . import Context, Failed, Field, quoted

FIELDS = {
    "name": Field((str,)),
    "command": Field((str,)),
    "user": Field((str, int)),
    "running": Field((bool,)),
}
# The characters of a process's name the kernel keeps (TASK_COMM_LEN, less its NUL).
NAME_LENGTH = 15


class Process(NamedTuple):
    pid: int
    name: str
    command: str
    uid: int


def problem(values: dict[str, Any], outside: bool) -> str | None:
    if "name" not in values and "command" not in values:
        return "give name, command or both"
    if outside:
        return "a process cannot be seen from outside: leave outside off"
    return None


def check(values: dict[str, Any], context: Context) -> str:
    found = matching(values.get("name"), values.get("command"), values.get("user"))
    what = describe(values)
    if values.get("running", True):
        if not found:
            raise Failed(f"no process {what} runs")
        return f"{len(found)} process(es) {what}: pid {', '.join(str(p.pid) for p in found[:5])}"
    if found:
        raise Failed(f"{len(found)} process(es) {what} run: pid "
                     f"{', '.join(str(p.pid) for p in found[:5])}")
    return f"no process {what} runs"


def describe(values: dict[str, Any]) -> str:
    parts = []
    if "name" in values:
        parts.append(f"named {quoted(values['name'])}")
    if "command" in values:
        parts.append(f"with {quoted(values['command'])} in its command line")
    if "user" in values:
        parts.append(f"of user {values['user']}")
    return " ".join(parts)


def matching(name: str | None, command: str | None, user: str | int | None) -> list[Process]:
    """The processes with that name, command text and user (None: any)."""
    uid = _uid(user)
    # A program named longer than the kernel keeps runs as the name cut short, as ps shows.
    kept = str(name)[:NAME_LENGTH] if name is not None else None
    found = []
    for process in processes():
        if kept is not None and process.name != kept:
            continue
        if command is not None and command not in process.command:
            continue
        if uid is not None and process.uid != uid:
            continue
        found.append(process)
    return found


def processes() -> list[Process]:
    """Every process /proc shows, but this one; one that ends while read is left out."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                stat = stream.read()
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                command = stream.read()
            uid = _real_uid(entry)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # The name sits between the first "(" and the last ")": it may hold either.
        name = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode("utf-8", "replace")
        found.append(Process(int(entry), name,
                             command.replace(b"\0", b" ").strip().decode("utf-8", "replace"),
                             uid))
    return found


def _real_uid(pid: str) -> int:
    """The process's real uid, from its status. Not the owner of /proc/PID: that is its
    effective uid, and root's once a daemon that dropped its privileges is not dumpable."""
    with open(f"/proc/{pid}/status", "rb") as stream:
        for line in stream:
            if line.startswith(b"Uid:"):
                return int(line.split()[1])
    raise FileNotFoundError(f"/proc/{pid}/status has no Uid line")


def _uid(user: str | int | None) -> int | None:
    if user is None or isinstance(user, int):
        return user
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        # A number filled in from a reference is a text: a uid, unless an account has that name.
        if user.isdigit():
            return int(user)
        raise Failed(f"there is no user {quoted(user)}") from None

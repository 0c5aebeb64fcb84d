"""service: a service runs, and starts at boot.

    service: {name: nginx}                   # running (the default)
    service: {name: nginx, enabled: true}
    service: {name: telnet, running: false}
    service: {name: greeter, process: {command: "http.server 8181"}}

With systemd, ``systemctl is-active`` and ``is-enabled`` say. Without it
(a container whose init is not systemd, a service Puppet starts with its
``base`` provider), the service counts as running when a process matches
``process`` (default: a process named like the service, without
``.service``; the keys of the process kind); whether it is enabled cannot
be known then, and a check that asks fails saying so.
"""

import os
import shutil
import subprocess
from typing import Any

from opslab import process as processes

from . import Context, Failed, Field, quoted, tail
from .process import describe, matching

FIELDS = {
    "name": Field((str,), required=True),
    "running": Field((bool,)),
    "enabled": Field((bool,)),
    "process": Field((dict,)),
}
_PROCESS_KEYS = frozenset({"name", "command", "user"})


def problem(values: dict[str, Any], outside: bool) -> str | None:
    if outside:
        return "a service cannot be seen from outside: check its port instead"
    name = values.get("name")
    if isinstance(name, str) and (not name or name.startswith("-") or "/" in name):
        return f"name {quoted(name)} is not a service name"
    extra = set(values.get("process") or {}) - _PROCESS_KEYS
    if extra:
        return f"process takes name, command and user, not {', '.join(sorted(map(str, extra)))}"
    return None


def has_systemd() -> bool:
    """Whether systemd is this system's manager (sd_booted(3)'s test)."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def check(values: dict[str, Any], context: Context) -> str:
    name = str(values["name"])
    running = values.get("running", True)
    if not has_systemd():
        return _by_process(name, values, running)
    found = []
    state = _systemctl("is-active", name, context.left())
    if (state == "active") != running:
        raise Failed(f"service {name} is {state}, not {'running' if running else 'stopped'}",
                     _status(name, context.left()))
    found.append(state)
    if "enabled" in values:
        enabled = _systemctl("is-enabled", name, context.left())
        if (enabled in ("enabled", "enabled-runtime", "static", "alias")) != values["enabled"]:
            raise Failed(f"service {name} is {enabled}, "
                         f"not {'enabled' if values['enabled'] else 'disabled'}")
        found.append(enabled)
    return f"service {name} is {' and '.join(found)}"


def _by_process(name: str, values: dict[str, Any], running: bool) -> str:
    if "enabled" in values:
        raise Failed(f"whether service {name} is enabled cannot be known without systemd")
    wanted = values.get("process") or {"name": name.removesuffix(".service")}
    found = matching(wanted.get("name"), wanted.get("command"), wanted.get("user"))
    what = describe(wanted)
    if running and not found:
        raise Failed(f"service {name} does not run (no systemd here; no process {what})")
    if not running and found:
        raise Failed(f"service {name} runs (no systemd here; process {what}: "
                     f"pid {found[0].pid})")
    return f"service {name} {'runs' if running else 'does not run'} (no systemd: process {what})"


def _systemctl(action: str, name: str, timeout: float) -> str:
    try:
        done = processes.run(["systemctl", action, "--", name], timeout, text=True)
    except processes.TimedOut:
        raise Failed(f"systemctl {action} {name} gave no answer within {timeout:g} s") from None
    return done.stdout.strip() or f"unknown ({tail(done.stderr, 200).strip()})"


def _status(name: str, timeout: float) -> str:
    try:
        done = processes.run(["systemctl", "status", "--no-pager", "--lines=10", "--", name],
                             timeout, stderr=subprocess.STDOUT, text=True)
    except processes.TimedOut:
        return ""
    return tail(done.stdout)

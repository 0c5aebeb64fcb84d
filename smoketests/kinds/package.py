"""package: a Debian package is installed (at a version), or not.

    package: {name: nginx}
    package: {name: openssl, version: ">= 3.0.11"}   # <, <=, =, !=, >=, > and a version
    package: {name: telnetd, installed: false}

dpkg says whether it is installed and at which version, and compares
versions by Debian's rules (``dpkg --compare-versions``: 1.10 is after 1.9,
and ~ sorts before everything).
"""

import re
import subprocess
from typing import Any

from opslab import process

from . import Context, Failed, Field, quoted

FIELDS = {
    "name": Field((str,), required=True),
    "installed": Field((bool,)),
    "version": Field((str,)),
}
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?")
_CONSTRAINT = re.compile(r"(<=|>=|!=|<|>|=)\s*([A-Za-z0-9.+~:-]+)")
_OPERATORS = {"<": "lt", "<=": "le", "=": "eq", "!=": "ne", ">=": "ge", ">": "gt"}


def problem(values: dict[str, Any], outside: bool) -> str | None:
    if outside:
        return "a package cannot be seen from outside: leave outside off"
    name = values.get("name")
    if isinstance(name, str) and "${" not in name and not _NAME.fullmatch(name):
        return f"name {quoted(name)} is not a Debian package name"
    version = values.get("version")
    if isinstance(version, str) and "${" not in version and not _CONSTRAINT.fullmatch(version):
        return f"version {quoted(version)} is not an operator and a version, such as \">= 1.2\""
    return None


def check(values: dict[str, Any], context: Context) -> str:
    name = str(values["name"])
    if not _NAME.fullmatch(name):
        raise Failed(f"{quoted(name)} is not a Debian package name")
    installed = _installed_version(name, context.left())
    if not values.get("installed", True):
        if installed is not None:
            raise Failed(f"package {name} is installed ({installed})")
        return f"package {name} is not installed"
    if installed is None:
        raise Failed(f"package {name} is not installed")
    if "version" in values:
        match = _CONSTRAINT.fullmatch(str(values["version"]))
        if match is None:
            raise Failed(f"version {quoted(values['version'])} is not an operator and a version")
        operator, version = match.groups()
        compared = _run(["dpkg", "--compare-versions", installed, _OPERATORS[operator], version],
                        context.left())
        if compared.returncode != 0:
            raise Failed(f"package {name} is at {installed}, not {operator} {version}")
    return f"package {name} is installed ({installed})"


def _installed_version(name: str, timeout: float) -> str | None:
    done = _run(["dpkg-query", "--show", "--showformat=${db:Status-Status}\\t${Version}",
                 "--", name], timeout)
    status, _, version = done.stdout.partition("\t")
    return version if done.returncode == 0 and status == "installed" else None


def _run(argv: list[str], timeout: float) -> "subprocess.CompletedProcess[str]":
    try:
        return process.run(argv, timeout, text=True)
    except process.TimedOut:
        raise Failed(f"{argv[0]} gave no answer within {timeout:g} s") from None
    except OSError as error:
        raise Failed(f"{argv[0]} could not run (is this Debian?): {error.strerror}") from None

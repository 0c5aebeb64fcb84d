"""The change's code: a patch set fetched from Gerrit's Git remote, checked, and the files
it touches.

Contract (contracts/gerrit-jenkins-openstack.md) section 3.5: a patch set is the ref
``refs/changes/NN/C/P``, NN the last two digits of the change number, zero-padded
(change 5: ``refs/changes/05/5/1``), fetched as ``git fetch <repo-url>
refs/changes/NN/C/P``. The fetched commit must be the patch set's revision
(``GERRIT_PATCHSET_REVISION``, ``patchSet.revision``): a ref that has moved, or a mirror
that lies, is refused, since the vote goes on that exact revision.

git runs as a subprocess (opslab.process: its own process group, every call with a
timeout, stopped whole past it), never asking for credentials, and its messages have any
``user:password@`` of a URL taken out.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from opslab import process

from .events import change_ref

__all__ = ["Fetched", "SourceError", "change_files", "change_ref", "fetch_patchset",
           "fetch_ref", "git_url", "touched_modules"]

_ENVIRONMENT = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
_REVISION = re.compile(r"[0-9a-f]{40}")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
MODULES = "modules"  # the Puppet repository's directory of modules


class SourceError(Exception):
    """The change's code could not be fetched, or is not what was announced."""


@dataclass(frozen=True)
class Fetched:
    """A patch set checked out: its ref, its revision, its first parent (None for a root
    commit), and the work tree it is checked out in."""

    ref: str
    revision: str
    parent: str | None
    directory: Path


def _redact(text: str) -> str:
    return _USERINFO.sub("***@", text)


def _git(directory: Path, arguments: list[str], timeout: float) -> str:
    command = ["git", "-C", str(directory), *arguments]
    try:
        result = process.run(command, timeout, env={**os.environ, **_ENVIRONMENT}, text=True)
    except process.TimedOut:
        raise SourceError(f"git {arguments[0]} timed out after {timeout:g} s") from None
    except OSError as error:
        raise SourceError(f"git {arguments[0]} could not run: {error}") from None
    if result.returncode != 0:
        message = _redact(result.stderr.strip()[-1500:])
        raise SourceError(f"git {arguments[0]} failed: {message}")
    return str(result.stdout)


def git_url(template: str, project: str) -> str:
    """A project's Git URL from ``ci.git_url`` (``{project}`` replaced), or from
    ``ci.gerrit_url`` (``URL/PROJECT``) when ``template`` has no ``{project}``."""
    if "{project}" in template:
        return template.replace("{project}", project)
    return f"{template.rstrip('/')}/{project}"


def _checked_remote(remote: str) -> str:
    if not remote or remote.startswith("-") or any(ord(c) < 32 for c in remote):
        raise SourceError(f"remote {_redact(remote)!r} is not a usable git URL or path")
    return remote


def _repository(directory: Path, timeout: float) -> None:
    """``directory`` a git work tree: made (``git init``) when it is not one yet."""
    if not (directory / ".git").exists():
        directory.mkdir(parents=True, exist_ok=True)
        _git(directory, ["init", "--quiet"], timeout)


def fetch_ref(remote: str, ref: str, directory: Path, timeout: float) -> str:
    """Fetch ``ref`` of ``remote`` into the repository at ``directory`` (made if need be),
    kept there under the same name; its commit."""
    _repository(directory, timeout)
    if not ref.startswith("refs/") or ".." in ref or any(
            c.isspace() or c in ":^~?*[\\" for c in ref):
        raise SourceError(f"{ref[:80]!r} is not a ref")
    _git(directory, ["fetch", "--quiet", "--no-tags", "--force", _checked_remote(remote),
                     f"+{ref}:{ref}"], timeout)
    return _git(directory, ["rev-parse", "--verify", f"{ref}^{{commit}}"], timeout).strip()


def fetch_patchset(remote: str, change: int, patchset: int, revision: str,
                   directory: Path, timeout: float) -> Fetched:
    """Fetch change ``change``'s patch set ``patchset`` (``refs/changes/NN/C/P``) from
    ``remote``, check it is ``revision``, and check it out (detached) in ``directory``.

    SourceError when git fails or times out, or when the ref's commit is not
    ``revision`` (nothing is checked out then)."""
    if not _REVISION.fullmatch(revision):
        raise SourceError(f"revision {revision[:60]!r} is not a 40-hex commit")
    if change < 1 or patchset < 1:
        raise SourceError(f"change {change}, patch set {patchset}: not positive numbers")
    ref = change_ref(change, patchset)
    fetched = fetch_ref(remote, ref, directory, timeout)
    if fetched != revision:
        raise SourceError(f"{ref} of {_redact(remote)} is commit {fetched}, not the patch "
                          f"set's revision {revision}: refusing to test it")
    _git(directory, ["checkout", "--quiet", "--force", "--detach", revision], timeout)
    parents = _git(directory, ["rev-list", "--parents", "-n", "1", revision],
                   timeout).split()[1:]
    return Fetched(ref, revision, parents[0] if parents else None, directory)


def change_files(fetched: Fetched, timeout: float) -> list[str]:
    """The files the patch set touches relative to its first parent (added, changed,
    deleted; both sides of a rename), sorted; every file of a root commit."""
    arguments = ["diff-tree", "-r", "-z", "--no-commit-id", "--name-only", "--no-renames"]
    if fetched.parent is None:
        arguments += ["--root", fetched.revision]
    else:
        arguments += [fetched.parent, fetched.revision]
    output = _git(fetched.directory, arguments, timeout)
    return sorted({name for name in output.split("\0") if name})


def touched_modules(files: list[str] | set[str], modules: str = MODULES) -> set[str] | None:
    """The Puppet modules a change touches when it touches only modules
    (``modules/NAME/...``); None when it touches anything else (a manifest, Hiera data, a
    file directly in ``modules/``) or nothing at all: then it cannot be narrowed."""
    names = set()
    for name in files:
        parts = name.split("/")
        if len(parts) < 3 or parts[0] != modules or not parts[1]:
            return None
        names.add(parts[1])
    return names or None

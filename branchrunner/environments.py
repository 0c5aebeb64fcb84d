"""The environments directory: what Puppet sees, and how it changes atomically.

    ENVIRONMENTS/production -> .opslab/trees/production/<commit>
    ENVIRONMENTS/.opslab/trees/<env>/<commit>/        a complete tree
    ENVIRONMENTS/.opslab/trees/<env>/<commit>.json    its marker: complete, when, retired
    ENVIRONMENTS/.opslab/objects/                     the blob store (same file system)
    ENVIRONMENTS/.opslab/building/                    trees being built
    ENVIRONMENTS/.opslab/records/<env>.json           the last change of each environment
    ENVIRONMENTS/.opslab/records/last-sync.json       the last sync, every environment
    ENVIRONMENTS/.opslab/lock                         the sync lock

A tree is built in ``building/``, renamed into ``trees/`` and only then
marked complete; the environment's symlink is replaced by rename(2), which
is atomic, so Puppet sees the old tree or the new one and nothing between.
``.opslab`` is not a valid environment name, so Puppet never lists it.
Superseded trees stay ``keep_seconds`` (so a run that started on one
finishes on it) and the newest ``keep_previous`` of them stay longer.
"""

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opslab.files import write_atomic

from .git import TreeEntry
from .store import ObjectStore

STATE = ".opslab"


class UnsafeTree(Exception):
    """A commit whose tree cannot be materialised safely (paths escaping, .git, ...)."""


class EnvironmentConflict(Exception):
    """An environment path holds something opslab did not put there."""


class EnvironmentsDirectory:
    """The environments directory Puppet's environmentpath points at."""

    def __init__(self, root: Path, keep_previous: int, keep_seconds: float) -> None:
        self.root = root
        self.state = root / STATE
        self.trees = self.state / "trees"
        self.building = self.state / "building"
        self.records = self.state / "records"
        self.store = ObjectStore(self.state / "objects")
        self.lock_path = self.state / "lock"
        self.keep_previous = keep_previous
        self.keep_seconds = keep_seconds

    def prepare(self) -> None:
        """Create the layout, and clear what a killed sync may have left in building/."""
        for directory in (self.trees, self.building, self.records, self.store.root):
            directory.mkdir(parents=True, exist_ok=True)

    def clear_leftovers(self) -> None:
        """Remove half-built trees and half-made symlinks (only under the sync lock)."""
        for leftover in self.building.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        for entry in self.root.iterdir():
            if entry.name.startswith(".link-"):
                entry.unlink()

    # What is deployed.

    def deployed(self) -> dict[str, str]:
        """Every environment opslab deployed here and the commit it serves."""
        deployed = {}
        for entry in self.root.iterdir():
            commit = self._commit_of(entry)
            if commit is not None:
                deployed[entry.name] = commit
        return deployed

    def current(self, environment: str) -> str | None:
        """The commit ``environment`` serves now, or None if it is not deployed."""
        return self._commit_of(self.root / environment)

    def _commit_of(self, link: Path) -> str | None:
        if not link.is_symlink():
            return None
        target = Path(os.readlink(link))
        if target.parent != Path(STATE, "trees", link.name):
            return None
        return target.name

    def deployed_from(self, environment: str) -> str | None:
        """The branch ``environment`` is deployed from (its record), or None if not deployed."""
        if self.current(environment) is None:
            return None
        branch = self.read_record(environment).get("branch")
        return branch if isinstance(branch, str) and branch else None

    def tree_path(self, environment: str, commit: str) -> Path:
        return self.trees / environment / commit

    def _marker(self, environment: str, commit: str) -> Path:
        return self.trees / environment / f"{commit}.json"

    def has_tree(self, environment: str, commit: str) -> bool:
        """True if a complete tree of ``commit`` exists for ``environment``."""
        return self._marker(environment, commit).exists()

    # Building and swapping.

    def build(
        self,
        environment: str,
        commit: str,
        entries: Sequence[TreeEntry],
        branch: str,
        finish: Callable[[Path], None] | None = None,
    ) -> Path:
        """Materialise ``entries`` (all in the store already) as the tree of ``commit``.

        ``finish`` may add to the tree before it is moved into place.
        """
        staging = Path(tempfile.mkdtemp(prefix=f"{environment}-", dir=self.building))
        tree = staging / "tree"
        materialise(entries, self.store, tree)
        if finish is not None:
            finish(tree)
        destination = self.tree_path(environment, commit)
        destination.parent.mkdir(exist_ok=True)
        if destination.exists():  # from a sync killed before it wrote the marker
            shutil.rmtree(destination)
        tree.rename(destination)
        staging.rmdir()
        self._write_marker(environment, commit, {"branch": branch, "built_at": time.time()})
        return destination

    def activate(self, environment: str, commit: str) -> None:
        """Point ``environment`` at the tree of ``commit``, atomically."""
        link = self.root / environment
        if link.exists() or link.is_symlink():
            previous = self._commit_of(link)
            if previous is None:
                raise EnvironmentConflict(
                    f"{link} exists and was not deployed by opslab; move it away first")
        else:
            previous = None
        temporary = self.root / f".link-{environment}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(Path(STATE, "trees", environment, commit))
        os.replace(temporary, link)
        self._update_marker(environment, commit, retired_at=None)
        if previous is not None and previous != commit:
            self._update_marker(environment, previous, retired_at=time.time())

    def deactivate(self, environment: str) -> str | None:
        """Remove ``environment`` from Puppet's view; its tree retires. Returns its commit."""
        link = self.root / environment
        commit = self._commit_of(link)
        if commit is not None:
            link.unlink()
            self._update_marker(environment, commit, retired_at=time.time())
        return commit

    def _write_marker(self, environment: str, commit: str, marker: dict[str, Any]) -> None:
        write_atomic(str(self._marker(environment, commit)), json.dumps(marker), mode=0o644)

    def _read_marker(self, environment: str, commit: str) -> dict[str, Any]:
        try:
            marker: dict[str, Any] = json.loads(self._marker(environment, commit).read_text())
            return marker
        except (OSError, ValueError):
            return {}

    def _update_marker(self, environment: str, commit: str, **changes: Any) -> None:
        if self.has_tree(environment, commit):
            self._write_marker(environment, commit,
                               {**self._read_marker(environment, commit), **changes})

    # Records.

    def write_record(self, environment: str, record: dict[str, Any]) -> None:
        write_atomic(str(self.records / f"{environment}.json"),
                     json.dumps(record, indent=2) + "\n", mode=0o644)

    def write_sync_record(self, record: dict[str, Any]) -> None:
        write_atomic(str(self.records / "last-sync.json"), json.dumps(record, indent=2) + "\n",
                     mode=0o644)

    def read_record(self, environment: str) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads((self.records / f"{environment}.json").read_text())
            return record
        except (OSError, ValueError):
            return {}

    # Retention.

    def prune(self) -> int:
        """Remove retired trees past their time, then unreferenced objects.

        Returns the number of trees removed.
        """
        removed = 0
        now = time.time()
        deployed = self.deployed()
        for environment_dir in self.trees.iterdir():
            environment = environment_dir.name
            retired = []
            for marker in environment_dir.glob("*.json"):
                commit = marker.stem
                if deployed.get(environment) == commit:
                    continue
                retired_at = self._read_marker(environment, commit).get("retired_at") or 0.0
                retired.append((retired_at, commit))
            retired.sort(reverse=True)
            keep = self.keep_previous if environment in deployed else 0
            for index, (retired_at, commit) in enumerate(retired):
                if index < keep or now - retired_at < self.keep_seconds:
                    continue
                self._marker(environment, commit).unlink()
                shutil.rmtree(self.tree_path(environment, commit), ignore_errors=True)
                removed += 1
            # Trees whose marker never got written belong to a killed sync.
            for tree in environment_dir.iterdir():
                if tree.is_dir() and not self.has_tree(environment, tree.name):
                    shutil.rmtree(tree, ignore_errors=True)
            with contextlib.suppress(OSError):
                environment_dir.rmdir()  # only if empty
        if removed:
            self.store.collect_garbage()
        return removed


def materialise(entries: Sequence[TreeEntry], store: ObjectStore, destination: Path) -> None:
    """Create ``destination`` holding exactly ``entries``: hard links, symlinks, directories.

    Paths are checked as git's fsck would: no empty, ``.`` or ``..``
    component, no ``.git``, nothing below a file or symlink. Since the tree
    is built in a fresh directory, nothing can already be there to follow.
    Every call is relative to a descriptor of the tree and of the store, so
    the kernel walks only the path inside them.
    """
    destination.mkdir(mode=0o755)
    tree = os.open(destination, os.O_RDONLY | os.O_DIRECTORY)
    objects = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _materialise(entries, store, tree, objects)
    finally:
        os.close(tree)
        os.close(objects)


def _materialise(entries: Sequence[TreeEntry], store: ObjectStore, tree: int, objects: int
                 ) -> None:
    directories = {""}
    files: set[str] = set()
    for entry in entries:
        path = entry.path
        parts = path.split("/")
        if any(part in ("", ".", "..") or part.lower() == ".git" for part in parts):
            raise UnsafeTree(f"refusing path {path!r}")
        parent = path.rpartition("/")[0]
        if parent not in directories:
            for depth in range(1, len(parts)):
                ancestor = "/".join(parts[:depth])
                if ancestor in files:
                    raise UnsafeTree(f"refusing path {path!r}: {ancestor!r} is not a directory")
                if ancestor not in directories:
                    os.mkdir(ancestor, 0o755, dir_fd=tree)
                    directories.add(ancestor)
        if path in files or path in directories:
            raise UnsafeTree(f"refusing path {path!r}: listed twice")
        if entry.submodule:
            os.mkdir(path, 0o755, dir_fd=tree)  # as git leaves an uninitialised submodule
            directories.add(path)
            continue
        if entry.symlink:
            with open(store.name(entry.sha), "rb", opener=_opener(objects)) as stream:
                os.symlink(stream.read(), path, dir_fd=tree)
        elif entry.mode in ("100644", "100755", "100664"):
            os.link(store.name(entry.sha, entry.executable), path,
                    src_dir_fd=objects, dst_dir_fd=tree)
        else:
            raise UnsafeTree(f"refusing path {path!r}: unknown mode {entry.mode}")
        files.add(path)


def _opener(directory: int) -> Callable[[str, int], int]:
    def opener(path: str, flags: int) -> int:
        return os.open(path, flags, dir_fd=directory)

    return opener

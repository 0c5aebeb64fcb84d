"""The environments directory: what Puppet sees, and how it changes atomically.

    ENVIRONMENTS/production -> .opslab/trees/production/<commit>
    ENVIRONMENTS/.opslab/trees/<env>/<commit>/        a complete tree
    ENVIRONMENTS/.opslab/trees/<env>/<commit>.json    its marker: complete, when, retired
    ENVIRONMENTS/.opslab/objects/                     the blob store (same file system)
    ENVIRONMENTS/.opslab/building/                    trees being built or brought up to date
    ENVIRONMENTS/.opslab/records/<env>.json           the last change of each environment
    ENVIRONMENTS/.opslab/records/last-sync.json       the last sync, every environment
    ENVIRONMENTS/.opslab/lock                         the sync lock

A tree is made in ``building/`` and renamed into ``trees/``; once every
tree of the sync is there, one syncfs(2) writes them (their objects,
directories and links) to disk, and only then is each marked complete and
its environment's symlink replaced by rename(2), which is atomic, so Puppet
sees the old tree or the new one and nothing between. The environments
directory is fsynced after the swaps, before anything is pruned. So after a
power cut too, a symlink never points at a tree whose files did not reach
the disk, and a marker never vouches for one (a marker or record may be
lost or empty: a live tree without its marker is taken for complete, as
only a flushed tree is ever swapped in, and its marker is written again).
``.opslab`` is not a valid environment name, so Puppet never lists it.

Superseded trees stay ``keep_seconds`` (so a run that started on one
finishes on it) and the newest ``keep_previous`` of them stay until newer
ones replace them. A tree past both, which pruning would delete, is
*expired*: no run may still use it. An environment keeps its newest expired
tree as its *spare*, and its next change brings the spare up to the new
commit by applying only the difference (aside, in ``building/``) instead of
building a whole tree: a one-line change costs a few calls, not the ten
thousand links and three thousand directories of a tree. So a tree is
modified only when it could have been deleted: never the live one, never
one within ``keep_seconds`` of being superseded, never one of the newest
``keep_previous``.
"""

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opslab.files import write_atomic

from .git import Change, TreeEntry
from .store import ObjectStore

if TYPE_CHECKING:
    from pathlib import Path

STATE = ".opslab"
FILE_MODES = ("100644", "100755", "100664")


class UnsafeTree(Exception):
    """A commit whose tree cannot be materialised safely (paths escaping, .git, ...)."""


class EnvironmentConflict(Exception):
    """An environment path holds something opslab did not put there."""


class Layout:
    """A commit's tree as the calls that make it: its directories, parents first, its
    files as (object in the store, path), and its symlinks and submodules; checked as
    git's fsck would.

    No path may be empty, absolute or have an empty, ``.`` or ``..``
    component, none may be or pass through ``.git`` (in any case), none may
    lie below a file, symlink or submodule, and none may be listed twice.
    Each directory's components are checked once, when it first appears, so
    a tree of ten thousand files costs a set lookup per file.
    """

    __slots__ = ("directories", "files", "others")

    def __init__(self, entries: Iterable[TreeEntry]) -> None:
        self.directories: list[str] = []
        self.files: list[tuple[str, str]] = []
        self.others: list[TreeEntry] = []
        known = {""}
        leaves: set[str] = set()
        for entry in entries:
            path = entry.path
            parent, _, name = path.rpartition("/")
            if path.startswith("/") or _unsafe(name):
                raise UnsafeTree(f"refusing path {path!r}")
            if parent not in known:
                depth = 0
                while True:
                    depth = path.find("/", depth) + 1
                    if not depth:
                        break
                    ancestor = path[:depth - 1]
                    if ancestor in known:
                        continue
                    if _unsafe(ancestor.rpartition("/")[2]):
                        raise UnsafeTree(f"refusing path {path!r}")
                    if ancestor in leaves:
                        raise UnsafeTree(f"refusing path {path!r}: {ancestor!r} is not a "
                                         "directory")
                    known.add(ancestor)
                    self.directories.append(ancestor)
            if path in leaves or path in known:
                raise UnsafeTree(f"refusing path {path!r}: listed twice")
            leaves.add(path)
            if entry.mode in FILE_MODES:
                self.files.append((ObjectStore.name(entry.sha, entry.executable), path))
            elif entry.symlink or entry.submodule:
                self.others.append(entry)
            else:
                raise UnsafeTree(f"refusing path {path!r}: unknown mode {entry.mode}")

    def with_contents(self, changed: dict[str, TreeEntry]) -> "Layout":
        """This layout with the files at ``changed``'s paths holding other contents or
        modes (still files: no path added, removed or turned into something else)."""
        derived = Layout(())
        derived.directories, derived.others = self.directories, self.others
        names = {path: ObjectStore.name(entry.sha, entry.executable)
                 for path, entry in changed.items()}
        derived.files = [(names.get(path, name), path) for name, path in self.files]
        return derived


def _unsafe(name: str) -> bool:
    return name in ("", ".", "..") or name.lower() == ".git"


class EnvironmentsDirectory:
    """The environments directory Puppet's environmentpath points at.

    Paths are plain strings: pathlib's import alone is a tenth of the time
    a sync that finds nothing changed may take.
    """

    def __init__(self, root: "str | os.PathLike[str]", keep_previous: int,
                 keep_seconds: float) -> None:
        self.root = os.fspath(root)
        self.state = f"{self.root}/{STATE}"
        self.trees = f"{self.state}/trees"
        self.building = f"{self.state}/building"
        self.records = f"{self.state}/records"
        self.store = ObjectStore(f"{self.state}/objects")
        self.lock_path = f"{self.state}/lock"
        self.keep_previous = keep_previous
        self.keep_seconds = keep_seconds
        # Records read or written by this process: a sync of forty environments
        # consults each one's record several times.
        self._records: dict[str, dict[str, Any]] = {}

    def prepare(self) -> None:
        """Create the layout, and clear what a killed sync may have left in building/."""
        for directory in (self.trees, self.building, self.records, self.store.root):
            os.makedirs(directory, exist_ok=True)

    def clear_leftovers(self) -> None:
        """Remove half-made trees and half-made symlinks (only under the sync lock)."""
        for leftover in os.listdir(self.building):
            _remove_tree(f"{self.building}/{leftover}")
        for name in os.listdir(self.root):
            if name.startswith(".link-"):
                os.unlink(f"{self.root}/{name}")

    # What is deployed.

    def deployed(self) -> dict[str, str]:
        """Every environment opslab deployed here and the commit it serves."""
        deployed = {}
        for name in os.listdir(self.root):
            commit = self.current(name)
            if commit is not None:
                deployed[name] = commit
        return deployed

    def current(self, environment: str) -> str | None:
        """The commit ``environment`` serves now, or None if it is not deployed."""
        try:
            target = os.readlink(f"{self.root}/{environment}")
        except OSError:  # not there, or not a symlink
            return None
        directory, _, commit = target.rpartition("/")
        return commit if directory == f"{STATE}/trees/{environment}" else None

    def deployed_from(self, environment: str) -> str | None:
        """The branch ``environment`` is deployed from (its record), or None if not deployed."""
        if self.current(environment) is None:
            return None
        branch = self.read_record(environment).get("branch")
        return branch if isinstance(branch, str) and branch else None

    def tree_path(self, environment: str, commit: str) -> "Path":
        """The tree of ``commit``, for a run that resolves it once (apply)."""
        from pathlib import Path  # apply imports it anyway; a sync never needs it

        return Path(self._tree(environment, commit))

    def _tree(self, environment: str, commit: str) -> str:
        return f"{self.trees}/{environment}/{commit}"

    def _marker(self, environment: str, commit: str) -> str:
        return f"{self.trees}/{environment}/{commit}.json"

    def has_tree(self, environment: str, commit: str) -> bool:
        """True if a complete tree of ``commit`` exists for ``environment``."""
        return os.path.exists(self._marker(environment, commit))

    # Making trees and swapping them in.

    def build(self, environment: str, commit: str, layout: Layout,
              finish: Callable[[str], None] | None = None) -> str:
        """Materialise ``layout`` (its objects all in the store) as the tree of ``commit``,
        unmarked in ``trees/`` (:meth:`flush`, then :meth:`mark`).

        ``finish`` may add to the tree before it is moved into place.
        """
        staging = self._staging(environment, commit)
        materialise(layout, self.store, staging)
        if finish is not None:
            finish(staging)
        return self._install(environment, commit, staging)

    def spare(self, environment: str) -> str | None:
        """The commit of ``environment``'s spare tree: its newest expired one, if any."""
        try:
            names = os.listdir(f"{self.trees}/{environment}")
        except FileNotFoundError:
            return None
        for commit in self._expired(environment, names, self.current(environment), time.time()):
            if commit in names:
                return commit
        return None

    def recycle(self, environment: str, spare: str, commit: str, changes: Sequence[Change],
                finish: Callable[[str], None] | None = None) -> str:
        """Bring the spare tree of ``spare`` up to ``commit`` and make it that commit's tree,
        unmarked in ``trees/`` as :meth:`build` leaves a new one.

        ``changes`` are what differs from ``spare`` to ``commit`` (their new
        objects in the store already). The tree loses its marker before
        anything else, so from then on nothing takes it for ``spare``'s: a
        sync killed after that leaves an unmarked tree (pruned) or a tree in
        ``building/`` (cleared), and the live environment was never involved.
        ``finish`` (``.git`` metadata) is made anew after the changes.
        """
        os.unlink(self._marker(environment, spare))
        staging = self._staging(environment, commit, empty=False)
        os.rename(self._tree(environment, spare), staging)
        if finish is not None:
            _remove_tree(f"{staging}/.git")
        apply_changes(changes, self.store, staging)
        if finish is not None:
            finish(staging)
        return self._install(environment, commit, staging)

    def _staging(self, environment: str, commit: str, empty: bool = True) -> str:
        """Where the tree of ``commit`` is made (only one sync runs: the name is free)."""
        staging = f"{self.building}/{environment}-{commit}"
        if empty:
            os.mkdir(staging, 0o755)
        return staging

    def _install(self, environment: str, commit: str, staging: str) -> str:
        destination = self._tree(environment, commit)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if os.path.lexists(destination):  # from a sync killed before it wrote the marker
            _remove_tree(destination)
        os.rename(staging, destination)
        return destination

    def flush(self) -> None:
        """Write everything made so far on the environments' file system to disk: the
        trees built or brought up to date, and their objects (syncfs(2), once per sync,
        before any of them is marked or swapped in)."""
        descriptor = os.open(self.state, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syncfs(descriptor)
        finally:
            os.close(descriptor)

    def mark(self, environment: str, commit: str, branch: str) -> None:
        """Vouch that the tree of ``commit`` is complete (only once it is on disk)."""
        self._write_marker(environment, commit, {"branch": branch, "built_at": time.time(),
                                                 "retired_at": None})

    def flush_links(self) -> None:
        """Make the swaps and removals of environment symlinks durable (fsync of the
        environments directory), before a record tells of them or a tree they left is
        pruned or brought up to date."""
        descriptor = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def activate(self, environment: str, commit: str) -> None:
        """Point ``environment`` at the tree of ``commit``, atomically."""
        link = f"{self.root}/{environment}"
        previous = self.current(environment)
        if previous is None and os.path.lexists(link):
            raise EnvironmentConflict(
                f"{link} exists and was not deployed by opslab; move it away first")
        temporary = f"{self.root}/.link-{environment}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        os.symlink(f"{STATE}/trees/{environment}/{commit}", temporary)
        os.replace(temporary, link)
        if self._read_marker(environment, commit).get("retired_at") is not None:
            self._update_marker(environment, commit, retired_at=None)
        if previous is not None and previous != commit:
            self._update_marker(environment, previous, retired_at=time.time())

    def deactivate(self, environment: str) -> str | None:
        """Remove ``environment`` from Puppet's view; its tree retires. Returns its commit."""
        commit = self.current(environment)
        if commit is not None:
            os.unlink(f"{self.root}/{environment}")
            self._update_marker(environment, commit, retired_at=time.time())
        return commit

    # Markers are written after the flush of the trees they vouch for, and are
    # not fsynced themselves: rename(2) keeps them whole for any reader and
    # through a killed sync; a power cut may lose one (an unmarked tree is
    # pruned, or taken for complete if it is live) or leave it empty (read as
    # {}: no branch, retired long ago).

    def _write_marker(self, environment: str, commit: str, marker: dict[str, Any]) -> None:
        write_atomic(self._marker(environment, commit), json.dumps(marker), mode=0o644,
                     durable=False)

    def _read_marker(self, environment: str, commit: str) -> dict[str, Any]:
        try:
            with open(self._marker(environment, commit), "rb") as stream:
                marker: dict[str, Any] = json.load(stream)
            return marker
        except (OSError, ValueError):
            return {}

    def _update_marker(self, environment: str, commit: str, **changes: Any) -> None:
        if self.has_tree(environment, commit):
            self._write_marker(environment, commit,
                               {**self._read_marker(environment, commit), **changes})

    # Records: written for people, so a crash may lose the last one (not fsynced).

    def write_record(self, environment: str, record: dict[str, Any]) -> None:
        write_atomic(f"{self.records}/{environment}.json",
                     json.dumps(record, indent=2) + "\n", mode=0o644, durable=False)
        self._records[environment] = record

    def write_sync_record(self, record: dict[str, Any]) -> None:
        write_atomic(f"{self.records}/last-sync.json", json.dumps(record, indent=2) + "\n",
                     mode=0o644, durable=False)

    def read_record(self, environment: str) -> dict[str, Any]:
        if environment not in self._records:
            try:
                with open(f"{self.records}/{environment}.json", "rb") as stream:
                    self._records[environment] = json.load(stream)
            except (OSError, ValueError):
                return {}
        return self._records[environment]

    # Retention.

    def _expired(self, environment: str, names: Iterable[str], live: str | None,
                 now: float) -> list[str]:
        """The trees past their time among ``environment``'s (``names`` in its directory),
        newest first: not ``live``, not among the newest ``keep_previous`` superseded
        ones (while it is deployed), and superseded more than ``keep_seconds`` ago."""
        retired = []
        for name in names:
            commit, suffix = name[:-5], name[-5:]
            if suffix == ".json" and commit != live:
                retired_at = self._read_marker(environment, commit).get("retired_at") or 0.0
                retired.append((retired_at, commit))
        retired.sort(reverse=True)
        keep = self.keep_previous if live is not None else 0
        return [commit for retired_at, commit in retired[keep:]
                if now - retired_at >= self.keep_seconds]

    def prune(self) -> int:
        """Remove expired trees (each deployed environment keeps one as its spare), trees a
        killed sync left unmarked, then unreferenced objects.

        Returns the number of trees removed.
        """
        removed = 0
        now = time.time()
        deployed = self.deployed()
        for environment in os.listdir(self.trees):
            directory = f"{self.trees}/{environment}"
            names = os.listdir(directory)
            live = deployed.get(environment)
            expired = self._expired(environment, names, live, now)
            for commit in expired[1:] if live is not None else expired:
                os.unlink(self._marker(environment, commit))
                _remove_tree(f"{directory}/{commit}")
                removed += 1
            # Trees whose marker never got written belong to a killed sync; the live
            # one can only have lost its marker to a power cut, after its flush.
            marked = {name[:-5] for name in names if name.endswith(".json")}
            for name in names:
                if not name.endswith(".json") and name not in marked and name != live:
                    _remove_tree(f"{directory}/{name}")
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if empty
        if removed:
            self.store.collect_garbage()
        return removed


def syncfs(descriptor: int) -> None:
    """syncfs(2) of the file system holding the open file ``descriptor``: its data and
    metadata on disk when this returns (os.sync() where the C library lacks syncfs)."""
    import ctypes  # only a sync that made a tree flushes: the no-change sync never does

    function = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if function is None:
        os.sync()
        return
    if function(descriptor) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"syncfs: {os.strerror(number)}")


def _remove_tree(path: str) -> None:
    import shutil  # only when something is removed: the no-change sync never is

    shutil.rmtree(path, ignore_errors=True)


class _TreeCalls:
    """System calls relative to descriptors of a tree and of the object store, so the
    kernel resolves only the path inside them."""

    def __init__(self, tree: str, store: ObjectStore) -> None:
        self.store = store
        self.tree = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.objects = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            os.close(self.tree)
            raise

    def __enter__(self) -> "_TreeCalls":
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.tree)
        os.close(self.objects)

    def place(self, entry: TreeEntry) -> None:
        """Create ``entry``: a hard link to its object, a symlink, or a submodule's
        empty directory (as git leaves an uninitialised submodule)."""
        if entry.submodule:
            os.mkdir(entry.path, 0o755, dir_fd=self.tree)
        elif entry.symlink:
            descriptor = os.open(self.store.name(entry.sha), os.O_RDONLY, dir_fd=self.objects)
            with open(descriptor, "rb") as stream:
                os.symlink(stream.read(), entry.path, dir_fd=self.tree)
        else:
            self.link(self.store.name(entry.sha, entry.executable), entry.path)

    def link(self, name: str, path: str) -> None:
        """Hard-link the object ``name`` at ``path``; an object at the file system's
        limit of links (65,000 on ext4: an empty file in every module of forty
        environments) is linked through a copy of it (:meth:`ObjectStore.spare_copy`)."""
        try:
            os.link(name, path, src_dir_fd=self.objects, dst_dir_fd=self.tree)
        except OSError as error:
            if error.errno != errno.EMLINK:
                raise
            os.link(self.store.spare_copy(name), path, src_dir_fd=self.objects,
                    dst_dir_fd=self.tree)


def materialise(layout: Layout, store: ObjectStore, destination: str) -> None:
    """Fill the empty directory ``destination`` with ``layout``: directories, then hard
    links, symlinks and submodules. Nothing can be there to follow: it is new."""
    with _TreeCalls(destination, store) as calls:
        tree, objects, mkdir, link = calls.tree, calls.objects, os.mkdir, os.link
        for directory in layout.directories:
            mkdir(directory, 0o755, dir_fd=tree)
        for name, path in layout.files:  # the ten thousand: nothing but the call
            try:
                link(name, path, src_dir_fd=objects, dst_dir_fd=tree)
            except OSError as error:
                if error.errno != errno.EMLINK:
                    raise
                calls.link(name, path)
        for entry in layout.others:
            calls.place(entry)


def apply_changes(changes: Sequence[Change], store: ObjectStore, destination: str) -> None:
    """Turn the tree at ``destination`` (exactly the old side of ``changes``) into the new
    side: every removal first, then the directories they left empty (git has no
    empty directories), then every addition, so a path may turn from a file into a
    directory or back.

    Added paths are checked as :class:`Layout` checks them, against the tree
    on disk: each missing directory is created, and one that exists must be a
    real directory (lstat), so nothing is ever written through a symlink or
    below a file.
    """
    with _TreeCalls(destination, store) as calls:
        tree = calls.tree
        emptied = set()
        for change in changes:
            if change.old is not None:
                if change.old.submodule:
                    os.rmdir(change.path, dir_fd=tree)
                else:
                    os.unlink(change.path, dir_fd=tree)
                emptied.add(change.path.rpartition("/")[0])
        for directory in sorted(emptied, key=lambda path: path.count("/"), reverse=True):
            while directory:
                try:
                    os.rmdir(directory, dir_fd=tree)
                except OSError:  # not empty, or gone with a deeper one's parent already
                    break
                directory = directory.rpartition("/")[0]
        directories = {""}
        for change in changes:
            entry = change.new
            if entry is None:
                continue
            Layout([entry])  # the path's own components and the entry's mode
            parent = entry.path.rpartition("/")[0]
            if parent not in directories:
                _make_directories(tree, parent, directories)
            try:
                calls.place(entry)
            except FileExistsError:
                raise UnsafeTree(f"refusing path {entry.path!r}: listed twice") from None


def _make_directories(tree: int, directory: str, known: set[str]) -> None:
    """Create ``directory`` and its missing parents below ``tree``; those that exist must be
    real directories."""
    depth = 0
    while True:
        depth = directory.find("/", depth) + 1
        ancestor = directory[:depth - 1] if depth else directory
        if ancestor not in known:
            try:
                os.mkdir(ancestor, 0o755, dir_fd=tree)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(ancestor, dir_fd=tree).st_mode):
                    raise UnsafeTree(f"refusing path {directory!r}: {ancestor!r} is not a "
                                     "directory") from None
            known.add(ancestor)
        if not depth:
            return

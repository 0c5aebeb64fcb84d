"""File contents by git blob id: stored once, hard-linked into every tree that has them.

Forty branches that share ten thousand files share ten thousand inodes: a
new tree costs directory entries, not copies. Objects are read-only (0444,
or 0555 for executables, which are stored apart since a hard link cannot
have a mode of its own), so a stray in-place edit fails instead of changing
every environment at once. An object whose link count has dropped to one is
referenced by no tree and is removed by :meth:`ObjectStore.collect_garbage`.
"""

import contextlib
import os
from collections.abc import Iterable

# Creating an object: a new file only (never through a symlink), closed on exec.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A copy made for an object at its link limit is used while it has fewer links than
# this (ext4 allows 65,000; a copy found with fewer is used again by later syncs).
_SPARE_LINKS = 60_000


class ObjectStore:
    """A directory of immutable blob files named by their git id.

    Paths inside the store are handled as plain strings relative to its root:
    a tree touches every one of ten thousand names, and pathlib's objects
    cost more than the system calls themselves.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._directories: set[str] = set()
        # Objects found or written intact by this process: forty trees that
        # share ten thousand objects check each of them once, not forty times.
        self._intact: set[tuple[str, bool]] = set()
        # The copy in use for each object at its link limit (see spare_copy).
        self._copies: dict[str, int] = {}

    @staticmethod
    def name(sha: str, executable: bool = False) -> str:
        """The blob's path relative to the store (executables get their own copy)."""
        return f"{sha[:2]}/{sha[2:]}.x" if executable else f"{sha[:2]}/{sha[2:]}"

    def missing(self, wanted: Iterable[tuple[str, bool, int]]) -> list[tuple[str, bool]]:
        """The (sha, executable) of each (sha, executable, size) not known to be intact.

        Objects are not fsynced one by one (ten thousand fsyncs would make a
        first deploy crawl: the sync flushes the whole file system once,
        before any tree is marked or swapped in), and are written in place;
        a kill or a power cut before that flush can leave an object empty or
        short, so its size is checked against git's before it is trusted. A
        negative size (git's listing did not say) counts as missing: the
        caller reads the blob, and :meth:`add` compares sizes then.
        """
        root = f"{self.root}/"
        missing = []
        for sha, executable, size in dict.fromkeys(wanted):
            if (sha, executable) in self._intact:
                continue
            if size >= 0:
                try:
                    if os.stat(root + self.name(sha, executable)).st_size == size:
                        self._intact.add((sha, executable))
                        continue
                except FileNotFoundError:
                    pass
            missing.append((sha, executable))
        return missing

    def add(self, sha: str, executable: bool, content: bytes) -> None:
        """Store ``content`` as blob ``sha`` unless it is there intact already.

        The object is written in place, with its final mode, not to a temporary
        name renamed over it: a name that holds the wrong size is removed and
        made anew (a new inode, so no tree that links the old one changes), and
        nothing links an object before it is whole (trees are made after their
        objects are stored), so a reader never sees one half-written.
        """
        directory = f"{self.root}/{sha[:2]}"
        target = f"{self.root}/{self.name(sha, executable)}"
        try:
            intact = os.stat(target).st_size == len(content)
        except FileNotFoundError:
            intact = None
        if not intact:
            if intact is not None:  # there, but short: left by a killed or cut-off sync
                os.unlink(target)
            elif directory not in self._directories:
                os.makedirs(directory, exist_ok=True)
                self._directories.add(directory)
            descriptor = os.open(target, _CREATE, 0o555 if executable else 0o444)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(descriptor, view):]
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
                raise
            finally:
                os.close(descriptor)
        self._intact.add((sha, executable))

    def spare_copy(self, name: str) -> str:
        """A copy of the object ``name`` (relative to the store) with links to spare, for
        an object that has as many as the file system allows: ``NAME.1``, ``NAME.2``, ...,
        made the first time it is needed. Garbage collection treats copies as objects."""
        source = f"{self.root}/{name}"
        original = os.stat(source)
        number = self._copies.get(name, 1)
        while True:
            copy = f"{self.root}/{name}.{number}"
            try:
                found = os.stat(copy)
            except FileNotFoundError:
                break
            if found.st_size != original.st_size:  # cut short by a kill: made again
                os.unlink(copy)
                break
            if found.st_nlink < _SPARE_LINKS:
                self._copies[name] = number
                return f"{name}.{number}"
            number += 1
        with open(source, "rb") as stream:
            content = stream.read()
        descriptor = os.open(copy, _CREATE, original.st_mode & 0o777)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(descriptor, view):]
        except BaseException:
            os.unlink(copy)
            raise
        finally:
            os.close(descriptor)
        self._copies[name] = number
        return f"{name}.{number}"

    def collect_garbage(self) -> int:
        """Remove objects no tree links to any more, and leftovers of crashed writes."""
        removed = 0
        self._intact.clear()
        self._copies.clear()
        if not os.path.isdir(self.root):
            return removed
        for directory in os.listdir(self.root):
            for entry in os.scandir(f"{self.root}/{directory}"):
                # Objects are named by hex digits; a name with a dot first is a
                # temporary file of an earlier version's, left by a killed writer.
                if entry.name.startswith(".") or entry.stat().st_nlink == 1:
                    os.unlink(entry.path)
                    removed += 1
        return removed

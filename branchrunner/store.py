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
import tempfile
from collections.abc import Iterable
from pathlib import Path

_TEMPORARY_PREFIX = ".incoming-"


class ObjectStore:
    """A directory of immutable blob files named by their git id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str, executable: bool = False) -> Path:
        """Where the blob ``sha`` lives (executables get their own copy)."""
        return self.root / sha[:2] / (sha[2:] + (".x" if executable else ""))

    def missing(self, wanted: Iterable[tuple[str, bool]]) -> list[tuple[str, bool]]:
        """The (sha, executable) pairs of ``wanted`` that are not stored yet."""
        return [item for item in dict.fromkeys(wanted) if not self.path(*item).exists()]

    def add(self, sha: str, executable: bool, content: bytes) -> None:
        """Store ``content`` as blob ``sha``: written aside, then renamed into place."""
        target = self.path(sha, executable)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=_TEMPORARY_PREFIX)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(content)
                os.fchmod(stream.fileno(), 0o555 if executable else 0o444)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def collect_garbage(self) -> int:
        """Remove objects no tree links to any more, and leftovers of crashed writes."""
        removed = 0
        if not self.root.exists():
            return removed
        for directory in self.root.iterdir():
            for entry in os.scandir(directory):
                if entry.name.startswith(_TEMPORARY_PREFIX) or entry.stat().st_nlink == 1:
                    os.unlink(entry.path)
                    removed += 1
        return removed

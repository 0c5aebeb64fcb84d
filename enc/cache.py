"""The last good classification of each node, for when the directory is down.

One JSON file per node in ``cache.dir``, holding the exact text that was
printed. A file is only ever replaced whole (temp file, fsync, rename), so a
crash leaves the old answer or the new one, never half of either. The file's
mtime is the last time the directory confirmed the answer: an unchanged
answer only touches it, so a healthy ENC run costs no disk write.
"""

import contextlib
import json
import os
import time

from opslab.files import write_atomic

FORMAT = 1


class CacheError(Exception):
    """A cached answer exists but cannot be served (corrupt, too old, unreadable)."""


class ClassificationCache:
    """Per-node cache files in one directory."""

    def __init__(self, directory: str, max_age: float) -> None:
        self.directory = directory
        self.max_age = max_age

    def path(self, node: str) -> str:
        """The cache file of ``node`` (a validated certname, so safe as a file name)."""
        return os.path.join(self.directory, f"{node}.json")

    def store(self, node: str, output: str) -> None:
        """Record ``output`` as the directory's current answer for ``node``."""
        path = self.path(node)
        if self._current_output(path, node) == output:
            os.utime(path)
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_atomic(path, json.dumps({"format": FORMAT, "node": node, "output": output}))

    def _current_output(self, path: str, node: str) -> str | None:
        try:
            return self._read(path, node)
        except (OSError, CacheError):
            return None

    def _read(self, path: str, node: str) -> str:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
        try:
            document = json.loads(text)
        except ValueError:
            raise CacheError(f"cache file {path} is corrupt (not JSON)") from None
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or document.get("node") != node
            or not isinstance(document.get("output"), str)
            or not document["output"].startswith("---")
        ):
            raise CacheError(f"cache file {path} is corrupt (not an opslab-enc answer for {node})")
        output: str = document["output"]
        return output

    def load(self, node: str) -> tuple[str, float]:
        """The cached output for ``node`` and its age in seconds.

        Raises CacheError if there is none, or it is unreadable, corrupt or
        older than ``max_age``.
        """
        path = self.path(node)
        try:
            age = time.time() - os.stat(path).st_mtime
            output = self._read(path, node)
        except FileNotFoundError:
            raise CacheError(f"no cached classification for {node}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise CacheError(f"cache file {path} is unreadable: {error}") from None
        if age > self.max_age:
            raise CacheError(
                f"cached classification for {node} is {age:.0f} s old, "
                f"older than cache.max_age ({self.max_age:g} s)"
            )
        return output, age

    def forget(self, node: str) -> None:
        """Drop the cached answer of a node the directory no longer knows."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(node))

"""Exclusive locks between opslab processes, that say who holds them.

An flock(2) on a file: the kernel releases it when its holder dies, even by
kill -9, so a crash never leaves a lock behind. The holder writes who it is
into the file so that a refused process can name it.
"""

import fcntl
import json
import os
import time
from types import TracebackType

from opslab.clock import iso_utc


class LockHeld(Exception):
    """Another process holds the lock, and kept it past our deadline."""


class FileLock:
    """An exclusive lock on ``path`` for ``purpose`` (shown to whoever waits)."""

    def __init__(self, path: str, purpose: str, timeout: float = 0.0) -> None:
        self.path = path
        self.purpose = purpose
        self.timeout = timeout
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; raises LockHeld."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(descriptor)
                    os.close(descriptor)
                    raise LockHeld(
                        f"{self.path} is held by {holder}; gave up after {self.timeout:g} s"
                    ) from None
                time.sleep(0.05)
        me = {
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "purpose": self.purpose,
            "since": iso_utc(time.time(), fraction=False),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(me).encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        """Give the lock up."""
        if self._descriptor is not None:
            os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None

    @staticmethod
    def _holder(descriptor: int) -> str:
        try:
            holder = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
            return (f"{holder['purpose']} (pid {holder['pid']} on {holder['host']}, "
                    f"since {holder['since']})")
        except (ValueError, KeyError, TypeError):
            return "another process (it has not said who it is yet)"

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

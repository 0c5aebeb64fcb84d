"""Child processes of checks: stopped with their process group at the attempt's timeout,
and keeping at most MAX_OUTPUT bytes of each stream.

:func:`opslab.process.run` keeps everything a command prints: a check's
command that prints a gigabyte (``yes``, a ``cat`` of a large log) would take
that much of the agent's memory, eight checks at a time. Here each stream
keeps its first MAX_OUTPUT bytes and the rest is read and dropped, so that
the command is not blocked on a full pipe either; ``Ran.over`` says so.
"""

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from opslab import process

MAX_OUTPUT = 1024 * 1024  # bytes of each stream
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Ran:
    """A child that ended in time: its exit status and what it printed (bounded)."""

    returncode: int
    stdout: bytes
    stderr: bytes
    over: bool  # a stream printed more than MAX_OUTPUT bytes; the rest was dropped


class TimedOut(Exception):
    """The child ran past its timeout; it and its process group were stopped."""

    def __init__(self, output: bytes) -> None:
        super().__init__("ran past its timeout")
        self.output = output  # what it had printed (stdout, then stderr), bounded


def run(argv: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None,
        data: bytes | None = None, limit: int = MAX_OUTPUT) -> Ran:
    """Run ``argv`` in a process group of its own with ``data`` as its input (None: /dev/null),
    for at most ``timeout`` seconds. OSError if it cannot start; TimedOut past the timeout."""
    deadline = time.monotonic() + timeout
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             start_new_session=True)
    kept: dict[int, bytearray] = {}
    try:
        over = _exchange(child, data or b"", deadline, limit, kept)
        child.wait(max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, _Late):
        _stop(child)
        raise TimedOut(b"".join(bytes(kept.get(stream, b"")) for stream in (1, 2))) from None
    except BaseException:  # interrupted: leave nothing running
        _stop(child)
        raise
    for stream in (child.stdout, child.stderr):
        if stream is not None:
            stream.close()
    return Ran(child.returncode, bytes(kept[1]), bytes(kept[2]), over)


class _Late(Exception):
    pass


def _exchange(child: "subprocess.Popen[bytes]", data: bytes, deadline: float, limit: int,
              kept: dict[int, bytearray]) -> bool:
    """Write ``data`` to the child and read its output until both streams end; whether more
    than ``limit`` bytes of a stream were dropped. ``kept`` gets the output by stream (1, 2)."""
    assert child.stdout is not None
    assert child.stderr is not None
    streams: dict[int, int] = {child.stdout.fileno(): 1, child.stderr.fileno(): 2}
    kept.update({1: bytearray(), 2: bytearray()})
    over = False
    sent = 0
    with selectors.DefaultSelector() as selector:
        for descriptor in streams:
            selector.register(descriptor, selectors.EVENT_READ)
        given = child.stdin
        given_fd = -1 if given is None else given.fileno()
        if given is not None:
            os.set_blocking(given_fd, False)
            selector.register(given_fd, selectors.EVENT_WRITE)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Late
            for key, _ in selector.select(left):
                if given is not None and key.fd == given_fd:
                    sent = _write(given, data, sent)
                    if sent >= len(data):
                        selector.unregister(key.fd)
                        given.close()
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffer = kept[streams[key.fd]]
                room = max(0, limit - len(buffer))
                buffer += chunk[:room]
                over = over or len(chunk) > room
    return over


def _write(stream: IO[bytes], data: bytes, sent: int) -> int:
    """``data`` from ``sent`` on, as much as the pipe takes now; where it got to. A child
    that does not read all of its input (exits early) ends the writing."""
    try:
        return sent + os.write(stream.fileno(), data[sent:sent + _CHUNK])
    except BrokenPipeError:
        return len(data)
    except BlockingIOError:
        return sent


def _stop(child: "subprocess.Popen[bytes]") -> None:
    """Kill the child's process group, close our ends of its pipes (what of the group
    left it then gets nothing more from us, and we nothing from it), and reap it."""
    process.kill_group(child)
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    child.wait()

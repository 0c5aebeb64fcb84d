"""Child processes with a deadline that covers their own children too.

Killing only the process we started is not enough: ``git fetch`` over HTTP
runs ``git-remote-http``, Puppet runs whatever its resources run, and a
child whose parent was killed keeps running (holding a connection, or
writing into a mirror whose lock was already released). So every command
runs in a process group of its own (a new session), and a timeout stops
that whole group, then reaps what we started.
"""

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, Any

# How long to wait for the pipes to close once the group was killed. Only a
# descendant that left the group (a daemon) can hold them open longer; its
# output is not worth hanging for.
REAP_TIMEOUT = 5.0


class TimedOut(Exception):
    """A command ran past its timeout; it and its process group were stopped."""

    def __init__(self, command: Sequence[str], timeout: float, output: Any) -> None:
        super().__init__(f"{command[0]} ran past its timeout of {timeout:g} s and was stopped")
        self.command = list(command)
        self.timeout = timeout
        self.output = output  # what it had written before, as bytes or str (or None)


def run(
    command: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] = subprocess.PIPE,
    stderr: int | IO[Any] = subprocess.PIPE,
    text: bool = False,
    grace: float = 0.0,
) -> subprocess.CompletedProcess[Any]:
    """Run ``command`` in a process group of its own and return it, completed and reaped.

    Its output is captured (stderr too), unless ``stdout`` or ``stderr`` say
    otherwise (a file for output too large to hold, ``subprocess.STDOUT``).
    Past ``timeout`` seconds the whole group is stopped: SIGTERM and up to
    ``grace`` seconds to finish when ``grace`` is positive, SIGKILL otherwise
    and after it; then :class:`TimedOut` is raised with the output so far.
    OSError if the command cannot start.
    """
    # Text is decoded as UTF-8 whatever the locale, a byte that is not UTF-8
    # replaced: a command's output must never be the reason a run has no result.
    process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env,
                               encoding="utf-8" if text else None,
                               errors="replace" if text else None, start_new_session=True)
    try:
        stdout, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimedOut(command, timeout, stop(process, grace)[0]) from None
    except BaseException:  # interrupted (KeyboardInterrupt, ...): leave nothing running
        stop(process, 0.0)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, errors)


def stop(process: "subprocess.Popen[Any]", grace: float = 0.0) -> tuple[Any, Any]:
    """Stop the process group ``process`` leads and reap ``process``; its remaining output.

    ``process`` must have been started with ``start_new_session=True``.
    """
    if grace > 0:
        kill_group(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            output = process.communicate(timeout=grace)
            kill_group(process)  # whatever of the group ignored SIGTERM
            return output
    kill_group(process)
    try:
        return process.communicate(timeout=REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.wait()  # it was killed, so this returns at once; only its pipes stay open
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        return None, None


def kill_group(process: "subprocess.Popen[Any]", signal_number: int = signal.SIGKILL) -> None:
    """Send ``signal_number`` to the process group ``process`` leads (its own session).

    Call it before reaping ``process`` or right after: its id names the
    group while the group has members, and is free for reuse once it has none.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal_number)

"""Commands on a clone over SSH, as the CI's account (a member of the CI project, so it
logs in with its own key and has sudo there, by the same rules as anyone).

Clones are new machines whose host keys nobody has seen: each run keeps its own
known_hosts file, taking a clone's key the first time (``accept-new``) and holding it to
that key for the rest of the run, so a second machine answering on the address later is
refused. Only the key in ``ci.clone_key_file`` is offered; no agent, no password, no
prompt. Each command has a timeout, past which ssh's whole process group is stopped, and
its output is read back up to 16 MiB (its error output's last 64 KiB).
"""

import os
import subprocess
import tempfile
from pathlib import Path

from opslab import process

# The command an instance installs opslab as (bootstrap's virtual environment).
OPSLAB = "/opt/opslab/bin/opslab"
MAX_OUTPUT = 16 * 1024 * 1024  # what a command's output may be (a catalog, JSON results)
ERRORS_KEPT = 64 * 1024  # the end of its error output


class ShellError(Exception):
    """The clone could not be reached, or the command did not finish in time."""


class Shell:
    """``user``'s SSH sessions to clones with ``key``, host keys kept in ``known_hosts``."""

    def __init__(self, user: str, key: str, known_hosts: Path, connect_timeout: float = 20.0
                 ) -> None:
        self.user = user
        self.key = key
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout

    def run(self, address: str, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """``command`` run on ``address``; ShellError when ssh itself failed (status 255)."""
        argv = ["ssh", "-i", self.key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
                "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                "-o", "LogLevel=ERROR", "-l", self.user, address, "--", command]
        # A clone runs the change's code as root: what it prints is kept to a bound, in
        # files, never whole in this process's memory.
        with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
            try:
                result = process.run(argv, timeout, env={**os.environ, "LC_ALL": "C"},
                                     stdout=output, stderr=errors)
            except process.TimedOut:
                raise ShellError(f"{command.split()[0]}... on {address} did not finish "
                                 f"within {timeout:g} s") from None
            except OSError as error:
                raise ShellError(f"ssh could not run: {error}") from None
            size = output.seek(0, os.SEEK_END)
            if size > MAX_OUTPUT:
                raise ShellError(f"{command.split()[0]}... on {address} printed "
                                 f"{size // 1024} KiB, over the {MAX_OUTPUT // 1024} KiB "
                                 "read back")
            output.seek(0)
            errors.seek(max(0, errors.seek(0, os.SEEK_END) - ERRORS_KEPT))
            stdout = output.read().decode("utf-8", errors="replace")
            stderr = errors.read().decode("utf-8", errors="replace")
        if result.returncode == 255:
            raise ShellError(f"ssh to {self.user}@{address} failed: {stderr.strip()[-500:]}")
        return subprocess.CompletedProcess(argv, result.returncode, stdout, stderr)

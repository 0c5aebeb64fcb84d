"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temp dir, a free port.

PostgreSQL refuses to run as root; when the tests run as root, the server
runs as the ``postgres`` system user that Debian's package creates.
"""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from opslab.slapd import free_port


def _binary(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (make test installs it)")
    return candidates[-1]


class ThrowawayPostgres:
    """``url`` is a SQLAlchemy URL of an empty database on a private server."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="opslab-postgres-"))
        self.port = free_port()
        self.url = f"postgresql+psycopg://opslab@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as_user, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = str(self.directory / "data")
        self._run(_binary("initdb"), "-D", data, "-A", "trust", "-U", "opslab", "--no-sync")
        self._run(_binary("pg_ctl"), "-D", data, "-w", "-t", "60", "-l",
                  str(self.directory / "log"), "-o",
                  f"-p {self.port} -h 127.0.0.1 -k {self.directory} -c fsync=off", "start")

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast",
                      "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

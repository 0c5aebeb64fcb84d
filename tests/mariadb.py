"""A throwaway MariaDB server for the tests: Debian's binaries, a temp dir, a socket."""

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

START_DEADLINE = 60.0
# As a deployment should: MariaDB's default character set is still latin1.
CREATE = "CREATE DATABASE IF NOT EXISTS opslab CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"


class ThrowawayMariaDB:
    """``url`` is a SQLAlchemy URL of an empty database ``opslab`` on a private server."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="opslab-mariadb-"))
        self.socket = self.directory / "socket"
        self.url = f"mysql+pymysql://root@/opslab?unix_socket={self.socket}&charset=utf8mb4"
        self._server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data = self.directory / "data"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}",
                        "--user=root", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, capture_output=True, timeout=120)
        self._server = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.socket}",
             "--skip-networking", "--user=root", "--skip-log-bin",
             "--innodb-flush-log-at-trx-commit=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_DEADLINE
        while self._query(CREATE) != 0:
            if time.monotonic() > deadline or self._server.poll() is not None:
                self.stop()
                raise RuntimeError("MariaDB did not start")
            time.sleep(0.2)

    def reset(self) -> None:
        """Drop and recreate the database, between tests."""
        self._query(f"DROP DATABASE opslab; {CREATE}")

    def _query(self, sql: str) -> int:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-u",
                               "root", "-e", sql], capture_output=True, timeout=30,
                              check=False).returncode

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=60)
            self._server = None
        shutil.rmtree(self.directory, ignore_errors=True)

"""``opslab api serve`` (gunicorn) on a loopback port: the one way the tests, the
benchmarks and the demo serve the API over real HTTP."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from opslab.slapd import ThrowawaySlapd, free_port

START_DEADLINE = 60.0  # seconds until gunicorn answers with every worker up
STOP_DEADLINE = 30.0  # seconds for a graceful stop before the whole group is killed


class ServedApi:
    """A gunicorn serving the API for ``slapd``, with its own SQLite database, its
    configuration, database and log (``api.log``) in ``work``."""

    def __init__(self, work: Path, slapd: ThrowawaySlapd, base: str,
                 settings: dict[str, dict[str, Any]] | None = None) -> None:
        """``settings``: more configuration, by section (``{"api": {"heads_ttl": 0}}``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = f"sqlite:///{work / 'api.sqlite'}"
        self.work = work
        self.log = work / "api.log"
        secret = work / "writer.secret"
        secret.write_text(slapd.root_password)
        secret.chmod(0o600)
        session_secret = work / "session.secret"
        session_secret.write_text(os.urandom(32).hex())
        session_secret.chmod(0o600)
        self.config = work / "api.yaml"
        config: dict[str, dict[str, Any]] = {
            "ldap": {"uri": slapd.ldapi_uri, "base": base},
            "api": {"database": self.database,
                    "writer_dn": slapd.root_dn, "writer_password_file": str(secret),
                    "domain": "example.org", "public_url": self.url,
                    "listen": f"127.0.0.1:{self.port}", "workers": 2,
                    "session_secret_file": str(session_secret)},
        }
        for section, values in (settings or {}).items():
            config[section] = {**config.get(section, {}), **values}
        self.workers: int = config["api"]["workers"]
        self.config.write_text(yaml.safe_dump(config))
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """gunicorn's master."""
        if self._server is None:
            raise RuntimeError("the API is not running")
        return self._server.pid

    def start(self) -> None:
        """Start gunicorn in a process group of its own; return once it answers with every
        worker up (the first answers before the others have booted)."""
        with open(self.log, "ab") as log:
            self._server = subprocess.Popen(
                [sys.executable, "-m", "opslab.cli", f"--config={self.config}", "api", "serve"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                # python -m puts its working directory first on sys.path: started from a
                # checkout, the checkout's opslab/ folder (without the component folders an
                # install maps into it) would hide the installed package.
                cwd=self.work)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            with contextlib.suppress(OSError):
                self.request("GET", "/v1/openapi.yaml")
                if len(self.worker_pids()) >= self.workers:
                    return
            if time.monotonic() > deadline or self._server.poll() is not None:
                self.stop()
                raise RuntimeError(f"opslab api serve did not start; its log:\n{self.log_tail()}")
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        """gunicorn's workers: the master's children, from /proc."""
        if self._server is None:
            return []
        children = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{name}/stat", encoding="ascii") as stream:
                        text = stream.read()
                    if int(text[text.rindex(")") + 2:].split()[1]) == self._server.pid:
                        children.append(int(name))
        return children

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop); SIGKILL to the whole group past the deadline.
        The master is reaped either way."""
        server, self._server = self._server, None
        if server is None:
            return
        server.terminate()
        try:
            server.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            # Not reaped yet, so its pid still names its group: the workers go too.
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    def kill(self) -> None:
        """kill -9 of gunicorn's whole group, as a crash or the OOM killer would: no request
        under way finishes. The master is reaped; start() brings the API back."""
        server, self._server = self._server, None
        if server is None:
            return
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines gunicorn wrote."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; HTTP errors are answers, not exceptions."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=data,
            headers={**(headers or {}), **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

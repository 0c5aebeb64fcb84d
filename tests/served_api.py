"""``opslab api serve`` (gunicorn) on a loopback port, for tests that need real HTTP."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from opslab.slapd import ThrowawaySlapd, free_port

START_DEADLINE = 30.0


class ServedApi:
    """A gunicorn serving the API for ``slapd``, with its own SQLite database."""

    def __init__(self, work: Path, slapd: ThrowawaySlapd, base: str,
                 settings: dict[str, dict[str, Any]] | None = None) -> None:
        """``settings``: more configuration, by section (``{"api": {"heads_ttl": 0}}``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        secret = work / "writer.secret"
        secret.write_text(slapd.root_password)
        self.config = work / "api.yaml"
        config: dict[str, dict[str, Any]] = {
            "ldap": {"uri": slapd.ldapi_uri, "base": base},
            "api": {"database": f"sqlite:///{work / 'api.sqlite'}",
                    "writer_dn": slapd.root_dn, "writer_password_file": str(secret),
                    "domain": "example.org",
                    "listen": f"127.0.0.1:{self.port}", "workers": 2},
        }
        for section, values in (settings or {}).items():
            config[section] = {**config.get(section, {}), **values}
        self.config.write_text(yaml.safe_dump(config))
        self._server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._server = subprocess.Popen(
            [sys.executable, "-m", "opslab.cli", f"--config={self.config}", "api", "serve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                self.request("GET", "/v1/openapi.yaml")
                return
            except OSError:
                if time.monotonic() > deadline or self._server.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=30)
            self._server = None

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

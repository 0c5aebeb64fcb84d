"""A real PowerDNS (Debian's pdns-server with pdns-backend-ldap) serving a test directory
in strict mode, on a loopback port, with no caches: what instances' names look like to
``dig``."""

import os
import signal
import subprocess
import time
from pathlib import Path

from opslab.slapd import ThrowawaySlapd, free_port

START_DEADLINE = 15.0
STOP_DEADLINE = 10.0
DIG_TIMEOUT = 10.0
SOA = "ns1.example.org hostmaster.example.org 1 1800 600 1209600 60"


class ThrowawayPowerDNS:
    """pdns_server in the foreground, in a process group of its own."""

    def __init__(self, workdir: Path, slapd: ThrowawaySlapd, base: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "pdns.conf").write_text("\n".join([
            "launch=ldap", f"ldap-host={slapd.ldapi_uri}", f"ldap-basedn={base}",
            "ldap-binddn=", "ldap-secret=", "ldap-method=strict", "ldap-timeout=2",
            f"local-address=127.0.0.1:{self.port}",
            # No caches: a directory change shows in the next answer.
            "cache-ttl=0", "negquery-cache-ttl=0", "query-cache-ttl=0",
            # Required with the LDAP backend, which keeps no zone cache.
            "zone-cache-refresh-interval=0", "consistent-backends=yes",
            "daemon=no", "guardian=no", "disable-syslog=yes", f"socket-dir={workdir}",
            "write-pid=no", "webserver=no", "api=no",
            # No security-status query to the outside world.
            "security-poll-suffix=", "loglevel=4", "default-ttl=60",
            "receiver-threads=1", "distributor-threads=1", ""]))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "pdns.log").open("wb")
        self._process = subprocess.Popen(
            ["pdns_server", f"--config-dir={self.workdir}"], stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"pdns_server exited: {self.log_tail()}")
            if self.dig("example.org", "SOA") or self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pdns_server did not answer in {START_DEADLINE} s: "
                           f"{self.log_tail()}")

    def _answers(self) -> bool:
        """Whether the server answers at all (REFUSED counts: it is up)."""
        result = subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "+tries=1",
                                 "+time=1", "example.org", "SOA"], capture_output=True,
                                text=True, timeout=DIG_TIMEOUT, check=False)
        return "status:" in result.stdout

    def dig(self, name: str, kind: str = "A") -> list[str]:
        """``dig +short NAME KIND``: the answer's lines (empty for none)."""
        result = subprocess.run(["dig", "@127.0.0.1", "-p", str(self.port), "+short",
                                 "+tries=1", "+time=2", name, kind], capture_output=True,
                                text=True, timeout=DIG_TIMEOUT, check=False)
        return result.stdout.split()

    def log_tail(self) -> str:
        path = self.workdir / "pdns.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(STOP_DEADLINE)
        self._process = None


def zone_ldif(base: str, zone: str) -> str:
    """The SOA entry of ``zone`` below ``ou=dns`` (strict mode serves PTRs from aRecord
    once the reverse zone has one)."""
    return (f"dn: dc={zone},ou=dns,{base}\nobjectClass: dNSDomain\n"
            f"objectClass: domainRelatedObject\ndc: {zone}\nassociatedDomain: {zone}\n"
            f"sOARecord: {SOA}\nnSRecord: ns1.example.org\n")

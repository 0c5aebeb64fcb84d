"""A throwaway OpenLDAP server for the demo, the tests and the benchmarks.

It runs Debian's real ``slapd`` from a private temporary directory: its own
cn=config built from LDIF, an MDB database with the indexes a production
directory would have, a free loopback port and an ldapi socket. Nothing of
the machine's own slapd (if any) is touched. The layout follows python-ldap's
``slapdtest`` module.
"""

import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path

import ldap
import ldap.modlist
from ldif import LDIFRecordList

SLAPD = os.environ.get("OPSLAB_SLAPD", "/usr/sbin/slapd")
SLAPADD = os.environ.get("OPSLAB_SLAPADD", "/usr/sbin/slapadd")
SYSTEM_SCHEMA_DIR = Path("/etc/ldap/schema")
STANDARD_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
MODULE_DIR = "/usr/lib/ldap"
START_DEADLINE = 15.0
STOP_DEADLINE = 10.0

# Equality indexes for every attribute the ENC and the API search on: without
# them slapd scans the whole database and warns about it.
INDEXES = (
    "objectClass eq",
    "cn,uid,associatedDomain,dc eq",
    "member,owner eq",
    "puppetClass,opslabProject eq",
    "uidNumber,gidNumber eq",
    # PowerDNS in strict mode answers a PTR query by searching (aRecord=ADDRESS).
    "aRecord eq",
)


class SlapdError(RuntimeError):
    """The throwaway slapd could not be configured, started or loaded."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on (for throwaway servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ThrowawaySlapd:
    """A slapd in a temporary directory, serving ``suffix``.

    ``schemas`` are cn=config LDIF files loaded after the standard ones;
    ``tls`` is a (certificate, key) pair of PEM files for StartTLS;
    ``urls`` are more ``ldap://ADDRESS:PORT`` to listen on (local instances reach
    this machine at an address of its own, not at 127.0.0.1).
    Use as a context manager, or call :meth:`start` and :meth:`destroy`.
    """

    def __init__(
        self,
        suffix: str,
        schemas: Sequence[Path] = (),
        workdir: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        urls: Sequence[str] = (),
    ) -> None:
        self.tls = tls
        self.urls = tuple(urls)
        self.suffix = suffix
        self.schemas = [Path(schema) for schema in schemas]
        self.root_dn = f"cn=admin,{suffix}"
        self.root_password = secrets.token_urlsafe(24)
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="opslab-slapd-"))
        self.port = free_port()
        self.ldap_uri = f"ldap://127.0.0.1:{self.port}"
        socket_path = str(self.workdir / "ldapi")
        self.ldapi_uri = "ldapi://" + urllib.parse.quote(socket_path, safe="")
        self._process: subprocess.Popen[bytes] | None = None
        self._configured = False

    @property
    def pid(self) -> int:
        """The process id of the running slapd."""
        if self._process is None:
            raise SlapdError("slapd is not running")
        return self._process.pid

    def __enter__(self) -> "ThrowawaySlapd":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def _config_ldif(self) -> str:
        tls = ""
        if self.tls:
            tls = f"olcTLSCertificateFile: {self.tls[0]}\nolcTLSCertificateKeyFile: {self.tls[1]}\n"
        blocks = [
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
            f"olcPidFile: {self.workdir}/slapd.pid\n{tls}",
            f"dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n"
            f"olcModulePath: {MODULE_DIR}\nolcModuleLoad: back_mdb\n",
            "dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n",
        ]
        schema_files = [SYSTEM_SCHEMA_DIR / f"{name}.ldif" for name in STANDARD_SCHEMAS]
        for schema in [*schema_files, *self.schemas]:
            blocks.append(schema.read_text(encoding="utf-8"))
        uid, gid = os.getuid(), os.getgid()
        blocks.append(
            "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
            "olcDatabase: {0}config\n"
            f"olcAccess: to * by dn.exact=gidNumber={gid}+uidNumber={uid},"
            "cn=peercred,cn=external,cn=auth manage by * break\n"
        )
        index_lines = "".join(f"olcDbIndex: {index}\n" for index in INDEXES)
        blocks.append(
            "dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
            "objectClass: olcMdbConfig\nolcDatabase: {1}mdb\n"
            f"olcSuffix: {self.suffix}\nolcRootDN: {self.root_dn}\n"
            f"olcRootPW: {self.root_password}\nolcDbDirectory: {self.workdir}/data\n"
            "olcDbMaxSize: 4294967296\n"
            f"{index_lines}"
            "olcAccess: to attrs=userPassword by self write by anonymous auth by * none\n"
            "olcAccess: to * by * read\n"
        )
        return "\n".join(block.strip() + "\n" for block in blocks)

    def configure(self) -> None:
        """Write cn=config and the empty database directory (once)."""
        if self._configured:
            return
        config_dir = self.workdir / "slapd.d"
        config_dir.mkdir(parents=True)
        (self.workdir / "data").mkdir()
        config_file = self.workdir / "config.ldif"
        config_file.write_text(self._config_ldif(), encoding="utf-8")
        config_file.chmod(0o600)
        self._run([SLAPADD, "-n0", "-F", str(config_dir), "-l", str(config_file)])
        self._configured = True

    def preload(self, ldif_files: Iterable[Path]) -> None:
        """Bulk-load entries with ``slapadd`` before the first start (fast)."""
        if self._process is not None:
            raise SlapdError("preload only works while slapd is stopped")
        self.configure()
        for ldif_file in ldif_files:
            self._run([SLAPADD, "-q", "-F", str(self.workdir / "slapd.d"),
                       "-b", self.suffix, "-l", str(ldif_file)])

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            raise SlapdError(f"{Path(command[0]).name} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> None:
        """Start slapd (configuring it first if needed) and wait until it answers."""
        self.configure()
        if self._process is not None:
            return
        self._process = subprocess.Popen(
            [SLAPD, "-F", str(self.workdir / "slapd.d"),
             "-h", " ".join([self.ldap_uri, self.ldapi_uri, *self.urls]), "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self._process.poll() is not None:
                assert self._process.stderr is not None
                error = self._process.stderr.read().decode(errors="replace")
                self._process = None
                raise SlapdError(f"slapd exited at start: {error.strip()[-2000:]}")
            try:
                self.connect().unbind_s()
                return
            except ldap.LDAPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SlapdError(f"slapd did not answer within {START_DEADLINE:g} s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop slapd; its data stays, so :meth:`start` brings it back as it was."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test froze it
            process.terminate()
            try:
                process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_DEADLINE)
        if process.stderr is not None:
            process.stderr.close()

    def destroy(self) -> None:
        """Stop slapd and remove everything it had on disk."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def connect(self) -> "ldap.ldapobject.LDAPObject":
        """A connection bound as the root DN over the ldapi socket."""
        connection = ldap.initialize(self.ldapi_uri)
        connection.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
        connection.timeout = 30
        connection.simple_bind_s(self.root_dn, self.root_password)
        return connection

    def create_base(self) -> None:
        """Create the suffix entry and the ou=people, ou=projects, ou=hosts and ou=dns
        branches."""
        top = self.suffix.split(",")[0].partition("=")[2]
        branches = "".join(
            f"\ndn: ou={ou},{self.suffix}\nobjectClass: organizationalUnit\nou: {ou}\n"
            for ou in ("people", "projects", "hosts", "dns")
        )
        self.add_ldif(
            f"dn: {self.suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
            f"dc: {top}\no: {top}\n{branches}"
        )

    def add_ldif(self, text: str) -> list[str]:
        """Add the entries of an LDIF text over the wire; returns their DNs."""
        records = LDIFRecordList(io.StringIO(text))
        records.parse()
        connection = self.connect()
        try:
            for dn, entry in records.all_records:
                connection.add_s(dn, ldap.modlist.addModlist(entry))
        finally:
            connection.unbind_s()
        return [dn for dn, _ in records.all_records]


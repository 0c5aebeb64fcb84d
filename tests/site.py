"""A site for local instances: what an installation serves its instances, on this machine.

A local instance reaches this machine and nothing else (no forwarding, no NAT),
so everything its user-data and bootstrap ask for is served here, on one
address of this machine that every instance reaches through its own veth
(``ADDRESS``, on the loopback interface), by the real servers a site
would run:

- **nginx** with TLS: the API behind it as docs/operations.md deploys it
  (``https://ADDRESS:PORT``), and the site's files on a second port:
  ``bootstrap.sh``, a wheelhouse (opslab and its base dependencies, built for
  Debian's python3, the instances' interpreter) and the Puppet repository over
  git's dumb HTTP protocol;
- **slapd** with StartTLS, listening on ``ADDRESS`` too;
- **apt-cacher-ng**: the instances' apt proxy to the Debian mirror.

The certificates come from a throwaway CA; instances trust it through the
site's cloud-config (``instances.cloud_config_file``: ``ca_certs``, the apt
proxy, and a pip configuration pointing at the wheelhouse), which a real
installation writes for its own CA, proxy and package index.
"""

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from opslab.instances import image
from opslab.slapd import ThrowawaySlapd
from tests.certificates import ThrowawayCa
from tests.conftest import BASE, EXAMPLE_DIRECTORY, PASSWORDS, SCHEMAS, add_people
from tests.remote import Remote
from tests.served_api import ServedApi

REPO = Path(__file__).resolve().parent.parent
ADDRESS = "10.212.0.1"
LABEL = "lo:opslab-site"
# The installation the site's API tags its servers with.
INSTALLATION = "opslab-site-test"
# Debian's interpreter: instances run the same release's, so wheels built with it
# (python-ldap's C extension) install there.
DEBIAN_PYTHON = "/usr/bin/python3"
# Kept between test runs: Debian packages fetched once, and python-ldap compiled once.
APT_CACHE = Path(os.environ.get("OPSLAB_TEST_APT_CACHE", "/var/cache/opslab-test-apt"))
PIP_CACHE = Path(os.environ.get("OPSLAB_TEST_PIP_CACHE", "/var/cache/opslab-test-pip"))
START_DEADLINE = 30.0
COMMAND_TIMEOUT = 600.0


class SiteError(Exception):
    """A part of the site could not be set up; the message says which and why."""


def free_port(address: str = ADDRESS, below: int | None = None) -> int:
    """A TCP port on ``address`` nothing listens on (``below``: under that number)."""
    for _ in range(100):
        with socket.socket() as sock:
            try:
                sock.bind((address, secrets.choice(range(20000, below)) if below else 0))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
            return port
    raise SiteError(f"no free port on {address}")


def wait_for_port(address: str, port: int, process: subprocess.Popen[bytes], what: str,
                  log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, port), 1):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SiteError(f"{what} did not start listening on {address}:{port}: {tail}")
        time.sleep(0.1)


def command(*arguments: str | Path, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(argument) for argument in arguments], cwd=cwd,
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                            env=env, check=False)
    if result.returncode != 0:
        raise SiteError(f"{' '.join(map(str, arguments[:3]))} failed: "
                        f"{(result.stderr or result.stdout)[-2000:]}")
    return result.stdout


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server started in a session of its own, with everything it started."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def _body(raw: bytes) -> Any:
    """An answer's JSON; nginx's own pages (a 502 while the API is down) as text."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


class Person(NamedTuple):
    """Someone the API created, with the password it answered and a key of their own."""

    uid: str
    password: str
    key: Path


def ssh(address: str, person: Person, script: str,
        timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``script`` run over SSH on ``address`` as ``person``, offering their key only."""
    return subprocess.run(
        ["ssh", "-i", str(person.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", f"{person.uid}@{address}", script],
        capture_output=True, text=True, timeout=timeout, check=False)


class Site:
    """Every server of the site, started by :meth:`start` and stopped by :meth:`stop`."""

    def __init__(self, work: Path, local_image: Path, local_root: Path) -> None:
        self.work = work
        self.local_image = local_image
        self.local_root = local_root
        self.files = work / "files"
        self.certificates: ThrowawayCa | None = None
        self.slapd: ThrowawaySlapd | None = None
        self.api: ServedApi | None = None
        self.remote: Remote | None = None
        # Ports on ADDRESS, chosen once the address exists (start).
        self.ldap_port = self.api_port = self.files_port = self.apt_port = 0
        self._nginx: subprocess.Popen[bytes] | None = None
        self._apt: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"https://{ADDRESS}:{self.api_port}"

    @property
    def files_url(self) -> str:
        return f"https://{ADDRESS}:{self.files_port}"

    @property
    def ldap_uri(self) -> str:
        return f"ldap://{ADDRESS}:{self.ldap_port}"

    def start(self, api_settings: dict[str, dict[str, Any]] | None = None) -> None:
        """Bring the whole site up (stopping what was started if a part fails)."""
        try:
            self._address()
            self.ldap_port, self.api_port, self.files_port = (free_port() for _ in range(3))
            # apt-cacher-ng 3.7 cannot bind a port above 32767 (it resolves it as a signed short).
            self.apt_port = free_port(below=32768)
            self.certificates = ThrowawayCa(self.work / "tls", ADDRESS, "opslab test site")
            self._directory()
            self._repository()
            self._wheelhouse()
            shutil.copy(REPO / "instance-agent" / "bootstrap.sh", self.files / "bootstrap.sh")
            self._apt_proxy()
            self._api(api_settings or {})
            self._web()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop(self._nginx)
        if self.api is not None:
            self.api.stop()
        stop(self._apt)
        if self.slapd is not None:
            self.slapd.destroy()
        subprocess.run(["ip", "addr", "del", f"{ADDRESS}/32", "dev", "lo"], capture_output=True,
                       timeout=30, check=False)

    # --- the parts ------------------------------------------------------------------------

    def _address(self) -> None:
        """ADDRESS on the loopback interface (this kernel may have no dummy interfaces):
        instances reach it through their veth, as any address of this machine (one left by
        a killed run is taken again)."""
        subprocess.run(["ip", "addr", "del", f"{ADDRESS}/32", "dev", "lo"], capture_output=True,
                       timeout=30, check=False)
        command("ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo", "label", LABEL)

    def _directory(self) -> None:
        assert self.certificates is not None
        self.slapd = ThrowawaySlapd(BASE, SCHEMAS, workdir=self.work / "slapd",
                                    tls=(self.certificates.certificate, self.certificates.key),
                                    urls=[self.ldap_uri])
        self.slapd.start()
        self.slapd.create_base()
        self.slapd.add_ldif(EXAMPLE_DIRECTORY.read_text(encoding="utf-8"))
        add_people(self.slapd)

    def _repository(self) -> None:
        """The example control repository, served over git's dumb HTTP protocol (static
        files, refreshed by update-server-info after every push)."""
        self.files.mkdir(parents=True, exist_ok=True)
        self.remote = Remote(self.work / "control")
        control = REPO / "examples" / "control-repo"
        files = {str(path.relative_to(control)): path.read_text(encoding="utf-8")
                 for path in sorted(control.rglob("*")) if path.is_file()}
        self.remote.commit("production", files, "the example control repository")
        self.publish()

    def publish(self) -> None:
        """Serve the remote as it is now (after a test pushed to it)."""
        assert self.remote is not None
        served = self.files / "puppet.git"
        shutil.rmtree(served, ignore_errors=True)
        command("git", "clone", "--quiet", "--bare", "--mirror", self.remote.bare, served)
        command("git", f"--git-dir={served}", "update-server-info")

    def _wheelhouse(self) -> None:
        """opslab's base install as wheels for Debian's python3: opslab from this checkout,
        python-ldap (compiled against this machine's libldap, the instances' release) and
        PyYAML."""
        wheels = self.files / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        PIP_CACHE.mkdir(parents=True, exist_ok=True)
        # From a copy: setuptools builds in the source's build/ folder, whose leftovers
        # (modules since deleted) would go into the wheel.
        source = self.work / "source"
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__"))
        command(DEBIAN_PYTHON, "-m", "pip", "wheel", "--quiet", "--wheel-dir", wheels,
                "--cache-dir", PIP_CACHE, source,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        if not list(wheels.glob("opslab-*.whl")):
            raise SiteError(f"pip wheel made no opslab wheel in {wheels}")

    def _apt_proxy(self) -> None:
        """apt-cacher-ng with a configuration of its own, to the mirror the image uses."""
        conf = self.work / "apt-cacher-ng"
        shutil.copytree("/etc/apt-cacher-ng", conf)
        (conf / "backends_debian").write_text(image.mirror_from_apt() + "/\n")
        APT_CACHE.mkdir(parents=True, exist_ok=True)
        log_dir = self.work / "apt-cacher-ng-log"
        log_dir.mkdir()
        log = log_dir / "console.log"
        with open(log, "wb") as output:
            self._apt = subprocess.Popen(
                ["/usr/sbin/apt-cacher-ng", "-c", str(conf), "ForeGround=1",
                 f"CacheDir={APT_CACHE}", f"LogDir={log_dir}", f"Port={self.apt_port}",
                 f"BindAddress={ADDRESS}", f"PidFile={self.work}/apt-cacher-ng.pid",
                 f"SocketPath={self.work}/apt-cacher-ng.socket"],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        wait_for_port(ADDRESS, self.apt_port, self._apt, "apt-cacher-ng", log)

    def _api(self, settings: dict[str, dict[str, Any]]) -> None:
        assert self.slapd is not None
        assert self.remote is not None
        cloud_config = self.work / "site-cloud-config.yaml"
        cloud_config.write_text(yaml.safe_dump(self.cloud_config(), sort_keys=False))
        instances = {
            "provider": "local", "installation": INSTALLATION,
            "image": "debian-12", "flavor": "small",
            "local_root": str(self.local_root), "local_image": str(self.local_image),
            "bootstrap_url": f"{self.files_url}/bootstrap.sh", "package": "opslab",
            "ldap_uri": self.ldap_uri, "remote": f"{self.files_url}/puppet.git",
            "bootstrap_options": ["--ldap-starttls"],
            "cloud_config_file": str(cloud_config), "launch_timeout": 120.0,
        }
        configured: dict[str, dict[str, Any]] = {
            "api": {"public_url": self.api_url, "default_project": "tools",
                    "trusted_proxies": 1},
            "branches": {"remote": str(self.remote.bare)},
            "instances": instances,
        }
        for section, values in settings.items():
            configured[section] = {**configured.get(section, {}), **values}
        (self.work / "api").mkdir()
        self.api = ServedApi(self.work / "api", self.slapd, BASE, configured)
        self.api.start()

    def request(self, method: str, path: str, body: Any = None, *, as_: str,
                password: str | None = None, timeout: float = 300.0) -> tuple[int, Any]:
        """(status, JSON body) of one request to the API as an instance makes it: through
        nginx over TLS, checked against the site's CA; as a person (basic auth, the
        example people's passwords unless ``password``)."""
        assert self.certificates is not None
        context = ssl.create_default_context(cafile=str(self.certificates.ca))
        credentials = base64.b64encode(
            f"{as_}:{password or PASSWORDS[as_]}".encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.api_url}{path}", data=data, method=method,
            headers={"Authorization": f"Basic {credentials}",
                     **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return response.status, _body(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _body(error.read())

    def new_person(self, uid: str, work: Path) -> Person:
        """A person operations (olga) create through the API, with a new key of their own."""
        key = work / f"{uid}-key"
        command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", uid, "-f", key)
        status, made = self.request("POST", "/v1/people", {
            "uid": uid, "name": f"{uid.title()} Example",
            "ssh_keys": [key.with_suffix(".pub").read_text().strip()]}, as_="olga")
        if status != 201:
            raise SiteError(f"creating {uid}: {status} {made}")
        return Person(uid, made["password"], key)

    def cloud_config(self) -> dict[str, Any]:
        """What every instance of this site gets besides the template: trust in the site's
        CA, the apt proxy, pip pointed at the wheelhouse (with no other index), and the fact
        the example control repository asks for."""
        assert self.certificates is not None
        pip = (f"[global]\nno-index = true\nfind-links = {self.files_url}/wheels/\n"
               "cert = /etc/ssl/certs/ca-certificates.crt\n")
        return {
            "ca_certs": {"trusted": [self.certificates.ca.read_text()]},
            "apt": {"proxy": f"http://{ADDRESS}:{self.apt_port}"},
            "write_files": [
                {"path": "/etc/pip.conf", "content": pip, "permissions": "0644"},
                # The example control repository writes only below this fact's directory.
                {"path": "/etc/facter/facts.d/opslab_root.txt",
                 "content": "opslab_root=/srv\n", "permissions": "0644"},
            ],
        }

    def _web(self) -> None:
        """nginx: TLS in front of the API, and the site's files."""
        assert self.certificates is not None
        assert self.api is not None
        prefix = self.work / "nginx"
        for temporary in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / temporary).mkdir(parents=True, exist_ok=True)
        tls = (f"ssl_certificate {self.certificates.certificate};\n"
               f"    ssl_certificate_key {self.certificates.key};\n")
        # Workers as root: the files are below the test run's private temporary directory.
        (prefix / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {prefix}/access.log;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  types {{ text/html html; text/plain sh; application/octet-stream whl; }}
  default_type application/octet-stream;
  server {{
    listen {ADDRESS}:{self.api_port} ssl;
    {tls}
    location / {{
      proxy_pass http://127.0.0.1:{self.api.port};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_read_timeout 300s;
    }}
  }}
  server {{
    listen {ADDRESS}:{self.files_port} ssl;
    {tls}
    root {self.files};
    autoindex on;
  }}
}}
""")
        log = prefix / "console.log"
        with open(log, "wb") as output:
            self._nginx = subprocess.Popen(
                ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                 str(prefix / "error.log"), "-g", "daemon off;"],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        for port in (self.api_port, self.files_port):
            wait_for_port(ADDRESS, port, self._nginx, "nginx", prefix / "error.log")


@contextlib.contextmanager
def running_site(work: Path, local_image: Path, local_root: Path,
                 api_settings: dict[str, dict[str, Any]] | None = None) -> Iterator[Site]:
    site = Site(work, local_image, local_root)
    site.start(api_settings)
    try:
        yield site
    finally:
        site.stop()


if __name__ == "__main__":  # python -m tests.site WORKDIR IMAGE ROOT: up until interrupted
    with running_site(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])) as up:
        print(f"API {up.api_url}, files {up.files_url}, directory {up.ldap_uri}", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})

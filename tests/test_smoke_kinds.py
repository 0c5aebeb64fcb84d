"""Each kind of smoke check against real things on this machine: sockets the test binds,
HTTP(S) servers it runs, processes it starts, files it writes, commands, dpkg's database,
accounts it creates. Every kind passes when the thing is as declared and fails, saying
why, when it is not."""

import contextlib
import grp
import hashlib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opslab.smoketests.kinds import service
from opslab.smoketests.spec import CheckFileError
from tests.checkfiles import load, marker, one, run, run_one, values
from tests.local_accounts import free_uids, require_root
from tests.processes import settle

# -- port ----------------------------------------------------------------------------------


@contextlib.contextmanager
def bound(address: str, protocol: str = "tcp", listen: bool = True) -> Iterator[int]:
    """A socket bound to ``address`` (and listening, for TCP) while the block runs; its port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.bind((address, 0))
        if protocol == "tcp" and listen:
            sock.listen()
        yield sock.getsockname()[1]


def has_ipv6() -> bool:
    try:
        with bound("::1"):
            return True
    except OSError:
        return False


def test_a_tcp_listener_is_found_on_its_port_and_its_address(tmp_path: Path) -> None:
    with bound("127.0.0.1") as port:
        anywhere = run_one(tmp_path, "port", {"port": port})
        there = run_one(tmp_path, "port", {"port": port, "address": "127.0.0.1"})

    assert anywhere.status == "passed", anywhere.message
    assert anywhere.message == f"tcp port {port} listens on 127.0.0.1"
    assert there.status == "passed", there.message


def test_a_listener_on_one_address_does_not_listen_on_another(tmp_path: Path) -> None:
    with bound("127.0.0.2") as port:
        result = run_one(tmp_path, "port", {"port": port, "address": "127.0.0.1"})

    assert result.status == "failed"
    assert result.message == f"tcp port {port} listens on 127.0.0.2, not on 127.0.0.1"


def test_a_wildcard_listener_listens_on_every_address(tmp_path: Path) -> None:
    with bound("0.0.0.0") as port:  # noqa: S104 (the point of the test)
        result = run_one(tmp_path, "port", {"port": port, "address": "127.0.0.9"})

    assert result.status == "passed", result.message
    assert result.message == f"tcp port {port} listens on 0.0.0.0"


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 on this machine")
def test_ipv6_listeners_specific_and_wildcard(tmp_path: Path) -> None:
    with bound("::1") as port:
        loopback = run_one(tmp_path, "port", {"port": port, "address": "::1"})
        not_ipv4 = run_one(tmp_path, "port", {"port": port, "address": "127.0.0.1"})
    with bound("::") as port:
        # Linux's default (not IPV6_V6ONLY): the IPv6 wildcard takes IPv4 connections too.
        dual = run_one(tmp_path, "port", {"port": port, "address": "127.0.0.1"})
    with bound("0.0.0.0") as port:  # noqa: S104 (the point of the test)
        ipv4_only = run_one(tmp_path, "port", {"port": port, "address": "::1"})

    assert loopback.status == "passed", loopback.message
    assert not_ipv4.status == "failed"
    assert not_ipv4.message.endswith("listens on ::1, not on 127.0.0.1")
    assert dual.status == "passed", dual.message
    assert ipv4_only.status == "failed"
    assert ipv4_only.message == f"tcp port {port} listens on 0.0.0.0, not on ::1"


def test_a_closed_port_and_a_socket_that_does_not_listen_fail(tmp_path: Path) -> None:
    with bound("127.0.0.1", listen=False) as port:
        unlistened = run_one(tmp_path, "port", {"port": port})
    closed = run_one(tmp_path, "port", {"port": port})

    for result in (unlistened, closed):
        assert result.status == "failed"
        assert result.message == f"nothing listens on tcp port {port}"


def test_a_connection_left_open_is_not_a_listener(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
    with client, accepted:  # both ends of the connection stay, on the listener's port
        result = run_one(tmp_path, "port", {"port": port})

    assert result.status == "failed"
    assert result.message == f"nothing listens on tcp port {port}"


def test_a_udp_socket_listens_on_udp_only(tmp_path: Path) -> None:
    with bound("127.0.0.1", "udp") as port:
        udp = run_one(tmp_path, "port", {"port": port, "protocol": "udp", "address": "127.0.0.1"})
        tcp = run_one(tmp_path, "port", {"port": port})
    gone = run_one(tmp_path, "port", {"port": port, "protocol": "udp"})

    assert udp.status == "passed", udp.message
    assert udp.message == f"udp port {port} listens on 127.0.0.1"
    assert tcp.status == "failed"
    assert tcp.message == f"nothing listens on tcp port {port}"
    assert gone.message == f"nothing listens on udp port {port}"


def test_from_outside_a_port_is_connected_to(tmp_path: Path) -> None:
    with bound("127.0.0.1") as port, bound("127.0.0.2") as elsewhere:
        reached = run_one(tmp_path, "port", {"port": port}, outside=True, target="127.0.0.1")
        # Bound to another address only: unreachable at the target, as for a user.
        missed = run_one(tmp_path, "port", {"port": elsewhere}, outside=True,
                         target="127.0.0.1")

    assert reached.status == "passed", reached.message
    assert reached.message == f"127.0.0.1 port {port} accepts connections"
    assert missed.status == "failed"
    assert missed.message == f"127.0.0.1 port {elsewhere}: Connection refused"


def test_a_udp_port_cannot_be_checked_from_outside(tmp_path: Path) -> None:
    with pytest.raises(CheckFileError, match="a UDP port cannot be seen from outside"):
        one(tmp_path, "port", {"port": 53, "protocol": "udp"}, outside=True)


def test_an_address_filled_in_that_is_no_address_fails_saying_so(tmp_path: Path) -> None:
    with bound("127.0.0.1") as port:
        result = run_one(tmp_path, "port", {"port": port, "address": "${param.bind}"},
                         params={"bind": "localhost"})

    assert result.status == "failed"
    assert result.message == "address 'localhost' is not an IP address"


# -- http ----------------------------------------------------------------------------------

# path: status, headers, body
PAGES: dict[str, tuple[int, dict[str, str], str]] = {
    "/": (200, {"X-Smoke": "yes", "Content-Type": "text/plain; charset=utf-8"},
          "hello from the smoke site\n"),
    "/broken": (500, {}, "Traceback (most recent call last):\n  oops\n"),
    "/moved": (302, {"Location": "/"}, "see /\n"),
}


class Site:
    """An HTTP server and an HTTPS one (a self-signed certificate) serving PAGES, in threads."""

    def __init__(self, certificate: Path, key: Path) -> None:
        self.release = threading.Event()  # lets /slow answer
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.answer(body=True)

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def answer(self, body: bool) -> None:
                if self.path == "/slow":
                    release.wait(10)
                status, headers, text = PAGES.get(self.path, (404, {}, "no such page\n"))
                data = text.encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certificate, key)
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        self.servers[1].socket = tls.wrap_socket(self.servers[1].socket, server_side=True)
        self.http, self.https = (f"{scheme}://127.0.0.1:{server.server_address[1]}"
                                 for scheme, server in zip(("http", "https"), self.servers,
                                                           strict=True))
        self.threads = [threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
                        for server in self.servers]
        for server, thread in zip(self.servers, self.threads, strict=True):
            server.daemon_threads = True
            thread.start()

    def stop(self) -> None:
        self.release.set()
        for server, thread in zip(self.servers, self.threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join(10)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = folder / "site.pem", folder / "site.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=smoke test site",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True, timeout=60)
    return certificate, key


@pytest.fixture(scope="module")
def site(certificate: tuple[Path, Path]) -> Iterator[Site]:
    served = Site(*certificate)
    yield served
    served.stop()


def test_an_answer_with_its_status_body_and_header_passes(tmp_path: Path, site: Site) -> None:
    url = f"{site.http}/"
    result = run_one(tmp_path, "http", {"url": url, "status": 200, "body": ["hello", "smoke site"],
                                        "body_absent": "Traceback",
                                        "headers": {"X-Smoke": "yes",
                                                    "content-type": "text/plain"}})
    head = run_one(tmp_path, "http", {"url": url, "method": "HEAD"})

    assert result.status == "passed", result.message
    assert result.message == f"{url} answered 200"
    assert head.status == "passed", head.message


def test_a_body_without_the_text_fails_and_shows_the_body(tmp_path: Path, site: Site) -> None:
    url = f"{site.http}/"
    result = run_one(tmp_path, "http", {"url": url, "body": "goodbye"})

    assert result.status == "failed"
    assert result.message == f"{url}: the body does not contain 'goodbye'"
    assert "hello from the smoke site" in result.output


def test_a_broken_page_fails_on_its_status_and_on_its_body(tmp_path: Path, site: Site) -> None:
    url = f"{site.http}/broken"
    status = run_one(tmp_path, "http", {"url": url})
    body = run_one(tmp_path, "http", {"url": url, "status": [200, 500],
                                      "body_absent": "Traceback"})
    listed = run_one(tmp_path, "http", {"url": f"{site.http}/nowhere", "status": [404, 410]})

    assert status.status == "failed"
    assert status.message == f"{url} answered 500, not 200"
    assert "oops" in status.output
    assert body.status == "failed"
    assert body.message == f"{url}: the body contains 'Traceback'"
    assert listed.status == "passed", listed.message


def test_a_header_that_differs_or_is_missing_fails(tmp_path: Path, site: Site) -> None:
    url = f"{site.http}/"
    differs = run_one(tmp_path, "http", {"url": url, "headers": {"X-Smoke": "no"}})
    missing = run_one(tmp_path, "http", {"url": url, "headers": {"X-Absent": "yes"}})

    assert differs.status == missing.status == "failed"
    assert differs.message == f"{url}: header X-Smoke is 'yes', which does not contain 'no'"
    assert missing.message == f"{url}: the answer has no header X-Absent"


def test_a_redirect_is_followed_unless_told_not_to(tmp_path: Path, site: Site) -> None:
    url = f"{site.http}/moved"
    followed = run_one(tmp_path, "http", {"url": url, "body": "hello from"})
    not_followed = run_one(tmp_path, "http", {"url": url, "redirects": False})
    the_redirect = run_one(tmp_path, "http", {"url": url, "redirects": False, "status": 302,
                                              "headers": {"Location": "/"}, "body": "see /"})

    assert followed.status == "passed", followed.message
    assert followed.message == f"{url} answered 200"
    assert not_followed.status == "failed"
    assert not_followed.message == f"{url} answered 302, not 200"
    assert the_redirect.status == "passed", the_redirect.message


def test_a_page_that_does_not_answer_in_time_fails(tmp_path: Path, site: Site) -> None:
    url = f"{site.http}/slow"
    result = run_one(tmp_path, "http", {"url": url}, timeout=0.3)

    assert result.status == "failed"
    assert result.message == f"{url}: no answer in time"
    assert result.duration < 3


def test_nothing_listening_fails_with_the_reason(tmp_path: Path) -> None:
    with bound("127.0.0.1", listen=False) as port:
        url = f"http://127.0.0.1:{port}/"
        result = run_one(tmp_path, "http", {"url": url})

    assert result.status == "failed"
    assert result.message == f"{url}: Connection refused"


def test_proxies_in_the_environment_are_not_used(tmp_path: Path, site: Site,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with bound("127.0.0.1", listen=False) as dead:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{dead}")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        result = run_one(tmp_path, "http", {"url": f"{site.http}/"})

    assert result.status == "passed", result.message


def test_a_self_signed_certificate_is_not_trusted_unless_told(
        tmp_path: Path, site: Site, certificate: tuple[Path, Path]) -> None:
    url = f"{site.https}/"
    verified = run_one(tmp_path, "http", {"url": url})
    unverified = run_one(tmp_path, "http", {"url": url, "verify": False, "body": "hello"})
    with_ca = run_one(tmp_path, "http", {"url": url, "ca_file": str(certificate[0])})

    assert verified.status == "failed"
    assert verified.message.startswith(f"{url}: the certificate is not trusted (")
    assert "self-signed" in verified.message
    assert unverified.status == "passed", unverified.message
    assert with_ca.status == "passed", with_ca.message


def test_a_ca_file_that_cannot_be_read_fails_saying_so(tmp_path: Path, site: Site) -> None:
    missing = tmp_path / "no-such-ca.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    absent = run_one(tmp_path, "http", {"url": f"{site.https}/", "ca_file": str(missing)})
    unusable = run_one(tmp_path, "http", {"url": f"{site.https}/", "ca_file": str(garbage)})

    assert absent.status == unusable.status == "failed"
    assert absent.message.startswith(f"ca_file {missing} cannot be used: ")
    assert "No such file" in absent.message
    assert unusable.message.startswith(f"ca_file {garbage} cannot be used: ")


def test_a_url_that_is_not_http_is_refused_when_read(tmp_path: Path) -> None:
    with pytest.raises(CheckFileError, match="must start with http:// or https://"):
        one(tmp_path, "http", {"url": "file:///etc/passwd"})


# -- processes (and services without systemd) -----------------------------------------------


def started(argv: list[str], name: str, **options: Any) -> "subprocess.Popen[bytes]":
    """``argv`` started, once it runs as ``name`` (its exec done)."""
    child = subprocess.Popen(argv, **options)
    give_up = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/comm").read_text().strip() != name:
        assert time.monotonic() < give_up, f"{argv} did not start"
        time.sleep(0.01)
    return child


class Sleepers:
    """Real processes to look for: copies of sleep named for the test (one with a name
    longer than the kernel keeps), and a sleep of nobody's."""

    def __init__(self, folder: Path) -> None:
        self.short = f"smk{os.getpid() % 100000}"
        self.long = f"opslab-smoke-daemon-{os.getpid()}"
        self.marker = marker()
        self.nobody_marker = marker() + "1"
        self.children: list[subprocess.Popen[bytes]] = []
        for name in (self.short, self.long):
            shutil.copy("/bin/sleep", folder / name)
            self.children.append(started([str(folder / name), self.marker], name[:15]))
        self.nobody = started(["/bin/sleep", self.nobody_marker], "sleep", user="nobody")
        self.children.append(self.nobody)

    def stop(self) -> None:
        for child in self.children:
            child.kill()
            child.wait()


@pytest.fixture(scope="module")
def sleepers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sleepers]:
    require_root()
    running = Sleepers(tmp_path_factory.mktemp("bin"))
    yield running
    running.stop()


def test_a_process_is_found_by_name_command_and_user(tmp_path: Path, sleepers: Sleepers) -> None:
    pid = sleepers.children[0].pid
    by_name = run_one(tmp_path, "process", {"name": sleepers.short})
    by_all = run_one(tmp_path, "process", {"name": sleepers.short, "command": sleepers.marker,
                                           "user": "root"})
    nobodys = run_one(tmp_path, "process", {"command": sleepers.nobody_marker, "user": "nobody"})
    by_uid = run_one(tmp_path, "process", {"command": sleepers.nobody_marker,
                                           "user": pwd.getpwnam("nobody").pw_uid})

    assert by_name.status == "passed", by_name.message
    assert by_name.message == f"1 process(es) named {sleepers.short!r}: pid {pid}"
    assert by_all.status == "passed", by_all.message
    assert nobodys.status == "passed", nobodys.message
    assert nobodys.message.endswith(f"pid {sleepers.nobody.pid}")
    assert by_uid.status == "passed", by_uid.message


def test_a_process_of_another_user_or_name_is_not_it(tmp_path: Path, sleepers: Sleepers) -> None:
    other_user = run_one(tmp_path, "process", {"name": sleepers.short, "user": "nobody"})
    other_name = run_one(tmp_path, "process", {"name": sleepers.short + "x"})
    no_user = run_one(tmp_path, "process", {"name": sleepers.short,
                                            "user": "opslab-no-such-user"})

    assert other_user.status == other_name.status == no_user.status == "failed"
    assert other_user.message == f"no process named {sleepers.short!r} of user nobody runs"
    assert other_name.message == f"no process named {sleepers.short + 'x'!r} runs"
    assert no_user.message == "there is no user 'opslab-no-such-user'"


def test_a_process_that_must_not_run_fails_when_it_does(tmp_path: Path,
                                                        sleepers: Sleepers) -> None:
    runs = run_one(tmp_path, "process", {"command": sleepers.nobody_marker, "running": False})
    does_not = run_one(tmp_path, "process", {"name": sleepers.short + "x", "running": False})

    assert runs.status == "failed"
    assert runs.message == (f"1 process(es) with {sleepers.nobody_marker!r} in its command "
                            f"line run: pid {sleepers.nobody.pid}")
    assert does_not.status == "passed", does_not.message


def test_a_long_process_name_is_matched_as_the_kernel_keeps_it(tmp_path: Path,
                                                               sleepers: Sleepers) -> None:
    # The kernel keeps 15 characters of a name (what ps and pgrep show).
    result = run_one(tmp_path, "process", {"name": sleepers.long})

    assert result.status == "passed", result.message
    assert result.message.endswith(f"pid {sleepers.children[1].pid}")


def test_a_process_user_is_its_real_user(tmp_path: Path) -> None:
    require_root()
    seconds = marker()
    nobody = pwd.getpwnam("nobody").pw_uid
    # Real uid nobody, effective root: a set-user-ID program nobody started.
    child = started(["/bin/sleep", seconds], "sleep",
                    preexec_fn=lambda: os.setresuid(nobody, 0, 0))
    try:
        as_nobody = run_one(tmp_path, "process", {"command": seconds, "user": "nobody"})
        as_root = run_one(tmp_path, "process", {"command": seconds, "user": "root"})
    finally:
        child.kill()
        child.wait()

    assert as_nobody.status == "passed", as_nobody.message
    assert as_root.status == "failed"


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Services as on a machine without systemd (whether this one has it or not)."""
    monkeypatch.setattr(service, "has_systemd", lambda: False)


@pytest.mark.usefixtures("no_systemd")
def test_without_systemd_a_service_runs_when_its_process_does(tmp_path: Path,
                                                              sleepers: Sleepers) -> None:
    by_name = run_one(tmp_path, "service", {"name": sleepers.short})
    by_process = run_one(tmp_path, "service", {"name": "sleeper",
                                               "process": {"command": sleepers.nobody_marker,
                                                           "user": "nobody"}})
    long_named = run_one(tmp_path, "service", {"name": f"{sleepers.long}.service"})

    assert by_name.status == "passed", by_name.message
    assert by_name.message == (f"service {sleepers.short} runs (no systemd: process named "
                               f"{sleepers.short!r})")
    assert by_process.status == "passed", by_process.message
    assert long_named.status == "passed", long_named.message


@pytest.mark.usefixtures("no_systemd")
def test_without_systemd_a_service_fails_for_the_right_reason(tmp_path: Path,
                                                              sleepers: Sleepers) -> None:
    absent = run_one(tmp_path, "service", {"name": "opslab-nothing"})
    running = run_one(tmp_path, "service", {"name": sleepers.short, "running": False})
    enabled = run_one(tmp_path, "service", {"name": sleepers.short, "enabled": True})
    stopped = run_one(tmp_path, "service", {"name": "opslab-nothing", "running": False})

    assert absent.status == running.status == enabled.status == "failed"
    assert absent.message == ("service opslab-nothing does not run (no systemd here; no "
                              "process named 'opslab-nothing')")
    assert running.message == (f"service {sleepers.short} runs (no systemd here; process "
                               f"named {sleepers.short!r}: pid {sleepers.children[0].pid})")
    assert enabled.message == (f"whether service {sleepers.short} is enabled cannot be known "
                               f"without systemd")
    assert stopped.status == "passed", stopped.message


STAND_IN_SYSTEMCTL = """#!/bin/sh
# systemctl ACTION [OPTIONS] -- UNIT, as the service kind calls it
eval "unit=\\${$#}"
case "$1 $unit" in
  "is-active web") echo active ;;
  "is-enabled web") echo disabled; exit 1 ;;
  "is-active down") echo inactive; exit 3 ;;
  "status down") echo "o down.service - stopped for the test"; exit 3 ;;
  *) echo "stand-in systemctl: unexpected $*" >&2; exit 4 ;;
esac
"""


def test_with_systemd_systemctl_says_whether_it_runs_and_is_enabled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine may have no systemd; a stand-in systemctl answers as the real one does.
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "systemctl").write_text(STAND_IN_SYSTEMCTL)
    (folder / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.setattr(service, "has_systemd", lambda: True)

    active = run_one(tmp_path, "service", {"name": "web", "enabled": False})
    not_enabled = run_one(tmp_path, "service", {"name": "web", "enabled": True})
    down = run_one(tmp_path, "service", {"name": "down"})
    down_wanted = run_one(tmp_path, "service", {"name": "down", "running": False})

    assert active.status == "passed", active.message
    assert active.message == "service web is active and disabled"
    assert not_enabled.status == "failed"
    assert not_enabled.message == "service web is disabled, not enabled"
    assert down.status == "failed"
    assert down.message == "service down is inactive, not running"
    assert "stopped for the test" in down.output
    assert down_wanted.status == "passed", down_wanted.message


@pytest.mark.skipif(not service.has_systemd(), reason="systemd is not this machine's manager")
def test_with_real_systemd_its_journal_runs(tmp_path: Path) -> None:
    result = run_one(tmp_path, "service", {"name": "systemd-journald"})
    absent = run_one(tmp_path, "service", {"name": "opslab-no-such-unit"})

    assert result.status == "passed", result.message
    assert absent.status == "failed"
    assert absent.message.startswith("service opslab-no-such-unit is ")


def test_a_service_cannot_be_checked_from_outside(tmp_path: Path) -> None:
    with pytest.raises(CheckFileError, match="a service cannot be seen from outside"):
        one(tmp_path, "service", {"name": "nginx"}, outside=True)


# -- files ---------------------------------------------------------------------------------

CONTENT = "port = 8080\nname = smoke\nsecret = hunter2\n"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A file, a link to it, a dangling link and a folder beside it."""
    path = tmp_path / "files" / "smoke.conf"
    path.parent.mkdir()
    path.write_text(CONTENT)
    path.chmod(0o640)
    (path.parent / "link").symlink_to(path)
    (path.parent / "dangling").symlink_to(path.parent / "nothing")
    (path.parent / "folder").mkdir()
    return path


def test_a_file_as_declared_passes(tmp_path: Path, conf: Path) -> None:
    info = conf.stat()
    result = run_one(tmp_path, "file", {
        "path": str(conf), "type": "file", "mode": "0640",
        "owner": pwd.getpwuid(info.st_uid).pw_name, "group": grp.getgrgid(info.st_gid).gr_name,
        "contains": ["port = 8080", "name = smoke"], "absent": "password",
        "matches": "^port = [0-9]+$", "sha256": hashlib.sha256(CONTENT.encode()).hexdigest()})
    by_number = run_one(tmp_path, "file", {"path": str(conf), "owner": info.st_uid,
                                           "group": info.st_gid})

    assert result.status == "passed", result.message
    assert result.message == f"{conf} is as it should be"
    assert by_number.status == "passed", by_number.message


@pytest.mark.parametrize(("fields", "message"), [
    ({"mode": "0644"}, "{path} has mode 0640, not 0644"),
    ({"mode": "640"}, None),
    ({"owner": "nobody"}, "{path} has owner root, not nobody"),
    ({"group": "nogroup"}, "{path} has group root, not nogroup"),
    ({"contains": ["port = 8080", "port = 9090"]}, "{path} does not contain 'port = 9090'"),
    ({"absent": "hunter2"}, "{path} contains 'hunter2'"),
    ({"matches": "^port = [a-z]+$"}, "no line of {path} matches '^port = [a-z]+$'"),
    ({"type": "directory"}, "{path} is not a directory"),
    ({"type": "symlink"}, "{path} is not a symlink"),
    ({"exists": False}, "{path} exists"),
])
def test_a_file_that_differs_fails_saying_how(tmp_path: Path, conf: Path, fields: dict[str, Any],
                                              message: str | None) -> None:
    require_root()  # the file is root's
    result = run_one(tmp_path, "file", {"path": str(conf), **fields})

    if message is None:
        assert result.status == "passed", result.message
    else:
        assert result.status == "failed"
        assert result.message == message.format(path=conf)
        assert "secret =" not in result.message  # what the file holds is never shown


def test_a_wrong_digest_fails_without_showing_the_content(tmp_path: Path, conf: Path) -> None:
    wanted = hashlib.sha256(b"something else").hexdigest()
    result = run_one(tmp_path, "file", {"path": str(conf), "sha256": wanted,
                                        "contains": "nothing of the kind"})

    assert result.status == "failed"
    assert result.message == (f"{conf} has sha256 {hashlib.sha256(CONTENT.encode()).hexdigest()}"
                              f", not {wanted}")
    assert "hunter2" not in result.message + result.output


def test_a_file_owned_by_someone_else(tmp_path: Path, conf: Path) -> None:
    require_root()
    os.chown(conf, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    result = run_one(tmp_path, "file", {"path": str(conf), "owner": "nobody",
                                        "group": "nogroup"})
    root = run_one(tmp_path, "file", {"path": str(conf), "owner": "root"})

    assert result.status == "passed", result.message
    assert root.message == f"{conf} has owner nobody, not root"


def test_a_missing_file(tmp_path: Path, conf: Path) -> None:
    path = conf.parent / "nothing"
    missing = run_one(tmp_path, "file", {"path": str(path)})
    absent = run_one(tmp_path, "file", {"path": str(path), "exists": False})

    assert missing.status == "failed"
    assert missing.message == f"{path} does not exist"
    assert absent.status == "passed", absent.message


def test_symlinks_are_looked_at_as_links_only_with_type_symlink(tmp_path: Path,
                                                                conf: Path) -> None:
    link, dangling = conf.parent / "link", conf.parent / "dangling"
    as_link = run_one(tmp_path, "file", {"path": str(link), "type": "symlink"})
    followed = run_one(tmp_path, "file", {"path": str(link), "type": "file", "mode": "0640",
                                          "contains": "name = smoke"})
    dangling_link = run_one(tmp_path, "file", {"path": str(dangling), "type": "symlink"})
    dangling_file = run_one(tmp_path, "file", {"path": str(dangling)})
    folder = run_one(tmp_path, "file", {"path": str(conf.parent / "folder"),
                                        "type": "directory"})
    not_a_file = run_one(tmp_path, "file", {"path": str(conf.parent / "folder"), "type": "file"})

    for result in (as_link, followed, dangling_link, folder):
        assert result.status == "passed", result.message
    assert dangling_file.message == f"{dangling} does not exist"
    assert not_a_file.message == f"{conf.parent / 'folder'} is not a file"


def test_a_digest_filled_in_from_a_parameter(tmp_path: Path, conf: Path) -> None:
    digest = hashlib.sha256(CONTENT.encode()).hexdigest()
    right = run_one(tmp_path, "file", {"path": str(conf), "sha256": "${param.digest}"},
                    params={"digest": digest})
    wrong = run_one(tmp_path, "file", {"path": str(conf), "sha256": "${param.digest}"},
                    params={"digest": "0" * 64})

    assert right.status == "passed", right.message
    assert wrong.status == "failed"
    assert wrong.message.endswith(f", not {'0' * 64}")


# -- commands ------------------------------------------------------------------------------


def test_a_command_that_exits_and_says_what_it_should_passes(tmp_path: Path) -> None:
    result = run_one(tmp_path, "command", {"run": "echo all is well; echo a warning >&2",
                                           "stdout": "all is well", "stderr": "warning",
                                           "stdout_absent": "error"})

    assert result.status == "passed", result.message
    assert result.message == "'echo all is well; echo a warning >&2' exited 0"


@pytest.mark.parametrize(("fields", "message"), [
    ({"run": "echo half; exit 3"}, "'echo half; exit 3' exited 3, not 0"),
    ({"run": "echo half; exit 3", "exit_status": [0, 1]},
     "'echo half; exit 3' exited 3, not 0 or 1"),
    ({"run": "echo half; exit 3", "exit_status": [0, 3]}, None),
    ({"run": "echo half", "stdout": "whole"}, "the stdout of 'echo half' does not contain 'whole'"),
    ({"run": "echo half", "stderr": "half"}, "the stderr of 'echo half' does not contain 'half'"),
    ({"run": "echo half", "stdout_absent": "hal"}, "the stdout of 'echo half' contains 'hal'"),
])
def test_a_command_fails_on_its_status_and_output(tmp_path: Path, fields: dict[str, Any],
                                                  message: str | None) -> None:
    result = run_one(tmp_path, "command", fields)

    if message is None:
        assert result.status == "passed", result.message
    else:
        assert result.status == "failed"
        assert result.message == message
        assert "half" in result.output


def test_a_command_as_a_list_runs_without_a_shell(tmp_path: Path) -> None:
    result = run_one(tmp_path, "command", {"run": ["printf", "%s|", "a b", "$HOME", ";"],
                                           "stdout": "a b|$HOME|;|"})
    missing = run_one(tmp_path, "command", {"run": ["/opslab/no/such/program"]})

    assert result.status == "passed", result.message
    assert missing.status == "failed"
    assert "/opslab/no/such/program" in missing.message + missing.output


def test_a_command_has_a_plain_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSLAB_SMOKE_SECRET", "hunter2")
    result = run_one(tmp_path, "command", {"run": "env", "stdout": "LANG=C.UTF-8",
                                           "stdout_absent": "OPSLAB_SMOKE_SECRET"})

    assert result.status == "passed", result.message


def test_a_command_past_its_timeout_is_stopped_with_its_children(tmp_path: Path) -> None:
    seconds = marker()
    run = f"echo started; sleep {seconds} & sleep {seconds}; echo never"
    result = run_one(tmp_path, "command", {"run": run}, timeout=0.5)

    assert result.status == "failed"
    assert result.message.endswith("ran past 0.5 s and was stopped")
    assert result.output == "started\n"
    assert result.duration < 5
    assert settle(f"sleep {seconds}") == []


def test_a_command_runs_as_another_user(tmp_path: Path) -> None:
    require_root()
    nobody = pwd.getpwnam("nobody")
    result = run_one(tmp_path, "command", {"run": 'id -un; echo "home=$HOME"; touch /root/x',
                                           "user": "nobody", "exit_status": 1,
                                           "stdout": ["nobody", f"home={nobody.pw_dir}"],
                                           "stderr": "Permission denied"})
    no_user = run_one(tmp_path, "command", {"run": "true", "user": "opslab-no-such-user"})

    assert result.status == "passed", result.message
    assert no_user.status == "failed"
    assert no_user.message == "there is no user 'opslab-no-such-user'"


def test_a_command_of_another_user_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    require_root()
    seconds = marker()
    result = run_one(tmp_path, "command", {"run": f"sleep {seconds} & sleep {seconds}",
                                           "user": "nobody"}, timeout=0.5)

    assert result.status == "failed"
    assert result.message.endswith("ran past 0.5 s and was stopped")
    assert settle(f"sleep {seconds}") == []


# -- packages ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dpkg_version() -> str:
    """The version of dpkg that is installed, as dpkg itself says."""
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system")
    return subprocess.run(["dpkg-query", "--show", "--showformat=${Version}", "dpkg"],
                          check=True, capture_output=True, text=True, timeout=60).stdout


def test_an_installed_package_at_its_version(tmp_path: Path, dpkg_version: str) -> None:
    results = [run_one(tmp_path, "package", {"name": "dpkg", "version": constraint})
               for constraint in (f">= {dpkg_version}", f"= {dpkg_version}",
                                  f"= 0:{dpkg_version}", f"<= {dpkg_version}",
                                  # Debian's order: ~ before everything, an epoch after all
                                  f"> {dpkg_version}~", "< 1:0", f"!= {dpkg_version}+1")]
    plain = run_one(tmp_path, "package", {"name": "dpkg"})

    for result in results:
        assert result.status == "passed", result.message
    assert plain.message == f"package dpkg is installed ({dpkg_version})"


@pytest.mark.parametrize("constraint", ["> {v}", "< {v}", "!= {v}", "< {v}~", ">= 1:0",
                                        "= {v}+1"])
def test_an_installed_package_at_another_version(tmp_path: Path, dpkg_version: str,
                                                 constraint: str) -> None:
    wanted = constraint.format(v=dpkg_version)
    result = run_one(tmp_path, "package", {"name": "dpkg", "version": wanted})

    assert result.status == "failed"
    assert result.message == f"package dpkg is at {dpkg_version}, not {wanted}"


def test_a_package_that_is_not_installed(tmp_path: Path, dpkg_version: str) -> None:
    missing = run_one(tmp_path, "package", {"name": "opslab-no-such-package"})
    absent = run_one(tmp_path, "package", {"name": "opslab-no-such-package", "installed": False})
    present = run_one(tmp_path, "package", {"name": "dpkg", "installed": False})

    assert missing.status == "failed"
    assert missing.message == "package opslab-no-such-package is not installed"
    assert absent.status == "passed", absent.message
    assert present.status == "failed"
    assert present.message == f"package dpkg is installed ({dpkg_version})"


@pytest.mark.parametrize("fields", [{"name": "Not_A_Package"}, {"name": "dpkg", "version": "~> 1"},
                                    {"name": "dpkg", "version": "1.0"}])
def test_a_package_check_that_makes_no_sense_is_refused(tmp_path: Path,
                                                        fields: dict[str, str]) -> None:
    with pytest.raises(CheckFileError, match=r"package: (name|version) "):
        one(tmp_path, "package", fields)


# -- users and groups ----------------------------------------------------------------------


class Accounts:
    """A user of the test's, in a group of the test's as a listed member."""

    def __init__(self) -> None:
        self.user = f"smk{os.getpid() % 100000}u"
        self.group = f"smk{os.getpid() % 100000}g"
        self.uid, self.gid = free_uids(2)
        commands = [["groupadd", "--gid", str(self.gid), self.group],
                    ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                     "/usr/sbin/nologin", "--uid", str(self.uid), "--user-group", self.user],
                    ["usermod", "--append", "--groups", self.group, self.user]]
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=60)

    def remove(self) -> None:
        subprocess.run(["userdel", self.user], check=False, capture_output=True, timeout=60)
        subprocess.run(["groupdel", self.group], check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    require_root()
    created = Accounts()
    yield created
    created.remove()


def test_an_existing_user_with_its_uid_home_shell_and_groups(tmp_path: Path,
                                                             accounts: Accounts) -> None:
    root = pwd.getpwnam("root")
    nobody = pwd.getpwnam("nobody")
    as_root = run_one(tmp_path, "user", {"name": "root", "uid": root.pw_uid,
                                         "home": root.pw_dir, "shell": root.pw_shell})
    primary = run_one(tmp_path, "user", {"name": "nobody",
                                         "groups": grp.getgrgid(nobody.pw_gid).gr_name})
    member = run_one(tmp_path, "user", {"name": accounts.user,
                                        "groups": [accounts.user, accounts.group]})

    assert as_root.status == "passed", as_root.message
    assert as_root.message == f"user root exists (uid {root.pw_uid})"
    assert primary.status == "passed", primary.message
    assert member.status == "passed", member.message


def test_a_user_that_differs_fails_saying_how(tmp_path: Path, accounts: Accounts) -> None:
    uid = run_one(tmp_path, "user", {"name": accounts.user, "uid": accounts.uid + 1})
    shell = run_one(tmp_path, "user", {"name": accounts.user, "shell": "/bin/bash"})
    groups = run_one(tmp_path, "user", {"name": "nobody", "groups": [accounts.group]})
    missing = run_one(tmp_path, "user", {"name": "opslab-no-such-user"})
    absent = run_one(tmp_path, "user", {"name": "opslab-no-such-user", "exists": False})
    present = run_one(tmp_path, "user", {"name": accounts.user, "exists": False})

    assert uid.message == f"user {accounts.user} has uid {accounts.uid}, not {accounts.uid + 1}"
    assert shell.message == f"user {accounts.user} has shell /usr/sbin/nologin, not /bin/bash"
    assert groups.message.startswith(f"user nobody is not in {accounts.group} (only in ")
    assert missing.message == "there is no user 'opslab-no-such-user'"
    assert present.message == f"user {accounts.user} exists (uid {accounts.uid})"
    for result in (uid, shell, groups, missing, present):
        assert result.status == "failed"
    assert absent.status == "passed", absent.message


def test_a_group_with_its_gid_and_members(tmp_path: Path, accounts: Accounts) -> None:
    listed = run_one(tmp_path, "group", {"name": accounts.group, "gid": accounts.gid,
                                         "members": accounts.user})
    primary = run_one(tmp_path, "group", {"name": accounts.user, "members": [accounts.user]})

    assert listed.status == "passed", listed.message
    assert listed.message == f"group {accounts.group} exists (gid {accounts.gid})"
    assert primary.status == "passed", primary.message


def test_a_group_that_differs_fails_saying_how(tmp_path: Path, accounts: Accounts) -> None:
    gid = run_one(tmp_path, "group", {"name": accounts.group, "gid": accounts.gid + 1})
    members = run_one(tmp_path, "group", {"name": accounts.group,
                                          "members": [accounts.user, "nobody", "root"]})
    missing = run_one(tmp_path, "group", {"name": "opslab-no-such-group"})
    absent = run_one(tmp_path, "group", {"name": "opslab-no-such-group", "exists": False})
    present = run_one(tmp_path, "group", {"name": accounts.group, "exists": False})

    assert gid.message == f"group {accounts.group} has gid {accounts.gid}, not {accounts.gid + 1}"
    assert members.message == f"nobody, root not in group {accounts.group}"
    assert missing.message == "there is no group 'opslab-no-such-group'"
    assert present.message == f"group {accounts.group} exists (gid {accounts.gid})"
    for result in (gid, members, missing, present):
        assert result.status == "failed"
    assert absent.status == "passed", absent.message


def test_checks_of_every_kind_run_side_by_side(tmp_path: Path, conf: Path, site: Site) -> None:
    with bound("127.0.0.1") as port:
        checks = load(tmp_path, [
            {"name": "port", "port": {"port": port}},
            {"name": "http", "http": {"url": f"{site.http}/"}},
            {"name": "file", "file": {"path": str(conf)}},
            {"name": "command", "command": {"run": "true"}},
            {"name": "user", "user": {"name": "root"}},
            {"name": "group", "group": {"name": "root"}},
            {"name": "process", "process": {"name": "opslab-none", "running": False}},
        ])
        results = run(checks, filled=values())

    assert [(result.check.name, result.status) for result in results] == [
        (check.name, "passed") for check in checks]

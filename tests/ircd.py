"""Real IRC servers for the log bot's tests, on free loopback ports, from configurations
of their own: Debian's ngircd (with a TLS port of a throwaway CA's), and Debian's InspIRCd
linked to Atheme's services for SASL and services accounts (both as ``nobody``); a test
client that speaks IRC over a plain socket; and the bot as a real ``opslab logbot``
process."""

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from opslab.slapd import free_port
from tests.certificates import ThrowawayCa

NGIRCD = "/usr/sbin/ngircd"
INSPIRCD = "/usr/sbin/inspircd"
ATHEME = "/usr/bin/atheme-services"
ADDRESS = "127.0.0.1"
START_DEADLINE = 30.0  # seconds until a started server accepts connections
STOP_DEADLINE = 15.0


def wait_for_port(port: int, alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((ADDRESS, port), 1):
            return
        if not alive():
            raise RuntimeError(f"{what} exited while starting")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {START_DEADLINE:g} s")


class Ngircd:
    """ngircd in the foreground on ``port`` (cleartext) and ``tls_port`` (with ``ca``'s
    certificate); :meth:`start` again after :meth:`stop` serves the same ports."""

    def __init__(self, work: Path, ca: ThrowawayCa) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port()
        self.log = work / "ngircd.log"
        self.config = work / "ngircd.conf"
        # No penalties: the server must not slow a test client's flood down, so that what
        # limits the bot's replies is the bot. No DNS, ident or PAM: a loopback test.
        self.config.write_text(f"""[Global]
Name = irc.test.example
Info = opslab logbot tests
Listen = {ADDRESS}
Ports = {self.port}
MotdPhrase = "opslab logbot tests"
[Limits]
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 120
PongTimeout = 60
MaxConnectionsIP = 0
[Options]
DNS = no
Ident = no
PAM = no
[SSL]
CertFile = {ca.certificate}
KeyFile = {ca.key}
Ports = {self.tls_port}
""")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([NGIRCD, "--nodaemon", "--config", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        process = self.process
        wait_for_port(self.port, lambda: process.poll() is None, "ngircd")
        wait_for_port(self.tls_port, lambda: process.poll() is None, "ngircd (TLS)")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # in case a test froze it
        process.terminate()
        try:
            process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as a server that hangs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


def _unprivileged() -> dict[str, Any]:
    """Popen's arguments that run a server as ``nobody`` when the tests run as root (neither
    InspIRCd nor Atheme runs as root)."""
    return {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}


class Services:
    """InspIRCd (cap, sasl, services_account, account-tag) linked to Atheme (NickServ,
    SaslServ with PLAIN) on ``port``: a network whose services hand out accounts, in a
    directory of their own (``nobody`` must reach it: not the tests' private tmp)."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="opslab-ircservices-"))
        self.port = free_port()
        link = free_port()
        password = base64.b16encode(os.urandom(8)).decode()
        (self.work / "data").mkdir()
        self.inspircd_config = self.work / "inspircd.conf"
        self.inspircd_config.write_text(f"""<config format="xml">
<server name="irc.test.example" description="opslab logbot tests" network="OpslabTest">
<admin name="tests" nick="tests" email="tests@example.org">
<bind address="{ADDRESS}" port="{self.port}" type="clients">
<bind address="{ADDRESS}" port="{link}" type="servers">
<connect allow="*" timeout="60" threshold="1000" commandrate="100000" pingfreq="120"
  hardsendq="1048576" softsendq="65536" recvq="65536" localmax="100" globalmax="100"
  useident="no" resolvehostnames="no">
<dns server="{ADDRESS}" timeout="1">
<pid file="{self.work}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
  target="{self.work}/inspircd.log">
<options><security><performance>
<limits maxnick="30">
<module name="cap"><module name="sasl"><module name="services_account">
<module name="ircv3"><module name="ircv3_accounttag"><module name="spanningtree">
<link name="services.test.example" ipaddr="{ADDRESS}" port="{link}"
  allowmask="127.0.0.0/8" sendpass="{password}" recvpass="{password}">
<uline server="services.test.example" silent="yes">
<sasl target="services.test.example" requiressl="no">
""")
        modules = ["protocol/inspircd", "backend/opensex", "crypto/pbkdf2v2", "nickserv/main",
                   "nickserv/identify", "nickserv/register", "saslserv/main",
                   "saslserv/plain"]
        self.atheme_config = self.work / "atheme.conf"
        self.atheme_config.write_text("".join(f'loadmodule "modules/{name}";\n'
                                              for name in modules) + f"""
serverinfo {{
    name = "services.test.example"; desc = "opslab logbot test services"; numeric = "00A";
    recontime = 1; netname = "OpslabTest"; hidehostsuffix = "users.test";
    adminname = "tests"; adminemail = "tests@example.org";
    registeremail = "tests@example.org"; mta = "/bin/true";
    loglevel = {{ error; info; admin; network; }};
    maxlogins = 5; maxusers = 100; mdlimit = 30; emaillimit = 10; emailtime = 300;
    auth = none; casemapping = rfc1459;
}};
uplink "irc.test.example" {{ host = "{ADDRESS}"; password = "{password}"; port = {link}; }};
nickserv {{ nick = "NickServ"; user = "NickServ"; host = "services.test.example";
    real = "Nickname Services"; maxnicks = 5; expire = 30; }};
saslserv {{ nick = "SaslServ"; user = "SaslServ"; host = "services.test.example";
    real = "SASL Authentication Agent"; }};
general {{ flood_msgs = 0; flood_time = 10; ratelimit_uses = 0; ratelimit_period = 60;
    kline_time = 7; commit_interval = 5; language = "en";
    uplink_sendq_limit = 1048576; }};
""")
        if os.geteuid() == 0:
            for path in (self.work, *self.work.iterdir()):
                os.chown(path, *_nobody())
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        with open(self.work / "servers.log", "ab") as log:
            ircd = subprocess.Popen([INSPIRCD, f"--config={self.inspircd_config}", "--nofork"],
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    **_unprivileged())
            self.processes.append(ircd)
            wait_for_port(self.port, lambda: ircd.poll() is None, "inspircd")
            self.processes.append(subprocess.Popen(
                [ATHEME, "-n", "-c", str(self.atheme_config), "-D", str(self.work / "data"),
                 "-l", str(self.work / "atheme.log"), "-p", str(self.work / "atheme.pid")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **_unprivileged()))
        deadline = time.monotonic() + START_DEADLINE
        while "finished synching with uplink" not in self.log():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"Atheme did not link to InspIRCd:\n{self.log()[-2000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.work / "atheme.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def register(self, account: str, password: str) -> None:
        """A services account ``account`` (NickServ REGISTER from that nick)."""
        client = IrcClient(self.port, account, None)
        try:
            client.send(f"PRIVMSG NickServ :REGISTER {password} {account}@example.org")
            client.wait_for(lambda line: " 900 " in line, 30)  # logged in: registered
        finally:
            client.close()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        shutil.rmtree(self.work, ignore_errors=True)


def _nobody() -> tuple[int, int]:
    import grp
    import pwd

    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


class IrcClient:
    """A person in the channel: a plain socket, lines in and out, nothing hidden."""

    def __init__(self, port: int, nick: str, channel: str | None,
                 sasl: tuple[str, str] | None = None) -> None:
        """Registered as ``nick`` (logged in to the services account ``sasl``, (account,
        password), with SASL PLAIN), in ``channel`` if one is named."""
        self.nick = nick
        self.sock = socket.create_connection((ADDRESS, port), timeout=10)
        self.buffer = b""
        self.seen: list[str] = []
        if sasl is not None:
            self.send("CAP REQ :sasl")
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :test client")
        if sasl is not None:
            self.wait_for(lambda line: " ACK " in line, 30)
            self.send("AUTHENTICATE PLAIN")
            self.wait_for(lambda line: line.startswith("AUTHENTICATE"), 30)
            self.send("AUTHENTICATE " + base64.b64encode(
                f"\0{sasl[0]}\0{sasl[1]}".encode()).decode())
            self.wait_for(lambda line: f" 903 {nick} " in line, 30)
            self.send("CAP END")
        self.wait_for(lambda line: f" 001 {nick} " in line, 30)
        if channel is not None:
            self.send(f"JOIN {channel}")
            self.wait_for(lambda line: f" 366 {nick} {channel} " in line, 30)  # end of NAMES

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        self.sock.sendall(data + b"\r\n")

    def lines(self, timeout: float) -> list[str]:
        """The lines that arrive within ``timeout`` seconds (answering the server's pings)."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return []
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\r\n")
        found = []
        for raw in complete:
            line = raw.decode(errors="replace")
            if line.startswith("PING "):
                self.send("PONG " + line[5:])
            found.append(line)
        self.seen += found
        return found

    def wait_for(self, matches: Callable[[str], bool], deadline: float) -> str:
        """The first line (seen before or arriving within ``deadline`` s) that matches."""
        for line in self.seen:
            if matches(line):
                self.seen.remove(line)
                return line
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            for line in self.lines(min(1.0, max(give_up - time.monotonic(), 0.01))):
                if matches(line):
                    self.seen.remove(line)
                    return line
        raise TimeoutError(f"no matching line within {deadline:g} s; seen: {self.seen[-10:]}")

    def replies(self, bot: str, channel: str) -> list[str]:
        """The texts of the bot's messages to ``channel`` seen so far, taken from the list."""
        prefix = f":{bot}!"
        mine = [line for line in self.seen
                if line.startswith(prefix) and f" PRIVMSG {channel} :" in line]
        for line in mine:
            self.seen.remove(line)
        return [line.partition(f" PRIVMSG {channel} :")[2] for line in mine]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT :done")
        self.sock.close()


class BotProcess:
    """``opslab logbot`` as a process of its own, its configuration and log in ``work``."""

    def __init__(self, work: Path, settings: dict[str, Any]) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.nick: str = settings["nick"]
        self.log = work / "logbot.log"
        self.config = work / "opslab.yaml"
        self.config.write_text(yaml.safe_dump({"logbot": settings}))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "opslab.cli", f"--config={self.config}", "logbot"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Not the checkout: python -m puts its working directory first on sys.path.
                cwd=self.work, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, needle: str, deadline: float = 60.0, count: int = 1) -> None:
        give_up = time.monotonic() + deadline
        while self.text().count(needle) < count:
            if time.monotonic() > give_up:
                raise TimeoutError(f"{needle!r} not logged {count} times within {deadline:g} s;"
                                   f" the bot's log:\n{self.text()[-3000:]}")
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"opslab logbot exited; its log:\n{self.text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        process.terminate()
        try:
            return process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

"""A real IRC server for the log bot's tests (Debian's ngircd, as this user, on free
loopback ports, from a configuration of its own), a throwaway CA for its TLS port, a
test client that speaks IRC over a plain socket, and the bot as a real ``opslab logbot``
process."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from opslab.slapd import free_port

NGIRCD = "/usr/sbin/ngircd"
ADDRESS = "127.0.0.1"
START_DEADLINE = 30.0  # seconds until a started server accepts connections
STOP_DEADLINE = 15.0


def command(*arguments: str | Path) -> None:
    subprocess.run([str(argument) for argument in arguments], check=True,
                   capture_output=True, timeout=60)


class ThrowawayCa:
    """A CA of the test's own and a server certificate for 127.0.0.1 (an IP subject
    alternative name, which Python's ssl checks)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.pem"
        self.certificate = directory / "irc.pem"
        self.key = directory / "irc.key"
        ca_key, request, extensions = (directory / "ca.key", directory / "irc.csr",
                                       directory / "irc.ext")
        command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca_key, "-out", self.ca,
                "-days", "2", "-subj", "/CN=opslab logbot test CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        command("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", self.key, "-out", request, "-subj", f"/CN={ADDRESS}")
        extensions.write_text(f"subjectAltName=IP:{ADDRESS}\nextendedKeyUsage=serverAuth\n"
                              "basicConstraints=CA:FALSE\n")
        command("openssl", "x509", "-req", "-in", request, "-CA", self.ca, "-CAkey", ca_key,
                "-CAcreateserial", "-out", self.certificate, "-days", "2",
                "-extfile", extensions)
        self.key.chmod(0o600)


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


class IrcClient:
    """A person in the channel: a plain socket, lines in and out, nothing hidden."""

    def __init__(self, port: int, nick: str, channel: str) -> None:
        self.nick = nick
        self.sock = socket.create_connection((ADDRESS, port), timeout=10)
        self.buffer = b""
        self.seen: list[str] = []
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :test client")
        self.wait_for(lambda line: f" 001 {nick} " in line, 30)
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

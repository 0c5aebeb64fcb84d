"""A stand-in for Gerrit's SSH daemon: ``gerrit version`` and ``gerrit stream-events``,
on a loopback port in threads of this process, built on paramiko's server classes.

It speaks what the project's wire contract says a Gerrit SSH server speaks
(``contracts/gerrit-jenkins-openstack.md``, section 1.1, and the Gerrit Trigger
plugin's ``gerrit version``): public-key authentication only (any other method is
refused), for one user and one public key; a host key of its own, generated when it
starts; an SSH *exec* request whose command is exactly ``gerrit version`` (answered
``gerrit version 3.9.1``, exit status 0) or ``gerrit stream-events`` (one JSON object
per ``\\n``-terminated UTF-8 line, no envelope, no heartbeat, never ending on its own;
exit status 130 when the client sends Ctrl-C ``\\x03`` or closes its stdin); any other
command gets an error on stderr and exit status 1. No replay: an event pushed while no
stream is open is lost, as with Gerrit.

What a test controls:

- :meth:`push` an event (an object, sent as one JSON line) or a raw line (a string or
  bytes, sent as it is, for malformed lines) to every open stream;
- :meth:`drop` every connection at once (the TCP connections are closed under the
  client, as a restarting Gerrit or a broken network does);
- :meth:`go_silent`: the open streams stay open but nothing more is written to them
  (a stalled stream; section 8, complaint 4);
- :attr:`refusing`: while true, a new TCP connection is closed as soon as it is accepted,
  before the SSH banner;
- :meth:`wait_for_streams` waits, with a deadline, for the n-th stream to open;
  :attr:`connections` (the times TCP connections were accepted) and :attr:`commands`
  tell what clients did.
"""

import contextlib
import json
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paramiko

VERSION = "3.9.1"
USER = "opslab-ci"


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: "GerritSshStandIn") -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.server.user and key.get_base64() == self.server.user_key.get_base64():
            return paramiko.AUTH_SUCCESSFUL
        self.server.refused_auths += 1
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode("utf-8", "replace")
        self.server.commands.append(text)
        threading.Thread(target=self.server._exec, args=(channel, text), daemon=True,
                         name=f"gerrit-ssh-standin {text}").start()
        return True


class _Stream:
    """One open ``gerrit stream-events``."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.silent = False
        self.lock = threading.Lock()


class GerritSshStandIn:
    """Gerrit's SSH daemon on 127.0.0.1, a fresh host key, one accepted user key."""

    def __init__(self, user_key: paramiko.PKey, user: str = USER) -> None:
        self.user = user
        self.user_key = user_key
        self.host_key = paramiko.ECDSAKey.generate()
        self.refusing = False
        self.connections: list[float] = []  # monotonic times TCP connections were accepted
        self.commands: list[str] = []
        self.refused_auths = 0
        self._streams: list[_Stream] = []
        self._streams_opened = 0
        self._transports: list[paramiko.Transport] = []
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="gerrit-ssh-standin")
        self._thread.start()

    # What the client needs to trust this server.

    def known_hosts_line(self, key: paramiko.PKey | None = None) -> str:
        """A known_hosts line for this server's address (``[127.0.0.1]:PORT``): its own
        host key, or ``key`` (a wrong one, to test the refusal)."""
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def write_known_hosts(self, path: Path, key: paramiko.PKey | None = None) -> Path:
        path.write_text(self.known_hosts_line(key))
        return path

    # What tests do to it.

    def push(self, event: Mapping[str, Any] | str | bytes) -> int:
        """Send one event to every open, non-silent stream; the number it reached."""
        if isinstance(event, Mapping):
            line = (json.dumps(event) + "\n").encode()
        elif isinstance(event, str):
            line = (event + "\n").encode("utf-8", "surrogatepass")
        else:
            line = event + b"\n"
        with self._lock:
            streams = [stream for stream in self._streams if not stream.silent]
        reached = 0
        for stream in streams:
            with stream.lock:
                try:
                    stream.channel.sendall(line)
                    reached += 1
                except (OSError, EOFError, paramiko.SSHException):
                    pass
        return reached

    def drop(self) -> None:
        """Close every connection at once, under the clients."""
        with self._lock:
            transports, self._transports = self._transports, []
            self._streams = []
        for transport in transports:
            transport.close()

    def go_silent(self) -> None:
        """The open streams stay open, but nothing more is written to them."""
        with self._lock:
            for stream in self._streams:
                stream.silent = True

    def wait_for_streams(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` streams have been opened in all (not necessarily still open)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._streams_opened < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._streams_opened} stream(s) opened, "
                                       f"waited {timeout} s for {count}")
                self._lock.wait(left)

    @property
    def streams_opened(self) -> int:
        with self._lock:
            return self._streams_opened

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()
        self.drop()

    # The server.

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(time.monotonic())
            if self.refusing:
                sock.close()
                continue
            threading.Thread(target=self._serve, args=(sock,), daemon=True,
                             name="gerrit-ssh-standin connection").start()

    def _serve(self, sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(self.host_key)
        with self._lock:
            self._transports.append(transport)
        try:
            transport.start_server(server=_Interface(self))
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()
            return
        # Channels are handed over through check_channel_exec_request; accept them so
        # paramiko does not keep them queued, and hold them: a Channel paramiko no
        # longer references is closed when it is collected.
        channels = []
        while transport.is_active() and not self._stopping.is_set():
            channel = transport.accept(0.2)
            if channel is not None:
                channels = [open_ for open_ in channels if not open_.closed] + [channel]

    def _exec(self, channel: paramiko.Channel, command: str) -> None:
        try:
            if command == "gerrit version":
                channel.sendall(f"gerrit version {VERSION}\n".encode())
                self._exit(channel, 0)
            elif command == "gerrit stream-events":
                self._stream(channel)
            else:
                channel.sendall_stderr(f"fatal: {command.split()[0] if command else ''}: "
                                       "not found\n".encode())
                self._exit(channel, 1)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away, or a test dropped the connection
        finally:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()

    @staticmethod
    def _exit(channel: paramiko.Channel, status: int) -> None:
        """Exit status and EOF, then wait (at most 5 s) for the client to close.

        This thread starts inside check_channel_exec_request, before paramiko has sent
        the exec request's success reply: a channel closed at once could reach the
        client before that reply, and paramiko's client then fails the exec ("Channel
        closed"). An SSH server answers the request first; waiting for the client's
        close keeps that order.
        """
        channel.send_exit_status(status)
        channel.shutdown_write()
        channel.settimeout(5.0)
        try:
            while channel.recv(1024):
                pass
        except TimeoutError:
            pass

    def _stream(self, channel: paramiko.Channel) -> None:
        stream = _Stream(channel)
        with self._lock:
            self._streams.append(stream)
            self._streams_opened += 1
            self._lock.notify_all()
        try:
            # Until the client sends Ctrl-C, closes its stdin or goes away.
            channel.settimeout(0.2)
            while not self._stopping.is_set() and not channel.closed:
                try:
                    data = channel.recv(1024)
                except TimeoutError:
                    continue
                if not data or b"\x03" in data:
                    with stream.lock:
                        channel.send_exit_status(130)
                    break
        finally:
            with self._lock:
                if stream in self._streams:
                    self._streams.remove(stream)

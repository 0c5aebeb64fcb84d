"""HTTP servers on the loopback that the real API never is: one that redirects, one that
records who asked (and with which token), one that trickles its answer.

They stand for a proxy, a man in the middle or a hung API in front of the real clients
(the agent's, ``opslab-enc``'s). Each runs in threads of this process and is stopped,
its threads joined, when its ``with`` block ends.
"""

import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

JOIN_DEADLINE = 10.0


class Recorder:
    """Answers every request with ``status`` and ``body``; keeps each request's
    (method, path, Authorization header)."""

    def __init__(self, status: int = 200, body: bytes = b"{}",
                 headers: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key) to serve https:// with."""
        self.requests: list[tuple[str, str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.requests.append((self.command, self.path,
                                          self.headers.get("Authorization")))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Recorder":
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(JOIN_DEADLINE)


def redirecting_to(target: str, status: int = 302) -> Recorder:
    """A server that redirects every request to the same path below ``target``
    (``Location`` names ``target`` + ``/redirected``; the path is the server's to add)."""
    return Recorder(status, b"", {"Location": f"{target}/redirected"})


class Trickler:
    """A raw server: after reading a request, sends ``head`` (the status line and headers)
    and then ``body``, one byte every ``interval`` seconds from the part ``trickled``
    names ("head" or "body") on, until the client goes away or the server stops."""

    def __init__(self, head: bytes, body: bytes, trickled: str, interval: float = 0.5) -> None:
        self.head, self.body, self.trickled, self.interval = head, body, trickled, interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.settimeout(5.0)
                connection.recv(65536)
                if self.trickled == "body":
                    connection.sendall(self.head)
                for byte in (self.head + self.body if self.trickled == "head" else self.body):
                    if self.stop.wait(self.interval):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up: what the test waits for

    def __enter__(self) -> "Trickler":
        self._acceptor.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop.set()
        self.listener.close()
        deadline = time.monotonic() + JOIN_DEADLINE
        for thread in [self._acceptor, *self.threads]:
            thread.join(max(0.0, deadline - time.monotonic()))

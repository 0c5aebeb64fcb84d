"""Events in by webhook: the endpoint Gerrit's webhooks plugin POSTs events to.

The contract (``gerrit-jenkins-openstack.md``, section 2): the plugin POSTs each
event as a JSON body (the stream-events object; the top-level ``project`` maybe
``{"name": ...}``) with ``Content-Type: application/json; charset=utf-8`` and
nothing else: no signature, no secret header. So the secret is in the URL the
site configures (``remote.NAME.url = https://ci.example.org/gerrit-events/SECRET``)
and is the authentication: compared in constant time, a wrong or missing one is
a bare 404 and is never logged. The plugin counts 200, 201, 202 and 204 as
delivered and retries anything else (up to ``maxTries``, 5 by default,
``retryInterval`` apart, then drops the event), so:

- an event is answered 200 as soon as it is on the queue (or found already
  seen): the dispatcher's work never holds the plugin's thread;
- a body that is not a JSON object is answered 400 (it came from something
  other than the plugin; a retry would not mend it);
- a Gerrit event opslab cannot read (a JSON object with a type, lacking what
  opslab needs) is answered 200 and logged: retrying the same bytes could only
  give the same answer, and would fill Gerrit's log with failures of its own;
- too large (over :data:`~opslab.ci.events.MAX_EVENT_BYTES`, by its
  ``Content-Length``, before any of it is read), no length, or not JSON by its
  content type: 413, 411, 415, without reading it;
- the event queue not taking the event within a few seconds: 503 (retried).

Each event goes through :func:`~opslab.ci.events.parse_event` and
:meth:`SeenEvents.first_time`, onto the queue the SSH stream feeds, so an
event arriving both ways starts one run.

The server is the standard library's threaded ``http.server``, on the
loopback behind the site's TLS proxy: the ``[ci]`` extra has no web framework
(Flask is the API's), and it gives the control the endpoint needs over
reading: the length checked before any read, every connection bounded by a
deadline (:data:`REQUEST_DEADLINE`) whatever it is waiting for, at most
:data:`MAX_CONNECTIONS` at once, and every handler thread joined at
:meth:`WebhookListener.stop`.
"""

import contextlib
import hmac
import ipaddress
import logging
import queue
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from opslab import files
from opslab.config import is_loopback

from .events import MAX_EVENT_BYTES, Event, Malformed, SeenEvents, parse_event

if TYPE_CHECKING:
    from opslab.config import CiSettings

log = logging.getLogger(__name__)

PATH_PREFIX = "/gerrit-events/"
# A connection must have sent its whole request within this (the plugin's own
# socketTimeout is 5 s; a slow sender beyond it is cut off).
REQUEST_DEADLINE = 10.0
# What is read and dropped of a refused request's body before the connection is closed.
DRAIN_SECONDS = 0.5
DRAIN_BYTES = 256 * 1024
# Connections handled at once; one more is closed at once (the plugin retries it).
MAX_CONNECTIONS = 32
# How long a POST waits for room on a bounded event queue before answering 503.
QUEUE_WAIT = 2.0
# The secret is a path segment: URL-safe characters only, and long enough to guess
# no sooner than a password.
MIN_SECRET_LENGTH = 16
_SECRET = re.compile(r"[A-Za-z0-9._~-]+")
_JSON_TYPE = re.compile(r"\s*application/json\s*(?:;\s*charset\s*=\s*\"?utf-8\"?\s*)?",
                        re.IGNORECASE)
# Refusals (wrong secret, scanners) are logged at most this often.
_REFUSAL_LOG_INTERVAL = 60.0


class WebhookError(Exception):
    """The endpoint cannot be set up: its secret or its address is unusable."""


def read_secret(path: str) -> str:
    """The webhook's secret from ``path``; WebhookError saying what is wrong with it
    (never what it is)."""
    try:
        secret = files.read_secret(path)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise WebhookError(f"cannot read ci.webhook_secret_file {path}: {reason}") from None
    if len(secret) < MIN_SECRET_LENGTH or not _SECRET.fullmatch(secret):
        raise WebhookError(
            f"the secret in ci.webhook_secret_file {path} must be at least "
            f"{MIN_SECRET_LENGTH} characters of A-Z a-z 0-9 . _ ~ - (it is part of a URL "
            "path); make one with: openssl rand -hex 32")
    return secret


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for an IPv6 address) as ``(host, port)``; port 0
    is any free one (tests; the configuration asks for a real one)."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise WebhookError(f"ci.webhook_listen {value!r} is not HOST:PORT")
    return host, int(port)


class WebhookListener:
    """The endpoint, served in threads of its own from :meth:`start` to :meth:`stop`.

    ``events`` and ``seen`` are the queue and the set of events already handled
    that the SSH stream shares. :attr:`port` is the port listened on (useful with
    port 0); the counters say what was received.
    """

    def __init__(self, host: str, port: int, secret: str, events: "queue.Queue[Event]",
                 seen: SeenEvents, max_connections: int = MAX_CONNECTIONS) -> None:
        if len(secret) < MIN_SECRET_LENGTH or not _SECRET.fullmatch(secret):
            raise WebhookError(f"the webhook's secret must be at least {MIN_SECRET_LENGTH} "
                               "URL-safe characters")
        self.events = events
        self.seen = seen
        self.queued = 0  # events put on the queue
        self.duplicates = 0  # events already seen
        self.unreadable = 0  # Gerrit events opslab could not read (answered 200)
        self.refused = 0  # requests refused: wrong path or secret, bad body
        self._path = (PATH_PREFIX + secret).encode()
        self._last_refusal_log = -_REFUSAL_LOG_INTERVAL
        self._unlogged_refusals = 0
        self._lock = threading.Lock()
        try:
            self._server = _Server((host, port), self, max_connections)
        except OSError as error:
            raise WebhookError(f"cannot listen on {host}:{port} (ci.webhook_listen): "
                               f"{error.strerror or error}") from None
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, daemon=True,
                                        name="gerrit webhook listener")
        if not is_loopback(host):
            log.warning("the webhook endpoint listens on %s, not on the loopback: the secret "
                        "in its URL travels in cleartext unless a TLS proxy is in front",
                        host)

    @classmethod
    def from_settings(cls, settings: "CiSettings", events: "queue.Queue[Event]",
                      seen: SeenEvents) -> "WebhookListener":
        """The endpoint ``ci.webhook_listen`` and ``ci.webhook_secret_file`` describe."""
        if settings.webhook_listen is None or settings.webhook_secret_file is None:
            raise WebhookError("no webhook endpoint until ci.webhook_listen and "
                               "ci.webhook_secret_file are set")
        host, port = parse_listen(settings.webhook_listen)
        return cls(host, port, read_secret(settings.webhook_secret_file), events, seen)

    def start(self) -> None:
        self._thread.start()
        log.info("listening for Gerrit's webhooks on %s:%d%s...", self.host, self.port,
                 PATH_PREFIX)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop accepting, give requests under way until ``timeout`` to finish, cut the
        rest, and join every thread. True if all ended in time."""
        deadline = time.monotonic() + timeout
        if self._thread.ident is not None:
            self._server.shutdown()  # returns once serve_forever has
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._server.close(deadline)
        return not self._thread.is_alive() and self._server.idle()

    # What the handler calls.

    def path_matches(self, path: str) -> bool:
        """Whether ``path`` (without its query) is the endpoint's, secret included:
        compared in constant time."""
        return hmac.compare_digest(path.encode("utf-8", "surrogateescape"), self._path)

    def refusal(self, client: str, why: str) -> None:
        """Log a refused request, at most once a minute (a scanner must not fill the log),
        never with the path it asked for."""
        with self._lock:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log < _REFUSAL_LOG_INTERVAL:
                self._unlogged_refusals += 1
                return
            more, self._unlogged_refusals = self._unlogged_refusals, 0
            self._last_refusal_log = now
        log.warning("webhook: refused a request from %s: %s%s", client, why,
                    f" ({more} more refused since the last such line)" if more else "")

    def deliver(self, body: bytes) -> tuple[HTTPStatus, str]:
        """A body received on the right path: the answer to give."""
        event = parse_event(body)
        if isinstance(event, Malformed):
            if event.type is None:
                self.refusal("webhook", f"not a Gerrit event: {event.reason}")
                return HTTPStatus.BAD_REQUEST, f"not a Gerrit event: {event.reason}"
            with self._lock:
                self.unreadable += 1
            log.warning("webhook: skipped: %s", event)
            return HTTPStatus.OK, f"ignored: {event.reason}"
        if not self.seen.first_time(event.key):
            with self._lock:
                self.duplicates += 1
            log.debug("webhook: already seen: %s", event.key)
            return HTTPStatus.OK, "already seen"
        try:
            self.events.put(event, timeout=QUEUE_WAIT)
        except queue.Full:
            # Marked seen but not queued: a retry of it would be taken for a repeat.
            log.error("webhook: the event queue is full: %s is lost", event.key)
            return HTTPStatus.SERVICE_UNAVAILABLE, "the event queue is full"
        with self._lock:
            self.queued += 1
        log.debug("webhook: queued %s", event.key)
        return HTTPStatus.OK, "queued"

    def __repr__(self) -> str:
        return f"WebhookListener({self.host}:{self.port})"



class _Server(ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS of them; each connection cut at
    its deadline; the threads joined at close."""

    daemon_threads = True  # joined by close() with a deadline, not by server_close()
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], listener: WebhookListener,
                 max_connections: int) -> None:
        self.listener = listener
        self.address_family = _family(address[0])
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active: dict[socket.socket, threading.Thread] = {}
        self._changed = threading.Condition()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("webhook: %d connections at once: one more closed",
                        self.max_connections)
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), daemon=True,
                                  name="gerrit webhook request")
        with self._changed:
            self._active[request] = thread
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The connection's deadline: whatever it waits for (the request line, the
        # headers, the body), the socket is shut at the deadline and the reads end.
        cutter = threading.Timer(REQUEST_DEADLINE, _cut, [request])
        cutter.daemon = True
        cutter.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cutter.cancel()
            cutter.join()
            self._slots.release()
            with self._changed:
                self._active.pop(request, None)
                self._changed.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("webhook: handling a request from %s failed", client_address[0])

    def close(self, deadline: float) -> None:
        """Wait until ``deadline`` for the connections under way, cut those left, join."""
        with self._changed:
            while self._active and time.monotonic() < deadline:
                self._changed.wait(max(0.0, deadline - time.monotonic()))
            left = dict(self._active)
        for request in left:
            _cut(request)
        for thread in left.values():
            thread.join(max(0.1, deadline - time.monotonic()))
        self.server_close()

    def idle(self) -> bool:
        with self._changed:
            return not self._active


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: what it resolves to first
        try:
            return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
        except OSError:
            return socket.AF_INET


def _cut(request: socket.socket) -> None:
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One request: the path and secret first, then the headers, then the body."""

    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: each has its deadline
    server_version = "opslab-ci"
    sys_version = ""
    timeout = REQUEST_DEADLINE
    _body_read = False

    def _client(self) -> str:
        return str(self.client_address[0])

    def _answer(self, status: HTTPStatus, text: str = "", **headers: str) -> None:
        data = (text + "\n").encode() if text else b""
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _authorised(self) -> bool:
        listener = self.server.listener
        path = self.path.partition("?")[0]
        if listener.path_matches(path):
            return True
        listener.refusal(self._client(), "not the webhook's path, or a wrong secret")
        self._answer(HTTPStatus.NOT_FOUND)
        return False

    def _length(self) -> int | None:
        """The body's length, or None after answering why it will not be read."""
        kind = self.headers.get("Content-Type") or ""
        if not _JSON_TYPE.fullmatch(kind):
            self._answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                         "a Gerrit event is application/json (UTF-8)")
            return None
        value = self.headers.get("Content-Length")
        if value is None or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._answer(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
            return None
        if not value.strip().isdigit():
            self._answer(HTTPStatus.BAD_REQUEST, "a bad Content-Length")
            return None
        length = int(value)
        if length > MAX_EVENT_BYTES:
            self.server.listener.refusal(self._client(), f"a body of {length} bytes")
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"an event is at most {MAX_EVENT_BYTES} bytes")
            return None
        return length

    def do_POST(self) -> None:
        if not self._authorised():
            return
        length = self._length()
        if length is None:
            return
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) < length:  # the client went away, or the deadline cut it off
            self.close_connection = True
            return
        status, text = self.server.listener.deliver(body)
        self._answer(status, text)

    def _not_post(self) -> None:
        if self._authorised():
            self._answer(HTTPStatus.METHOD_NOT_ALLOWED, "POST Gerrit's events here",
                         Allow="POST")

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_post

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # http.server's own errors (a bad request line) echo nothing of the request.
        self._answer(HTTPStatus(code), HTTPStatus(code).phrase)

    def finish(self) -> None:
        super().finish()
        headers = getattr(self, "headers", None)
        announced = headers.get("Content-Length", "") if headers is not None else ""
        if not self._body_read and announced.strip().isdigit() and int(announced) > 0:
            self._drain()

    def _drain(self) -> None:
        """Half-close, then read and drop what the client still sends, briefly: closing
        with a refused body unread sends a reset, which can reach the client before the
        answer, and it would see a broken connection instead of the refusal."""
        deadline = time.monotonic() + DRAIN_SECONDS
        left = DRAIN_BYTES
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.connection.settimeout(wait)
                data = self.connection.recv(min(65536, left))
                if not data:
                    break
                left -= len(data)

    def log_message(self, format: str, *args: Any) -> None:
        # http.server's lines hold the request line, and so the secret: never written.
        pass

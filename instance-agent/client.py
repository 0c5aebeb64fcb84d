"""The agent's side of the API: its target, its run reports, its state.

Plain ``http.client``: the agent makes one request a minute, and every
import is paid again by each ``opslab agent run --once`` a timer starts.
Every request is answered in full within ``enc.api_timeout`` or given up
(:func:`exchange`, which ``opslab-enc`` uses too), and no redirect is ever
followed: the host token would go along to wherever it points. The token is
read from ``enc.api_token_file`` on each request, so a rotated token needs
no restart, and never appears in a message.
"""

import contextlib
import http.client
import json
import socket
import threading
import time
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

from opslab.config import EncSettings

USER_AGENT = "opslab-agent"
# Each read of the body takes at most this much; the deadline is checked between reads.
CHUNK = 65536


class ApiUnavailable(Exception):
    """The API could not be asked now (no connection, timeout, 5xx, 429): try later."""


class ApiRefused(Exception):
    """The API refused the request (a 4xx); ``status`` and the API's reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class Target(NamedTuple):
    """What the node should be at (see ``GET /v1/nodes/FQDN/target``), and its ETag."""

    document: dict[str, Any]
    etag: str


class Response(NamedTuple):
    """A complete answer: status, headers (names in lowercase) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


def exchange(url: str, method: str, path: str, headers: dict[str, str],
             payload: bytes | None, timeout: float) -> Response:
    """``METHOD path`` (below ``url``'s own path) to the http:// or https:// ``url``, answered
    in full within ``timeout`` seconds.

    A socket timeout bounds each read, not the request: an answer that
    trickles in, a byte every few seconds, would hold the agent (and its
    lock) or Puppet's ENC call for ever. So the socket's timeout is cut to
    the time left before each read of the body, and a watchdog shuts the
    connection down at the deadline whatever it is waiting for (the TLS
    handshake, the headers). A redirect is an answer like any other:
    http.client follows none, and the callers refuse it.

    Raises OSError or http.client.HTTPException when there is no complete
    answer; TimeoutError once the deadline has passed. ``https://`` is
    verified against the system's trust store (http.client's default
    context), hostname included.
    """
    parts = urlsplit(url)
    kind = (http.client.HTTPSConnection if parts.scheme == "https"
            else http.client.HTTPConnection)
    deadline = time.monotonic() + timeout
    connection = kind(parts.netloc, timeout=timeout)
    watchdog = threading.Timer(timeout, _cut_off, [connection])
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request(method, parts.path.rstrip("/") + path, body=payload,
                           headers=headers)
        _time_left(connection, deadline, timeout)
        response = connection.getresponse()
        body = bytearray()
        while True:
            _time_left(connection, deadline, timeout)
            chunk = response.read1(CHUNK)
            if not chunk:
                break
            body += chunk
        if response.length:  # read1 says the end came early with b"", not with an error
            raise http.client.IncompleteRead(bytes(body), response.length)
        return Response(response.status,
                        {name.lower(): value for name, value in response.getheaders()},
                        bytes(body))
    except (OSError, http.client.HTTPException):
        if time.monotonic() >= deadline:  # cut off by the watchdog, or as good as
            raise TimeoutError(f"no complete answer within {timeout:g} s") from None
        raise
    finally:
        watchdog.cancel()
        watchdog.join()
        connection.close()


def _time_left(connection: http.client.HTTPConnection, deadline: float,
               timeout: float) -> None:
    """Give the next read only the time left; none left is a TimeoutError."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"no complete answer within {timeout:g} s")
    if connection.sock is not None:
        connection.sock.settimeout(left)


def _cut_off(connection: http.client.HTTPConnection) -> None:
    """The watchdog's stroke: end every read and write on the connection, now.

    socket.socket's own shutdown even for a TLS socket: the kernel ends the
    read under way, and the TLS object, still in use by the reading thread,
    is left alone.
    """
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def redirect_refusal(status: int, headers: dict[str, str], who: str) -> str | None:
    """Why a 3xx answer (but 304) is refused, naming where it points; None for others."""
    if not 300 <= status < 400 or status == 304:
        return None
    location = headers.get("location", "nowhere")[:300]
    return (f"HTTP {status}, a redirect to {location!r}: {who} follows no redirect (the host "
            "token would go along); set enc.api_url to the API's own URL")


class ApiClient:
    """Requests to the API as this host, with its token."""

    def __init__(self, settings: EncSettings) -> None:
        if not settings.api_url or not settings.api_token_file:
            raise ValueError("the agent needs enc.api_url and enc.api_token_file")
        self._token_file = settings.api_token_file
        self.timeout = settings.api_timeout
        self.url = settings.api_url

    def target(self, certname: str, etag: str | None) -> Target | None:
        """The node's target, or None when it is still the one ``etag`` names."""
        headers = {"If-None-Match": etag} if etag else {}
        status, response_headers, body = self._request(
            "GET", f"/v1/nodes/{quote(certname)}/target", headers=headers)
        if status == 304:
            return None
        document = _json(body)
        if not isinstance(document, dict) or "classification" not in document:
            raise ApiUnavailable(f"{self.url} answered something that is not a target")
        return Target(document, response_headers.get("etag", ""))

    def post_report(self, certname: str, report: dict[str, Any], key: str) -> None:
        """Deliver one run report; a report already stored under ``key`` is not stored again."""
        self._request("POST", f"/v1/hosts/{quote(certname)}/reports", body=report,
                      headers={"Idempotency-Key": key})

    def put_state(self, certname: str, state: dict[str, Any]) -> None:
        """Tell the API whether this host's agent is disabled, and why."""
        self._request("PUT", f"/v1/hosts/{quote(certname)}/agent", body=state)

    def _request(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        all_headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json",
                       "User-Agent": USER_AGENT, **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        try:
            status, response_headers, data = exchange(self.url, method, path, all_headers,
                                                      payload, self.timeout)
        except (OSError, http.client.HTTPException) as error:
            raise ApiUnavailable(f"{self.url}: {error or type(error).__name__}") from None
        redirect = redirect_refusal(status, response_headers, "the agent")
        if redirect is not None:
            # Kept as "try later", like an outage: spooled reports wait for the fix.
            raise ApiUnavailable(f"{self.url}: {redirect}")
        if status >= 500 or status == 429:
            raise ApiUnavailable(f"{self.url}: HTTP {status}: {_reason(data)}")
        if status >= 400:
            raise ApiRefused(status, _reason(data))
        return status, response_headers, data

    def _token(self) -> str:
        try:
            with open(self._token_file, encoding="utf-8") as stream:
                return stream.read().strip()
        except OSError as error:
            # Kept as "try later": a spooled report must survive a fix of the token file.
            raise ApiUnavailable(f"cannot read enc.api_token_file {self._token_file}: "
                                 f"{error.strerror}") from None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _reason(body: bytes) -> str:
    document = _json(body)
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])[:500]
    return "no reason given"

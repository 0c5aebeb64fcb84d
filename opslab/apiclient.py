"""The one client of the API: every opslab component that calls it calls it this way.

Plain ``http.client``, because the agent makes a request a minute and a
timer's ``opslab agent run --once`` pays every import again. Every request
is answered in full within its timeout or given up (:func:`exchange`); no
redirect is ever followed (the host token would go along to wherever it
points); the token is read from its file on each request, so a rotated
token needs no restart, and never appears in a message. A person (the CI's
account) calls it with HTTP Basic instead: ``user``, and the file holds
that person's password, read and kept out of messages the same way. The agent
(``opslab.agent.client``), ``opslab-enc`` (``opslab.enc.api_source``) and the
commands to come build on :class:`Client`.
"""

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from opslab.files import read_secret

# Each read of the body takes at most this much; the deadline is checked between reads.
CHUNK = 65536


class ApiUnavailable(Exception):
    """The API could not be asked now (no connection, timeout, 5xx, 429): try later."""


class ApiRedirected(ApiUnavailable):
    """The API's URL answered with a redirect, which is never followed: a setting to fix."""


class TokenUnreadable(ApiUnavailable):
    """The token file cannot be read (kept as "try later": a spooled report must survive a
    fix of the file)."""


class ApiThrottled(ApiUnavailable):
    """The API answered 429: too many requests for now; ``reason`` says when to retry."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApiRefused(Exception):
    """The API refused the request (a 4xx); ``status`` and the API's reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


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


class Client:
    """Requests to the API at ``url`` with the token in ``token_file`` (a Bearer token), or,
    with ``user``, as that person, whose password ``token_file`` holds (HTTP Basic);
    ``who`` names the caller in messages (default: ``user_agent``)."""

    def __init__(self, url: str, token_file: str, timeout: float, user_agent: str,
                 who: str | None = None, user: str | None = None) -> None:
        self.url = url
        self.token_file = token_file
        self.timeout = timeout
        self.user_agent = user_agent
        self.who = who or user_agent
        self.user = user

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Response:
        """``METHOD path`` with ``body`` as JSON; the answer, if it is not a refusal.

        Raises ApiUnavailable (no complete answer within the timeout, a 5xx,
        an unreadable token; ApiThrottled for a 429, ApiRedirected for a 3xx
        other than 304)
        or ApiRefused (any other 4xx, with the API's reason).
        """
        all_headers = {"Authorization": self._authorization(), "Accept": "application/json",
                       "User-Agent": self.user_agent, **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        try:
            answer = exchange(self.url, method, path, all_headers, payload, self.timeout)
        except (OSError, http.client.HTTPException) as error:
            raise ApiUnavailable(f"{self.url}: {error or type(error).__name__}") from None
        redirect = redirect_refusal(answer.status, answer.headers, self.who)
        if redirect is not None:
            raise ApiRedirected(f"{self.url} answered {redirect}")
        if answer.status == 429:
            why = reason(answer.body)
            raise ApiThrottled(f"{self.url}: HTTP 429: {why}", why)
        if answer.status >= 500:
            raise ApiUnavailable(f"{self.url}: HTTP {answer.status}: {reason(answer.body)}")
        if answer.status >= 400:
            raise ApiRefused(answer.status, reason(answer.body))
        return answer

    def _authorization(self) -> str:
        if self.user is None:
            return f"Bearer {self._token()}"
        credentials = f"{self.user}:{self._token()}".encode()
        return f"Basic {base64.b64encode(credentials).decode('ascii')}"

    def _token(self) -> str:
        """The token, or the user's password: what ``token_file`` holds."""
        what = f"the API password file of {self.user}" if self.user else "the API token file"
        try:
            return read_secret(self.token_file)
        except OSError as error:
            raise TokenUnreadable(f"cannot read {what} {self.token_file}: "
                                  f"{error.strerror}") from None


def document(body: bytes) -> Any:
    """The JSON document ``body``, or None if it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def reason(body: bytes) -> str:
    """The API's reason for a refusal (its ``{"error": ...}``), cut short."""
    answer = document(body)
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])[:500]
    return "no reason given"

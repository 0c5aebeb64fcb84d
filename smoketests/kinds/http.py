"""http: an HTTP(S) request gets the answer it should.

    http:
      url: "http://127.0.0.1:${param.port}/"
      status: 200                 # or a list; default 200
      body: "${param.greeting}"   # texts the body must contain (one or a list)
      body_absent: "Traceback"    # texts it must not contain
      headers: {Content-Type: text/html}   # header texts the answer's must contain
      method: GET                 # GET (default), HEAD, POST, ...
      verify: true                # check the server's certificate (default); false: do not
      ca_file: /etc/ssl/site-ca.pem
      redirects: true             # follow them (default); false: the redirect is the answer

No proxy is used, whatever the environment says: a check of a service on
this host must reach this host. The body is read up to 1 MiB. The whole
answer must come within the timeout (a server that sends its headers or
body a byte at a time is cut off then). Redirects are followed to http://
and https:// only (never to ftp://, which urllib would follow).

From outside (``outside: true``) the check looks at the target and nothing
else: its url names ``${target}`` as its host, and a redirect elsewhere is
not followed. The CI harness runs such checks from its own network, where
a url of the check's choosing (or a redirect) could otherwise reach what
only that network reaches and show its answer in the check's failure.
"""

import contextlib
import http.client
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from types import TracebackType
from typing import Any

from . import Context, Failed, Field, quoted, text_list

FIELDS = {
    "url": Field((str,), required=True),
    "status": Field((int,), minimum=100, maximum=599, many=True),
    "body": Field((str,), many=True),
    "body_absent": Field((str,), many=True),
    "headers": Field((dict,)),
    "method": Field((str,), choices=("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")),
    "verify": Field((bool,)),
    "ca_file": Field((str,)),
    "redirects": Field((bool,)),
}
MAX_BODY = 1024 * 1024
# The answer's deadline is kept this long after the attempt's timeout: a server that says
# nothing is told by the socket's own timeout ("no answer"), a trickling one by the deadline.
LAG = 0.25
SCHEMES = ("http", "https")
# An outside check's url: the target as its host (in brackets, for an IPv6 target).
_AT_TARGET = re.compile(r"https?://(\$\{target\}|\[\$\{target\}\])([:/?#]|$)")


def problem(values: dict[str, Any], outside: bool) -> str | None:
    url = values.get("url")
    if isinstance(url, str) and "${" not in url and not url.startswith(("http://", "https://")):
        return f"url {url!r} must start with http:// or https://"
    if outside and isinstance(url, str) and not _AT_TARGET.match(url):
        return (f"url {quoted(url)}: seen from outside, a check looks at the target: "
                f"write http://${{target}}:PORT/...")
    headers = values.get("headers")
    if isinstance(headers, dict) and not all(isinstance(key, str) and isinstance(value, str)
                                             for key, value in headers.items()):
        return "headers must map header names to texts"
    return None


def check(values: dict[str, Any], context: Context) -> str:
    url = str(values["url"])
    if not url.startswith(("http://", "https://")):
        raise Failed(f"url {quoted(url)} must start with http:// or https://")
    host = _host(url)
    if context.target is not None and host != _host(f"http://{_bracketed(context.target)}/"):
        raise Failed(f"url {quoted(url)} is not at the target {context.target}: seen from "
                     f"outside, a check looks at the target only")
    request = urllib.request.Request(url, method=str(values.get("method", "GET")),  # noqa: S310
                                     headers={"User-Agent": "opslab-smoke"})
    with _Watch(context.left() + LAG) as watch:
        opener = _opener(values, watch, host if context.target is not None else None)
        status, reason, headers, body = _answer(opener, request, url, context, watch)
    text = body.decode("utf-8", "replace")
    wanted = values.get("status", 200)
    statuses = wanted if isinstance(wanted, list) else [wanted]
    if status not in statuses:
        # urllib's own refusals of a redirect (a loop, to file://) say so in the reason.
        refused = 300 <= status < 400 and values.get("redirects") is not False and reason
        said = f" ({reason.splitlines()[0]})" if refused else ""
        raise Failed(f"{url} answered {status}{said}, not {' or '.join(map(str, statuses))}",
                     text[:2000])
    for piece in text_list(values.get("body")):
        if piece not in text:
            raise Failed(f"{url}: the body does not contain {quoted(piece)}", text[:2000])
    for piece in text_list(values.get("body_absent")):
        if piece in text:
            raise Failed(f"{url}: the body contains {quoted(piece)}", text[:2000])
    for name, piece in (values.get("headers") or {}).items():
        found = headers.get(name)
        if found is None:
            raise Failed(f"{url}: the answer has no header {name}")
        if str(piece) not in found:
            raise Failed(f"{url}: header {name} is {quoted(found)}, which does not contain "
                         f"{quoted(piece)}")
    return f"{url} answered {status}"


def _answer(opener: urllib.request.OpenerDirector, request: urllib.request.Request, url: str,
            context: Context, watch: "_Watch") -> tuple[int, str, Any, bytes]:
    """(status, reason, headers, the body's first MAX_BODY bytes) of the answer, complete
    within the attempt's time; else Failed."""
    try:
        try:
            with opener.open(request, timeout=context.left()) as answer:
                found = answer.status, answer.reason, answer.headers, answer.read(MAX_BODY)
        except urllib.error.HTTPError as error:
            body = error.read(MAX_BODY) if error.fp is not None else b""
            found = error.code, str(error.reason), error.headers, body
    except urllib.error.URLError as error:
        raise Failed(f"{url}: {_reason(error.reason, watch, context)}") from None
    except (TimeoutError, http.client.HTTPException, OSError) as error:
        raise Failed(f"{url}: {_reason(error, watch, context)}") from None
    # Shut at the deadline, a body without a length ends where it was cut: not the answer.
    if watch.passed:
        raise Failed(f"{url}: no complete answer within {context.timeout:g} s")
    return found


def _host(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _opener(values: dict[str, Any], watch: "_Watch",
            only_host: str | None) -> urllib.request.OpenerDirector:
    """An opener for http:// and https:// only (urllib's default one also opens ftp://,
    file:// and data: URLs, and reads proxies from the environment)."""
    opener = urllib.request.OpenerDirector()
    for handler in (_HTTPHandler(watch),
                    _HTTPSHandler(watch, values.get("ca_file"), values.get("verify") is not False),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    _Redirects(values.get("redirects") is not False, only_host),
                    urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    return opener


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed (``follow``) to http:// and https:// only, and to ``only_host``
    when it is given (the target, from outside)."""

    def __init__(self, follow: bool, only_host: str | None) -> None:
        super().__init__()
        self.follow, self.only_host = follow, only_host

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if not self.follow:
            return None  # the redirect is the answer
        if urllib.parse.urlsplit(newurl).scheme not in SCHEMES:
            raise Failed(f"{req.full_url} redirects to {quoted(newurl)}, which is not http:// "
                         f"or https://: not followed")
        if self.only_host is not None and _host(newurl) != self.only_host:
            raise Failed(f"{req.full_url} redirects to {quoted(newurl)}, away from the target: "
                         f"not followed from outside")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Watch:
    """The sockets of one attempt, shut when its time is up.

    A socket's timeout bounds each wait for a byte, not the answer: a server
    that sends its headers or its body a byte at a time would hold the check
    for ever, and its thread, abandoned by the runner past the deadline,
    would go on reading in the agent's long-running process. A copy of each
    socket's descriptor is kept (shutting a socket down through any of its
    descriptors ends every read of it, TLS-wrapped or not) and shut at the
    deadline; a connection made after it is refused.
    """

    def __init__(self, seconds: float) -> None:
        self.passed = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._shut)
        self._timer.daemon = True

    def connect(self, *args: Any, **kwargs: Any) -> socket.socket:
        """socket.create_connection, watched."""
        connection = socket.create_connection(*args, **kwargs)
        with self._lock:
            if self.passed:
                connection.close()
                raise TimeoutError("the attempt's time is up")
            self._sockets.append(connection.dup())
        return connection

    def _shut(self) -> None:
        with self._lock:
            self.passed = True
            for connection in self._sockets:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> "_Watch":
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:
            for connection in self._sockets:
                connection.close()
            self._sockets.clear()


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, watch: _Watch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = watch.connect


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, watch: _Watch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = watch.connect


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, watch=self.watch)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    """HTTPS with the check's TLS settings, made only when an https:// URL (or a redirect
    to one) is opened: loading the system's CAs takes about 50 ms, most of a plain
    http:// check's time."""

    def __init__(self, watch: _Watch, ca_file: str | None, verify: bool) -> None:
        super().__init__()
        self.watch = watch
        self.settings = (ca_file, verify)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req,  # type: ignore[arg-type]
                            context=_tls(*self.settings), watch=self.watch)


# TLS settings by (ca_file, verify), each kept CONTEXT_SECONDS: a suite's checks of
# one server share them, and a CA file changed under a long-running agent counts
# within a minute.
CONTEXT_SECONDS = 60.0
_contexts: dict[tuple[str | None, bool], tuple[float, ssl.SSLContext]] = {}
_contexts_lock = threading.Lock()


def _tls(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """The client's TLS settings: the system's CAs, or only those of ``ca_file``; no
    verification at all when ``verify`` is false."""
    with _contexts_lock:
        made, context = _contexts.get((ca_file, verify), (0.0, None))
        if context is not None and time.monotonic() - made < CONTEXT_SECONDS:
            return context
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except OSError as error:  # missing, unreadable, or no certificate in it (SSLError)
            raise Failed(f"ca_file {ca_file} cannot be used: "
                         f"{error.strerror or error}") from None
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        _contexts[(ca_file, verify)] = (time.monotonic(), context)
        return context


def _reason(error: object, watch: _Watch, context: Context) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the certificate is not trusted ({error.verify_message})"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if watch.passed:  # whatever the read that was cut off raised
        return f"no complete answer within {context.timeout:g} s"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)

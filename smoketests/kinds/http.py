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
this host must reach this host. The body is read up to 1 MiB.
"""

import http.client
import ssl
import threading
import time
import urllib.error
import urllib.request
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


def problem(values: dict[str, Any], outside: bool) -> str | None:
    url = values.get("url")
    if isinstance(url, str) and "${" not in url and not url.startswith(("http://", "https://")):
        return f"url {url!r} must start with http:// or https://"
    headers = values.get("headers")
    if isinstance(headers, dict) and not all(isinstance(key, str) and isinstance(value, str)
                                             for key, value in headers.items()):
        return "headers must map header names to texts"
    return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def check(values: dict[str, Any], context: Context) -> str:
    url = str(values["url"])
    if not url.startswith(("http://", "https://")):
        raise Failed(f"url {url!r} must start with http:// or https://")
    handlers: list[Any] = [urllib.request.ProxyHandler({}),
                           _TLSWhenAsked(values.get("ca_file"), values.get("verify") is not False)]
    if values.get("redirects") is False:
        handlers.append(_NoRedirects())
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, method=str(values.get("method", "GET")),  # noqa: S310
                                     headers={"User-Agent": "opslab-smoke"})
    try:
        with opener.open(request, timeout=context.left()) as answer:
            status, headers, body = answer.status, answer.headers, answer.read(MAX_BODY)
    except urllib.error.HTTPError as error:
        status, headers = error.code, error.headers
        body = error.read(MAX_BODY) if error.fp is not None else b""
    except urllib.error.URLError as error:
        raise Failed(f"{url}: {_reason(error.reason)}") from None
    except (TimeoutError, http.client.HTTPException, OSError) as error:
        raise Failed(f"{url}: {_reason(error)}") from None
    text = body.decode("utf-8", "replace")
    wanted = values.get("status", 200)
    statuses = wanted if isinstance(wanted, list) else [wanted]
    if status not in statuses:
        raise Failed(f"{url} answered {status}, not {' or '.join(map(str, statuses))}",
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


class _TLSWhenAsked(urllib.request.HTTPSHandler):
    """HTTPS with the check's TLS settings, made only when an https:// URL (or a redirect
    to one) is opened: loading the system's CAs takes about 50 ms, most of a plain
    http:// check's time."""

    def __init__(self, ca_file: str | None, verify: bool) -> None:
        super().__init__()
        self.settings = (ca_file, verify)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        self._context = _tls(*self.settings)
        return super().https_open(req)


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


def _reason(error: object) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the certificate is not trusted ({error.verify_message})"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)

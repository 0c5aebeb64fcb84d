"""The agent's side of the API: its target, its run reports, its state.

Plain ``http.client``: the agent makes one request a minute, and every
import is paid again by each ``opslab agent run --once`` a timer starts.
Every request has ``enc.api_timeout``; the token is read from
``enc.api_token_file`` on each request, so a rotated token needs no restart,
and never appears in a message.
"""

import http.client
import json
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

from opslab.config import EncSettings

USER_AGENT = "opslab-agent"


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


class ApiClient:
    """Requests to the API as this host, with its token."""

    def __init__(self, settings: EncSettings) -> None:
        if not settings.api_url or not settings.api_token_file:
            raise ValueError("the agent needs enc.api_url and enc.api_token_file")
        url = urlsplit(settings.api_url)
        self._https = url.scheme == "https"
        self._netloc = url.netloc
        self._prefix = url.path.rstrip("/")
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
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(self._netloc, timeout=self.timeout)
        else:
            connection = http.client.HTTPConnection(self._netloc, timeout=self.timeout)
        try:
            connection.request(method, self._prefix + path, body=payload, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise ApiUnavailable(f"{self.url}: {error or type(error).__name__}") from None
        finally:
            connection.close()
        status = response.status
        if status >= 500 or status == 429:
            raise ApiUnavailable(f"{self.url}: HTTP {status}: {_reason(data)}")
        if status >= 400:
            raise ApiRefused(status, _reason(data))
        return status, {key.lower(): value for key, value in response.getheaders()}, data

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

"""The agent's side of the API: its target, its run reports, its state, its smoke results.

Requests go through the one client of the API (:mod:`opslab.apiclient`):
answered in full within ``enc.api_timeout`` or given up, no redirect
followed (for the agent a redirect is like an outage: spooled reports wait
for the fix), the token read from ``enc.api_token_file`` on each request.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

from opslab.apiclient import ApiRefused, ApiUnavailable, Client, document
from opslab.config import EncSettings

__all__ = ["USER_AGENT", "ApiClient", "ApiRefused", "ApiUnavailable", "Target"]

USER_AGENT = "opslab-agent"


class Target(NamedTuple):
    """What the node should be at (see ``GET /v1/nodes/FQDN/target``), and its ETag."""

    document: dict[str, Any]
    etag: str


class ApiClient(Client):
    """Requests to the API as this host, with its token."""

    def __init__(self, settings: EncSettings) -> None:
        if not settings.api_url or not settings.api_token_file:
            raise ValueError("the agent needs enc.api_url and enc.api_token_file")
        super().__init__(settings.api_url, settings.api_token_file, settings.api_timeout,
                         USER_AGENT, who="the agent")

    def target(self, certname: str, etag: str | None) -> Target | None:
        """The node's target, or None when it is still the one ``etag`` names."""
        headers = {"If-None-Match": etag} if etag else {}
        answer = self.request("GET", f"/v1/nodes/{quote(certname)}/target", headers=headers)
        if answer.status == 304:
            return None
        found = document(answer.body)
        if not isinstance(found, dict) or "classification" not in found:
            raise ApiUnavailable(f"{self.url} answered something that is not a target")
        return Target(found, answer.headers.get("etag", ""))

    def post_report(self, certname: str, report: dict[str, Any], key: str) -> None:
        """Deliver one run report; a report already stored under ``key`` is not stored again."""
        self.request("POST", f"/v1/hosts/{quote(certname)}/reports", body=report,
                     headers={"Idempotency-Key": key})

    def put_state(self, certname: str, state: dict[str, Any]) -> None:
        """Tell the API whether this host's agent is disabled, and why."""
        self.request("PUT", f"/v1/hosts/{quote(certname)}/agent", body=state)

    def put_smoke(self, certname: str, summary: Mapping[str, Any]) -> None:
        """Tell the API what this host's smoke tests found (a ``SmokeSummary``); results
        older than those it has are ignored."""
        self.request("PUT", f"/v1/hosts/{quote(certname)}/smoke", body=summary)

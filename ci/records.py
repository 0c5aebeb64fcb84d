"""A CI run's record in the API (``/v1/ci/runs``, docs/api.md), as the dispatcher and the
job both write it.

A run is named there by its event key, ``PROJECT CHANGE PATCHSET HASH`` with HASH the
``GERRIT_EVENT_HASH`` of the comment that asked for it: the dispatcher records the run
when it queues the build, the job (started with that hash among its parameters) finds the
same record and carries it on; a job started another way (the Gerrit Trigger plugin, by
hand) makes its own. Writing goes through the CI's account (``ci.api_user``, a member of
``ci.clone_project``) with HTTP Basic. Recording is never a reason to not test a change:
whoever calls this logs a failure and goes on.
"""

import json
from typing import Any

from opslab.apiclient import Client
from opslab.config import Config, ConfigError

from .events import CommentAdded
from .parameters import event_hash
from .trigger import RunKey

USER_AGENT = "opslab-ci"


def run_key(project: str, change: int, patchset: int, hash_: str) -> str:
    """The event key of the run of ``change``,``patchset`` asked for by the event ``hash_``."""
    return f"{project} {change} {patchset} {hash_}"


def api_client(config: Config) -> Client | None:
    """The API as the CI's account, or None when ``ci.api_user`` is not set; ConfigError
    when it is set without what it needs."""
    ci = config.ci
    if ci.api_user is None:
        return None
    url = ci.api_url or config.enc.api_url
    if not url or not ci.api_password_file:
        raise ConfigError("ci.api_user is set: set ci.api_url (or enc.api_url) and "
                          "ci.api_password_file too")
    return Client(url, ci.api_password_file, ci.request_timeout, USER_AGENT, user=ci.api_user)


def line(text: str | None, limit: int) -> str:
    """``text``'s first line without control characters, at most ``limit`` characters: a
    Gerrit subject with an escape sequence must not cost the run its record."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return "".join(character for character in first
                   if character.isprintable() or character == "\t")[:limit]


def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    """The run ``body`` describes: made (201), or the one with its event key (200)."""
    found = json.loads(client.request("POST", "/v1/ci/runs", body).body)
    if not isinstance(found, dict) or not isinstance(found.get("id"), int):
        raise ValueError("the API's answer is not a CI run")
    return found


def change(client: Client, run_id: int | str, changes: dict[str, Any]) -> None:
    client.request("PATCH", f"/v1/ci/runs/{run_id}", changes)


class ApiRecorder:
    """The dispatcher's recorder (ci/dispatcher.py ``Recorder``) on the API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def started(self, run: RunKey, event: CommentAdded, queue_id: int) -> str | None:
        who = event.account.username if event.account else None
        found = create(self.client, {
            "event_key": run_key(run.project, run.change, run.patchset, event_hash(event)),
            "project": run.project, "change": run.change, "patchset": run.patchset,
            "revision": event.patchset.revision, "branch": event.branch,
            "change_id": event.change.id, "change_url": event.change.url,
            "subject": line(event.change.subject, 1000) or None,
            "trigger": run.trigger, "requested_by": who or "unknown"})
        change(self.client, found["id"], {"jenkins_queue_id": queue_id})
        return str(found["id"])

    def update(self, run_id: str, *, state: str, build_url: str | None = None) -> None:
        changes: dict[str, Any] = {"state": state}
        if build_url is not None:
            changes["build_url"] = build_url
        if state == "running":
            # The job marks its run running itself, maybe first: then only the URL is new.
            found = json.loads(self.client.request("GET", f"/v1/ci/runs/{run_id}").body)
            if found.get("state") != "queued":
                del changes["state"]
                if found.get("build_url") or build_url is None:
                    return
        change(self.client, run_id, changes)

"""Run reports: instances post each Puppet run; people read them per host and project.

An agent delivers a report with an ``Idempotency-Key`` header (the IETF
httpapi draft's name): a report whose key this host has used before is not
stored again, and the answer is the stored report with 200 instead of 201.
That is what lets an agent retry after a lost answer without ever
recording a run twice. The report's shape is the OpenAPI ``RunReport``.
"""

import re
from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import context, history, hosts
from ..auth import Actor, may_read_host, must_be_host, person, project_membership
from ..contract import request_document
from ..errors import Invalid
from ..store import RunReport

blueprint = Blueprint("reports", __name__)

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_MESSAGES = 50
MAX_MESSAGE = 2000


def _messages(body: dict[str, Any]) -> list[str]:
    """The run's error messages, the agent's and Puppet's, once each and bounded."""
    messages = [body.get("error"), body.get("sync_error"), *body.get("errors", [])]
    unique = dict.fromkeys(message[:MAX_MESSAGE] for message in messages if message)
    return list(unique)[:MAX_MESSAGES]


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    # Structured-field strings arrive quoted ("..."); bare tokens are accepted too.
    key = key.strip().removeprefix('"').removesuffix('"')
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise Invalid("Idempotency-Key must be 1 to 64 letters, digits, _ or -")
    return key


@blueprint.post("/hosts/<fqdn>/reports")
def post(fqdn: str) -> Any:
    """An instance reports one run of its own."""
    actor = must_be_host(g.actor, fqdn, "report runs")
    body = request_document()
    key = _idempotency_key()
    resources = body.get("resources") or {}
    report = RunReport(
        host=fqdn, project=actor.project, incarnation=actor.incarnation,
        commit=body.get("commit"), environment=body.get("environment"),
        status=body["status"], exit_code=int(body["exit_code"]),
        changed=int(resources.get("changed", 0)), failed=int(resources.get("failed", 0)),
        failures=[{"resource": item["resource"], "messages": item.get("messages", [])}
                  for item in body.get("failed_resources", [])],
        duration=body.get("duration"), idempotency_key=key,
        started_at=history.moment(body["started_at"], "started_at")
        if "started_at" in body else None,
        agent_version=body.get("agent_version"), trigger=body.get("trigger"),
        errors=_messages(body), truncated=body.get("truncated", False),
    )
    with context.session() as session:
        if key is not None and (stored := _stored(session, actor, key)) is not None:
            return jsonify(history.report_json(stored)), 200
        session.add(report)
        try:
            session.commit()
        except IntegrityError:
            # The same report, delivered twice at once: the other delivery won.
            session.rollback()
            if key is None or (stored := _stored(session, actor, key)) is None:
                raise
            return jsonify(history.report_json(stored)), 200
    return jsonify(history.report_json(report)), 201


def _stored(session: Any, actor: Actor, key: str) -> RunReport | None:
    """The report this host (in its current incarnation) already sent under ``key``."""
    found: RunReport | None = session.scalars(
        select(RunReport).where(RunReport.host == actor.name,
                                RunReport.incarnation == actor.incarnation,
                                RunReport.idempotency_key == key)).first()
    return found


@blueprint.get("/hosts/<fqdn>/reports")
def for_host(fqdn: str) -> Any:
    """The reports of the host as it exists now, newest first."""
    _, _, host = hosts.existing(fqdn)
    may_read_host(g.actor, host["name"])
    return jsonify(history.reports(host["name"], history.current_incarnation(host["name"])))


@blueprint.get("/projects/<project>/reports")
def latest_per_host(project: str) -> Any:
    """The latest report of every host now in ``project`` (by the one project rule)."""
    person(g.actor)
    project_membership(project)
    names = [str(host["name"]) for host in hosts.query([project], [], [])]
    return jsonify(history.latest_per_host(names))

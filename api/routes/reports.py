"""Run reports: instances post each Puppet run; people read them per host and project.

An agent delivers a report with an ``Idempotency-Key`` header (the IETF
httpapi draft's name): a report whose key this host has used before is not
stored again, and the answer is the stored report with 200 instead of 201.
That is what lets an agent retry after a lost answer without ever
recording a run twice.
"""

import re
from datetime import datetime
from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from opslab.names import InvalidName, validate_certname

from .. import context
from ..app import json_body
from ..auth import Refused, may_change_project, may_read_host, must_be_host
from ..hosts import Invalid
from ..store import RunReport, utc

blueprint = Blueprint("reports", __name__)

# The fields of ``opslab branch apply``'s result, which instances post as is,
# and what the agent adds to it.
FIELDS: dict[str, type | tuple[type, ...]] = {
    "certname": str, "started_at": str, "environment": (str, type(None)),
    "branch": (str, type(None)), "commit": (str, type(None)), "status": str,
    "exit_code": int, "meaning": str, "success": bool, "error": (str, type(None)),
    "duration": (int, float), "output_tail": str, "resources": dict,
    "failed_resources": list, "errors": list, "warnings": list,
    "puppet_status": (str, type(None)), "puppet_version": (str, type(None)),
    "configuration_version": (str, int, type(None)), "puppet_time": (int, float, type(None)),
    "sync_error": (str, type(None)), "agent_version": (str, type(None)),
    "trigger": (str, type(None)),
}
REQUIRED = ("status", "exit_code")
COMMIT = re.compile(r"[0-9a-f]{4,64}")
ENVIRONMENT = re.compile(r"[a-z0-9_]{1,200}")
STATUSES = ("changed", "unchanged", "failed", "timeout", "disabled", "locked")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHORT = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
MAX_MESSAGES = 50
MAX_MESSAGE = 2000


def _parse(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    for name in REQUIRED:
        if name not in body:
            raise Invalid(f"{name} is required")
    for name, value in body.items():
        if isinstance(value, bool) and FIELDS[name] is not bool:
            raise Invalid(f"{name} has the wrong type")
        if not isinstance(value, FIELDS[name]):
            raise Invalid(f"{name} has the wrong type")
    if body["status"] not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}")
    if body.get("commit") is not None and not COMMIT.fullmatch(body["commit"]):
        raise Invalid("commit must be a git commit id (hexadecimal)")
    if body.get("environment") is not None and not ENVIRONMENT.fullmatch(body["environment"]):
        raise Invalid("environment must be a Puppet environment name")
    for name in ("agent_version", "trigger"):
        if body.get(name) is not None and not SHORT.fullmatch(body[name]):
            raise Invalid(f"{name} must be 1 to 32 letters, digits or . _ + -")
    if not all(isinstance(item, str) for item in body.get("errors", [])):
        raise Invalid("errors must be a list of strings")
    if "started_at" in body:
        try:
            started = datetime.fromisoformat(body["started_at"])
        except ValueError:
            raise Invalid("started_at must be an ISO 8601 date and time") from None
        body["started_at"] = utc(started)
    return body


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


def as_json(report: RunReport) -> dict[str, Any]:
    return {"id": report.id, "host": report.host, "project": report.project,
            "received_at": report.received_at.isoformat(), "commit": report.commit,
            "environment": report.environment, "status": report.status,
            "exit_code": report.exit_code, "changed": report.changed, "failed": report.failed,
            "failures": report.failures, "duration": report.duration,
            "started_at": utc(report.started_at).isoformat() if report.started_at else None,
            "agent_version": report.agent_version, "trigger": report.trigger,
            "errors": report.errors or []}


@blueprint.post("/hosts/<fqdn>/reports")
def post(fqdn: str) -> Any:
    """An instance reports one run of its own."""
    actor = must_be_host(g.actor, fqdn, "report runs")
    body = _parse(json_body())
    key = _idempotency_key()
    resources = body.get("resources") or {}
    failures = [{"resource": str(item.get("resource")), "messages": item.get("messages", [])}
                for item in body.get("failed_resources", []) if isinstance(item, dict)]
    report = RunReport(
        host=fqdn, project=actor.project, commit=body.get("commit"),
        environment=body.get("environment"), status=body["status"],
        exit_code=body["exit_code"], changed=int(resources.get("changed") or 0),
        failed=int(resources.get("failed") or 0), failures=failures,
        duration=body.get("duration"), idempotency_key=key, started_at=body.get("started_at"),
        agent_version=body.get("agent_version"), trigger=body.get("trigger"),
        errors=_messages(body),
    )
    with context.session() as session:
        if key is not None and (stored := _stored(session, fqdn, key)) is not None:
            return jsonify(as_json(stored)), 200
        session.add(report)
        try:
            session.commit()
        except IntegrityError:
            # The same report, delivered twice at once: the other delivery won.
            session.rollback()
            if key is None or (stored := _stored(session, fqdn, key)) is None:
                raise
            return jsonify(as_json(stored)), 200
    return jsonify(as_json(report)), 201


def _stored(session: Any, host: str, key: str) -> RunReport | None:
    found: RunReport | None = session.scalars(
        select(RunReport).where(RunReport.host == host, RunReport.idempotency_key == key)).first()
    return found


def latest(host: str) -> dict[str, Any] | None:
    """The host's newest report, for the host view."""
    with context.session() as session:
        report = session.scalars(select(RunReport).where(RunReport.host == host)
                                 .order_by(RunReport.id.desc()).limit(1)).first()
    return as_json(report) if report is not None else None


@blueprint.get("/hosts/<fqdn>/reports")
def for_host(fqdn: str) -> Any:
    try:
        validate_certname(fqdn)
    except InvalidName as error:
        raise Refused(404, f"no host {fqdn!r}: {error}") from None
    with context.session() as session:
        reports = session.scalars(select(RunReport).where(RunReport.host == fqdn)
                                  .order_by(RunReport.id.desc()).limit(50)).all()
    project = reports[0].project if reports else None
    may_read_host(g.actor, fqdn, project)
    return jsonify([as_json(report) for report in reports])


@blueprint.get("/projects/<project>/reports")
def latest_per_host(project: str) -> Any:
    """The latest report of every host of ``project``."""
    may_change_project(g.actor, project)
    with context.session() as session:
        newest = (select(func.max(RunReport.id)).where(RunReport.project == project)
                  .group_by(RunReport.host))
        reports = session.scalars(select(RunReport).where(RunReport.id.in_(newest))
                                  .order_by(RunReport.host)).all()
    return jsonify([as_json(report) for report in reports])

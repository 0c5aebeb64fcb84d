"""What instances said: run reports, agent states and smoke results, per host incarnation.

A host name can be deleted and created again. Each creation gets a new
incarnation (stored with its token); every report, agent state and smoke
result records the incarnation of the token that sent it. Everything shown
for a host is its current incarnation's, so a new host never inherits the
deleted one's last run, agent state, smoke results or report history. A
deleted host's reports stay in the store (retired), out of every view.

Smoke results (a ``SmokeSummary``: the checks per Puppet class the agent
runs after every run, and alone on an interval) come in a run report or on
their own; the host keeps the latest, and a report keeps its own copy. A
host is *failing* when its last run failed or its latest smoke results do
(:func:`host_failing`), so a service that dies between runs shows while the
last run stays as it was.
"""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import context
from .auth import Actor, must_be_host
from .contract import Body
from .errors import Invalid
from .store import AgentState, HostToken, RunReport, SmokeResult, now

MAX_MESSAGES = 50
MAX_MESSAGE = 2000
# The statuses of a run that did what it was asked; any other is a failed run.
SUCCEEDED = frozenset({"changed", "unchanged"})


def current_incarnation(host: str) -> str | None:
    """The incarnation of the host as it exists now; None if it has no token."""
    with context.session() as session:
        incarnation: str | None = session.scalar(
            select(HostToken.incarnation).where(HostToken.host == host))
    return incarnation


def retire(session: Session, host: str) -> None:
    """Forget the host's token, agent state and smoke results (in ``session``'s
    transaction)."""
    session.execute(delete(HostToken).where(HostToken.host == host))
    session.execute(delete(AgentState).where(AgentState.host == host))
    session.execute(delete(SmokeResult).where(SmokeResult.host == host))


def agent_state(host: str, incarnation: str | None) -> dict[str, Any] | None:
    """What the host's agent last said, or None if it never did (in this incarnation)."""
    if incarnation is None:
        return None
    with context.session() as session:
        state = session.get(AgentState, host)
    if state is None or state.incarnation != incarnation:
        return None
    return state_json(state)


def state_json(state: AgentState) -> dict[str, Any]:
    return {"version": state.version, "disabled": state.disabled, "reason": state.reason,
            "changed_at": state.changed_at.isoformat(),
            "received_at": state.received_at.isoformat()}


def reports(host: str, incarnation: str | None, limit: int = 50) -> list[dict[str, Any]]:
    """The host's reports in this incarnation, newest first."""
    if incarnation is None:
        return []
    with context.session() as session:
        found = session.scalars(
            select(RunReport).where(RunReport.host == host,
                                    RunReport.incarnation == incarnation)
            .order_by(RunReport.id.desc()).limit(limit)).all()
    return [report_json(report) for report in found]


def latest_report(host: str, incarnation: str | None) -> dict[str, Any] | None:
    """The host's newest report in this incarnation, for the host view."""
    found = reports(host, incarnation, limit=1)
    return found[0] if found else None


def latest_per_host(hosts: list[str]) -> list[dict[str, Any]]:
    """The newest report of each of ``hosts`` in its current incarnation, by host name.

    Joined with the tokens, so a deleted host's reports (an earlier
    incarnation of the name) are not among them.
    """
    if not hosts:
        return []
    with context.session() as session:
        current = (select(func.max(RunReport.id))
                   .join(HostToken, (HostToken.host == RunReport.host)
                         & (HostToken.incarnation == RunReport.incarnation))
                   .where(RunReport.host.in_(hosts))
                   .group_by(RunReport.host))
        found = session.scalars(select(RunReport).where(RunReport.id.in_(current))
                                .order_by(RunReport.host)).all()
    return [report_json(report) for report in found]


def report_json(report: RunReport) -> dict[str, Any]:
    return {"id": report.id, "host": report.host, "project": report.project,
            "received_at": report.received_at.isoformat(), "commit": report.commit,
            "environment": report.environment, "status": report.status,
            "exit_code": report.exit_code, "changed": report.changed, "failed": report.failed,
            "failures": report.failures, "duration": report.duration,
            "started_at": report.started_at.isoformat() if report.started_at else None,
            "agent_version": report.agent_version, "trigger": report.trigger,
            "errors": report.errors or [], "truncated": bool(report.truncated),
            "smoke": smoke_json(report.smoke, report.received_at)
            if report.smoke is not None else None,
            "failing": report.status not in SUCCEEDED or smoke_failing(report.smoke)}


def smoke_failing(summary: Mapping[str, Any] | None) -> bool:
    """Whether smoke results fail: a check did not hold, or the checks could not run."""
    return summary is not None and (summary["failed"] > 0 or summary["error"] is not None)


def host_failing(last_run: Mapping[str, Any] | None, smoke: Mapping[str, Any] | None) -> bool:
    """Whether a host is failing, by its last run and its latest smoke results.

    The run counts by its status only: the smoke results it carried count
    as the host's latest, which they are unless newer ones came, so a later
    check that holds clears a failure the run's own checks found.
    """
    return (last_run is not None and last_run["status"] not in SUCCEEDED) \
        or smoke_failing(smoke)


def latest_smoke(host: str, incarnation: str | None) -> dict[str, Any] | None:
    """The host's latest smoke results, or None if it sent none (in this incarnation)."""
    if incarnation is None:
        return None
    with context.session() as session:
        found = session.get(SmokeResult, host)
    if found is None or found.incarnation != incarnation:
        return None
    return smoke_json(found.summary, found.received_at)


def smoke_json(summary: Mapping[str, Any], received_at: datetime) -> dict[str, Any]:
    return {**summary, "received_at": received_at.isoformat()}


def failing_hosts(hosts: list[str]) -> set[str]:
    """Those of ``hosts`` that are failing (:func:`host_failing`), in their current
    incarnation."""
    if not hosts:
        return set()
    last_runs = {report["host"]: report for report in latest_per_host(hosts)}
    with context.session() as session:
        found = session.scalars(
            select(SmokeResult)
            .join(HostToken, (HostToken.host == SmokeResult.host)
                  & (HostToken.incarnation == SmokeResult.incarnation))
            .where(SmokeResult.host.in_(hosts))).all()
    smoke = {row.host: row.summary for row in found}
    return {host for host in hosts if host_failing(last_runs.get(host), smoke.get(host))}


def moment(text: str, field: str) -> datetime:
    """An ISO 8601 date and time from a request; one without a zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(text)
        moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise Invalid(f"{field} must be an ISO 8601 date and time") from None
    # Every database stores these years (MariaDB's DATETIME starts at 1000).
    if not 1970 <= moment.year <= 9999:
        raise Invalid(f"{field} must be a date between the years 1970 and 9999")
    return moment


def store_report(actor: Actor | None, fqdn: str, read_body: Body,
                 read_key: Callable[[], str | None]) -> tuple[dict[str, Any], bool]:
    """Store a run report of ``fqdn``, sent by its own token: (the stored report,
    whether it is new). A report whose idempotency key this host (in its current
    incarnation) used before is not stored again: the stored one is returned. The
    smoke results a report carries become the host's latest in the same transaction,
    unless the stored ones are newer."""
    host = must_be_host(actor, fqdn, "report runs")
    body, key = read_body(), read_key()
    resources = body.get("resources") or {}
    smoke = _smoke(body["smoke"], "smoke.") if body.get("smoke") is not None else None
    received_at = now()
    report = RunReport(
        received_at=received_at, host=fqdn, project=host.project, incarnation=host.incarnation,
        commit=body.get("commit"), environment=body.get("environment"),
        status=body["status"], exit_code=int(body["exit_code"]),
        changed=int(resources.get("changed", 0)), failed=int(resources.get("failed", 0)),
        failures=[{"resource": item["resource"], "messages": item.get("messages", [])}
                  for item in body.get("failed_resources", [])],
        duration=body.get("duration"), idempotency_key=key,
        started_at=moment(body["started_at"], "started_at") if "started_at" in body else None,
        agent_version=body.get("agent_version"), trigger=body.get("trigger"),
        errors=_messages(body), truncated=body.get("truncated", False),
        smoke=smoke[1] if smoke is not None else None,
    )
    with context.session() as session:
        if key is not None and (stored := _stored(session, host, key)) is not None:
            return report_json(stored), False
        session.add(report)
        if smoke is not None:
            _keep_smoke(session, host, *smoke, received_at)
        try:
            session.commit()
        except IntegrityError:
            # The same report, delivered twice at once: the other delivery won.
            session.rollback()
            if key is None or (stored := _stored(session, host, key)) is None:
                raise
            return report_json(stored), False
        return report_json(report), True


def _messages(body: dict[str, Any]) -> list[str]:
    """The run's error messages, the agent's and Puppet's, once each and bounded."""
    messages = [body.get("error"), body.get("sync_error"), *body.get("errors", [])]
    unique = dict.fromkeys(message[:MAX_MESSAGE] for message in messages if message)
    return list(unique)[:MAX_MESSAGES]


def _stored(session: Session, host: Actor, key: str) -> RunReport | None:
    """The report this host (in its current incarnation) already sent under ``key``."""
    found: RunReport | None = session.scalars(
        select(RunReport).where(RunReport.host == host.name,
                                RunReport.incarnation == host.incarnation,
                                RunReport.idempotency_key == key)).first()
    return found


def store_agent_state(actor: Actor | None, fqdn: str, read_body: Body) -> dict[str, Any]:
    """Keep what ``fqdn``'s agent says of itself (an ``AgentStateChange``, sent by its
    own token), unless the stored state is newer; answer the state kept."""
    host = must_be_host(actor, fqdn, "say what its agent does")
    body = read_body()
    # An agent whose clock runs ahead must not make every later state look older:
    # no state is dated after its arrival.
    changed_at = min(moment(body["changed_at"], "changed_at"), now())
    with context.session() as session:
        state = session.get(AgentState, fqdn)
        if state is None or state.incarnation != host.incarnation:
            # A state left by an earlier incarnation of this name counts for nothing.
            if state is not None:
                session.delete(state)
                session.flush()
            state = AgentState(host=fqdn, project=host.project, incarnation=host.incarnation)
            session.add(state)
        elif state.changed_at > changed_at:
            return state_json(state)
        state.disabled, state.reason = body["disabled"], body.get("reason")
        state.version = body.get("version")
        state.changed_at, state.received_at = changed_at, now()
        session.commit()
        return state_json(state)


def store_smoke(actor: Actor | None, fqdn: str, read_body: Body) -> dict[str, Any]:
    """Keep ``fqdn``'s latest smoke results (a ``SmokeSummary``, sent by its own token),
    unless the stored ones are newer; answer the results kept."""
    host = must_be_host(actor, fqdn, "report its smoke tests")
    checked_at, summary = _smoke(read_body(), "")
    with context.session() as session:
        kept = _keep_smoke(session, host, checked_at, summary, now())
        session.commit()
        # Read back, so that the answer is what the host view then shows (MariaDB keeps
        # whole seconds).
        session.refresh(kept)
        return smoke_json(kept.summary, kept.received_at)


def _smoke(body: dict[str, Any], where: str) -> tuple[datetime, dict[str, Any]]:
    """(when the checks ran, the results as stored: every field present) of a schema-valid
    ``SmokeSummary``; ``where`` prefixes the field named in a refusal."""
    # As an agent state's: results dated ahead by the agent's clock must not make every
    # later result look older.
    checked_at = min(moment(body["checked_at"], f"{where}checked_at"), now())
    return checked_at, {
        "checked_at": checked_at.isoformat(), "commit": body.get("commit"),
        "passed": body["passed"], "failed": body["failed"], "skipped": body["skipped"],
        "duration": body.get("duration"), "error": body.get("error"),
        "failures": body.get("failures", []), "truncated": body.get("truncated", False)}


def _keep_smoke(session: Session, host: Actor, checked_at: datetime, summary: dict[str, Any],
                received_at: datetime) -> SmokeResult:
    """The host's latest smoke results once these are considered (in ``session``'s
    transaction): these, unless the stored ones of this incarnation are newer."""
    kept = session.get(SmokeResult, host.name)
    if kept is not None and kept.incarnation == host.incarnation \
            and kept.checked_at > checked_at:
        return kept
    if kept is None:
        kept = SmokeResult(host=host.name)
        session.add(kept)
    # Results left by an earlier incarnation of this name count for nothing: replaced whole.
    kept.project, kept.incarnation = host.project, host.incarnation
    kept.checked_at, kept.received_at, kept.summary = checked_at, received_at, summary
    return kept

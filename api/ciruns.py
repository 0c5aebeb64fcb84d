"""CI runs (issue 13): every run of a Gerrit change's patch set, and every rule about one.

The CI writes them through its account, a person of the directory in the
project ``ci.clone_project``: the dispatcher creates a run when a comment
asks for one (posting it again after a restart, under the same event key,
gives back the run stored), and the dispatcher and the job change it as it
goes. The state moves along :data:`NEXT` only, and a run in a final state
changes no more, so a late or repeated write cannot undo an outcome.

Reading is for people, as for the audit log and run reports: a run's result
holds what its clones' Puppet runs and checks said, which is no more public
than a host's own reports.

A run that becomes final is written to the Server Admin Log of each project
its hosts' originals are in (:func:`projects_of`), in the words of
:func:`log_message`, in the same transaction as the run and its audit
record: one entry per project, once, since no write passes a final state.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from . import context, hosts, rows
from .auth import Actor, person, standing
from .contract import Body
from .errors import Invalid, Refused
from .store import Change, CiRun, LogEntry, now

STATES = ("queued", "running", "passed", "failed", "error", "cancelled", "stale")
NEXT = {"queued": ("running", "cancelled", "error"),
        "running": ("passed", "failed", "error", "cancelled", "stale")}
FINAL = frozenset(STATES) - frozenset(NEXT)
# The one vote each state allows; error (an infrastructure failure) and stale (the
# patch set is no longer current) are no verdict, and a run not finished has none yet.
VOTES = {"passed": 1, "failed": -1}
# What a final state says in the Server Admin Log.
OUTCOMES = {"passed": "passed", "failed": "failed",
            "error": "error (the CI could not test it: no verdict)",
            "cancelled": "cancelled", "stale": "stale (the patch set is no longer current)"}

MAX_RESULT = 256 * 1024  # bytes of the result as compact JSON
# A change's body carries the result, the message and the hosts: more than
# api.max_body's default allows any other request.
MAX_CHANGE_BODY = 1024 * 1024
MAX_RUNS = 1000
MAX_LOG_MESSAGE = 2000  # the Server Admin Log's own bound (LogMessage)
FILTERS = ("change", "project", "state")


def may_write(actor: Actor | None) -> Actor:
    """``actor``, if it is a person in ``ci.clone_project`` (the CI's own project); else
    Refused."""
    dn = person(actor)
    assert actor is not None  # person() refuses anonymous callers
    project = context.config().ci.clone_project
    if not standing(project, dn).member:
        raise Refused(403, f"only members of project {project!r} (ci.clone_project) write "
                           "CI runs")
    return actor


def create(actor: Actor | None, read_body: Body) -> tuple[dict[str, Any], bool]:
    """A new run, queued (or running, when the job records it itself), or the one already
    stored under the same event key: (the run, whether it is new). The key must name the
    same patch set (409 otherwise)."""
    may_write(actor)
    body = read_body()
    key = body["event_key"]
    moment = now()
    run = CiRun(event_digest=_digest(key), event_key=key, gerrit_project=body["project"],
                change=int(body["change"]), patchset=int(body["patchset"]),
                revision=body["revision"], branch=body["branch"],
                change_id=body.get("change_id"), change_url=body.get("change_url"),
                subject=body.get("subject"), trigger=body["trigger"],
                requested_by=body["requested_by"], state=body.get("state", "queued"),
                hosts=[], left_out=[], created_at=moment, updated_at=moment)
    with context.session() as session:
        if (stored := _by_key(session, key)) is not None:
            return _same_run(stored, run), False
        session.add(run)
        try:
            session.flush()
            session.add(Change(actor=str(actor), action="ci.run.create", target=_target(run),
                               project=None, before=None, after=as_json(run)))
            session.commit()
        except IntegrityError:
            # The same event posted twice at once: the other request stored it.
            session.rollback()
            if (stored := _by_key(session, key)) is None:
                raise
            return _same_run(stored, run), False
        # As stored: a repeat of the same post answers the same (MariaDB keeps whole seconds).
        session.refresh(run)
    return as_json(run), True


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _by_key(session: Session, key: str) -> CiRun | None:
    found: CiRun | None = session.scalars(
        select(CiRun).where(CiRun.event_digest == _digest(key))).first()
    return found


def _same_run(stored: CiRun, posted: CiRun) -> dict[str, Any]:
    """The stored run, if the key posted again names the same patch set; else 409."""
    identity = ("gerrit_project", "change", "patchset", "revision")
    if any(getattr(stored, name) != getattr(posted, name) for name in identity):
        raise Refused(409, f"event_key {stored.event_key!r} already names CI run {stored.id} "
                           f"(change {stored.change} patch set {stored.patchset} of "
                           f"{stored.gerrit_project})")
    return as_json(stored)


def update(actor: Actor | None, run_id: int, read_body: Body) -> dict[str, Any]:
    """Change the run ``run_id`` (see CiRunChanges): 409 for a state it may not take or a
    run already final. A run made final goes to the Server Admin Log of its projects."""
    writer = may_write(actor)
    body = read_body()
    _check_changes(body)
    with context.session() as session:
        run = session.get(CiRun, run_id)
        if run is None:
            raise Refused(404, f"no CI run {run_id}")
        if run.state in FINAL:
            raise Refused(409, f"CI run {run_id} is {run.state} already: a finished run "
                               "changes no more")
        state = body.get("state", run.state)
        if state != run.state and state not in NEXT[run.state]:
            raise Refused(409, f"CI run {run_id} is {run.state}: it may become "
                               f"{' or '.join(NEXT[run.state])}, not {state}")
        vote = int(body["vote"]) if body.get("vote") is not None else \
            None if "vote" in body else run.vote
        if vote is not None and VOTES.get(state) != vote:
            raise Invalid(f"vote: a run that is {state} cannot carry the vote {vote:+d}"
                          + (f" (only {VOTES[state]:+d})" if state in VOTES else
                             " (it has no verdict)"))
        before = _audited(run, body)
        for name, value in body.items():
            setattr(run, name, int(value) if name in ("jenkins_queue_id", "vote")
                    and value is not None else value)
        run.updated_at = now()
        if state in FINAL:
            run.finished_at = run.updated_at
            projects = projects_of([host["original"] for host in run.hosts])
            for project in sorted(set(projects.values())):
                own = [host for host in run.hosts if projects.get(host["original"]) == project]
                session.add(LogEntry(project=project, author=writer.name,
                                     message=log_message(run, own)))
        session.add(Change(actor=str(writer), action="ci.run.update", target=_target(run),
                           project=None, before=before, after=_audited(run, body)))
        try:
            session.commit()
        except StaleDataError:
            raise Refused(409, f"CI run {run_id} was changed by another request at the same "
                               "time; read it again") from None
        session.refresh(run)
    return as_json(run)


def _check_changes(body: Mapping[str, Any]) -> None:
    """What the schema cannot say: each original once, and the result's size (413)."""
    seen: set[str] = set()
    for host in body.get("hosts", []):
        if host["original"] in seen:
            raise Invalid(f"hosts: {host['original']} is listed twice")
        seen.add(host["original"])
    if "result" in body:
        size = len(json.dumps(body["result"], ensure_ascii=False,
                              separators=(",", ":")).encode())
        if size > MAX_RESULT:
            raise Refused(413, f"result: {size} bytes as JSON, more than the {MAX_RESULT} "
                               "(256 KiB) allowed")


def _audited(run: CiRun, body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields ``body`` changes, as ``run`` has them; the result by its size only (the
    run keeps it; the audit log need not hold it twice)."""
    view = as_json(run)
    fields = {name: view[name] for name in body}
    if fields.get("result") is not None:
        fields["result"] = {"bytes": len(json.dumps(fields["result"]).encode())}
    return {**fields, "state": run.state}


def _target(run: CiRun) -> str:
    return f"ci run {run.id}"


def projects_of(originals: list[str]) -> dict[str, str]:
    """The project of each of the hosts ``originals`` that has one, by the one rule
    (``opslab.names.host_project``): the project its entry names, else its name's second
    label (LABEL.PROJECT.DOMAIN) if that project exists. An original deleted since it was
    cloned counts by its name."""
    entries = []
    for name in originals:
        try:
            entries.append(hosts.existing(name)[1])
        except Refused:
            entries.append({"associatedDomain": [name]})
    return {name: str(host["project"])
            for name, host in zip(originals, hosts.documents(entries), strict=True)
            if host["project"]}


def log_message(run: CiRun, own: list[dict[str, Any]]) -> str:
    """The Server Admin Log line of a finished ``run`` in a project whose hosts are ``own``:
    who asked for what, the outcome, those hosts' results, the vote, the run's URL.

    One line of at most MAX_LOG_MESSAGE characters, as every log entry: hosts
    that do not fit are counted instead (``and 3 more``).
    """
    head = (f'CI run {run.id} (change {run.change} patch set {run.patchset}, "{run.trigger}" '
            f"by {run.requested_by}): {OUTCOMES[run.state]}: ")
    vote = f"Verified {run.vote:+d}" if run.vote is not None else "no vote"
    tail = f"; {vote} {run_url(run.id)}"
    room = MAX_LOG_MESSAGE - len(head) - len(tail) - len(", and 50 more")
    shown: list[str] = []
    for index, host in enumerate(own):
        text = f"{host['original']} {host['result'] or 'not tested'}"
        if len(", ".join([*shown, text])) > room:
            shown.append(f"and {len(own) - index} more")
            break
        shown.append(text)
    return head + ", ".join(shown) + tail


def run_url(run_id: int) -> str:
    """The run's page (api/pages): what the vote's message, the log and the feed link to,
    for people to read; scripts read ``/v1/ci/runs/ID``."""
    return f"{context.config().api.public_url.rstrip('/')}/ci/{run_id}"


def recent(actor: Actor | None, filters: Mapping[str, str], limit: int) -> list[CiRun]:
    """The newest ``limit`` runs (at most MAX_RUNS) matching ``filters`` (FILTERS: the
    change number, the Gerrit project, the state); people only."""
    person(actor)
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(unknown)}")
    equal: dict[str, Any] = {}
    if "change" in filters:
        text = filters["change"]
        if not (text.isascii() and text.isdigit() and 0 < int(text) < 2**31):
            raise Invalid(f"change must be a change number, got {text[:40]!r}")
        equal["change"] = int(text)
    if "project" in filters:
        equal["gerrit_project"] = filters["project"]
    if "state" in filters:
        if filters["state"] not in STATES:
            raise Invalid(f"state must be one of {', '.join(STATES)}")
        equal["state"] = filters["state"]
    return rows.newest(CiRun, limit, MAX_RUNS, **equal)


def one(actor: Actor | None, run_id: int) -> dict[str, Any]:
    """One run with its result and message (people only); Refused (404) if there is none."""
    person(actor)
    return as_json(rows.by_id(CiRun, run_id, "CI run"))


def summary_json(run: CiRun) -> dict[str, Any]:
    """A run without its result and message, as lists show it (a result may be 256 KiB)."""
    return {"id": run.id, "url": run_url(run.id), "event_key": run.event_key,
            "project": run.gerrit_project, "change": run.change, "patchset": run.patchset,
            "revision": run.revision, "branch": run.branch, "change_id": run.change_id,
            "change_url": run.change_url, "subject": run.subject, "trigger": run.trigger,
            "requested_by": run.requested_by, "state": run.state,
            "jenkins_queue_id": run.jenkins_queue_id, "build_url": run.build_url,
            "hosts": run.hosts, "left_out": run.left_out, "vote": run.vote,
            "created_at": run.created_at.isoformat(), "updated_at": run.updated_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None}


def as_json(run: CiRun) -> dict[str, Any]:
    return {**summary_json(run), "result": run.result, "message": run.message}


def feed_content(run: CiRun) -> str:
    """An Atom entry's text: what was tested, by whom, the outcome, and the links to the
    change and the build."""
    vote = f"Verified {run.vote:+d}" if run.vote is not None else "no vote"
    results = ", ".join(f"{host['original']} {host['result'] or 'not tested'}"
                        for host in run.hosts) or "none yet"
    lines = [run.subject or "", f"{run.gerrit_project} {run.branch}: change {run.change} "
             f'patch set {run.patchset} ({run.revision}), "{run.trigger}" by '
             f"{run.requested_by}", f"{run.state}; {vote}", f"hosts: {results}",
             f"change: {run.change_url or '-'}", f"build: {run.build_url or '-'}"]
    return "\n".join(lines)


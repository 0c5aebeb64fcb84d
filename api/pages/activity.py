"""What happened: Recent Changes (the audit log), the Server Admin Log and the CI's runs.

Each page reads through the module its JSON route calls (:mod:`opslab.api.audit`,
:mod:`opslab.api.adminlog`, :mod:`opslab.api.ciruns`), with the same filters and
the same read rules: the audit log and CI runs for people, the Server Admin Log
for everyone.
"""

import json
import re
from typing import Any
from urllib.parse import urlsplit

from flask import g, render_template, request
from markupsafe import Markup
from sqlalchemy import func, select

from .. import adminlog, audit, ciruns, context
from ..auth import person, project_membership
from ..errors import Invalid
from ..store import LogEntry
from .blueprint import blueprint
from .diff import diff_documents
from .format import visible

# The combined Server Admin Log: this many projects, each with its newest entries.
LOG_PROJECTS = 50
LOG_PER_PROJECT = 10
DEFAULT_LIMIT = 100
MAX_LIMIT_DIGITS = 9  # a limit past 999,999,999 is as good as that: every list has its most
# A URL in a log message: printable ASCII after the scheme but for " < > (which end it, as
# in a quoted or bracketed URL); the sentence's punctuation after it is not part of it.
_URL = re.compile(r"https?://[!#-;=?-~]+")
_TRAILING = ".,;:!?)]}'"


@blueprint.app_template_test("web_url")
def web_url(value: object) -> bool:
    """True for an http(s) URL with a host: the only kind a page turns into a link (a run's
    URLs are whatever the CI account posted; ``javascript:`` must stay text)."""
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and value.isprintable()


@blueprint.app_template_filter("actor")
def actor_name(recorded: str) -> str:
    """Who made a change, as the audit log records them (``person:carol``), as a person
    says it: a person by their uid, anyone else with their kind (``reaper (service)``)."""
    kind, _, name = recorded.partition(":")
    if not name:
        return recorded
    return name if kind == "person" else f"{name} ({kind})"


@blueprint.app_template_filter("linked")
def linked(text: str) -> Markup:
    """``text`` shown as ``visible`` shows it, its http(s) URLs made links (a log line names
    a run, a ticket, a commit); nothing else becomes markup."""
    if "http" not in text:
        return visible(text)  # most lines: no search, no pieces
    pieces: list[str] = []
    end = 0
    for found in _URL.finditer(text):
        url = found.group(0).rstrip(_TRAILING)
        shown = visible(url)
        pieces += [visible(text[end:found.start()]),
                   f'<a href="{shown}" rel="nofollow noopener noreferrer">{shown}</a>']
        end = found.start() + len(url)
    pieces.append(visible(text[end:]))
    # Safe by construction: every piece of text went through visible (escaped); the URL,
    # of printable ASCII without quotes or angle brackets, escaped in the attribute too.
    return Markup("".join(pieces))  # noqa: S704


def _limit() -> int:
    text = request.args.get("limit", "") or str(DEFAULT_LIMIT)
    if not (text.isascii() and text.isdigit()):
        raise Invalid("limit must be a whole number")
    # Every list has its most (rows.newest); more digits than that only cost int() time.
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_LIMIT_DIGITS else 10 ** MAX_LIMIT_DIGITS


def _filters(names: tuple[str, ...]) -> dict[str, str]:
    """The query's filters among ``names``; an empty field (a form left blank) is no filter,
    any other parameter is refused as the API refuses it."""
    unknown = sorted(set(request.args) - {*names, "limit"})
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(name[:40] for name in unknown)}")
    return {name: request.args[name] for name in names if request.args.get(name)}


@blueprint.get("/changes")
def changes() -> Any:
    person(g.actor)
    filters = _filters(audit.FILTERS)
    if ":" not in filters.get("actor", ":"):
        # The audit log records "person:carol"; people type "carol".
        filters["actor"] = f"person:{filters['actor']}"
    limit = _limit()
    return render_template("changes.html", changes=audit.recent(filters, limit),
                           filters=filters, limit=limit, names=audit.FILTERS)


@blueprint.get("/changes/<int(max=2147483647):change_id>")
def change(change_id: int) -> Any:
    person(g.actor)
    shown = audit.one(change_id)
    return render_template("change.html", change=shown,
                           fields=diff_documents(shown["before"], shown["after"]))


def latest_by_project(projects: int, per_project: int) -> list[tuple[str, list[LogEntry]]]:
    """The ``projects`` projects whose latest Server Admin Log entry is newest, newest
    first, each with its newest ``per_project`` entries: two queries, however many
    projects (each entry's rank in its project by a window function)."""
    latest = func.max(LogEntry.id).label("latest")
    rank = func.row_number().over(partition_by=LogEntry.project,
                                  order_by=LogEntry.id.desc()).label("rank")
    with context.session() as session:
        order = list(session.scalars(select(LogEntry.project).group_by(LogEntry.project)
                                     .order_by(latest.desc()).limit(projects)).all())
        ranked = select(LogEntry.id, rank).where(LogEntry.project.in_(order)).subquery()
        entries = session.scalars(select(LogEntry).join(ranked, LogEntry.id == ranked.c.id)
                                  .where(ranked.c.rank <= per_project)
                                  .order_by(LogEntry.id.desc())).all()
    sections: dict[str, list[LogEntry]] = {project: [] for project in order}
    for entry in entries:
        sections[entry.project].append(entry)
    return list(sections.items())


@blueprint.get("/log")
def log() -> Any:
    return render_template("log.html", sections=latest_by_project(LOG_PROJECTS, LOG_PER_PROJECT),
                           per_project=LOG_PER_PROJECT, most_projects=LOG_PROJECTS)


@blueprint.get("/log/<project>")
def project_log(project: str) -> Any:
    entries = adminlog.entries(project, _limit())
    if not entries:
        # A page for any name at all would let anyone show a "project" of their wording.
        project_membership(project)
    return render_template("log_project.html", project=project, entries=entries)


@blueprint.get("/ci")
def ci_runs() -> Any:
    filters = _filters(ciruns.FILTERS)
    limit = _limit()
    return render_template("ci_runs.html", runs=ciruns.recent(g.actor, filters, limit),
                           filters=filters, limit=limit, states=ciruns.STATES)


@blueprint.get("/ci/<int(max=2147483647):run_id>")
def ci_run(run_id: int) -> Any:
    run = ciruns.one(g.actor, run_id)
    result = run["result"] if isinstance(run["result"], dict) else {}
    return render_template(
        "ci_run.html", run=run, hosts=host_rows(run["hosts"], result),
        secrets=[item for item in _list(result.get("secrets")) if isinstance(item, dict)],
        result_text=json.dumps(run["result"], indent=2, ensure_ascii=False)
        if run["result"] is not None else None)


def host_rows(hosts: list[dict[str, Any]], result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each host of a run with what the job's result says of its clone (``detail``: failed
    resources, resources changed again, failed smoke checks; None when it says nothing).

    The result is free-form (whatever the job posted, ci/outcome.py's summary
    today), so anything not shaped as expected is left out, never trusted.
    """
    details = {item["host"]: item for item in _list(result.get("hosts"))
               if isinstance(item, dict) and isinstance(item.get("host"), str)}
    rows = []
    for host in hosts:
        found = details.get(host.get("clone") or "") or details.get(host["original"])
        detail = None if found is None else {
            "failed_resources": found.get("failed_resources", 0),
            "changed_again": [str(item) for item in _list(found.get("changed_again"))],
            "failed_checks": [str(item) for item in _list(found.get("failed_checks"))]}
        rows.append({**host, "detail": detail})
    return rows


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []

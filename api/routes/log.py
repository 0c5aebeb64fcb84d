"""The Server Admin Log: what people did, in their words, per project and combined.

``POST /v1/projects/P/log`` takes a message from a member; ``POST
/v1/log/chat`` takes a chat line of the form ``!log PROJECT MESSAGE`` so a
chat bot can hand lines straight over. Reading is open to everyone: the log
is the infrastructure's public record.
"""

import re
from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from opslab.names import InvalidName, validate_project_name

from .. import context
from ..auth import may_change_project
from ..contract import request_document
from ..errors import Invalid, Refused
from ..feeds import FeedEntry, atom
from ..store import LogEntry

blueprint = Blueprint("log", __name__)
CHAT_LINE = re.compile(r"!log\s+(?P<project>\S+)\s+(?P<message>\S.*)", re.DOTALL)


def parse_chat_line(line: str) -> tuple[str, str]:
    """(project, message) of a ``!log PROJECT MESSAGE`` line; Invalid otherwise."""
    match = CHAT_LINE.fullmatch(line.strip())
    if match is None:
        raise Invalid("a chat line must read '!log PROJECT MESSAGE'")
    try:
        project = validate_project_name(match["project"])
    except InvalidName as error:
        raise Invalid(f"line: {error}") from None
    return project, match["message"].strip()


def _record(project: str, message: str) -> Any:
    may_change_project(g.actor, project)
    entry = LogEntry(project=project, author=g.actor.name, message=message)
    with context.session() as session:
        session.add(entry)
        session.commit()
    return jsonify(_as_json(entry)), 201


def _as_json(entry: LogEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at.isoformat(), "project": entry.project,
            "author": entry.author, "message": entry.message}


def _entries(project: str | None) -> list[LogEntry]:
    try:
        limit = min(max(int(request.args.get("limit", "100")), 1), 1000)
    except ValueError:
        raise Invalid("limit must be a whole number") from None
    query = select(LogEntry).order_by(LogEntry.id.desc()).limit(limit)
    if project is not None:
        query = query.where(LogEntry.project == project)
    with context.session() as session:
        return list(session.scalars(query).all())


@blueprint.post("/projects/<project>/log")
def post(project: str) -> Any:
    return _record(project, request_document()["message"].strip())


@blueprint.post("/log/chat")
def post_chat_line() -> Any:
    project, message = parse_chat_line(request_document()["line"])
    # The message obeys the rule of a message posted directly (the LogMessage schema).
    contract = context.contract()
    contract.check(contract.schema("LogMessage"), {"message": message})
    return _record(project, message)


@blueprint.get("/projects/<project>/log")
def for_project(project: str) -> Any:
    return jsonify([_as_json(entry) for entry in _entries(project)])


@blueprint.get("/log")
def combined() -> Any:
    return jsonify([_as_json(entry) for entry in _entries(None)])


@blueprint.get("/log/<int(max=2147483647):entry_id>")
def one(entry_id: int) -> Any:
    """One entry; the Atom feeds' entries link here."""
    with context.session() as session:
        found = session.get(LogEntry, entry_id)
    if found is None:
        raise Refused(404, f"no log entry {entry_id}")
    return jsonify(_as_json(found))


def _feed(project: str | None) -> Any:
    base = context.config().api.public_url.rstrip("/")
    path = f"/v1/projects/{project}/log.atom" if project else "/v1/log.atom"
    entries = [FeedEntry(f"{base}/v1/log/{entry.id}", f"{entry.project}: {entry.message}",
                         entry.at, entry.author, entry.message)
               for entry in _entries(project)]
    return atom(f"{base}{path}", f"Server Admin Log{f' of {project}' if project else ''}",
                entries)


@blueprint.get("/projects/<project>/log.atom")
def project_feed(project: str) -> Any:
    return _feed(project)


@blueprint.get("/log.atom")
def combined_feed() -> Any:
    return _feed(None)


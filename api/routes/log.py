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

from .. import context
from ..app import json_body
from ..auth import PROJECT_NAME, may_change_project
from ..feeds import FeedEntry, atom
from ..hosts import Invalid
from ..store import LogEntry

blueprint = Blueprint("log", __name__)
MAX_MESSAGE = 2000
CHAT_LINE = re.compile(rf"!log\s+(?P<project>{PROJECT_NAME.pattern})\s+(?P<message>\S.*)",
                       re.DOTALL)


def parse_chat_line(line: str) -> tuple[str, str]:
    """(project, message) of a ``!log PROJECT MESSAGE`` line; Invalid otherwise."""
    match = CHAT_LINE.fullmatch(line.strip())
    if match is None:
        raise Invalid("a chat line must read '!log PROJECT MESSAGE'")
    return match["project"], match["message"].strip()


def _message(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise Invalid("message must be a non-empty string")
    if len(text) > MAX_MESSAGE or any(ord(char) < 0x20 for char in text):
        raise Invalid(f"message must be one line of at most {MAX_MESSAGE} characters")
    return text.strip()


def _fields(body: Any, allowed: str) -> Any:
    if not isinstance(body, dict) or set(body) != {allowed}:
        raise Invalid(f"the body must be a JSON object with exactly the field {allowed!r}")
    return body[allowed]


def _record(project: str, message: str) -> Any:
    may_change_project(g.actor, project)
    entry = LogEntry(project=project, author=g.actor.name, message=_message(message))
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
    return _record(project, _fields(json_body(), "message"))


@blueprint.post("/log/chat")
def post_chat_line() -> Any:
    project, message = parse_chat_line(str(_fields(json_body(), "line")))
    return _record(project, message)


@blueprint.get("/projects/<project>/log")
def for_project(project: str) -> Any:
    return jsonify([_as_json(entry) for entry in _entries(project)])


@blueprint.get("/log")
def combined() -> Any:
    return jsonify([_as_json(entry) for entry in _entries(None)])


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


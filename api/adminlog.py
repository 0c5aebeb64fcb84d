"""The Server Admin Log: what people did, in their words, per project and combined.

A member logs a message for a project; a chat bot hands over lines of the
form ``!log PROJECT MESSAGE``. Reading is open to everyone: the log is the
infrastructure's public record.
"""

import re
from typing import Any

from opslab.names import InvalidName, validate_project_name

from . import context, rows
from .auth import Actor, may_change_project
from .errors import Invalid
from .store import LogEntry

CHAT_LINE = re.compile(r"!log\s+(?P<project>\S+)\s+(?P<message>\S.*)", re.DOTALL)
MAX_ENTRIES = 1000


def parse_chat_line(line: str) -> tuple[str, str]:
    """(project, message) of a ``!log PROJECT MESSAGE`` line; Invalid otherwise.

    The message obeys the rule of a message posted directly (the OpenAPI
    ``LogMessage`` schema).
    """
    match = CHAT_LINE.fullmatch(line.strip())
    if match is None:
        raise Invalid("a chat line must read '!log PROJECT MESSAGE'")
    try:
        project = validate_project_name(match["project"])
    except InvalidName as error:
        raise Invalid(f"line: {error}") from None
    message = match["message"].strip()
    contract = context.contract()
    contract.check(contract.schema("LogMessage"), {"message": message})
    return project, message


def record(actor: Actor | None, project: str, message: str) -> dict[str, Any]:
    """Log ``message`` for ``project`` as ``actor`` (members and operations may)."""
    may_change_project(actor, project)
    assert actor is not None  # may_change_project refuses anonymous callers
    entry = LogEntry(project=project, author=actor.name, message=message)
    with context.session() as session:
        session.add(entry)
        session.commit()
    return as_json(entry)


def entries(project: str | None, limit: int = 100) -> list[LogEntry]:
    """The newest ``limit`` entries (at most MAX_ENTRIES) of ``project``, or of all."""
    return rows.newest(LogEntry, limit, MAX_ENTRIES,
                       **({"project": project} if project is not None else {}))


def one(entry_id: int) -> dict[str, Any]:
    """One entry; Refused (404) if there is none."""
    return as_json(rows.by_id(LogEntry, entry_id, "log entry"))


def as_json(entry: LogEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at.isoformat(), "project": entry.project,
            "author": entry.author, "message": entry.message}

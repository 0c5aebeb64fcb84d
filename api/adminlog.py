"""The Server Admin Log: what people did, in their words, per project and combined.

A member logs a message for a project; a chat bot hands over lines of the
form ``!log PROJECT MESSAGE``. Reading is open to everyone: the log is the
infrastructure's public record.

Lines relayed by a bot account (the bot role, :func:`opslab.api.auth.bot`)
follow Wikimedia's Server Admin Log: anyone in the channel may log for any
project that exists, so the entry's author is the chat nick, not a person,
and ``via`` names the bot. A nick proves nothing (anyone can take one), so
``person`` is set only when the network vouches: the bot passes the
services account the network authenticated the sender as (IRCv3
``account-tag``), and that account is a person of the directory whose
account may be used. Each nick may log at most ``api.bot_nick_limit``
entries through a bot in any ``api.bot_nick_window`` seconds, counted in
the SQL store, which every worker shares.
"""

import math
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from opslab.names import InvalidName, validate_project_name, validate_user_name

from . import context, rows
from .auth import Actor, account_refusal, bot, may_change_project, project_membership
from .errors import Invalid, Refused
from .store import LogEntry, now

CHAT_LINE = re.compile(r"!log\s+(?P<project>\S+)\s+(?P<message>\S.*)", re.DOTALL)
MAX_ENTRIES = 1000


class Throttled(Refused):
    """A nick logged its most entries through a bot for now (429); ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(429, reason)
        self.retry_after = retry_after


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


def relay(actor: Actor | None, project: str, message: str, nick: str,
          account: str | None) -> dict[str, Any]:
    """Log ``message`` for ``project`` as the chat ``nick``, relayed by the bot ``actor``.

    Refused unless ``actor`` is a bot account (403) and ``project`` exists
    (404); Throttled (429) past the nick's limit. ``account`` is the
    services account the network says sent the line (None: none).
    """
    via = bot(actor)
    project_membership(project)
    settings = context.config().api
    with context.session() as session:
        since = now() - timedelta(seconds=settings.bot_nick_window)
        recent = session.scalars(
            select(LogEntry.at)
            .where(LogEntry.via == via, func.lower(LogEntry.author) == nick.lower(),
                   LogEntry.at > since)
            .order_by(LogEntry.at).limit(max(settings.bot_nick_limit, 1))).all()
        if len(recent) >= settings.bot_nick_limit:
            wait = (recent[0] - since).total_seconds() if recent else settings.bot_nick_window
            retry = max(1, math.ceil(wait))
            raise Throttled(f"{nick} has logged {settings.bot_nick_limit} entries through "
                            f"{via} in the last {settings.bot_nick_window:g} s, the most "
                            f"allowed: retry in {retry} s", retry)
        entry = LogEntry(project=project, author=nick, message=message, via=via,
                         person=vouched_person(account))
        session.add(entry)
        session.commit()
    return as_json(entry)


def vouched_person(account: str | None) -> str | None:
    """The directory person the network's services ``account`` is, or None.

    The account must be a login name, a person of the directory whose
    account may be used (opslab.accounts: not locked, not a system account),
    and no bot account: a nick alone never makes a person.
    """
    if account is None:
        return None
    try:
        uid = validate_user_name(account)
    except InvalidName:
        return None
    if uid in context.config().api.bot_accounts or account_refusal(uid):
        return None
    return uid


def entries(project: str | None, limit: int = 100) -> list[LogEntry]:
    """The newest ``limit`` entries (at most MAX_ENTRIES) of ``project``, or of all."""
    return rows.newest(LogEntry, limit, MAX_ENTRIES,
                       **({"project": project} if project is not None else {}))


def one(entry_id: int) -> dict[str, Any]:
    """One entry; Refused (404) if there is none."""
    return as_json(rows.by_id(LogEntry, entry_id, "log entry"))


def as_json(entry: LogEntry) -> dict[str, Any]:
    """An entry as the API serves it: ``via`` the bot that relayed it from chat (None:
    posted directly), ``person`` the directory person the network vouched for."""
    return {"id": entry.id, "at": entry.at.isoformat(), "project": entry.project,
            "author": entry.author, "message": entry.message, "via": entry.via,
            "person": entry.person}


def byline(entry: LogEntry) -> str:
    """Who wrote ``entry``, as feeds and pages say it: a relayed nick names its bot."""
    if entry.via is None:
        return entry.author
    vouched = f", {entry.person} of the directory" if entry.person else ""
    return f"{entry.author} (from chat via {entry.via}{vouched})"

"""A project's documentation: the free-form Markdown its members keep, and the rules for it.

Every person reads it, as they read the project; whoever may change the
project (:func:`opslab.api.auth.may_change_project`) edits it. An edit names
the version it was made from: when someone else saved in between, it is
refused (409) and changes nothing, never a silent overwrite of their work
(the pages keep the person's text in the form). Each edit is stored with
its audit record (``project.documentation``, the text before and after) in
one transaction, as :func:`opslab.api.instances.set_quota` stores a quota.

The JSON API (``/v1/projects/P/documentation``) and the pages both call
:func:`read` and :func:`update`: one set of rules.
"""

import re
from typing import Any

from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError

from . import context
from .auth import Actor, may_change_project, person, project_membership
from .contract import Body
from .errors import Invalid, Refused
from .store import Change, ProjectDocument, now

MAX_CHARACTERS = 65536
# A form sends every byte of non-ASCII text as %XX (up to 12 bytes for a character):
# the body of a whole documentation, as JSON or as a form, with room for the rest.
MAX_BODY = 12 * MAX_CHARACTERS + 16384
# Tabs and line breaks are text; other control characters, line and paragraph
# separators, lone surrogates and noncharacters are not (nor can every database store them).
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def body_limit() -> int:
    """How large a request carrying a documentation may be (at least ``api.max_body``)."""
    return max(context.config().api.max_body, MAX_BODY)


def read(actor: Actor | None, project: str) -> dict[str, Any]:
    """The documentation of ``project`` (people only; a project without one has the empty
    text at version 0); Refused (404) if there is no such project."""
    person(actor)
    project_membership(project)
    with context.session() as session:
        return as_json(project, session.get(ProjectDocument, project))


def update(actor: Actor | None, project: str, read_body: Body) -> dict[str, Any]:
    """Replace the documentation of ``project`` with ``read_body``'s ``text``, made from its
    ``version``; Refused (409) if that is no longer the current version."""
    may_change_project(actor, project)
    assert actor is not None  # may_change_project refuses anonymous callers
    body = read_body()
    text = checked(body["text"])
    since = body["version"]
    with context.session() as session:
        row = session.get(ProjectDocument, project)
        current = row.version if row is not None else 0
        if since != current:
            raise _stale(project, since, row)
        if row is not None and row.text == text:
            return as_json(project, row)  # nothing to store, nor to record
        before = _recorded(row)
        if row is None:
            row = ProjectDocument(project=project, text=text, version=1, updated_by=actor.name,
                                  updated_at=now())
            session.add(row)
        else:
            # Only if nobody saved since this session read it: two edits made from the
            # same version cannot both be stored.
            saved = session.execute(
                sql_update(ProjectDocument)
                .where(ProjectDocument.project == project, ProjectDocument.version == since)
                .values(text=text, version=since + 1, updated_by=actor.name, updated_at=now())
                .execution_options(synchronize_session=False))
            if saved.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                raise _stale(project, since, None)
        session.add(Change(actor=str(actor), action="project.documentation", target=project,
                           project=project, before=before,
                           after={"text": text, "version": since + 1}))
        try:
            session.commit()
        except IntegrityError:
            # Two first edits at once collide on the project's key: the later one is stale.
            raise _stale(project, since, None) from None
        return as_json(project, session.get(ProjectDocument, project))


def checked(text: str) -> str:
    """``text`` as stored (line breaks as ``\\n``), or Invalid: too long, or holding a
    character that is not text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > MAX_CHARACTERS:
        raise Invalid(f"text: {len(text)} characters, more than the {MAX_CHARACTERS} allowed")
    found = _FORBIDDEN.search(text)
    if found is not None:
        line = text.count("\n", 0, found.start()) + 1
        raise Invalid(f"text: line {line} holds the character U+{ord(found.group()):04X}, "
                      "which is not text (only tabs and line breaks may be used)")
    return text


def _stale(project: str, since: int, row: ProjectDocument | None) -> Refused:
    who = f" by {row.updated_by} at {row.updated_at:%Y-%m-%d %H:%M} UTC" if row else ""
    return Refused(409, f"the documentation of {project!r} was changed{who} after version "
                        f"{since}, the one this edit was made from; nothing was saved: "
                        "merge your text with the current one and save again")


def _recorded(row: ProjectDocument | None) -> dict[str, Any] | None:
    return {"text": row.text, "version": row.version} if row is not None else None


def as_json(project: str, row: ProjectDocument | None) -> dict[str, Any]:
    """The documentation as the API serves it (version 0: never written)."""
    if row is None:
        return {"project": project, "text": "", "version": 0, "updated_at": None,
                "updated_by": None}
    return {"project": project, "text": row.text, "version": row.version,
            "updated_at": row.updated_at.isoformat(), "updated_by": row.updated_by}

"""The audit log: every directory write, newest first, as JSON or an Atom feed."""

from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from .. import context
from ..audit import as_json
from ..auth import person
from ..errors import Invalid, Refused
from ..feeds import FeedEntry, atom
from ..store import Change

blueprint = Blueprint("changes", __name__)
FILTERS = ("project", "actor", "action", "target")


def _query() -> list[Change]:
    person(g.actor)
    unknown = sorted(set(request.args) - {*FILTERS, "limit"})
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(unknown)}")
    try:
        limit = min(int(request.args.get("limit", "100")), 1000)
    except ValueError:
        raise Invalid("limit must be a whole number") from None
    query = select(Change).order_by(Change.id.desc()).limit(max(limit, 1))
    for name in FILTERS:
        if name in request.args:
            query = query.where(getattr(Change, name) == request.args[name])
    with context.session() as session:
        return list(session.scalars(query).all())


@blueprint.get("/changes")
def changes() -> Any:
    return jsonify([as_json(change) for change in _query()])


@blueprint.get("/changes/<int(max=2147483647):change_id>")
def change(change_id: int) -> Any:
    """One change; the Atom feed's entries link here."""
    person(g.actor)
    with context.session() as session:
        found = session.get(Change, change_id)
    if found is None:
        raise Refused(404, f"no change {change_id}")
    return jsonify(as_json(found))


@blueprint.get("/changes.atom")
def feed() -> Any:
    """The Recent Changes of the directory, for feed readers."""
    base = context.config().api.public_url.rstrip("/")
    entries = [
        FeedEntry(f"{base}/v1/changes/{change.id}",
                  f"{change.actor} {change.action} {change.target}", change.at, change.actor,
                  f"{change.action} {change.target} in project {change.project or '-'}")
        for change in _query()
    ]
    return atom(f"{base}/v1/changes.atom", "opslab recent changes", entries)

"""The audit log: every directory write, newest first, as JSON or an Atom feed."""

from typing import Any

from flask import Blueprint, g, jsonify, request

from .. import audit, context
from ..auth import person
from ..errors import Invalid
from ..feeds import FeedEntry, atom
from ..store import Change

blueprint = Blueprint("changes", __name__)


def _query() -> list[Change]:
    person(g.actor)
    unknown = sorted(set(request.args) - {*audit.FILTERS, "limit"})
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(unknown)}")
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        raise Invalid("limit must be a whole number") from None
    return audit.recent({name: request.args[name] for name in audit.FILTERS
                         if name in request.args}, limit)


@blueprint.get("/changes")
def changes() -> Any:
    return jsonify([audit.as_json(change) for change in _query()])


@blueprint.get("/changes/<int(max=2147483647):change_id>")
def change(change_id: int) -> Any:
    """One change; the Atom feed's entries link here."""
    person(g.actor)
    return jsonify(audit.one(change_id))


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

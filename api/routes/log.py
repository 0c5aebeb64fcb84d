"""The Server Admin Log (see :mod:`opslab.api.adminlog`): JSON and Atom.

``POST /v1/projects/P/log`` takes a message from a member; ``POST
/v1/log/chat`` takes a chat line of the form ``!log PROJECT MESSAGE``: from a
person, logged as them; from a bot account, with the ``nick`` who wrote it
(and the network's ``account`` for them, if any), logged as that nick.
"""

from typing import Any

from flask import Blueprint, g, jsonify, request

from .. import adminlog, context
from ..contract import request_document
from ..errors import Invalid
from ..feeds import FeedEntry, atom

blueprint = Blueprint("log", __name__)


def _limit() -> int:
    try:
        return int(request.args.get("limit", "100"))
    except ValueError:
        raise Invalid("limit must be a whole number") from None


@blueprint.post("/projects/<project>/log")
def post(project: str) -> Any:
    return jsonify(adminlog.record(g.actor, project, request_document()["message"].strip())), 201


@blueprint.post("/log/chat")
def post_chat_line() -> Any:
    body = request_document()
    project, message = adminlog.parse_chat_line(body["line"])
    if "nick" not in body:
        return jsonify(adminlog.record(g.actor, project, message)), 201
    try:
        entry = adminlog.relay(g.actor, project, message, body["nick"], body.get("account"))
    except adminlog.Throttled as error:
        refusal = jsonify(error=error.reason)
        refusal.headers["Retry-After"] = str(error.retry_after)
        return refusal, 429
    return jsonify(entry), 201


@blueprint.get("/projects/<project>/log")
def for_project(project: str) -> Any:
    return jsonify([adminlog.as_json(entry) for entry in adminlog.entries(project, _limit())])


@blueprint.get("/log")
def combined() -> Any:
    return jsonify([adminlog.as_json(entry) for entry in adminlog.entries(None, _limit())])


@blueprint.get("/log/<int(max=2147483647):entry_id>")
def one(entry_id: int) -> Any:
    """One entry; the Atom feeds' entries link here."""
    return jsonify(adminlog.one(entry_id))


def _feed(project: str | None) -> Any:
    base = context.config().api.public_url.rstrip("/")
    path = f"/v1/projects/{project}/log.atom" if project else "/v1/log.atom"
    entries = [FeedEntry(f"{base}/v1/log/{entry.id}", f"{entry.project}: {entry.message}",
                         entry.at, adminlog.byline(entry),
                         entry.message if entry.via is None
                         else f"{entry.message} ({adminlog.byline(entry)})")
               for entry in adminlog.entries(project, _limit())]
    return atom(f"{base}{path}", f"Server Admin Log{f' of {project}' if project else ''}",
                entries)


@blueprint.get("/projects/<project>/log.atom")
def project_feed(project: str) -> Any:
    return _feed(project)


@blueprint.get("/log.atom")
def combined_feed() -> Any:
    return _feed(None)

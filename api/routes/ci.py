"""CI runs (see :mod:`opslab.api.ciruns`): JSON and Atom.

``POST /v1/ci/runs`` and ``PATCH /v1/ci/runs/ID`` are the CI's own writes;
``GET /v1/ci/runs``, ``/v1/ci/runs/ID`` and ``/v1/ci/runs.atom`` are for people.
"""

from typing import Any

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import ciruns, context
from ..contract import request_document
from ..errors import Invalid, Refused
from ..feeds import FeedEntry, atom
from ..store import CiRun

blueprint = Blueprint("ci", __name__)


def _limit() -> int:
    try:
        return int(request.args.get("limit", "100"))
    except ValueError:
        raise Invalid("limit must be a whole number") from None


def _query() -> list[CiRun]:
    filters = {}
    for name in request.args:
        values = request.args.getlist(name)
        if len(values) > 1:
            raise Invalid(f"{name[:40]} may be given once")
        if name != "limit":
            filters[name] = values[0]
    return ciruns.recent(g.actor, filters, _limit())


def _change_body() -> dict[str, Any]:
    """The body of a change, which may carry a result of 256 KiB: more than api.max_body's
    default allows other requests."""
    limit = max(context.config().api.max_body, ciruns.MAX_CHANGE_BODY)
    request.max_content_length = limit
    try:
        body: dict[str, Any] = request_document()
    except RequestEntityTooLarge:
        raise Refused(413, f"the body is larger than {limit} bytes") from None
    return body


@blueprint.post("/ci/runs")
def create() -> Any:
    run, created = ciruns.create(g.actor, request_document)
    return jsonify(run), 201 if created else 200


@blueprint.patch("/ci/runs/<int(max=2147483647):run_id>")
def update(run_id: int) -> Any:
    return jsonify(ciruns.update(g.actor, run_id, _change_body))


@blueprint.get("/ci/runs")
def runs() -> Any:
    return jsonify([ciruns.summary_json(run) for run in _query()])


@blueprint.get("/ci/runs/<int(max=2147483647):run_id>")
def run(run_id: int) -> Any:
    """One run; the Atom feed's entries link here."""
    return jsonify(ciruns.one(g.actor, run_id))


@blueprint.get("/ci/runs.atom")
def feed() -> Any:
    """CI runs for feed readers: each entry is the run's JSON, its text links the change
    and the build."""
    base = context.config().api.public_url.rstrip("/")
    entries = [FeedEntry(ciruns.run_url(run.id),
                         f"CI run {run.id}: change {run.change} patch set {run.patchset} "
                         f"{run.state}", run.updated_at, run.requested_by,
                         ciruns.feed_content(run))
               for run in _query()]
    return atom(f"{base}/v1/ci/runs.atom", "opslab CI runs", entries)

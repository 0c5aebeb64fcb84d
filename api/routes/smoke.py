"""Smoke results: what a host's checks per Puppet class found.

The agent runs them after every Puppet run (their results travel in the
run report) and alone on an interval, sending each interval's results
through ``PUT /v1/hosts/FQDN/smoke`` (spooled like a run report while the
API is away). The host keeps the latest: results older than the stored ones
are ignored, as a re-bootstrapped instance may still have old ones spooled.
The shape is the OpenAPI ``SmokeSummary``.
"""

from typing import Any

from flask import Blueprint, g, jsonify

from .. import history
from ..contract import request_document

blueprint = Blueprint("smoke", __name__)


@blueprint.put("/hosts/<fqdn>/smoke")
def put(fqdn: str) -> Any:
    """An instance's agent says what its latest smoke tests found."""
    return jsonify(history.store_smoke(g.actor, fqdn, request_document))

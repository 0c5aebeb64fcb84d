"""Run reports: instances post each Puppet run; people read them per host and project.

An agent delivers a report with an ``Idempotency-Key`` header (the IETF
httpapi draft's name): a report whose key this host has used before is not
stored again, and the answer is the stored report with 200 instead of 201.
That is what lets an agent retry after a lost answer without ever
recording a run twice. The report's shape is the OpenAPI ``RunReport``.
"""

import re
from typing import Any

from flask import Blueprint, g, jsonify, request

from .. import history, hosts
from ..auth import may_read_host, person, project_membership
from ..contract import request_document
from ..errors import Invalid

blueprint = Blueprint("reports", __name__)

IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    # Structured-field strings arrive quoted ("..."); bare tokens are accepted too.
    key = key.strip().removeprefix('"').removesuffix('"')
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise Invalid("Idempotency-Key must be 1 to 64 letters, digits, _ or -")
    return key


@blueprint.post("/hosts/<fqdn>/reports")
def post(fqdn: str) -> Any:
    """An instance reports one run of its own."""
    report, new = history.store_report(g.actor, fqdn, request_document, _idempotency_key)
    return jsonify(report), 201 if new else 200


@blueprint.get("/hosts/<fqdn>/reports")
def for_host(fqdn: str) -> Any:
    """The reports of the host as it exists now, newest first."""
    _, _, host = hosts.existing(fqdn)
    may_read_host(g.actor, host["name"])
    return jsonify(history.reports(host["name"], history.current_incarnation(host["name"])))


@blueprint.get("/projects/<project>/reports")
def latest_per_host(project: str) -> Any:
    """The latest report of every host now in ``project`` (by the one project rule)."""
    person(g.actor)
    project_membership(project)
    names = [str(host["name"]) for host in hosts.query([project], [], [])]
    return jsonify(history.latest_per_host(names))

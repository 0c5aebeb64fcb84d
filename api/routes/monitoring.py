"""``GET /v1/monitoring/file_sd``: hosts by class as Prometheus service discovery
(see :mod:`opslab.api.monitoring`), for a file_sd file or http_sd directly."""

from typing import Any

from flask import Blueprint, g, jsonify, request

from .. import monitoring
from ..auth import person
from ..errors import Invalid

blueprint = Blueprint("monitoring", __name__)
PARAMETERS = ("class", "project", "port")
DEFAULT_PORT = "9100"  # the node exporter's


@blueprint.get("/monitoring/file_sd")
def file_sd() -> Any:
    """``?class=role::web&class=ntp&project=web&port=9100``."""
    person(g.actor)
    unknown = sorted(set(request.args) - set(PARAMETERS))
    if unknown:
        raise Invalid(f"unknown parameters: {', '.join(name[:40] for name in unknown)} "
                      f"(allowed: {', '.join(PARAMETERS)})")
    ports = request.args.getlist("port") or [DEFAULT_PORT]
    if len(ports) > 1:
        raise Invalid("port may be given once")
    return jsonify(monitoring.file_sd(request.args.getlist("class"),
                                      request.args.getlist("project"),
                                      monitoring.port_number(ports[0])))

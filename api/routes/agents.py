"""What an instance's agent says about itself: its version, and whether it is disabled.

``opslab agent disable "reason"`` on an instance reaches the API through
``PUT /v1/hosts/FQDN/agent`` (spooled like a run report while the API is
away), so the host view shows who disabled Puppet there and why. A state
older than the stored one is ignored: states from one agent arrive in
order, but a re-bootstrapped instance may still have an old one spooled.
The shape is the OpenAPI ``AgentStateChange``.
"""

from typing import Any

from flask import Blueprint, g, jsonify

from .. import history
from ..contract import request_document

blueprint = Blueprint("agents", __name__)


@blueprint.put("/hosts/<fqdn>/agent")
def put(fqdn: str) -> Any:
    """An instance's agent says whether it is disabled, why and since when."""
    return jsonify(history.store_agent_state(g.actor, fqdn, request_document))

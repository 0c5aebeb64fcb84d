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

from .. import context
from ..auth import must_be_host
from ..contract import request_document
from ..history import moment, state_json
from ..store import AgentState, now

blueprint = Blueprint("agents", __name__)


@blueprint.put("/hosts/<fqdn>/agent")
def put(fqdn: str) -> Any:
    """An instance's agent says whether it is disabled, why and since when."""
    actor = must_be_host(g.actor, fqdn, "say what its agent does")
    body = request_document()
    # An agent whose clock runs ahead must not make every later state look older:
    # no state is dated after its arrival.
    changed_at = min(moment(body["changed_at"], "changed_at"), now())
    with context.session() as session:
        state = session.get(AgentState, fqdn)
        if state is None or state.incarnation != actor.incarnation:
            # A state left by an earlier incarnation of this name counts for nothing.
            if state is not None:
                session.delete(state)
                session.flush()
            state = AgentState(host=fqdn, project=actor.project, incarnation=actor.incarnation)
            session.add(state)
        elif state.changed_at > changed_at:
            return jsonify(state_json(state))
        state.disabled, state.reason = body["disabled"], body.get("reason")
        state.version = body.get("version")
        state.changed_at, state.received_at = changed_at, now()
        session.commit()
        return jsonify(state_json(state))

"""What an instance's agent says about itself: its version, and whether it is disabled.

``opslab agent disable "reason"`` on an instance reaches the API through
``PUT /v1/hosts/FQDN/agent`` (spooled like a run report while the API is
away), so the host view shows who disabled Puppet there and why. A state
older than the stored one is ignored: states from one agent arrive in
order, but a re-bootstrapped instance may still have an old one spooled.
"""

from datetime import datetime
from typing import Any

from flask import Blueprint, g, jsonify

from .. import context
from ..app import json_body
from ..auth import must_be_host
from ..hosts import Invalid
from ..store import AgentState, now, utc
from .reports import SHORT

blueprint = Blueprint("agents", __name__)
MAX_REASON = 1000


def as_json(state: AgentState) -> dict[str, Any]:
    return {"version": state.version, "disabled": state.disabled, "reason": state.reason,
            "changed_at": utc(state.changed_at).isoformat(),
            "received_at": utc(state.received_at).isoformat()}


def state_of(host: str) -> dict[str, Any] | None:
    """The host's agent state for the host view, or None if its agent never said."""
    with context.session() as session:
        state = session.get(AgentState, host)
    return as_json(state) if state is not None else None


@blueprint.put("/hosts/<fqdn>/agent")
def put(fqdn: str) -> Any:
    """An instance's agent says whether it is disabled, why and since when."""
    actor = must_be_host(g.actor, fqdn, "say what its agent does")
    body = json_body()
    if not isinstance(body, dict) or set(body) - {"disabled", "reason", "changed_at", "version"}:
        raise Invalid("the body must be an object of disabled, reason, changed_at and version")
    disabled, reason, version = body.get("disabled"), body.get("reason"), body.get("version")
    if not isinstance(disabled, bool):
        raise Invalid("disabled must be true or false")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON
                               or "\0" in reason):
        raise Invalid(f"reason must be text of at most {MAX_REASON} characters")
    if version is not None and (not isinstance(version, str) or not SHORT.fullmatch(version)):
        raise Invalid("version must be 1 to 32 letters, digits or . _ + -")
    try:
        changed_at = utc(datetime.fromisoformat(str(body.get("changed_at"))))
    except ValueError:
        raise Invalid("changed_at must be an ISO 8601 date and time") from None
    with context.session() as session:
        state = session.get(AgentState, fqdn)
        if state is None:
            state = AgentState(host=fqdn, project=actor.project)
            session.add(state)
        elif utc(state.changed_at) > changed_at:
            return jsonify(as_json(state))
        state.disabled, state.reason, state.version = disabled, reason, version
        state.changed_at, state.received_at = changed_at, now()
        session.commit()
        return jsonify(as_json(state))

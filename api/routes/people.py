"""People and their SSH keys (see :mod:`opslab.api.people`)."""

from typing import Any

from flask import Blueprint, g, jsonify

from .. import people
from ..contract import request_document

blueprint = Blueprint("people", __name__)


# Answers that carry a password are kept by no cache (RFC 9111 no-store).
SECRET = {"Cache-Control": "no-store"}


@blueprint.post("/people")
def create() -> Any:
    """Create a person; the answer carries their password, shown this once."""
    person, password = people.create(g.actor, request_document)
    return jsonify(person=person, password=password), 201, SECRET


@blueprint.post("/people/<uid>/password")
def reset_password(uid: str) -> Any:
    """A new password for the person, shown this once."""
    return jsonify(people.reset_password(g.actor, uid)), 200, SECRET


@blueprint.get("/people/<uid>")
def show(uid: str) -> Any:
    return jsonify(people.view(g.actor, uid))


@blueprint.post("/people/<uid>/keys")
def add_key(uid: str) -> Any:
    return jsonify(people.add_key(g.actor, uid, request_document)), 201


@blueprint.delete("/people/<uid>/keys/<path:fingerprint>")
def remove_key(uid: str, fingerprint: str) -> Any:
    people.remove_key(g.actor, uid, fingerprint)
    return "", 204

"""A project's documentation (see :mod:`opslab.api.documents`): read it, edit it."""

from typing import Any

from flask import Blueprint, g, jsonify, request

from .. import documents
from ..contract import request_document

blueprint = Blueprint("documentation", __name__)


@blueprint.get("/projects/<project>/documentation")
def show(project: str) -> Any:
    return jsonify(documents.read(g.actor, project))


@blueprint.put("/projects/<project>/documentation")
def edit(project: str) -> Any:
    # A whole documentation may be larger than api.max_body allows other requests.
    request.max_content_length = documents.body_limit()
    return jsonify(documents.update(g.actor, project, request_document))

"""What a node should be: its classification, and the target its agent polls.

``GET /v1/nodes/FQDN`` is exactly what ``opslab-enc FQDN`` prints, for
instances without LDAP. ``GET /v1/nodes/FQDN/target`` is what the agent
asks every minute: the commit its branch is at, a digest of its
classification and who gets sudo on it, with an ETag. An agent sends the
ETag of the target it last acted on in ``If-None-Match``; nothing changed is
then a 304 with no body, which costs the API one classification and the
git remote nothing (see :mod:`opslab.api.heads`).
"""

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from opslab.enc.render import to_yaml

from .. import targets

blueprint = Blueprint("nodes", __name__)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


@blueprint.get("/nodes/<fqdn>")
def classify(fqdn: str) -> Any:
    classification = targets.classification(g.actor, fqdn)
    wanted = request.accept_mimetypes.best_match(["application/json", *YAML_TYPES])
    if wanted in YAML_TYPES:
        return Response(to_yaml(classification), mimetype="application/yaml")
    return jsonify(classification.to_enc())


@blueprint.get("/nodes/<fqdn>/target")
def target(fqdn: str) -> Any:
    """What the node's agent should converge to; 304 if it has it (If-None-Match)."""
    document = targets.target(targets.classification(g.actor, fqdn))
    response = jsonify(document)
    response.set_etag(targets.etag(document))
    # Caches must ask every time: the point of the answer is to be current.
    response.cache_control.no_cache = True
    return response.make_conditional(request)

"""What a node should be: its classification, and the target its agent polls.

``GET /v1/nodes/FQDN`` is exactly what ``opslab-enc FQDN`` prints, for
instances without LDAP. ``GET /v1/nodes/FQDN/target`` is what the agent
asks every minute: the commit its branch is at, a digest of its
classification and who gets sudo on it, with an ETag. An agent sends the
ETag of the target it last acted on in ``If-None-Match``; nothing changed is
then a 304 with no body, which costs the API one classification and the
git remote nothing (see :mod:`opslab.api.heads`).
"""

import hashlib
import json
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from opslab.enc.classifier import Classification, ClassificationError, Classifier, UnknownNode
from opslab.enc.render import to_yaml
from opslab.names import InvalidName, validate_certname

from .. import context
from ..auth import may_read_host
from ..directory import is_global
from ..errors import Refused
from ..people import sudo_users

blueprint = Blueprint("nodes", __name__)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def _classification(fqdn: str) -> Classification:
    """The classification of ``fqdn``, if the caller may read it.

    People may read every node's. A host token reads its own node's, and
    only while the entry that classifies it is the one the token was issued
    for: if that entry is gone and another (an entry found by the short
    name, say) would classify the name, the token learns nothing of it.
    """
    try:
        certname = validate_certname(fqdn)
    except InvalidName as error:
        raise Refused(404, f"no node {fqdn[:100]!r}: {error}") from None
    may_read_host(g.actor, certname)
    try:
        classification = Classifier(context.reader(), context.config()).classify(certname)
    except UnknownNode:
        raise Refused(404, f"unknown node {certname}") from None
    except ClassificationError as error:
        raise Refused(409, f"cannot classify {certname}: {error}") from None
    if g.actor.kind == "host":
        own = context.directory().host_dn(certname).lower()
        role, dn = classification.layers[0]
        if role != "host" or dn.lower() != own:
            raise Refused(403, f"{certname} is classified by {dn}, not by the entry this "
                               "token was issued for")
    return classification


@blueprint.get("/nodes/<fqdn>")
def classify(fqdn: str) -> Any:
    classification = _classification(fqdn)
    wanted = request.accept_mimetypes.best_match(["application/json", *YAML_TYPES])
    if wanted in YAML_TYPES:
        return Response(to_yaml(classification), mimetype="application/yaml")
    return jsonify(classification.to_enc())


@blueprint.get("/nodes/<fqdn>/target")
def target(fqdn: str) -> Any:
    """What the node's agent should converge to; 304 if it has it (If-None-Match)."""
    classification = _classification(fqdn)
    document = target_of(classification)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    response = jsonify(document)
    response.set_etag(hashlib.sha256(canonical.encode()).hexdigest()[:40])
    # Caches must ask every time: the point of the answer is to be current.
    response.cache_control.no_cache = True
    return response.make_conditional(request)


def target_of(classification: Classification) -> dict[str, Any]:
    """The agent's target: project, branch, environment, commit, classification digest, sudo.

    Members of a project get sudo on its instances, except in a global
    project: everyone may log in to those, so membership grants no root.
    """
    project = classification.project
    shared = project is not None and is_global(project.values("opslabGlobal"))
    sudo = {} if project is None or shared else sudo_users(project.values("member"))
    enc = json.dumps(classification.to_enc(), sort_keys=True, separators=(",", ":"))
    return {
        "certname": classification.node,
        "project": project.first("cn") if project is not None else None,
        "branch": classification.branch,
        "environment": classification.environment,
        "commit": context.heads().commit(classification.branch)
        if classification.branch else None,
        "classification": hashlib.sha256(enc.encode()).hexdigest(),
        "global": shared,
        "sudo": sorted(sudo),
        "uid_numbers": sudo,
    }

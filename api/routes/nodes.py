"""``GET /v1/nodes/FQDN``: exactly what ``opslab-enc FQDN`` prints, for instances without LDAP."""

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from opslab.directory import Directory
from opslab.enc.classifier import ClassificationError, Classifier, UnknownNode
from opslab.enc.render import to_yaml
from opslab.names import InvalidName, project_label, validate_certname

from ..auth import Refused, may_read_host
from ..directory import DirectoryAccess
from ..hosts import from_entry

blueprint = Blueprint("nodes", __name__)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


@blueprint.get("/nodes/<fqdn>")
def classify(fqdn: str) -> Any:
    try:
        certname = validate_certname(fqdn)
    except InvalidName as error:
        raise Refused(404, f"no node {fqdn!r}: {error}") from None
    directory: DirectoryAccess = current_app.extensions["opslab.directory"]
    entry = directory.read(directory.host_dn(certname))
    project = from_entry(entry)["project"] if entry else project_label(certname)
    may_read_host(g.actor, certname, project)
    config = current_app.config["OPSLAB"]
    try:
        with Directory(config.ldap) as reader:
            classification = Classifier(reader, config).classify(certname)
    except UnknownNode:
        raise Refused(404, f"unknown node {certname}") from None
    except ClassificationError as error:
        raise Refused(409, f"cannot classify {certname}: {error}") from None
    wanted = request.accept_mimetypes.best_match(["application/json", *YAML_TYPES])
    if wanted in YAML_TYPES:
        return Response(to_yaml(classification), mimetype="application/yaml")
    return jsonify(classification.to_enc())

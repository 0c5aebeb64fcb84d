"""``GET /v1/nodes/FQDN``: exactly what ``opslab-enc FQDN`` prints, for instances without LDAP."""

import threading
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from opslab.config import Config
from opslab.directory import Directory
from opslab.enc.classifier import ClassificationError, Classifier, UnknownNode
from opslab.enc.render import to_yaml
from opslab.names import InvalidName, project_label, validate_certname

from .. import context
from ..auth import Refused, may_read_host
from ..hosts import from_entry

blueprint = Blueprint("nodes", __name__)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
_readers = threading.local()


def _reader(config: Config) -> Directory:
    """This thread's kept connection for classifications (a new one per request costs more
    than the classification itself)."""
    reader: Directory | None = getattr(_readers, "directory", None)
    if reader is None or reader.settings is not config.ldap:
        reader = _readers.directory = Directory(config.ldap)
    return reader


@blueprint.get("/nodes/<fqdn>")
def classify(fqdn: str) -> Any:
    try:
        certname = validate_certname(fqdn)
    except InvalidName as error:
        raise Refused(404, f"no node {fqdn!r}: {error}") from None
    if g.actor is None or g.actor.kind != "host":
        # People need the host's project to be authorized; a host's own token
        # needs nothing but its name, so instances cost no extra directory read.
        directory = context.directory()
        entry = directory.read(directory.host_dn(certname))
        project = from_entry(entry)["project"] if entry else project_label(certname)
    else:
        project = None
    may_read_host(g.actor, certname, project)
    config = context.config()
    reader = _reader(config)
    reader.begin_task()
    try:
        classification = Classifier(reader, config).classify(certname)
    except UnknownNode:
        raise Refused(404, f"unknown node {certname}") from None
    except ClassificationError as error:
        raise Refused(409, f"cannot classify {certname}: {error}") from None
    wanted = request.accept_mimetypes.best_match(["application/json", *YAML_TYPES])
    if wanted in YAML_TYPES:
        return Response(to_yaml(classification), mimetype="application/yaml")
    return jsonify(classification.to_enc())

"""Hosts: create in a project, show, change, delete. The directory holds them."""

from typing import Any

from flask import Blueprint, g, jsonify

from .. import hosts
from ..contract import request_document

blueprint = Blueprint("hosts", __name__)


@blueprint.post("/projects/<project>/hosts")
def create(project: str) -> Any:
    """Create a host LABEL.PROJECT.DOMAIN; the answer carries its token, shown this once."""
    host, token = hosts.create(g.actor, project, request_document)
    return jsonify(host=host, token=token), 201


@blueprint.get("/hosts/<fqdn>")
def show(fqdn: str) -> Any:
    return jsonify(hosts.view(g.actor, fqdn))


@blueprint.patch("/hosts/<fqdn>")
def update(fqdn: str) -> Any:
    return jsonify(hosts.update(g.actor, fqdn, request_document))


@blueprint.delete("/hosts/<fqdn>")
def delete(fqdn: str) -> Any:
    hosts.delete(g.actor, fqdn)
    return "", 204

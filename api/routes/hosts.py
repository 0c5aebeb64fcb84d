"""Hosts: create in a project, show, change, delete. The directory holds them."""

import secrets
from typing import Any

from flask import Blueprint, g, jsonify

from opslab.names import InvalidName, validate_certname

from .. import context
from ..app import json_body
from ..audit import recorded_write
from ..auth import Refused, may_change_project, may_read_host
from ..hosts import from_entry, parse, to_entry
from ..store import Change, HostToken, token_digest
from . import agents, reports

blueprint = Blueprint("hosts", __name__)


def _name(fqdn: str) -> str:
    try:
        return validate_certname(fqdn)
    except InvalidName as error:
        raise Refused(404, f"no host {fqdn!r}: {error}") from None


def _existing(fqdn: str) -> tuple[str, dict[str, list[str]], dict[str, Any]]:
    directory = context.directory()
    dn = directory.host_dn(_name(fqdn))
    entry = directory.read(dn)
    if entry is None:
        raise Refused(404, f"no host {fqdn!r}")
    return dn, entry, from_entry(entry)


@blueprint.post("/projects/<project>/hosts")
def create(project: str) -> Any:
    """Create a host in ``project``; the answer carries its token, shown this once."""
    may_change_project(g.actor, project)
    host = parse(json_body(), creating=True)
    host["project"] = project
    directory = context.directory()
    dn = directory.host_dn(host["name"])
    entry = to_entry(host)
    token = secrets.token_urlsafe(32)
    with context.session() as session:
        session.merge(HostToken(host=host["name"], project=project,
                                digest=token_digest(token)))
        change = Change(actor=str(g.actor), action="host.create", target=host["name"],
                        project=project, before=None, after=from_entry(entry))
        recorded_write(session, change, write=lambda: directory.add(dn, entry),
                       undo=lambda: directory.delete(dn))
    return jsonify(host=from_entry(entry), token=token), 201


@blueprint.get("/hosts/<fqdn>")
def show(fqdn: str) -> Any:
    """The host as the directory has it, with what its agent last said and its last run."""
    _, _, host = _existing(fqdn)
    may_read_host(g.actor, host["name"], host["project"])
    return jsonify({**host, "agent": agents.state_of(host["name"]),
                    "last_run": reports.latest(host["name"])})


@blueprint.patch("/hosts/<fqdn>")
def update(fqdn: str) -> Any:
    """Change a host's classes, class parameters, variables, branch or addresses."""
    dn, before_entry, before = _existing(fqdn)
    may_change_project(g.actor, before["project"] or "")
    changes = parse(json_body(), creating=False)
    after = {**before, **changes}
    after_entry = to_entry(after)
    directory = context.directory()
    with context.session() as session:
        change = Change(actor=str(g.actor), action="host.update", target=before["name"],
                        project=before["project"], before=before, after=from_entry(after_entry))
        recorded_write(session, change,
                       write=lambda: directory.replace(dn, before_entry, after_entry),
                       undo=lambda: directory.replace(dn, after_entry, before_entry))
    return jsonify(from_entry(after_entry))


@blueprint.delete("/hosts/<fqdn>")
def delete(fqdn: str) -> Any:
    dn, before_entry, before = _existing(fqdn)
    may_change_project(g.actor, before["project"] or "")
    directory = context.directory()
    with context.session() as session:
        token = session.get(HostToken, before["name"])
        if token is not None:
            session.delete(token)
        change = Change(actor=str(g.actor), action="host.delete", target=before["name"],
                        project=before["project"], before=before, after=None)
        recorded_write(session, change, write=lambda: directory.delete(dn),
                       undo=lambda: directory.add(dn, before_entry))
    return "", 204

"""Hosts: create in a project, show, change, delete. The directory holds them."""

import secrets
from typing import Any

from flask import Blueprint, g, jsonify
from sqlalchemy.orm import Session

from .. import context, hosts
from ..audit import recorded_write
from ..auth import may_change_project, may_read_host
from ..contract import request_document
from ..errors import Refused
from ..history import agent_state, current_incarnation, latest_report, retire
from ..store import Change, HostToken, new_incarnation, token_digest

blueprint = Blueprint("hosts", __name__)


@blueprint.post("/projects/<project>/hosts")
def create(project: str) -> Any:
    """Create a host LABEL.PROJECT.DOMAIN; the answer carries its token, shown this once."""
    may_change_project(g.actor, project)
    host = hosts.new_host(request_document(), project)
    taken = hosts.claims(host["name"])
    if taken:
        raise Refused(409, f"{host['name']} would take over existing entries: "
                           + "; ".join(taken[:5]))
    directory = context.directory()
    dn = directory.host_dn(host["name"])
    entry = hosts.to_entry(host)
    token = secrets.token_urlsafe(32)

    def token_row(rows: Session) -> None:
        # merge: a token left behind by an entry deleted by hand is replaced.
        rows.merge(HostToken(host=host["name"], project=project, digest=token_digest(token),
                             incarnation=new_incarnation()))

    with context.session() as session:
        change = Change(actor=str(g.actor), action="host.create", target=host["name"],
                        project=project, before=None, after=hosts.from_entry(entry))
        # Two requests creating one name: the directory takes one entry, and the
        # other request's write is a conflict (409) before any token is stored.
        recorded_write(session, change, write=lambda: directory.add(dn, entry),
                       undo=lambda: directory.delete(dn),
                       rows=token_row)
    return jsonify(host=hosts.from_entry(entry), token=token), 201


@blueprint.get("/hosts/<fqdn>")
def show(fqdn: str) -> Any:
    """The host as the directory has it, with what its agent last said and its last run."""
    _, _, host = hosts.existing(fqdn)
    may_read_host(g.actor, host["name"])
    incarnation = current_incarnation(host["name"])
    return jsonify({**host, "agent": agent_state(host["name"], incarnation),
                    "last_run": latest_report(host["name"], incarnation)})


@blueprint.patch("/hosts/<fqdn>")
def update(fqdn: str) -> Any:
    """Change a host's classes, class parameters, variables, branch or addresses."""
    dn, before_entry, before = hosts.existing(fqdn)
    may_change_project(g.actor, before["project"])
    after = {**before, **hosts.changes(request_document())}
    after_entry = hosts.changed_entry(before_entry, after)
    directory = context.directory()
    with context.session() as session:
        change = Change(actor=str(g.actor), action="host.update", target=before["name"],
                        project=before["project"], before=before, after=after)
        recorded_write(session, change,
                       write=lambda: directory.replace(dn, before_entry, after_entry),
                       undo=lambda: directory.replace(dn, after_entry, before_entry))
    return jsonify(after)


@blueprint.delete("/hosts/<fqdn>")
def delete(fqdn: str) -> Any:
    """Delete a host: its entry and token go, its agent state and reports are retired."""
    dn, before_entry, before = hosts.existing(fqdn)
    may_change_project(g.actor, before["project"])
    directory = context.directory()
    with context.session() as session:
        change = Change(actor=str(g.actor), action="host.delete", target=before["name"],
                        project=before["project"], before=before, after=None)
        recorded_write(session, change, write=lambda: directory.delete(dn),
                       undo=lambda: directory.add(dn, before_entry),
                       rows=lambda rows: retire(rows, before["name"]))
    return "", 204

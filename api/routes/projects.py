"""Projects, their members and settings, and the host query monitoring systems build on."""

from typing import Any

import ldap
from flask import Blueprint, g, jsonify, request

from opslab.directory import attribute_values
from opslab.names import InvalidName, validate_user_name

from .. import context, hosts, projects
from ..auth import (
    is_operator,
    may_add_member,
    may_change_project,
    may_remove_member,
    person,
    project_membership,
)
from ..contract import request_document
from ..errors import Invalid, Refused

blueprint = Blueprint("projects", __name__)
QUERY_FILTERS = ("project", "class", "var")


@blueprint.get("/projects")
def list_projects() -> Any:
    person(g.actor)
    return jsonify(projects.all_summaries())


@blueprint.get("/projects/<project>")
def show(project: str) -> Any:
    """A project: members, owners, branch, project-wide classes and variables, hosts, log."""
    person(g.actor)
    project_membership(project)
    return jsonify(projects.full_document(project))


@blueprint.get("/hosts")
def query() -> Any:
    """Hosts by project, class and variable value: ``?class=role::web&var=cluster=eqiad``."""
    person(g.actor)
    unknown = sorted(set(request.args) - set(QUERY_FILTERS))
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(unknown)} "
                      f"(allowed: {', '.join(QUERY_FILTERS)})")
    variables = request.args.getlist("var")
    for assignment in variables:
        if "=" not in assignment:
            raise Invalid(f"var must be NAME=VALUE, got {assignment[:100]!r}")
    return jsonify(hosts.query(request.args.getlist("project"), request.args.getlist("class"),
                               variables))


@blueprint.post("/projects")
def create_project() -> Any:
    """Create a project; the creator becomes its first member and owner."""
    dn = person(g.actor)
    operator = is_operator(dn)
    owners_may = context.config().api.owners_create_projects
    if not operator and not (owners_may and projects.owns_any(dn)):
        raise Refused(403, "only operations may create projects"
                      + (" (or owners of a project)" if owners_may else ""))
    body = request_document()
    if body.get("global") and not operator:
        raise Refused(403, "only operations may create a global project")
    name = body["name"]
    adopted = hosts.named_into(name)
    if adopted and not operator:
        # The project would take hosts that are nobody's today (their names put
        # them in it): their classes, branch and root would be its members'.
        raise Refused(409, f"a project {name!r} would take in hosts that belong to no "
                           f"project today: {', '.join(adopted[:10])}; only operations may "
                           "create it")
    settings = {**hosts.changes(body), "description": body.get("description"),
                "global": body.get("global", False)}
    creator = context.directory().person_dn(g.actor.name)
    entry = projects.entry_for(name, settings, [creator], [creator])
    projects.write("project.create", name, None, entry)
    return jsonify(projects.full_document(name)), 201


@blueprint.patch("/projects/<project>")
def update_project(project: str) -> Any:
    """Change a project's description, branch, classes, variables (global: operations)."""
    may_change_project(g.actor, project)
    body = request_document()
    if "global" in body and not is_operator(person(g.actor)):
        raise Refused(403, "only operations may mark a project global or not")
    before = projects.read(project)
    changes = {**hosts.changes(body),
               **{key: body[key] for key in ("description", "global") if key in body}}
    after = {**before, **projects.entry_for(project, {**projects.settings(before), **changes},
                                            attribute_values(before, "member"),
                                            attribute_values(before, "owner"))}
    projects.write("project.update", project, before, after)
    return jsonify(projects.full_document(project))


@blueprint.post("/projects/<project>/members")
def add_member(project: str) -> Any:
    """Add an existing person as a member (any member may) or owner (owners may)."""
    body = request_document()
    owner = body.get("owner", False)
    directory = context.directory()
    new = directory.person_dn(body["uid"])
    found = may_add_member(g.actor, project, new, owner)
    if directory.read(new, ["uid"]) is None:
        raise Refused(404, f"no person {body['uid']!r}")
    changes = ([] if found.other_member else [(ldap.MOD_ADD, "member", [new])]) + \
        ([(ldap.MOD_ADD, "owner", [new])] if owner and not found.other_owner else [])
    if changes:
        before = projects.read(project)
        after = {**before, **{name: attribute_values(before, name) + values
                              for _, name, values in changes}}
        projects.modify("project.member.add", project, before, changes, after)
    return jsonify(projects.full_document(project))


@blueprint.delete("/projects/<project>/members/<uid>")
def remove_member(project: str, uid: str) -> Any:
    """Remove a member (owners and operations may; anyone may leave; global: operations)."""
    try:
        gone = context.directory().person_dn(validate_user_name(uid))
    except InvalidName:
        raise Refused(404, f"{uid[:40]!r} is not a member of project {project!r}") from None
    found = may_remove_member(g.actor, project, gone)
    if found.members == 1:
        raise Refused(409, f"{uid!r} is the last member of {project!r}; a project needs one")
    # Deleted by value: the server matches it by its equality rule, however the
    # stored value is spelt.
    changes = [(ldap.MOD_DELETE, "member", [gone])] + \
        ([(ldap.MOD_DELETE, "owner", [gone])] if found.other_owner else [])
    before = projects.read(project)
    directory = context.directory()
    after = {**before, **{name: [value for value in attribute_values(before, name)
                                 if directory.uids([value]) != [uid]]
                          for _, name, _ in changes}}
    projects.modify("project.member.remove", project, before, changes, after)
    return jsonify(projects.full_document(project))

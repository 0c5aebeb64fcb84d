"""Projects, their members and settings, and the host query monitoring systems build on."""

from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from opslab.names import InvalidName, validate_user_name

from .. import context
from ..app import json_body
from ..audit import recorded_write
from ..auth import (
    PROJECT_NAME,
    Refused,
    is_operator,
    may_change_project,
    person,
    project_membership,
)
from ..directory import Attributes, escape
from ..hosts import Invalid, from_entry, parse, to_entry
from ..store import Change, LogEntry

blueprint = Blueprint("projects", __name__)
QUERY_FILTERS = ("project", "class", "var")


def _people_only() -> None:
    if g.actor is None or g.actor.kind != "person":
        raise Refused(401 if g.actor is None else 403, "this is for people")


def _values(entry: Attributes, name: str) -> list[str]:
    return next((v for k, v in entry.items() if k.lower() == name.lower()), [])


def _summary(entry: Attributes) -> dict[str, Any]:
    return {"name": _values(entry, "cn")[0],
            "description": next(iter(_values(entry, "description")), None),
            "branch": next(iter(_values(entry, "environment")), "production")}


@blueprint.get("/projects")
def list_projects() -> Any:
    _people_only()
    config = context.config()
    found = context.directory().search(config.projects_base_dn, "(objectClass=groupOfNames)")
    return jsonify(sorted((_summary(entry) for _, entry in found), key=lambda p: p["name"]))


@blueprint.get("/projects/<project>")
def show(project: str) -> Any:
    """A project: members, owners, branch, project-wide classes and variables, hosts, log."""
    _people_only()
    directory = context.directory()
    entry = directory.read(directory.project_dn(project)) if PROJECT_NAME.fullmatch(
        project) else None
    if entry is None:
        raise Refused(404, f"no project {project!r}")
    config = context.config()
    hosts = directory.search(config.hosts_base_dn,
                             f"(&(objectClass=puppetClient)(opslabProject={escape(project)}))")
    with context.session() as session:
        log = session.scalars(select(LogEntry).where(LogEntry.project == project)
                              .order_by(LogEntry.id.desc()).limit(10)).all()
    return jsonify({
        **_document(entry),
        **_summary(entry),  # the branch as followed: production when none is set
        "hosts": sorted(from_entry(host)["name"] for _, host in hosts),
        "recent_log": [{"at": item.at.isoformat(), "author": item.author,
                        "message": item.message} for item in log],
    })


@blueprint.get("/hosts")
def query() -> Any:
    """Hosts by project, class and variable value: ``?class=role::web&var=cluster=eqiad``."""
    _people_only()
    unknown = sorted(set(request.args) - set(QUERY_FILTERS))
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(unknown)} "
                      f"(allowed: {', '.join(QUERY_FILTERS)})")
    parts = ["(objectClass=puppetClient)"]
    for project in request.args.getlist("project"):
        parts.append(f"(opslabProject={escape(project)})")
    for class_name in request.args.getlist("class"):
        parts.append(f"(puppetClass={escape(class_name)})")
    for assignment in request.args.getlist("var"):
        if "=" not in assignment:
            raise Invalid(f"var must be NAME=VALUE, got {assignment!r}")
        parts.append(f"(puppetVar={escape(assignment)})")
    config = context.config()
    found = context.directory().search(config.hosts_base_dn, f"(&{''.join(parts)})")
    return jsonify(sorted((from_entry(entry) for _, entry in found), key=lambda h: h["name"]))


# Writes: create a project, change it, add and remove members and owners.

PROJECT_FIELDS = ("description", "branch", "classes", "class_parameters", "variables", "global")


def _project_changes(body: Any, *, creating: bool) -> dict[str, Any]:
    """Check a project document; the host rules apply to its Puppet settings."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    allowed = ("name", *PROJECT_FIELDS) if creating else PROJECT_FIELDS
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    puppet = {key: body[key] for key in ("branch", "classes", "class_parameters", "variables")
              if key in body}
    changes = parse(puppet, creating=False)
    if creating:
        name = body.get("name")
        if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
            raise Invalid("name must be a project name: a-z, 0-9 and '-', at most 63 "
                          "characters, starting with a letter or digit")
        changes["name"] = name
    if "description" in body:
        description = body["description"]
        if description is not None and (not isinstance(description, str)
                                        or len(description) > 1000
                                        or any(ord(c) < 0x20 for c in description)):
            raise Invalid("description must be one line of at most 1000 characters")
        changes["description"] = description
    if "global" in body:
        if not isinstance(body["global"], bool):
            raise Invalid("global must be true or false")
        changes["global"] = body["global"]
    return changes


def _project_entry(name: str, settings: dict[str, Any], members: list[str],
                   owners: list[str]) -> Attributes:
    """The directory attributes of a project (its Puppet settings as on a host)."""
    puppet = to_entry({"name": name, "project": name, **settings})
    return {
        "objectClass": ["groupOfNames", "puppetClient", "opslabNode"],
        "cn": [name],
        "description": [settings["description"]] if settings.get("description") else [],
        "member": members,
        "owner": owners,
        "opslabGlobal": ["TRUE"] if settings.get("global") else [],
        **{key: puppet[key] for key in ("puppetClass", "puppetVar", "opslabClassParameter",
                                        "environment")},
    }


def _settings(entry: Attributes) -> dict[str, Any]:
    puppet = from_entry(entry)
    return {"description": next(iter(_values(entry, "description")), None),
            "branch": puppet["branch"], "classes": puppet["classes"],
            "class_parameters": puppet["class_parameters"], "variables": puppet["variables"],
            "global": _values(entry, "opslabGlobal") == ["TRUE"]}


def _write(action: str, project: str, dn: str, before: Attributes | None,
           after: Attributes) -> None:
    """Create (no ``before``) or change a project entry, with its audit record."""
    directory = context.directory()

    def write() -> None:
        if before is None:
            directory.add(dn, after)
        else:
            directory.replace(dn, before, after)

    def undo() -> None:
        if before is None:
            directory.delete(dn)
        else:
            directory.replace(dn, after, before)

    with context.session() as session:
        change = Change(actor=str(g.actor), action=action, target=project, project=project,
                        before=_document(before) if before is not None else None,
                        after=_document(after))
        recorded_write(session, change, write=write, undo=undo)


def _document(entry: Attributes) -> dict[str, Any]:
    return {**_settings(entry), "members": context.directory().uids(_values(entry, "member")),
            "owners": context.directory().uids(_values(entry, "owner"))}


@blueprint.post("/projects")
def create_project() -> Any:
    """Create a project; the creator becomes its first member and owner."""
    dn = person(g.actor)
    config = context.config()
    if not is_operator(dn):
        owns_one = config.api.owners_create_projects and any(
            dn in {owner.lower() for owner in _values(entry, "owner")}
            for _, entry in context.directory().search(config.projects_base_dn,
                                                "(objectClass=groupOfNames)"))
        if not owns_one:
            raise Refused(403, "only operations may create projects"
                          + (" (or owners of a project)" if config.api.owners_create_projects
                             else ""))
    changes = _project_changes(json_body(), creating=True)
    name = changes.pop("name")
    if changes.get("global") and not is_operator(dn):
        raise Refused(403, "only operations may create a global project")
    creator = context.directory().person_dn(g.actor.name)
    entry = _project_entry(name, changes, [creator], [creator])
    _write("project.create", name, context.directory().project_dn(name), None, entry)
    return jsonify(_document(entry)), 201


@blueprint.patch("/projects/<project>")
def update_project(project: str) -> Any:
    """Change a project's description, branch, classes, variables (global: operations)."""
    may_change_project(g.actor, project)
    changes = _project_changes(json_body(), creating=False)
    if "global" in changes and not is_operator(person(g.actor)):
        raise Refused(403, "only operations may mark a project global or not")
    dn = context.directory().project_dn(project)
    before = context.directory().read(dn)
    if before is None:
        raise Refused(404, f"no project {project!r}")
    after = _project_entry(project, {**_settings(before), **changes},
                           _values(before, "member"), _values(before, "owner"))
    _write("project.update", project, dn, before, {**before, **after})
    return jsonify(_document({**before, **after}))


@blueprint.post("/projects/<project>/members")
def add_member(project: str) -> Any:
    """Add an existing person as a member (any member may) or owner (owners may)."""
    dn = person(g.actor)
    membership = project_membership(project)
    body = json_body()
    if not isinstance(body, dict) or not set(body) <= {"uid", "owner"} or "uid" not in body:
        raise Invalid("the body must be {\"uid\": NAME} with an optional \"owner\": true")
    uid, owner = body["uid"], body.get("owner", False)
    if not isinstance(uid, str) or not isinstance(owner, bool):
        raise Invalid("uid must be a user name and owner true or false")
    try:
        validate_user_name(uid)
    except InvalidName as error:
        raise Invalid(f"uid: {error}") from None
    operator = is_operator(dn)
    if membership.is_global and not operator:
        raise Refused(403, f"project {project!r} is global: only operations may change it")
    if not operator and dn not in membership.members:
        raise Refused(403, f"{g.actor.name} is not a member of project {project!r}")
    if owner and not operator and dn not in membership.owners:
        raise Refused(403, f"only owners of {project!r} may add owners")
    directory = context.directory()
    new = directory.person_dn(uid)
    if directory.read(new) is None:
        raise Refused(404, f"no person {uid!r}")
    before = directory.read(directory.project_dn(project)) or {}
    members = _values(before, "member")
    owners = _values(before, "owner")
    after = {**before,
             "member": members + ([new] if new.lower() not in membership.members else []),
             "owner": owners + ([new] if owner and new.lower() not in membership.owners else [])}
    _write("project.member.add", project, directory.project_dn(project), before, after)
    return jsonify(_document(after))


@blueprint.delete("/projects/<project>/members/<uid>")
def remove_member(project: str, uid: str) -> Any:
    """Remove a member (owners and operations may; anyone may leave)."""
    dn = person(g.actor)
    membership = project_membership(project)
    directory = context.directory()
    try:
        gone = directory.person_dn(validate_user_name(uid)).lower()
    except InvalidName:
        gone = ""
    if gone not in membership.members:
        raise Refused(404, f"{uid!r} is not a member of project {project!r}")
    if not (gone == dn or dn in membership.owners or is_operator(dn)):
        raise Refused(403, f"only owners of {project!r} may remove other members")
    if membership.members == {gone}:
        raise Refused(409, f"{uid!r} is the last member of {project!r}; a project needs one")
    before = directory.read(directory.project_dn(project)) or {}
    after = {**before,
             "member": [m for m in _values(before, "member") if m.lower() != gone],
             "owner": [o for o in _values(before, "owner") if o.lower() != gone]}
    _write("project.member.remove", project, directory.project_dn(project), before, after)
    return jsonify(_document(after))

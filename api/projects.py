"""Projects: their directory entries, documents, the rules for changing them, and the
writes with their audit records that every front end calls.

A project entry is a ``groupOfNames`` (``member``, ``owner``) that also
carries project-wide Puppet settings as a host does (``puppetClass``,
``puppetVar``, ``opslabClassParameter``, ``environment`` holding its
branch), a ``description`` and ``opslabGlobal``.
"""

from typing import Any

import ldap

from opslab.directory import attribute_values
from opslab.names import InvalidName, validate_user_name

from . import adminlog, context, hosts, ids
from .audit import recorded_modify, recorded_write
from .auth import (
    Actor,
    is_operator,
    may_add_member,
    may_change_project,
    may_remove_member,
    person,
    standing,
)
from .contract import Body
from .directory import Attributes, escape
from .errors import Refused
from .store import Change

PUPPET_ATTRIBUTES = ("puppetClass", "puppetVar", "opslabClassParameter", "environment")
RECENT_LOG = 10


def read(project: str) -> Attributes:
    """The entry of the existing ``project`` (a validated name); Refused (404) otherwise."""
    directory = context.directory()
    entry = directory.read(directory.project_dn(project))
    if entry is None:
        raise Refused(404, f"no project {project!r}")
    return entry


def entry_for(name: str, settings: dict[str, Any], members: list[str],
              owners: list[str], gid: str) -> Attributes:
    """The directory attributes of a project: its Puppet settings as on a host, and its
    ``gid`` as the posix group its members share on its instances."""
    puppet = hosts.to_entry({"name": name, "project": name, **settings})
    return {
        "objectClass": ["groupOfNames", "puppetClient", "opslabNode", "opslabPosixGroup"],
        "cn": [name],
        "gidNumber": [gid],
        "description": [settings["description"]] if settings.get("description") else [],
        "member": members,
        "owner": owners,
        "opslabGlobal": ["TRUE"] if settings.get("global") else [],
        **{key: puppet[key] for key in PUPPET_ATTRIBUTES},
    }


def settings(entry: Attributes) -> dict[str, Any]:
    """A project's description, branch (as set), Puppet settings and global flag."""
    puppet = hosts.from_entry(entry)
    return {"description": next(iter(attribute_values(entry, "description")), None),
            "branch": puppet["branch"], "classes": puppet["classes"],
            "class_parameters": puppet["class_parameters"], "variables": puppet["variables"],
            "global": attribute_values(entry, "opslabGlobal") == ["TRUE"]}


def summary(entry: Attributes) -> dict[str, Any]:
    """Name, description and the branch its hosts follow (production when none is set)."""
    return {"name": attribute_values(entry, "cn")[0],
            "description": next(iter(attribute_values(entry, "description")), None),
            "branch": next(iter(attribute_values(entry, "environment")), "production")}


def document(entry: Attributes) -> dict[str, Any]:
    """The project document of the API's answers to writes (and, with more, to reads)."""
    directory = context.directory()
    gid = next(iter(attribute_values(entry, "gidNumber")), None)
    return {**settings(entry), **summary(entry),
            "members": directory.uids(attribute_values(entry, "member")),
            "owners": directory.uids(attribute_values(entry, "owner")),
            "gid_number": int(gid) if gid is not None and gid.isdigit() else None}


def full_document(project: str) -> dict[str, Any]:
    """The project with its hosts (by the one project rule) and its recent log."""
    entry = read(project)
    return {**document(entry),
            "hosts": [str(host["name"]) for host in hosts.query([project], [], [])],
            "recent_log": [adminlog.as_json(item)
                           for item in adminlog.entries(project, RECENT_LOG)]}


def all_summaries() -> list[dict[str, Any]]:
    found = context.directory().search(context.config().projects_base_dn,
                                       "(objectClass=groupOfNames)")
    return sorted((summary(entry) for _, entry in found), key=lambda p: str(p["name"]))


def overviews() -> list[dict[str, Any]]:
    """Every project's summary with its members, owners and global flag, by name: one
    search, for the list of projects."""
    directory = context.directory()
    found = directory.search(context.config().projects_base_dn, "(objectClass=groupOfNames)")
    return sorted(({**summary(entry),
                    "members": directory.uids(attribute_values(entry, "member")),
                    "owners": directory.uids(attribute_values(entry, "owner")),
                    "global": attribute_values(entry, "opslabGlobal") == ["TRUE"]}
                   for _, entry in found), key=lambda p: str(p["name"]))


def owns_any(dn: str) -> bool:
    """Whether the person ``dn`` owns at least one project (asked of the server)."""
    found = context.directory().search(context.config().projects_base_dn,
                                       f"(&(objectClass=groupOfNames)(owner={escape(dn)}))")
    return bool(found)


def create(actor: Actor | None, read_body: Body) -> dict[str, Any]:
    """Create the project ``read_body`` asks for; its creator becomes its first
    member and owner. Operations may; owners of a project may if
    ``api.owners_create_projects``; a global project, or one whose name would take
    in hosts that belong to no project today, is for operations only."""
    dn = person(actor)
    operator = is_operator(dn)
    owners_may = context.config().api.owners_create_projects
    if not operator and not (owners_may and owns_any(dn)):
        raise Refused(403, "only operations may create projects"
                      + (" (or owners of a project)" if owners_may else ""))
    body = read_body()
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
    new_settings = {**hosts.changes(body), "description": body.get("description"),
                    "global": body.get("global", False)}
    entry = entry_for(name, new_settings, [dn], [dn], str(ids.take()))
    _write(actor, "project.create", name, None, entry)
    return full_document(name)


def update(actor: Actor | None, project: str, read_body: Body) -> dict[str, Any]:
    """Change a project's description, branch, classes, variables (global: operations)."""
    may_change_project(actor, project)
    body = read_body()
    if "global" in body and not is_operator(person(actor)):
        raise Refused(403, "only operations may mark a project global or not")
    before = read(project)
    changes: dict[str, Any] = {
        **hosts.changes(body),
        **{key: body[key] for key in ("description", "global") if key in body}}
    # A project made before projects were posix groups becomes one at its next change.
    gid = next(iter(attribute_values(before, "gidNumber")), None) or str(ids.take())
    after: Attributes = {**before, **entry_for(project, {**settings(before), **changes},
                                               attribute_values(before, "member"),
                                               attribute_values(before, "owner"), gid)}
    _write(actor, "project.update", project, before, after)
    return full_document(project)


def add_member(actor: Actor | None, project: str, uid: str, owner: bool) -> dict[str, Any]:
    """Add an existing person as a member (any member may) or owner (owners may)."""
    directory = context.directory()
    new = directory.person_dn(uid)
    found = may_add_member(actor, project, new, owner)
    if directory.read(new, ["uid"]) is None:
        raise Refused(404, f"no person {uid!r}")
    changes = ([] if found.other_member else [(ldap.MOD_ADD, "member", [new])]) + \
        ([(ldap.MOD_ADD, "owner", [new])] if owner and not found.other_owner else [])
    if changes:
        before = read(project)
        after = {**before, **{name: attribute_values(before, name) + values
                              for _, name, values in changes}}
        _modify(actor, "project.member.add", project, before, changes, after)
    return full_document(project)


def remove_member(actor: Actor | None, project: str, uid: str) -> dict[str, Any]:
    """Remove a member (owners and operations may; anyone may leave; global: operations)."""
    try:
        gone = context.directory().person_dn(validate_user_name(uid))
    except InvalidName:
        raise Refused(404, f"{uid[:40]!r} is not a member of project {project!r}") from None
    found = may_remove_member(actor, project, gone)
    if found.members == 1:
        raise Refused(409, f"{uid!r} is the last member of {project!r}; a project needs one")
    # Deleted by value: the server matches it by its equality rule, however the
    # stored value is spelt.
    changes = [(ldap.MOD_DELETE, "member", [gone])] + \
        ([(ldap.MOD_DELETE, "owner", [gone])] if found.other_owner else [])
    before = read(project)
    directory = context.directory()
    after = {**before, **{name: [value for value in attribute_values(before, name)
                                 if directory.uids([value]) != [uid]]
                          for _, name, _ in changes}}
    _modify(actor, "project.member.remove", project, before, changes, after)
    return full_document(project)


def enrol(actor: Actor | None, project: str, dn: str) -> None:
    """Make the person ``dn`` a member of ``project`` on ``actor``'s behalf, with its audit
    record, whatever ``actor``'s own standing in it (a new person joining the default
    project); nothing if they are one already."""
    if standing(project, dn).member:
        return
    before = read(project)
    after = {**before, "member": [*attribute_values(before, "member"), dn]}
    _modify(actor, "project.member.add", project, before, [(ldap.MOD_ADD, "member", [dn])],
            after)


def _modify(actor: Actor | None, action: str, project: str, before: Attributes,
            changes: list[tuple[int, str, list[str]]], after: Attributes) -> None:
    """Add or delete single values of a project entry (members, owners), with the audit
    record; ``after`` is ``before`` as the changes leave it, for the record."""
    recorded_modify(Change(actor=str(actor), action=action, target=project, project=project,
                           before=document(before), after=document(after)),
                    context.directory().project_dn(project), changes)


def _write(actor: Actor | None, action: str, project: str, before: Attributes | None,
           after: Attributes) -> None:
    """Create (no ``before``) or change a project entry, with its audit record."""
    directory = context.directory()
    dn = directory.project_dn(project)

    def apply() -> None:
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
        change = Change(actor=str(actor), action=action, target=project, project=project,
                        before=document(before) if before is not None else None,
                        after=document(after))
        recorded_write(session, change, write=apply, undo=undo)

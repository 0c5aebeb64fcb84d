"""Projects: their directory entries, documents, and writes with their audit record.

A project entry is a ``groupOfNames`` (``member``, ``owner``) that also
carries project-wide Puppet settings as a host does (``puppetClass``,
``puppetVar``, ``opslabClassParameter``, ``environment`` holding its
branch), a ``description`` and ``opslabGlobal``.
"""

from typing import Any

import ldap
from flask import g
from sqlalchemy import select

from opslab.directory import attribute_values

from . import context, hosts
from .audit import recorded_write
from .directory import Attributes, escape
from .errors import Refused
from .store import Change, LogEntry

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
              owners: list[str]) -> Attributes:
    """The directory attributes of a project (its Puppet settings as on a host)."""
    puppet = hosts.to_entry({"name": name, "project": name, **settings})
    return {
        "objectClass": ["groupOfNames", "puppetClient", "opslabNode"],
        "cn": [name],
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
    return {**settings(entry), **summary(entry),
            "members": directory.uids(attribute_values(entry, "member")),
            "owners": directory.uids(attribute_values(entry, "owner"))}


def full_document(project: str) -> dict[str, Any]:
    """The project with its hosts (by the one project rule) and its recent log."""
    entry = read(project)
    with context.session() as session:
        log = session.scalars(select(LogEntry).where(LogEntry.project == project)
                              .order_by(LogEntry.id.desc()).limit(RECENT_LOG)).all()
    return {**document(entry),
            "hosts": [str(host["name"]) for host in hosts.query([project], [], [])],
            "recent_log": [{"id": item.id, "at": item.at.isoformat(), "project": item.project,
                            "author": item.author, "message": item.message} for item in log]}


def all_summaries() -> list[dict[str, Any]]:
    found = context.directory().search(context.config().projects_base_dn,
                                       "(objectClass=groupOfNames)")
    return sorted((summary(entry) for _, entry in found), key=lambda p: str(p["name"]))


def owns_any(dn: str) -> bool:
    """Whether the person ``dn`` owns at least one project (asked of the server)."""
    found = context.directory().search(context.config().projects_base_dn,
                                       f"(&(objectClass=groupOfNames)(owner={escape(dn)}))")
    return bool(found)


def modify(action: str, project: str, before: Attributes,
           changes: list[tuple[int, str, list[str]]], after: Attributes) -> None:
    """Add or delete single values of a project entry (members, owners), with the audit
    record; ``after`` is ``before`` as the changes leave it, for the record."""
    directory = context.directory()
    dn = directory.project_dn(project)
    undo = [(ldap.MOD_DELETE if operation == ldap.MOD_ADD else ldap.MOD_ADD, name, values)
            for operation, name, values in reversed(changes)]
    with context.session() as session:
        change = Change(actor=str(g.actor), action=action, target=project, project=project,
                        before=document(before), after=document(after))
        recorded_write(session, change, write=lambda: directory.modify(dn, changes),
                       undo=lambda: directory.modify(dn, undo))


def write(action: str, project: str, before: Attributes | None, after: Attributes) -> None:
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
        change = Change(actor=str(g.actor), action=action, target=project, project=project,
                        before=document(before) if before is not None else None,
                        after=document(after))
        recorded_write(session, change, write=apply, undo=undo)

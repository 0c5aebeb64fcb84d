"""Projects (read side) and the host query monitoring systems build their checks from."""

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select

from ..auth import PROJECT_NAME, Refused
from ..directory import Attributes, DirectoryAccess, escape
from ..hosts import Invalid, from_entry
from ..store import LogEntry

blueprint = Blueprint("projects", __name__)
QUERY_FILTERS = ("project", "class", "var")


def _people_only() -> None:
    if g.actor is None or g.actor.kind != "person":
        raise Refused(401 if g.actor is None else 403, "this is for people")


def _directory() -> DirectoryAccess:
    directory: DirectoryAccess = current_app.extensions["opslab.directory"]
    return directory


def _values(entry: Attributes, name: str) -> list[str]:
    return next((v for k, v in entry.items() if k.lower() == name.lower()), [])


def _uids(dns: list[str]) -> list[str]:
    return sorted(dn.split(",", 1)[0].partition("=")[2] for dn in dns)


def _summary(entry: Attributes) -> dict[str, Any]:
    return {"name": _values(entry, "cn")[0],
            "description": next(iter(_values(entry, "description")), None),
            "branch": next(iter(_values(entry, "environment")), "production")}


@blueprint.get("/projects")
def list_projects() -> Any:
    _people_only()
    config = current_app.config["OPSLAB"]
    found = _directory().search(config.projects_base_dn, "(objectClass=groupOfNames)")
    return jsonify(sorted((_summary(entry) for _, entry in found), key=lambda p: p["name"]))


@blueprint.get("/projects/<project>")
def show(project: str) -> Any:
    """A project: members, owners, branch, project-wide classes and variables, hosts, log."""
    _people_only()
    directory = _directory()
    entry = directory.read(directory.project_dn(project)) if PROJECT_NAME.fullmatch(
        project) else None
    if entry is None:
        raise Refused(404, f"no project {project!r}")
    settings = from_entry({**entry, "associatedDomain": [project]})
    config = current_app.config["OPSLAB"]
    hosts = directory.search(config.hosts_base_dn,
                             f"(&(objectClass=puppetClient)(opslabProject={escape(project)}))")
    with current_app.extensions["opslab.sessions"]() as session:
        log = session.scalars(select(LogEntry).where(LogEntry.project == project)
                              .order_by(LogEntry.id.desc()).limit(10)).all()
    return jsonify({
        **_summary(entry),
        "members": _uids(_values(entry, "member")),
        "owners": _uids(_values(entry, "owner")),
        "classes": settings["classes"],
        "class_parameters": settings["class_parameters"],
        "variables": settings["variables"],
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
    config = current_app.config["OPSLAB"]
    found = _directory().search(config.hosts_base_dn, f"(&{''.join(parts)})")
    return jsonify(sorted((from_entry(entry) for _, entry in found), key=lambda h: h["name"]))

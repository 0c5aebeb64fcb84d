"""Projects, their members and settings, and the host query monitoring systems build on."""

from typing import Any

from flask import Blueprint, g, jsonify, request

from .. import hosts, instances, projects
from ..auth import person, project_membership
from ..contract import request_document

blueprint = Blueprint("projects", __name__)


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
    """Hosts by project, class, variable value and whether they are failing:
    ``?class=role::web&var=cluster=eqiad&failing=true``."""
    person(g.actor)
    return jsonify(hosts.query(*hosts.parse_filters(request.args.to_dict(flat=False))))


@blueprint.post("/projects")
def create_project() -> Any:
    """Create a project; the creator becomes its first member and owner."""
    return jsonify(projects.create(g.actor, request_document)), 201


@blueprint.patch("/projects/<project>")
def update_project(project: str) -> Any:
    return jsonify(projects.update(g.actor, project, request_document))


@blueprint.post("/projects/<project>/members")
def add_member(project: str) -> Any:
    body = request_document()
    return jsonify(projects.add_member(g.actor, project, body["uid"], body.get("owner", False)))


@blueprint.delete("/projects/<project>/members/<uid>")
def remove_member(project: str, uid: str) -> Any:
    return jsonify(projects.remove_member(g.actor, project, uid))


@blueprint.get("/projects/<project>/quota")
def quota(project: str) -> Any:
    person(g.actor)
    project_membership(project)
    return jsonify(instances.quota(project))


@blueprint.put("/projects/<project>/quota")
def set_quota(project: str) -> Any:
    return jsonify(instances.set_quota(g.actor, project, request_document))


@blueprint.get("/projects/<project>/instance-defaults")
def instance_defaults(project: str) -> Any:
    return jsonify(instances.defaults(g.actor, project))


@blueprint.put("/projects/<project>/instance-defaults")
def set_instance_defaults(project: str) -> Any:
    return jsonify(instances.set_defaults(g.actor, project, request_document))

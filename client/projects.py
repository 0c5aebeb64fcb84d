"""``opslab projects``: the projects, their members and their branch.

    opslab projects list                         every project: name, branch, description
    opslab projects show PROJECT                 one project: members, owners, settings,
                                                 hosts, its latest Server Admin Log entries
    opslab projects create PROJECT [--description TEXT] [--branch BRANCH] [--global]
    opslab projects members add PROJECT UID [--owner]
    opslab projects members remove PROJECT UID
    opslab projects branch PROJECT BRANCH        the branch the project's hosts follow

Every action takes ``--json`` (the API's answer) and ``--timeout SECONDS``.
Exit statuses: see :mod:`opslab.client.session` (0 done, 1 refused, 2 usage
or credentials, 3 the API unavailable).
"""

import argparse
from typing import Any

from . import output, session
from .session import PersonClient, part


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab projects ARGV`` (``config_path`` is not used: see credentials)."""
    parser = argparse.ArgumentParser(prog="opslab projects",
                                     description="Projects, their members and their branch.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every project")
    show = actions.add_parser("show", help="one project, whole")
    show.add_argument("project")
    create = actions.add_parser("create", help="create a project (you become its owner)")
    create.add_argument("project")
    create.add_argument("--description", help="one line of text")
    create.add_argument("--branch", help="the branch its hosts follow (default production)")
    create.add_argument("--global", dest="is_global", action="store_true",
                        help="shared infrastructure (operations only)")
    members = actions.add_parser("members", help="add or remove a member")
    member_actions = members.add_subparsers(dest="member_action", required=True,
                                            metavar="add|remove")
    add = member_actions.add_parser("add", help="add a member")
    add.add_argument("project")
    add.add_argument("uid")
    add.add_argument("--owner", action="store_true", help="as an owner (owners may)")
    remove = member_actions.add_parser("remove", help="remove a member (or leave)")
    remove.add_argument("project")
    remove.add_argument("uid")
    branch = actions.add_parser("branch", help="set the branch the project's hosts follow")
    branch.add_argument("project")
    branch.add_argument("branch")
    for each in (listing, show, create, add, remove, branch):
        session.common(each)
    arguments = parser.parse_args(argv)
    return session.run(arguments, _carry_out)


def _carry_out(client: PersonClient, arguments: argparse.Namespace) -> int:
    if arguments.action == "list":
        projects = client.call("GET", "/v1/projects")
        if arguments.json:
            output.print_json(projects)
        else:
            output.table(["PROJECT", "BRANCH", "DESCRIPTION"],
                         [[p["name"], p["branch"], p["description"] or ""] for p in projects])
        return 0
    path = f"/v1/projects/{part(arguments.project)}"
    if arguments.action == "show":
        project = client.call("GET", path)
    elif arguments.action == "create":
        body: dict[str, Any] = {"name": arguments.project}
        if arguments.description is not None:
            body["description"] = arguments.description
        if arguments.branch is not None:
            body["branch"] = arguments.branch
        if arguments.is_global:
            body["global"] = True
        project = client.call("POST", "/v1/projects", body)
    elif arguments.action == "branch":
        project = client.call("PATCH", path, {"branch": arguments.branch})
    elif arguments.member_action == "add":
        project = client.call("POST", f"{path}/members",
                              {"uid": arguments.uid, "owner": arguments.owner})
    else:
        project = client.call("DELETE", f"{path}/members/{part(arguments.uid)}")
    if arguments.json:
        output.print_json(project)
    else:
        show_project(project)
    return 0


def show_project(project: dict[str, Any]) -> None:
    """A project for people: its fields, then its hosts and latest log entries."""
    output.fields([
        ("project", project["name"]),
        ("description", project.get("description") or ""),
        ("branch", project["branch"]),
        ("global", project.get("global", False)),
        ("members", project.get("members", [])),
        ("owners", project.get("owners", [])),
        ("classes", project.get("classes", [])),
        *((f"variable {name}", value)
          for name, value in sorted((project.get("variables") or {}).items())),
        *((f"parameter {cls}.{name}", output.typed(value))
          for cls, values in sorted((project.get("class_parameters") or {}).items())
          for name, value in sorted(values.items())),
        ("hosts", project.get("hosts", [])),
    ])
    log = project.get("recent_log") or []
    if log:
        output.section("Server Admin Log")
        output.table(["WHEN", "WHO", "MESSAGE"],
                     [[output.when(entry["at"]), entry["author"], entry["message"]]
                      for entry in log])

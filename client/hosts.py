"""``opslab hosts``: a project's hosts and how they are classified.

    opslab hosts list [--project P] [--class C] [--var NAME=VALUE] [--failing | --passing]
    opslab hosts show FQDN
    opslab hosts create PROJECT NAME [--class C] [--param CLASS.NAME=VALUE] [--var NAME=VALUE]
                        [--branch B] [--address IPV4] [--instance [--image I] [--flavor F]]
                        [--token-file FILE]
    opslab hosts set FQDN [--class C] [--param CLASS.NAME=VALUE] [--var NAME=VALUE]
                     [--remove-class C] [--remove-param CLASS.NAME] [--remove-var NAME]
                     [--branch B | --project-branch]
    opslab hosts delete FQDN [--yes]

NAME is the host's label (``web3``) or its whole name. ``--param`` takes
its value as YAML (``8080`` is a number, ``true`` a boolean); ``--var`` as
text. ``set`` reads the host, changes what the options say and leaves the
rest: ``--class`` adds a class to those it has, ``--param`` and ``--var``
set one each. A new host's token is shown once: ``--token-file`` writes it
to a new file of mode 0600 instead. ``delete`` deletes the host's instance
too; it asks first on a terminal, and needs ``--yes`` elsewhere.

Every action takes ``--json`` and ``--timeout SECONDS``. Exit statuses: see
:mod:`opslab.client.session`.
"""

import argparse
import os
import sys
from typing import Any

from . import classification, output, session
from .session import PersonClient, UsageError, part


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab hosts ARGV`` (``config_path`` is not used: see credentials)."""
    parser = argparse.ArgumentParser(prog="opslab hosts",
                                     description="Hosts and how they are classified.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="hosts, by project, class, variable, failing")
    listing.add_argument("--project", action="append", help="in this project (repeatable)")
    listing.add_argument("--class", dest="classes", action="append", metavar="CLASS",
                         help="with this class (repeatable: all must match)")
    listing.add_argument("--var", dest="variables", action="append", metavar="NAME=VALUE",
                         help="with this variable's value (repeatable)")
    failing = listing.add_mutually_exclusive_group()
    failing.add_argument("--failing", dest="failing", action="store_const", const="true",
                         help="only hosts whose last run or smoke tests failed")
    failing.add_argument("--passing", dest="failing", action="store_const", const="false",
                         help="only the others")
    show = actions.add_parser("show", help="one host, with its last run and agent")
    show.add_argument("fqdn")
    create = actions.add_parser("create", help="create a host in a project")
    create.add_argument("project")
    create.add_argument("name", help="the host's label, or its whole name")
    classification.add_options(create, removals=False)
    create.add_argument("--branch", help="a branch of its own (default: its project's)")
    create.add_argument("--address", dest="addresses", action="append", metavar="IPV4",
                        help="an address of the host (repeatable)")
    create.add_argument("--instance", action="store_true",
                        help="launch an instance for it (image and flavor: the project's "
                             "defaults unless given)")
    create.add_argument("--image", help="the instance's image (implies --instance)")
    create.add_argument("--flavor", help="the instance's flavor (implies --instance)")
    create.add_argument("--token-file", metavar="FILE",
                        help="write the host's token to this new file (mode 0600) instead "
                             "of showing it")
    change = actions.add_parser("set", help="change a host's classes, parameters, variables, "
                                            "branch")
    change.add_argument("fqdn")
    classification.add_options(change, removals=True)
    branch = change.add_mutually_exclusive_group()
    branch.add_argument("--branch", help="follow this branch")
    branch.add_argument("--project-branch", action="store_true",
                        help="follow its project's branch again")
    delete = actions.add_parser("delete", help="delete a host, and its instance")
    delete.add_argument("fqdn")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    for each in (listing, show, create, change, delete):
        session.common(each)
    arguments = parser.parse_args(argv)
    return session.run(arguments, _carry_out)


def _carry_out(client: PersonClient, arguments: argparse.Namespace) -> int:
    action = arguments.action
    if action == "list":
        hosts = client.call("GET", "/v1/hosts", query={
            "project": arguments.project, "class": arguments.classes,
            "var": arguments.variables, "failing": arguments.failing})
        if arguments.json:
            output.print_json(hosts)
        else:
            output.table(["HOST", "PROJECT", "BRANCH", "CLASSES"],
                         [[host["name"], host["project"], host["branch"], host["classes"]]
                          for host in hosts])
        return 0
    if action == "create":
        return _create(client, arguments)
    path = f"/v1/hosts/{part(arguments.fqdn)}"
    if action == "delete":
        if not arguments.yes and not _confirmed(arguments.fqdn):
            raise UsageError(f"{arguments.fqdn} not deleted: give --yes to delete it "
                             "without being asked")
        client.call("DELETE", path)
        if arguments.json:
            output.print_json({"deleted": arguments.fqdn})
        else:
            output.message(f"deleted {output.shown(arguments.fqdn)}")
        return 0
    if action == "set":
        if not any((arguments.classes, arguments.params, arguments.variables,
                    arguments.remove_class, arguments.remove_param, arguments.remove_var,
                    arguments.branch is not None, arguments.project_branch)):
            raise UsageError("nothing to change: give --class, --param, --var, --branch or "
                             "their --remove- forms")
        current = client.call("GET", path)
        body = classification.changed(current, arguments, removals=True)
        if arguments.branch is not None:
            body["branch"] = arguments.branch
        elif arguments.project_branch:
            body["branch"] = None
        host = client.call("PATCH", path, body)
    else:
        host = client.call("GET", path)
    if arguments.json:
        output.print_json(host)
    else:
        show_host(host)
    return 0


def _create(client: PersonClient, arguments: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": arguments.name,
                            **classification.changed({}, arguments, removals=False)}
    if arguments.branch is not None:
        body["branch"] = arguments.branch
    if arguments.addresses:
        body["addresses"] = arguments.addresses
    if arguments.instance or arguments.image or arguments.flavor:
        body["instance"] = {key: value for key, value in
                            (("image", arguments.image), ("flavor", arguments.flavor)) if value}
    token_file = arguments.token_file
    if token_file is not None and os.path.lexists(token_file):
        raise UsageError(f"--token-file {token_file} exists already: name a new file")
    created = client.call("POST", f"/v1/projects/{part(arguments.project)}/hosts", body)
    token = created["token"]
    if token_file is not None:
        try:
            descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                 | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(token + "\n")
        except OSError as error:  # the host exists now: its token must not be lost
            sys.stderr.write(f"opslab: cannot write {output.shown(token_file)}: "
                             f"{error.strerror}; the token is shown instead\n")
            token_file = None
    if arguments.json:
        output.print_json(created if token_file is None else {**created, "token": None,
                                                              "token_file": token_file})
        return 0
    show_host(created["host"])
    if token_file is not None:
        output.message(f"\nthe host's token is in {output.shown(token_file)} (mode 0600)")
    else:
        output.message(f"\nthe host's token, shown this once: {output.shown(token)}")
    return 0


def _confirmed(fqdn: str) -> bool:
    """Whether the person at the terminal says yes; False without a terminal."""
    if not sys.stdin.isatty():
        return False
    sys.stderr.write(f"delete {output.shown(fqdn)}, and its instance if it has one? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def show_host(host: dict[str, Any]) -> None:
    """A host for people: its classification, then what its agent and last run said."""
    pairs: list[tuple[str, Any]] = [
        ("host", host["name"]),
        ("project", host.get("project")),
        ("branch", host.get("branch") or "(its project's)"),
        ("classes", host.get("classes", [])),
        *((f"parameter {cls}.{name}", output.typed(value))
          for cls, values in sorted((host.get("class_parameters") or {}).items())
          for name, value in sorted(values.items())),
        *((f"variable {name}", value)
          for name, value in sorted((host.get("variables") or {}).items())),
        ("addresses", host.get("addresses", [])),
    ]
    if "failing" in host:
        pairs.append(("failing", host["failing"]))
    agent = host.get("agent")
    if agent:
        pairs.append(("agent", f"disabled: {agent.get('reason') or 'no reason given'}"
                      if agent.get("disabled") else "enabled"))
    last = host.get("last_run")
    if last:
        pairs.append(("last run", f"{last['status']} at {output.when(last['received_at'])}, commit "
                                  f"{last.get('commit') or '-'}"))
    smoke = host.get("smoke")
    if smoke:
        pairs.append(("smoke", f"{smoke['passed']} passed, {smoke['failed']} failed, "
                               f"{smoke['skipped']} skipped at {output.when(smoke['checked_at'])}"))
    instance = host.get("instance")
    if instance:
        pairs.append(("instance", f"{instance['state']} ({instance['image']}, "
                                  f"{instance['flavor']})"))
    output.fields(pairs)

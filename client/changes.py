"""``opslab changes``: the audit log, every change made through the API.

    opslab changes [--project P] [--actor UID] [--action A] [--target T] [--limit N]
    opslab changes ID          one change, with what it changed (before and after, a diff)

Newest first; ``--limit`` 1 to 1000 (default 20). Also ``--json`` and
``--timeout SECONDS``. Exit statuses: see :mod:`opslab.client.session`.
"""

import argparse
import difflib
import json
from typing import Any

from . import output, session
from .session import PersonClient


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab changes ARGV`` (``config_path`` is not used: see credentials)."""
    parser = argparse.ArgumentParser(prog="opslab changes",
                                     description="The audit log: who changed what, when.")
    parser.add_argument("id", nargs="?", type=int, help="one change, with its diff")
    parser.add_argument("--project", help="changes of this project")
    parser.add_argument("--actor", metavar="UID", help="changes this person made")
    parser.add_argument("--action", help="changes of this kind (host.update, ...)")
    parser.add_argument("--target", help="changes of this project, host or person")
    parser.add_argument("--limit", type=session.limit, default=20, metavar="N",
                        help="changes to show, 1 to 1000 (default 20)")
    session.common(parser)
    arguments = parser.parse_args(argv)
    return session.run(arguments, _carry_out)


def _carry_out(client: PersonClient, arguments: argparse.Namespace) -> int:
    if arguments.id is not None:
        change = client.call("GET", f"/v1/changes/{arguments.id}")
        if arguments.json:
            output.print_json(change)
            return 0
        output.fields([(name, output.when(change[name]) if name == "at" else change[name])
                       for name in ("id", "at", "actor", "action", "target", "project",
                                    "state")])
        output.section("What changed")
        for line in diff(change.get("before"), change.get("after")):
            output.message(output.shown(line))
        return 0
    changes = client.call("GET", "/v1/changes", query={
        "project": arguments.project, "actor": arguments.actor, "action": arguments.action,
        "target": arguments.target, "limit": arguments.limit})
    if arguments.json:
        output.print_json(changes)
    else:
        output.table(["ID", "WHEN", "WHO", "ACTION", "TARGET", "PROJECT", "STATE"],
                     [[c["id"], output.when(c["at"]), c["actor"], c["action"], c["target"],
                       c["project"], c["state"]] for c in changes])
    return 0


def diff(before: Any, after: Any) -> list[str]:
    """The lines of a unified diff of ``before`` and ``after`` as sorted, indented JSON."""
    def lines(document: Any) -> list[str]:
        if document is None:
            return []
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    found = list(difflib.unified_diff(lines(before), lines(after), "before", "after",
                                      lineterm="", n=2))
    return found or ["(nothing)"]

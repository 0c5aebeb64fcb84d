"""``opslab runs``: the CI's runs, each test of a Gerrit change's patch set.

    opslab runs [--change N] [--state S] [--project P] [--limit N]
    opslab runs ID        one run: its hosts and their results, the vote and its message

Newest first; ``--limit`` 1 to 1000 (default 20); ``--project`` is the
Gerrit project. Also ``--json`` and ``--timeout SECONDS``. Exit statuses:
see :mod:`opslab.client.session`.
"""

import argparse

from . import output, session
from .session import PersonClient

STATES = ("queued", "running", "passed", "failed", "error", "cancelled", "stale")


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab runs ARGV`` (``config_path`` is not used: see credentials)."""
    parser = argparse.ArgumentParser(prog="opslab runs", description="The CI's runs.")
    parser.add_argument("id", nargs="?", type=int, help="one run, whole")
    parser.add_argument("--change", type=int, metavar="N", help="runs of this Gerrit change")
    parser.add_argument("--state", choices=STATES, help="runs in this state")
    parser.add_argument("--project", help="runs of this Gerrit project")
    parser.add_argument("--limit", type=session.limit, default=20, metavar="N",
                        help="runs to show, 1 to 1000 (default 20)")
    session.common(parser)
    arguments = parser.parse_args(argv)
    return session.run(arguments, _carry_out)


def _vote(vote: int | None) -> str:
    return {1: "+1", -1: "-1"}.get(vote or 0, "-")


def _carry_out(client: PersonClient, arguments: argparse.Namespace) -> int:
    if arguments.id is not None:
        run = client.call("GET", f"/v1/ci/runs/{arguments.id}")
        if arguments.json:
            output.print_json(run)
            return 0
        output.fields([
            ("run", run["id"]), ("state", run["state"]), ("vote", _vote(run["vote"])),
            ("change", f"{run['change']} patch set {run['patchset']} ({run['project']}, "
                       f"{run['branch']})"),
            ("subject", run["subject"]), ("revision", run["revision"]),
            ("asked", f"{run['trigger']} by {run['requested_by']}"),
            ("change url", run["change_url"]), ("build", run["build_url"]),
            ("created", output.when(run["created_at"])),
            ("finished", output.when(run["finished_at"])),
            ("left out", run["left_out"]), ("url", run["url"]),
        ])
        if run["hosts"]:
            output.section("Hosts")
            output.table(["HOST", "CLONE", "RESULT"],
                         [[host["original"], host["clone"], host["result"]]
                          for host in run["hosts"]])
        if run.get("message"):
            output.section("Message")
            for line in run["message"].splitlines():
                output.message(output.shown(line))
        return 0
    runs = client.call("GET", "/v1/ci/runs", query={
        "change": arguments.change, "state": arguments.state, "project": arguments.project,
        "limit": arguments.limit})
    if arguments.json:
        output.print_json(runs)
    else:
        output.table(["ID", "CHANGE", "STATE", "VOTE", "PROJECT", "ASKED BY", "SUBJECT"],
                     [[run["id"], f"{run['change']},{run['patchset']}", run["state"],
                       _vote(run["vote"]), run["project"], run["requested_by"],
                       run["subject"]] for run in runs])
    return 0

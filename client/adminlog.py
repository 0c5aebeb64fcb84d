"""``opslab log``: the Server Admin Log, what people say they did.

    opslab log PROJECT MESSAGE...     log MESSAGE (the words joined by spaces) in PROJECT's log
    opslab log PROJECT                PROJECT's latest entries
    opslab log                        every project's latest entries
    [--limit N]  how many entries to show (default 20)

Writing takes the project's members (and operations); reading is public.
Also ``--json`` and ``--timeout SECONDS``. Exit statuses: see
:mod:`opslab.client.session`.
"""

import argparse

from . import output, session
from .session import PersonClient, part


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab log ARGV`` (``config_path`` is not used: see credentials)."""
    parser = argparse.ArgumentParser(prog="opslab log",
                                     description="Write or read the Server Admin Log.")
    parser.add_argument("project", nargs="?", help="the project (none: every project's log)")
    parser.add_argument("message", nargs="*", help="what you did (none: show the log)")
    parser.add_argument("--limit", type=session.limit, default=20, metavar="N",
                        help="entries to show, 1 to 1000 (default 20)")
    session.common(parser)
    arguments = parser.parse_args(argv)
    return session.run(arguments, _carry_out)


def _carry_out(client: PersonClient, arguments: argparse.Namespace) -> int:
    project = arguments.project
    path = "/v1/log" if project is None else f"/v1/projects/{part(project)}/log"
    if arguments.message:
        entry = client.call("POST", path, {"message": " ".join(arguments.message)})
        if arguments.json:
            output.print_json(entry)
        else:
            output.message(f"logged as entry {entry['id']} of {output.shown(entry['project'])}"
                           f" by {output.shown(entry['author'])}")
        return 0
    entries = client.call("GET", path, query={"limit": arguments.limit})
    if arguments.json:
        output.print_json(entries)
    else:
        output.table(["WHEN", "PROJECT", "WHO", "MESSAGE"],
                     [[output.when(entry["at"]), entry["project"], entry["author"],
                       entry["message"]] for entry in entries])
    return 0

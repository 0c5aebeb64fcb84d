"""``opslab ci ...``: the CI harness's commands.

    opslab ci dispatch     Gerrit's events in, Jenkins builds out, until SIGTERM
    opslab ci run          the Jenkins job: test the patch set GERRIT_* names, and vote

Exit status of ``dispatch``: 0 stopped by a signal, everything ended in time;
1 stopped, with threads still waiting on Jenkins or the API at the deadline;
2 it cannot start as configured (the reason logged). Of ``run``: 0 the change
passed, 1 it failed, 2 it could not be tested (ci/job.py).
"""

import argparse
import logging

from opslab.config import ConfigError, add_config_option, load
from opslab.log import setup

EXIT_LATE = 1
EXIT_USAGE = 2
log = logging.getLogger(__name__)


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab ci ARGV``; ``config_path`` is ``opslab --config``."""
    parser = argparse.ArgumentParser(prog="opslab ci",
                                     description="The CI harness: Gerrit, Jenkins, clones.")
    add_config_option(parser, config_path)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("dispatch", help="the dispatcher: Gerrit's events in (SSH, webhook, "
                       "catch-up), Jenkins builds out, until SIGTERM")
    actions.add_parser("run", add_help=False,
                       help="the Jenkins job: test the patch set the GERRIT_* parameters "
                            "name on clones, and vote (opslab ci run --help)")
    arguments, rest = parser.parse_known_args(argv)
    if arguments.action == "run":
        from .job import main as run

        return run(rest, arguments.config)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    setup()
    return _dispatch(arguments.config)


def _dispatch(config_path: str | None) -> int:
    from .dispatcher import SetupError, build_service, serve

    try:
        service = build_service(load(config_path))
    except (ConfigError, SetupError) as error:
        log.error("cannot start: %s", error)
        return EXIT_USAGE
    return 0 if serve(service) else EXIT_LATE

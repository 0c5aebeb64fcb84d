"""``opslab agent ...``: the agent on every instance.

    opslab agent run            check every agent.check_interval, apply on change (systemd)
    opslab agent run --once     one check (a timer's unit, or by hand)
    opslab agent disable REASON stop Puppet runs here, saying why (shown in the API)
    opslab agent enable         allow them again
    opslab agent status         what the agent acted on, what is spooled
    opslab agent bootstrap ...  make this instance a managed one (see docs/agent.md)

Exit status of ``run --once``: 0 nothing to do, or the run succeeded; 1 the
Puppet run failed, or a smoke test did (after the run, or on its interval);
3 the API could not be asked or refused (nothing was applied, unless the
drift interval was due); 2 bad usage or configuration.
"""

import argparse
import json
import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from opslab.config import ConfigError, add_config_option, load
from opslab.log import setup as setup_logging

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("opslab.agent")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def agent_version() -> str:
    """This agent's version, as its reports carry it."""
    from opslab import __version__

    return __version__


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab agent ARGV``; ``config_path`` is ``opslab --config``."""
    from . import bootstrap

    parser = argparse.ArgumentParser(prog="opslab agent",
                                     description="The agent on every managed instance.")
    add_config_option(parser, config_path)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="check and apply, every agent.check_interval")
    run.add_argument("--once", action="store_true", help="one check, then exit")
    off = actions.add_parser("disable", help="stop Puppet runs here, saying why")
    off.add_argument("reason", help="why (shown in the API's host view)")
    actions.add_parser("enable", help="allow Puppet runs again")
    status = actions.add_parser("status", help="what the agent acted on, what is spooled")
    status.add_argument("--json", action="store_true", help="print it as JSON")
    setup = actions.add_parser("bootstrap", help="make this instance a managed one")
    bootstrap.add_arguments(setup)
    arguments = parser.parse_args(argv)
    setup_logging()

    if arguments.action == "bootstrap":
        return bootstrap.run(arguments, arguments.config)
    from .agent import Agent

    try:
        config = load(arguments.config)
        agent = Agent(config, agent_version())
    except (ConfigError, ValueError) as error:
        log.error("%s", error)
        return EXIT_USAGE
    if arguments.action == "run":
        return _run(agent, arguments.once)
    if arguments.action == "disable":
        if not arguments.reason.strip():
            log.error("say why: the reason is shown to the project's members")
            return EXIT_USAGE
        agent.set_disabled(arguments.reason.strip())
        log.info("Puppet runs are disabled on %s", agent.certname)
        return 0
    if arguments.action == "enable":
        agent.set_disabled(None)
        log.info("Puppet runs are enabled on %s", agent.certname)
        return 0
    report = agent.status()
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    return 0


def _run(agent: "Agent", once: bool) -> int:
    if once:
        check = agent.check()
        if check.outcome != "applied":
            log.info("check: %s%s", check.outcome, f" ({check.detail})" if check.detail else "")
        if check.outcome in ("unreachable", "refused"):
            return EXIT_UNREACHABLE
        if check.report is not None and not check.report["success"]:
            return EXIT_FAILED
        if check.smoke is not None and (check.smoke["failed"] or check.smoke.get("error")):
            return EXIT_FAILED
        return 0
    stop = threading.Event()

    def request_stop(number: int, frame: FrameType | None) -> None:
        log.info("stopping on %s (a run under way finishes first)",
                 signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("checking %s every %g s, applying at least every %g s", agent.certname,
             agent.settings.check_interval, agent.settings.apply_interval)
    agent.run_forever(stop)
    return 0

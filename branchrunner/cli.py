"""``opslab branch ...``: sync branches into environments, apply, disable, enable.

Every setting a sync needs can be given on the command line, so it runs
with no configuration file at all::

    opslab branch sync --remote URL --environments DIR --cache DIR [BRANCH...]

Exit status: 0 when everything asked for is in place; 1 when something
failed (a refused branch, a failed build, a failed fetch, a held lock);
2 for bad usage. ``apply`` exits with Puppet's detailed exit code (0 and 2
are success; 1, 4 and 6 failures), and 1 when disabled or locked.
"""

import argparse
import json
import logging
from typing import Any

from opslab.config import Config, ConfigError, add_config_option, load
from opslab.lock import LockHeld
from opslab.log import setup
from opslab.names import InvalidName, validate_branch

from .deployment import Deployment, SyncFailed, named_branches

EXIT_FAILED = 1
EXIT_USAGE = 2
log = logging.getLogger(__name__)


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab branch ARGV``; ``config_path`` is ``opslab --config``."""
    branch = argparse.ArgumentParser(prog="opslab branch",
                                     description="Project branches as Puppet environments.")
    add_config_option(branch, config_path)
    actions = branch.add_subparsers(dest="action", required=True, metavar="ACTION")

    sync = actions.add_parser("sync", help="deploy branches as environments")
    _sync_options(sync)
    sync.add_argument("branches", nargs="*", metavar="BRANCH",
                      help="only these branches (default: all selected, and purge the rest)")
    sync.set_defaults(run=_sync)

    apply = actions.add_parser("apply", help="puppet apply this host's environment")
    _sync_options(apply)
    apply.add_argument("--certname", help="this host's certname (default: apply.certname, "
                       "else the FQDN)")
    apply.add_argument("--branch", help="the branch this host's classification names, to "
                       "sync into its environment whatever other branches map there (default: "
                       "the branch deployed there, else the only one that maps there)")
    apply.add_argument("--no-sync", action="store_true",
                       help="apply what is deployed, without syncing the branch first")
    apply.set_defaults(run=_apply)

    off = actions.add_parser("disable", help="stop applies on this host, saying why")
    off.add_argument("reason", nargs="?", default="", help="why (shown to whoever runs apply)")
    off.set_defaults(run=_disable)
    on = actions.add_parser("enable", help="allow applies on this host again")
    on.set_defaults(run=_enable)

    arguments = branch.parse_args(argv)
    setup(prefix="opslab branch")
    status: int = arguments.run(arguments)
    return status


def _sync_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", help="git URL or path of the Puppet repository")
    parser.add_argument("--environments", metavar="DIR", help="Puppet's environmentpath")
    parser.add_argument("--cache", metavar="DIR", help="where the git mirror lives")
    parser.add_argument("--include", action="append", metavar="PATTERN",
                        help="only branches matching this glob (repeatable)")
    parser.add_argument("--exclude", action="append", metavar="PATTERN",
                        help="never branches matching this glob (repeatable)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")


def _config(arguments: argparse.Namespace) -> Config:
    """The configuration file with the command line's settings on top."""
    config = load(arguments.config)
    overrides: dict[str, Any] = {
        key: value for key in ("remote", "environments", "cache", "include", "exclude")
        if (value := getattr(arguments, key, None)) is not None
    }
    for key in ("include", "exclude"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    if not overrides:
        return config
    return config._replace(branches=config.branches._replace(**overrides))


def _sync(arguments: argparse.Namespace) -> int:
    try:
        config = _config(arguments)
        branches = named_branches(arguments.branches) if arguments.branches else None
        if not config.branches.remote:
            raise ConfigError("no remote: give --remote or set branches.remote")
        deployment = Deployment(config.branches)
        outcomes = deployment.sync(branches)
    except (ConfigError, InvalidName) as error:
        log.error("%s", error)
        return EXIT_USAGE
    except (SyncFailed, LockHeld) as error:
        log.error("%s", error)
        return EXIT_FAILED
    for outcome in outcomes:
        if arguments.json:
            print(json.dumps(outcome.as_record()))
        else:
            commit = (outcome.commit or outcome.previous_commit or "")[:12]
            print(f"{outcome.result:10} {outcome.environment or '-':30} {outcome.branch} "
                  f"{commit}".rstrip())
    return 0 if all(outcome.ok for outcome in outcomes) else EXIT_FAILED


def _apply(arguments: argparse.Namespace) -> int:
    from .apply import Apply, ApplyError  # only apply needs PyYAML and its friends

    try:
        config = _config(arguments)
        branch = validate_branch(arguments.branch) if arguments.branch is not None else None
        result = Apply(config, arguments.certname, branch=branch).run(
            sync=not arguments.no_sync)
    except (ConfigError, InvalidName, ApplyError) as error:
        log.error("%s", error)
        return EXIT_USAGE
    if arguments.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"{result['status']}: {result['meaning']} (exit {result['exit_code']}) "
              f"environment {result['environment']} commit {(result['commit'] or '-')[:12]} "
              f"in {result['duration']} s")
        for failed in result.get("failed_resources", []):
            print(f"  failed {failed['resource']}: {'; '.join(failed['messages'])}")
    if result["error"]:
        log.error("%s", result["error"])
    exit_code: int = result["exit_code"]
    return exit_code


def _disable(arguments: argparse.Namespace) -> int:
    from .apply import disable

    disable(load(arguments.config), arguments.reason)
    return 0


def _enable(arguments: argparse.Namespace) -> int:
    from .apply import enable

    if not enable(load(arguments.config)):
        log.info("applies were not disabled")
    return 0

"""``opslab branch ...``: sync branches into environments, apply, disable, enable.

Every setting a sync needs can be given on the command line, so it runs
with no configuration file at all::

    opslab branch sync --remote URL --environments DIR --cache DIR [BRANCH...]

Exit status: 0 when everything asked for is in place; 1 when something
failed (a refused branch, a failed build, a failed fetch, a held lock);
2 for bad usage. ``apply`` exits with Puppet's detailed exit code (0 and 2
are success; 1, 4 and 6 failures), and 1 when disabled or locked.
"""

import json
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from opslab import lazylog
from opslab.config import Config, ConfigError, add_config_option, load
from opslab.lock import LockHeld
from opslab.names import InvalidName, validate_branch

from .deployment import Deployment, SyncFailed, named_branches

if TYPE_CHECKING:
    import argparse

PROG = "opslab branch"
EXIT_FAILED = 1
EXIT_USAGE = 2
log = lazylog.logger(__name__)

# sync's options (_sync_options) as _plain_sync reads them: those that take a value,
# and those that gather theirs into a list.
_SYNC_VALUES = ("--remote", "--environments", "--cache")
_SYNC_LISTS = ("--include", "--exclude")


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab branch ARGV``; ``config_path`` is ``opslab --config``."""
    arguments = _plain_sync(argv, config_path)
    if arguments is None:
        arguments = _parser(config_path).parse_args(argv, namespace=SimpleNamespace())
    if arguments.action == "sync":
        # A sync that finds nothing to do logs nothing: logging is imported, and set up,
        # only when a first line is logged (opslab.lazylog).
        lazylog.setup(prefix=PROG)
    else:
        # The other actions import modules (apply's) that log through logging itself.
        from opslab.log import setup

        setup(prefix=PROG)
    status: int = arguments.run(arguments)
    return status


def _plain_sync(argv: list[str], config_path: str | None) -> SimpleNamespace | None:
    """The arguments of ``opslab branch [--config FILE] sync ...`` read without argparse,
    when the command line is plain; None when it is not.

    A timer runs this every minute on every host, and when nothing changed,
    importing argparse and building the parsers below (gettext, locale and
    shutil come with them) would be a tenth of its time. Plain means: each
    option spelt in full (``--remote URL`` or ``--remote=URL``), no value
    starting with ``-`` unless after ``=``, and the branches last, none
    starting with ``-``. Anything else (``--help``, an abbreviation, ``--``,
    an option after a branch, every mistake) is left to :func:`_parser`, so
    its messages and exit status stay the only ones; a test checks that both
    read every plain command line alike.
    """
    arguments = SimpleNamespace(config=config_path, action=None, run=_sync, remote=None,
                                environments=None, cache=None, include=None, exclude=None,
                                json=False, branches=[])
    words = iter(argv)
    for word in words:
        if arguments.action is None and word == "sync":
            arguments.action = "sync"
            continue
        if not word.startswith("-"):
            if arguments.action is None:
                return None  # another action, or none
            arguments.branches.append(word)
            continue
        if arguments.branches:
            return None  # an option after a branch
        option, equals, value = word.partition("=")
        known = ("--config",) if arguments.action is None else (
            "--json", *_SYNC_VALUES, *_SYNC_LISTS)
        if option not in known:
            return None
        if option == "--json":
            if equals:
                return None
            arguments.json = True
            continue
        if not equals:
            value = next(words, "-")  # none left: not plain
            if value.startswith("-"):
                return None
        key = option.removeprefix("--")
        if option in _SYNC_LISTS:
            setattr(arguments, key, [*(getattr(arguments, key) or []), value])
        else:
            setattr(arguments, key, value)
    return arguments if arguments.action is not None else None


def _parser(config_path: str | None) -> "argparse.ArgumentParser":
    """``opslab branch``'s parser: every action, its options and its help."""
    import argparse

    branch = argparse.ArgumentParser(prog=PROG,
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
    return branch


def _sync_options(parser: "argparse.ArgumentParser") -> None:
    # sync's are read without argparse too (_SYNC_VALUES, _SYNC_LISTS, --json): one added
    # here is read by argparse alone until it is added there.
    parser.add_argument("--remote", help="git URL or path of the Puppet repository")
    parser.add_argument("--environments", metavar="DIR", help="Puppet's environmentpath")
    parser.add_argument("--cache", metavar="DIR", help="where the git mirror lives")
    parser.add_argument("--include", action="append", metavar="PATTERN",
                        help="only branches matching this glob (repeatable)")
    parser.add_argument("--exclude", action="append", metavar="PATTERN",
                        help="never branches matching this glob (repeatable)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")


def _config(arguments: SimpleNamespace) -> Config:
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


def _sync(arguments: SimpleNamespace) -> int:
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


def _apply(arguments: SimpleNamespace) -> int:
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


def _disable(arguments: SimpleNamespace) -> int:
    from .apply import disable

    disable(load(arguments.config), arguments.reason)
    return 0


def _enable(arguments: SimpleNamespace) -> int:
    from .apply import enable

    if not enable(load(arguments.config)):
        log.info("applies were not disabled")
    return 0

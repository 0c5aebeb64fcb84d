"""``opslab smoke ...``: run a host's checks, or validate a control repository's.

    opslab smoke run                      this host's checks, from inside
    opslab smoke run --target ADDRESS     the checks that must hold from outside, at ADDRESS
    opslab smoke run --json | --junit FILE | --verbose
    opslab smoke validate [TREE]          every modules/*/checks.yaml of a control repository

By default ``run`` checks what this host applied last (its tree, Puppet's
catalog, the ENC's classification). ``--tree``, ``--classification`` (a
YAML or JSON file as the ENC prints it) and ``--catalog`` say it instead,
for an outside observer or a test.

Exit status: 0 every check that ran passed; 1 a check failed; 2 bad check
files, bad usage, or what the host applied cannot be known.
"""

import argparse
import json
import logging
import os
import sys

import yaml

from opslab.config import ConfigError, add_config_option, load
from opslab.log import setup
from opslab.names import InvalidName, this_certname, validate_certname

from . import host, results
from .runner import DEFAULT_CONCURRENCY
from .spec import CheckFileError, all_checks
from .suite import checks_of, run_checks

EXIT_FAILED = 1
EXIT_USAGE = 2
log = logging.getLogger(__name__)


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab smoke ARGV``; ``config_path`` is ``opslab --config``."""
    parser = argparse.ArgumentParser(prog="opslab smoke",
                                     description="Smoke tests: does what Puppet set up work?")
    add_config_option(parser, config_path)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="run this host's checks")
    run.add_argument("--target", metavar="ADDRESS",
                     help="look from outside at ADDRESS: run the checks marked outside")
    run.add_argument("--certname", help="the host's certname (default: apply.certname, "
                     "else the FQDN)")
    run.add_argument("--tree", help="the control repository the checks come from "
                     "(default: the tree this host applied last)")
    run.add_argument("--classification", metavar="FILE",
                     help="the host's classification, as the ENC prints it (default: the ENC)")
    run.add_argument("--catalog", metavar="FILE", help="the catalog Puppet applied (default: "
                     "the one Puppet kept here, if any)")
    run.add_argument("--class", dest="classes", action="append", metavar="CLASS",
                     help="only this class's checks (repeatable)")
    run.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                     help=f"checks run at once (default {DEFAULT_CONCURRENCY})")
    output = run.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print every result as JSON")
    output.add_argument("--verbose", "-v", action="store_true",
                        help="a line for every check, passed ones too")
    run.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    validate = actions.add_parser("validate", help="check a control repository's check files")
    validate.add_argument("tree", nargs="?", default=".",
                          help="the control repository (default: the current directory)")
    arguments = parser.parse_args(argv)
    setup(prefix="opslab smoke")
    if arguments.action == "validate":
        return _validate(arguments.tree)
    if arguments.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    try:
        return _run(arguments)
    except (ConfigError, InvalidName, host.HostError) as error:
        return _refused([str(error)])
    except CheckFileError as error:
        return _refused(error.problems)


def _refused(problems: list[str]) -> int:
    """Log ``problems``, a line each, shown rather than obeyed by a terminal (a check file
    is a project's; YAML's messages quote its lines, an ENC's its output); EXIT_USAGE."""
    for problem in problems:
        for line in problem.splitlines():
            log.error("%s", results.shown(line))
    return EXIT_USAGE


def _validate(tree: str) -> int:
    if not os.path.isdir(os.path.join(tree, "modules")):
        return _refused([f"{tree} is not a control repository (it has no modules folder)"])
    try:
        checks = all_checks(tree)
    except CheckFileError as error:
        return _refused(error.problems)
    classes = len({check.cls for check in checks})
    print(f"{len(checks)} checks of {classes} classes are valid")
    return 0


def _run(arguments: argparse.Namespace) -> int:
    applied = _applied(arguments)
    checks = checks_of(applied, arguments.classes)
    outcome = run_checks(applied, checks, arguments.target, arguments.concurrency)
    if arguments.junit:
        _write(arguments.junit, results.junit(outcome.results, outcome.seconds))
    if arguments.json:
        print(json.dumps(results.as_json(outcome.results, outcome.seconds), indent=2))
    else:
        sys.stdout.write(results.text(outcome.results, outcome.seconds, arguments.verbose))
    return EXIT_FAILED if results.counts(outcome.results)["failed"] else 0


def _applied(arguments: argparse.Namespace) -> host.Applied:
    """What to check: as the options say, else what this host applied last."""
    given = arguments.tree or arguments.classification
    config = load(arguments.config) if not given or not arguments.certname else None
    certname = validate_certname(arguments.certname) if arguments.certname else \
        this_certname(config.apply.certname if config else None)
    if not given:
        assert config is not None
        applied = host.this_host(config, certname)
    else:
        if not arguments.tree or not arguments.classification:
            raise host.HostError("--tree and --classification go together")
        applied = host.from_classification(_document(arguments.classification))
        applied.tree, applied.certname = arguments.tree, certname
    if arguments.catalog:
        if not os.path.exists(arguments.catalog):
            raise host.HostError(f"--catalog {arguments.catalog}: no such file")
        applied = host.with_catalog(applied, arguments.catalog)
    return applied


def _document(path: str) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as stream:
            document = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as error:
        raise host.HostError(f"--classification {path}: {error}") from None
    if not isinstance(document, dict):
        raise host.HostError(f"--classification {path}: not a mapping")
    return document


def _write(path: str, data: bytes) -> None:
    from opslab.files import write_atomic

    write_atomic(path, data, mode=0o644)

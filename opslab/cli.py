"""``opslab``: one command, a subcommand per component.

    opslab [--config FILE] branch sync|apply|disable|enable    the branch runner
    opslab [--config FILE] api migrate|serve                   the coordination API
    opslab [--config FILE] agent run|disable|enable|status|bootstrap   the instance agent
    opslab [--config FILE] instances reap                      the instances' reaper
    opslab [--config FILE] smoke run|validate                  the smoke tests
    opslab [--config FILE] ci dispatch                         the CI harness
    opslab [--config FILE] logbot                              the IRC log bot
    opslab projects|hosts|log|changes|runs|keys ...            the client, for members

Only the chosen component is imported, so each subcommand starts as fast as
its own dependencies allow; and a plain command line, ``[--config FILE]
COMPONENT ...``, is read without argparse (see :func:`_plain`).
"""

import sys
from typing import TYPE_CHECKING

from opslab import __version__
from opslab.config import add_config_option

if TYPE_CHECKING:
    import argparse

# component subcommand -> (module with main(argv, config_path), one-line help)
COMPONENTS = {
    "branch": ("opslab.branchrunner.cli", "project branches as Puppet environments, and apply"),
    "api": ("opslab.api.cli", "the coordination API: migrate its database, serve it"),
    "agent": ("opslab.agent.cli", "the instance agent: keep this instance on its branch"),
    "instances": ("opslab.api.reaper", "instances launched for hosts: the reaper"),
    "smoke": ("opslab.smoketests.cli", "smoke tests: check that what Puppet set up works"),
    "ci": ("opslab.ci.cli", "the CI harness: Gerrit's events to Jenkins builds"),
    "logbot": ("opslab.logbot.cli", "the IRC log bot: '!log PROJECT message' to the SAL"),
    # The command-line client for members (client/, opslab.client): the base install.
    "projects": ("opslab.client.projects", "list, show, create projects; members, branch"),
    "hosts": ("opslab.client.hosts", "list, show, create, classify and delete hosts"),
    "log": ("opslab.client.adminlog", "the Server Admin Log: log what you did, read it"),
    "changes": ("opslab.client.changes", "the audit log: every change, with its diff"),
    "runs": ("opslab.client.runs", "the CI's runs of Gerrit changes"),
    "keys": ("opslab.client.keys", "your SSH public keys: add, list, remove"),
}
# Components whose libraries are an extra, not in the base install an instance has.
EXTRAS = {"api": "api", "instances": "api", "ci": "ci", "logbot": "logbot"}


def main(argv: list[str] | None = None) -> int:
    """Run ``opslab``; returns the exit status."""
    words = sys.argv[1:] if argv is None else argv
    plain = _plain(words)
    if plain is not None:
        config, component, arguments = plain
    else:
        parsed = _parser().parse_args(words)
        config, component, arguments = parsed.config, parsed.component, parsed.arguments
    try:
        # importlib.import_module without importing importlib (and warnings).
        module = __import__(COMPONENTS[component][0], fromlist=["main"])
    except ModuleNotFoundError as error:
        extra = EXTRAS.get(component)
        # A library missing, not a module of opslab's own (that is a broken install).
        if extra is None or (error.name or "opslab").partition(".")[0] == "opslab":
            raise
        sys.stderr.write(f"opslab {component}: {error}; its libraries are not part "
                         f"of the base install: install opslab[{extra}]\n")
        return 1
    status: int = module.main(arguments, config)
    return status


def _plain(argv: list[str]) -> tuple[str | None, str, list[str]] | None:
    """``(--config's value, component, the component's arguments)`` when ``argv`` is
    ``[--config FILE] COMPONENT ...`` (or ``--config=FILE``; a FILE after a space does
    not start with ``-``), else None: then :func:`_parser` reads it, and gives its
    help, its version and its messages for mistakes.

    Importing argparse and building the parsers (this one and the
    component's) is about a tenth of a no-change ``opslab branch sync``, the
    command run most often (a timer, every minute, on every host); a test
    checks that both read every plain command line alike.
    """
    if "--" in argv:
        return None  # argparse drops one "--" or another, depending on where it is
    config = None
    rest = list(argv)
    while rest and rest[0] not in COMPONENTS:
        option, equals, value = rest[0].partition("=")
        if option != "--config":
            return None
        if not equals:
            if len(rest) < 2 or rest[1].startswith("-"):
                return None
            value = rest.pop(1)
        config = value
        rest.pop(0)
    if not rest:
        return None
    return config, rest[0], rest[1:]


def _parser() -> "argparse.ArgumentParser":
    """``opslab``'s parser; the component's arguments are left to the component."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="opslab",
        description="Self-service Puppet infrastructure.",
        epilog="components: " + "; ".join(f"{name}: {text}"
                                          for name, (_, text) in COMPONENTS.items()),
    )
    add_config_option(parser)
    parser.add_argument("--version", action="version", version=f"opslab {__version__}")
    parser.add_argument("component", choices=sorted(COMPONENTS))
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the component's own")
    return parser


if __name__ == "__main__":
    sys.exit(main())

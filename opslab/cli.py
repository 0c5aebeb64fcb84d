"""``opslab``: one command, a subcommand per component.

    opslab [--config FILE] branch sync|apply|disable|enable    the branch runner
    opslab [--config FILE] api migrate|serve                   the coordination API
    opslab [--config FILE] agent run|disable|enable|status|bootstrap   the instance agent
    opslab [--config FILE] instances reap                      the instances' reaper
    opslab [--config FILE] smoke run|validate                  the smoke tests

Only the chosen component is imported, so each subcommand starts as fast as
its own dependencies allow.
"""

import argparse
import importlib
import sys

from opslab import __version__
from opslab.config import add_config_option

# component subcommand -> (module with main(argv, config_path), one-line help)
COMPONENTS = {
    "branch": ("opslab.branchrunner.cli", "project branches as Puppet environments, and apply"),
    "api": ("opslab.api.cli", "the coordination API: migrate its database, serve it"),
    "agent": ("opslab.agent.cli", "the instance agent: keep this instance on its branch"),
    "instances": ("opslab.api.reaper", "instances launched for hosts: the reaper"),
    "smoke": ("opslab.smoketests.cli", "smoke tests: check that what Puppet set up works"),
}
# Components whose libraries are an extra, not in the base install an instance has.
EXTRAS = {"api": "api", "instances": "api"}


def main(argv: list[str] | None = None) -> int:
    """Run ``opslab``; returns the exit status."""
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
    arguments = parser.parse_args(argv)
    try:
        module = importlib.import_module(COMPONENTS[arguments.component][0])
    except ModuleNotFoundError as error:
        extra = EXTRAS.get(arguments.component)
        # A library missing, not a module of opslab's own (that is a broken install).
        if extra is None or (error.name or "opslab").partition(".")[0] == "opslab":
            raise
        sys.stderr.write(f"opslab {arguments.component}: {error}; its libraries are not part "
                         f"of the base install: install opslab[{extra}]\n")
        return 1
    status: int = module.main(arguments.arguments, arguments.config)
    return status


if __name__ == "__main__":
    sys.exit(main())

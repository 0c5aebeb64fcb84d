"""``opslab api migrate|serve``: the API's database schema, and the API behind gunicorn.

``serve`` runs the production WSGI server (gunicorn) with ``api.workers``
workers on ``api.listen``; the Flask development server is for debugging
only and is not offered here.
"""

import argparse
import logging
from typing import Any

from opslab.config import Config, ConfigError, add_config_option, load
from opslab.log import setup

from .store import migrate

log = logging.getLogger("opslab.api")


def main(argv: list[str], config_path: str | None = None) -> int:
    """Run ``opslab api ARGV``."""
    parser = argparse.ArgumentParser(prog="opslab api", description="The coordination API.")
    add_config_option(parser, config_path)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("migrate", help="create or upgrade the database schema")
    serve = actions.add_parser("serve", help="serve the API with gunicorn")
    serve.add_argument("--listen", help="address:port (default: api.listen)")
    serve.add_argument("--workers", type=int, help="worker processes (default: api.workers)")
    arguments = parser.parse_args(argv)
    config = configured(arguments.config)
    if config is None:
        return 2
    migrate(config.api.database)
    if arguments.action == "serve":
        _serve(config, arguments.listen or config.api.listen,
               arguments.workers or config.api.workers)
    return 0


def configured(path: str | None) -> Config | None:
    """Logging set up and the configuration loaded for a command of the API's server;
    None (the error logged) if the configuration is bad."""
    # The audit log's alarms and the workers' errors go to journald with their
    # priorities (gunicorn's own log and access log stay gunicorn's).
    setup()
    try:
        return load(path)
    except ConfigError as error:
        log.error("%s", error)
        return None


def _serve(config: Config, listen: str, workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    from .app import create_app

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            # Threads let a worker answer one request while another waits on
            # slapd or the database, so a burst of agents' checks does not queue
            # behind one another's waits.
            threads = config.api.threads
            # A request that launches an instance waits for it (and, if the launch
            # fails, for its deletion): no worker may be taken for hung meanwhile.
            instances = config.instances
            timeout = int(max(60, instances.launch_timeout + instances.delete_timeout + 30))
            for key, value in {"bind": listen, "workers": workers, "timeout": timeout,
                               "graceful_timeout": 10, "accesslog": "-", "threads": threads,
                               "worker_class": "gthread" if threads > 1 else "sync"}.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(config)

    Server().run()

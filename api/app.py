"""The application factory: ``create_app(config)`` builds one opslab API and its pages.

Every answer under ``/v1`` is JSON (or YAML or Atom where asked for); every
refusal is a 4xx with ``{"error": "..."}`` that says what was wrong, and
changes nothing. The pages (:mod:`.pages`) answer HTML, with the same words.
"""

from typing import Any

from flask import Flask, g, jsonify, request
from werkzeug.middleware.proxy_fix import ProxyFix

from opslab.config import Config
from opslab.names import has_control_characters

from . import pages
from .auth import authenticate
from .contract import Contract
from .directory import DirectoryAccess
from .errors import Invalid
from .failures import HANDLED, answer
from .heads import BranchHeads
from .store import engine_for, sessions


def create_app(config: Config) -> Flask:
    """A Flask app serving the opslab API for ``config``."""
    app = Flask("opslab.api")
    app.config["OPSLAB"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.api.max_body
    if config.api.trusted_proxies:
        # The pages need the scheme the browser used: CSRF's referrer check is made on
        # HTTPS only, and the proxy terminates TLS.
        hops = config.api.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = engine_for(config.api.database)
    app.extensions["opslab.engine"] = engine
    app.extensions["opslab.sessions"] = sessions(engine)
    app.extensions["opslab.directory"] = DirectoryAccess(config)
    app.extensions["opslab.contract"] = Contract()
    app.extensions["opslab.heads"] = BranchHeads(config.branches.remote, config.api.heads_ttl,
                                                 config.branches.git_timeout)

    @app.before_request
    def identify_caller() -> None:
        for name, value in request.args.items(multi=True):
            if has_control_characters(name + value):
                raise Invalid(f"query parameter {name[:40]!r} contains control characters")
        app.extensions["opslab.directory"].begin_request()
        g.actor = authenticate(request)

    _register_errors(app)
    from .routes import (
        agents,
        changes,
        ci,
        document,
        documentation,
        hosts,
        log,
        monitoring,
        nodes,
        people,
        projects,
        reports,
        smoke,
    )

    for blueprint in (hosts.blueprint, nodes.blueprint, reports.blueprint, changes.blueprint,
                      log.blueprint, projects.blueprint, agents.blueprint, document.blueprint,
                      people.blueprint, smoke.blueprint, ci.blueprint, documentation.blueprint,
                      monitoring.blueprint):
        app.register_blueprint(blueprint, url_prefix="/v1")
    pages.register(app, config)
    return app


def _register_errors(app: Flask) -> None:
    def refusal(error: Exception) -> Any:
        status, message = answer(error)
        response = jsonify(error=message)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="opslab"'
        return response, status

    for failure in HANDLED:
        app.register_error_handler(failure, refusal)

"""The application factory: ``create_app(config)`` builds one opslab API.

Every answer is JSON (or YAML or Atom where asked for); every refusal is a
4xx with ``{"error": "..."}`` that says what was wrong, and changes nothing.
"""

from typing import Any

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from opslab.config import Config
from opslab.directory import DirectoryConflict, DirectoryError, DirectoryUnavailable
from opslab.instances.provider import ProviderError, ProviderUnavailable
from opslab.names import has_control_characters

from .audit import AuditFailed
from .auth import authenticate
from .contract import Contract
from .directory import DirectoryAccess
from .errors import Invalid, NotConfigured, Refused
from .heads import BranchHeads
from .store import engine_for, sessions


def create_app(config: Config) -> Flask:
    """A Flask app serving the opslab API for ``config``."""
    app = Flask("opslab.api")
    app.config["OPSLAB"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.api.max_body
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
        hosts,
        log,
        nodes,
        people,
        projects,
        reports,
        smoke,
    )

    for blueprint in (hosts.blueprint, nodes.blueprint, reports.blueprint, changes.blueprint,
                      log.blueprint, projects.blueprint, agents.blueprint, document.blueprint,
                      people.blueprint, smoke.blueprint, ci.blueprint):
        app.register_blueprint(blueprint, url_prefix="/v1")
    return app


def _error(status: int, message: str) -> tuple[Any, int]:
    return jsonify(error=message), status


def _register_errors(app: Flask) -> None:
    @app.errorhandler(Refused)
    def refused(error: Refused) -> Any:
        response, status = _error(error.status, error.reason)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="opslab"'
        return response, status

    @app.errorhandler(Invalid)
    def invalid(error: Invalid) -> Any:
        return _error(422, str(error))

    @app.errorhandler(NotConfigured)
    def not_configured(error: NotConfigured) -> Any:
        return _error(503, str(error))

    @app.errorhandler(DirectoryConflict)
    def conflict(error: DirectoryConflict) -> Any:
        return _error(409, f"the directory refused the write: {error}")

    @app.errorhandler(DirectoryUnavailable)
    def unavailable(error: DirectoryUnavailable) -> Any:
        return _error(503, f"the directory is unavailable: {error}")

    @app.errorhandler(DirectoryError)
    def directory_error(error: DirectoryError) -> Any:
        return _error(502, f"the directory refused: {error}")

    @app.errorhandler(ProviderUnavailable)
    def cloud_unavailable(error: ProviderUnavailable) -> Any:
        return _error(503, f"the cloud is unavailable: {error}")

    @app.errorhandler(ProviderError)
    def cloud_refused(error: ProviderError) -> Any:
        return _error(502, f"the cloud refused: {error}")

    @app.errorhandler(AuditFailed)
    def audit_failed(error: AuditFailed) -> Any:
        return _error(503, str(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        messages = {413: f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"}
        return _error(error.code or 500, messages.get(error.code or 500, error.description or ""))

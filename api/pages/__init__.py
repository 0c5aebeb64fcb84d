"""The pages: opslab in a browser, rendered on the server from the API's own rules.

Every page reads through the same modules the JSON API's handlers call, and
every form a page offers writes through them too (one code path: the same
rules, validation and audit). The handlers here parse a form, call, and
render; they hold no rule of their own.

A person logs in with a form checked against the directory
(:mod:`.session`); the login lives in a signed session cookie, and only
these pages read it: the JSON API under ``/v1`` still wants credentials on
every request, so a page open in a browser can never be made to call it.
Every form carries a CSRF token (Flask-WTF), checked before any handler runs.
"""

from datetime import timedelta

from flask import Flask

from opslab.config import Config, ConfigError
from opslab.files import read_secret

# Imported for their effect: each adds its routes, filters or handlers to the blueprint.
from . import activity, errors, format, hosts, projects, query, session, views  # noqa: F401
from .blueprint import blueprint, csrf

# How long a form's CSRF token lasts: a person may take a while to write a
# project's documentation, but not a day.
CSRF_TIME_LIMIT = 3 * 3600
MIN_SECRET_BYTES = 32


def register(app: Flask, config: Config) -> None:
    """Serve the pages from ``app``: a session signed with ``api.session_secret_file``
    (without it, the public pages show and nobody can log in)."""
    secret = _secret(config.api.session_secret_file)
    if secret is not None:
        app.secret_key = secret
    app.config.update(
        SESSION_COOKIE_NAME="opslab_session",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        # Lax: a link from IRC or a feed reader opens the page logged in;
        # every cross-site POST is refused anyway (the CSRF token and
        # SameSite both stop it).
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=config.api.session_lifetime),
        # Checked in the pages' own before_request, never on the JSON API.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=CSRF_TIME_LIMIT,
        WTF_CSRF_SSL_STRICT=True,
    )
    csrf.init_app(app)
    app.register_blueprint(blueprint)


def _secret(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        secret = read_secret(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read api.session_secret_file {path}: "
                          f"{getattr(error, 'strerror', None) or 'it is not text'}") from None
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"api.session_secret_file {path} holds {len(secret.encode())} bytes; "
                          f"it needs at least {MIN_SECRET_BYTES} random ones")
    return secret

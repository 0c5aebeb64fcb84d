"""The front page, the site's sections, and the headers every page is sent with."""

from typing import Any

from flask import g, redirect, url_for
from werkzeug.wrappers import Response

from .blueprint import blueprint

# The navigation bar: (endpoint, label), in the order shown.
SECTIONS = (("pages.projects", "Projects"), ("pages.changes", "Recent changes"),
            ("pages.log", "Server Admin Log"), ("pages.ci_runs", "CI runs"),
            ("pages.query", "Hosts"))

# No script runs on a page, none is needed; members' images may come from any https site.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' https:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@blueprint.app_context_processor
def _sections() -> dict[str, Any]:
    return {"site_sections": SECTIONS}


@blueprint.after_request
def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    # A page may show what only a logged-in person may see: no shared cache keeps it.
    response.headers.setdefault("Cache-Control", "private, no-store")
    return response


@blueprint.get("/")
def index() -> Any:
    """Members land on the projects; everyone else on the public Server Admin Log."""
    return redirect(url_for("pages.projects" if g.actor is not None else "pages.log"))

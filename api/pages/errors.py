"""Failures on the pages: the API's words (:mod:`opslab.api.failures`) in HTML.

A page that needs a login sends the person to the login form and back; a
form refused, or whose CSRF token is missing or stale, shows what was wrong
and changed nothing.
"""

from typing import Any

from flask import redirect as redirect_to
from flask import render_template, request, url_for
from flask_wtf.csrf import CSRFError

from ..failures import HANDLED, answer
from .blueprint import blueprint


def _page(error: Exception) -> Any:
    status, message = answer(error)
    if status == 401 and request.method == "GET":
        return redirect_to(url_for("pages.login", next=request.full_path.rstrip("?")))
    return render_template("error.html", status=status, message=message), status


def _csrf(error: CSRFError) -> Any:
    message = f"the form could not be taken: {error.description} Reload the page and try again."
    return render_template("error.html", status=400, message=message), 400


for failure in HANDLED:
    blueprint.register_error_handler(failure, _page)
blueprint.register_error_handler(CSRFError, _csrf)

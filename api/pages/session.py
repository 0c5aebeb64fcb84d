"""Logging in and out, and who a page is shown to.

The password is checked by :func:`opslab.api.auth.log_in`, the rule HTTP
Basic uses; the session then holds only the uid and when the login was
made (``since``: the session ends ``api.session_lifetime`` after it, however often
the cookie is sent again). Each page asks :func:`opslab.api.auth.still_allowed` again, so a
locked account's session ends with the lock, not when its cookie expires.
"""

import time
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, flash, g, redirect, render_template, request, session, url_for

from ..auth import log_in, still_allowed
from ..errors import Refused
from .blueprint import blueprint, csrf

# A login made by another worker or server whose clock is ahead by this much still holds.
CLOCK_SLACK = 300
MAX_PASSWORD = 1024  # bytes: a longer one is refused before the directory sees it


@blueprint.before_request
def _session_actor() -> Any:
    """Check the CSRF token of every unsafe request, then take the actor from the session
    (a request with credentials of its own keeps them)."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    uid = session.get("uid")
    if g.actor is None and isinstance(uid, str):
        try:
            _within_lifetime(session.get("since"))
            g.actor = still_allowed(uid)
        except Refused as refused:
            session.clear()
            flash(refused.reason, "error")
            return redirect(url_for("pages.login"))
    return None


def _within_lifetime(since: object) -> None:
    """Refused once ``api.session_lifetime`` has passed since the login (``since``, the
    session's own record of it). Flask signs the cookie again whenever it is sent back,
    so its signature's age alone would let a cookie used every few hours live for ever."""
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    if not isinstance(since, int | float) or isinstance(since, bool) \
            or not -CLOCK_SLACK <= time.time() - since <= lifetime:
        raise Refused(401, "your session has ended: log in again")


def logins_enabled() -> bool:
    """True when the pages have a session secret (api.session_secret_file)."""
    return bool(current_app.secret_key)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site."""
    if not target:
        return url_for("pages.index")
    if not target.isprintable():
        # A line break would be a header of the answer's; a tab, which urlsplit drops,
        # could hide a "//".
        return url_for("pages.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return url_for("pages.index")
    return target


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if not logins_enabled():
        return render_template("login.html", enabled=False), 503
    if request.method == "GET":
        return render_template("login.html", enabled=True, next=request.args.get("next", ""))
    uid = request.form.get("uid", "").strip()
    password = request.form.get("password", "")
    next_page = safe_next(request.form.get("next"))
    try:
        if len(password.encode()) > MAX_PASSWORD:
            raise Refused(401, "invalid user name or password")
        actor = log_in(uid, password, request.remote_addr or "")
    except Refused as refused:
        return render_template("login.html", enabled=True, next=next_page, uid=uid,
                               error=refused.reason), refused.status
    if actor.kind != "person":
        return render_template("login.html", enabled=True, next=next_page, uid=uid,
                               error="this account may not log in to the pages"), 403
    # A new session: nothing from before the login (a planted cookie) survives it.
    session.clear()
    session.permanent = True
    session["uid"] = actor.name
    session["since"] = int(time.time())
    current_app.logger.info("pages: %s logged in", actor.name)
    return redirect(next_page)


@blueprint.post("/logout")
def logout() -> Any:
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("pages.index"))

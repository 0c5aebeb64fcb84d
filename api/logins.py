"""Wrong passwords: how many an address may try for one account, the rule the pages' login
form and HTTP Basic share.

Each wrong password is a row of ``login_failures`` (account, address, when),
in the store every worker shares, so spreading tries over the API's workers
or servers gains nothing. Past ``api.login_failure_limit`` rows for an
account and an address within ``api.login_failure_window`` seconds, that
address may not try that account again until the oldest of them leaves the
window: a 429 that says when, before the directory is asked (so it cannot
tell a right password from a wrong one). Counted per address, not per
account alone, so that nobody can lock a person out by guessing at their
name; the directory's own password policy (ppolicy) stays the place for an
account-wide lock-out. A right password clears the address's count (a write
only when there is one: every request with HTTP Basic comes here).
"""

from datetime import timedelta

from sqlalchemy import delete, func, select

from . import context
from .errors import Refused
from .store import LoginFailure, now

MAX_ADDRESS = 64  # characters kept of an address (an IPv6 address is at most 45)


def check(uid: str, address: str) -> int:
    """How many wrong passwords ``address`` tried for ``uid`` within the window; Refused
    (429) when that is the limit."""
    settings = context.config().api
    since = now() - timedelta(seconds=settings.login_failure_window)
    with context.session() as session:
        count, oldest = session.execute(
            select(func.count(LoginFailure.id), func.min(LoginFailure.at))
            .where(LoginFailure.uid == uid, LoginFailure.address == address[:MAX_ADDRESS],
                   LoginFailure.at > since)).one()
    if count >= settings.login_failure_limit:
        wait = max(1, int((oldest - since).total_seconds()) + 1)
        raise Refused(429, f"too many wrong passwords for {uid} from this address: try "
                           f"again in {wait} s")
    return int(count)


def failed(uid: str, address: str) -> None:
    """Count a wrong password for ``uid`` from ``address``; forget every account's past the
    window (not only this one's: names tried once would stay forever, and a guesser
    spraying made-up names would grow the table without end)."""
    settings = context.config().api
    with context.session() as session:
        session.execute(delete(LoginFailure).where(
            LoginFailure.at <= now() - timedelta(seconds=settings.login_failure_window)))
        session.add(LoginFailure(uid=uid, address=address[:MAX_ADDRESS]))
        session.commit()


def succeeded(uid: str, address: str) -> None:
    """Forget the wrong passwords ``address`` tried for ``uid`` (a right one came)."""
    with context.session() as session:
        session.execute(delete(LoginFailure).where(LoginFailure.uid == uid,
                                                   LoginFailure.address == address[:MAX_ADDRESS]))
        session.commit()

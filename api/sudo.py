"""People as the API hands them to instances: who of a project's members gets sudo.

A member DN is only a name in a list: it may point at no person at all, or
at a person who is locked or whose name is a system account. sudo goes only
to members who are people (an entry at ``uid=NAME`` below the people base)
and whom :mod:`opslab.accounts` does not refuse, the same rule
``opslab-ssh-keys`` applies at login.

Every agent asks for its target every minute, so what each person's entry
says (exists, locked or not, uidNumber) is kept by each API worker for
:data:`ACCOUNT_TTL` seconds: membership itself is read afresh from the
project on every request, and a person locked out loses sudo within that
time plus the agents' check interval (logins are refused at once: that is
``opslab-ssh-keys``' own question to the directory).
"""

import time

import ldap
import ldap.dn

from opslab import accounts
from opslab.directory import Entry, Search, fill_filter
from opslab.names import InvalidName, validate_user_name

from . import context

ACCOUNT_TTL = 10.0


def sudo_users(member_dns: list[str]) -> dict[str, int | None]:
    """The user names among ``member_dns`` who may have an account and sudo, sorted, each
    with its directory uidNumber (the instance grants only to the local account of that
    uid)."""
    names = [name for name in context.directory().uids(member_dns) if _login_name(name)]
    config = context.config()
    entries = _people(names)
    allowed: dict[str, int | None] = {}
    for name in names:
        entry = entries.get(name)
        if entry is not None and accounts.refusal(name, entry, config.accounts) is None:
            allowed[name] = accounts.uid_number(entry)
    return allowed


def _people(names: list[str]) -> dict[str, Entry | None]:
    """The person entry of each of ``names`` (None: there is none), from the directory
    or, when read within ACCOUNT_TTL, from what was read."""
    now = time.monotonic()
    cache = context.directory().accounts
    with cache.lock:
        known = {name: cache.known[name] for name in names if name in cache.known}
    found = {name: entry for name, (until, entry) in known.items() if until > now}
    missing = [name for name in names if name not in found]
    if missing:
        directory = context.directory()
        # One search for all of them; each entry found is then matched by its DN,
        # never by a uid value (an entry may carry several).
        wanted = "(|" + "".join(fill_filter("(uid=%s)", name) for name in missing) + ")"
        [hits] = directory.writer().search([Search(context.config().people_base_dn, wanted,
                                                   list(accounts.ATTRIBUTES))])
        by_dn = {_normal(entry.dn): entry for entry in hits}
        fresh = {name: by_dn.get(_normal(directory.person_dn(name))) for name in missing}
        with cache.lock:
            cache.known.update({name: (now + ACCOUNT_TTL, entry)
                                for name, entry in fresh.items()})
            for name in [name for name, (until, _) in cache.known.items() if until <= now]:
                del cache.known[name]
        found.update(fresh)
    return found


def _login_name(name: str) -> bool:
    try:
        validate_user_name(name)
    except InvalidName:
        return False
    return True


def _normal(dn: str) -> str:
    try:
        return str(ldap.dn.dn2str(ldap.dn.str2dn(dn.lower())))
    except ldap.DECODING_ERROR:
        return dn.lower()

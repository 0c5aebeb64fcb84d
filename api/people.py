"""People as the API hands them to instances: who of a project's members gets sudo.

A member DN is only a name in a list: it may point at no person at all, or
at a person who is locked or whose name is a system account. sudo goes only
to members who are people (an entry at ``uid=NAME`` below the people base)
and whom :mod:`opslab.accounts` does not refuse, the same rule
``opslab-ssh-keys`` applies at login.
"""

import ldap
import ldap.dn

from opslab import accounts
from opslab.directory import Search, fill_filter
from opslab.names import InvalidName, validate_user_name

from . import context


def sudo_users(member_dns: list[str]) -> dict[str, int | None]:
    """The user names among ``member_dns`` who may have an account and sudo, sorted, each
    with its directory uidNumber (the instance grants only to the local account of that
    uid)."""
    names = [name for name in context.directory().uids(member_dns) if _login_name(name)]
    if not names:
        return {}
    config = context.config()
    # One search for all of them; each entry found is then matched by its DN,
    # never by a uid value (an entry may carry several).
    wanted = "(|" + "".join(fill_filter("(uid=%s)", name) for name in names) + ")"
    [found] = context.directory().writer().search([Search(config.people_base_dn, wanted,
                                              list(accounts.ATTRIBUTES))])
    people = {_normal(entry.dn): entry for entry in found}
    allowed: dict[str, int | None] = {}
    for name in names:
        entry = people.get(_normal(context.directory().person_dn(name)))
        if entry is not None and accounts.refusal(name, entry, config.accounts) is None:
            allowed[name] = accounts.uid_number(entry)
    return allowed


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

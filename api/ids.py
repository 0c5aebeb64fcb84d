"""Numbers for accounts: every person's uidNumber and every project's gidNumber.

One pool for both (``cn=opslab-ids`` below the suffix, class
``opslabIdPool``), so no person's uid is ever a project's gid either. Its
``uidNumber`` is the next number to give. A number is taken by one LDAP
modify that deletes that value and adds the next: the server applies both
or neither, so of two requests taking the same number at once, one finds
the value gone (a conflict) and takes the next. A number that an entry made
by hand already uses is skipped. Nothing here needs an overlay on slapd.
"""

from contextlib import suppress

import ldap
import ldap.dn

from opslab.directory import DirectoryConflict, Search

from . import context
from .errors import Refused

POOL = "cn=opslab-ids"
ATTEMPTS = 50


def take() -> int:
    """A uid/gid number no entry uses, taken from the pool; Refused (507) when it is spent."""
    config = context.config()
    settings = config.accounts
    directory = context.directory()
    dn = f"{POOL},{config.ldap.base}"
    for _ in range(ATTEMPTS):
        entry = directory.read(dn, ["uidNumber"])
        if entry is None:
            with suppress(DirectoryConflict):  # another request made it first
                directory.add(dn, {"objectClass": ["opslabIdPool"], "cn": ["opslab-ids"],
                                   "uidNumber": [str(settings.first_id)]})
            continue
        number = int(entry["uidNumber"][0])
        if number > settings.max_uid:
            raise Refused(507, f"every uid and gid number up to accounts.max_uid "
                               f"({settings.max_uid}) is given")
        try:
            directory.modify(dn, [(ldap.MOD_DELETE, "uidNumber", [str(number)]),
                                  (ldap.MOD_ADD, "uidNumber", [str(number + 1)])])
        except DirectoryConflict:
            continue  # another request took it
        if not _used(number):
            return number
    raise Refused(503, f"no free uid or gid number found in {ATTEMPTS} tries; try again")


def _used(number: int) -> bool:
    """Whether an entry anywhere in the directory already has ``number`` as uid or gid."""
    config = context.config()
    [found] = context.directory().writer().search([Search(
        config.ldap.base, f"(|(uidNumber={number})(gidNumber={number}))", ["1.1"])])
    pool = ldap.dn.str2dn(f"{POOL},{config.ldap.base}".lower())
    return any(ldap.dn.str2dn(entry.dn.lower()) != pool for entry in found)

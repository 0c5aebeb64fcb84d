"""People as accounts on instances: who may never log in, and who is locked.

One rule, used by ``opslab-ssh-keys`` (who gets keys at login), by the agent
(who gets sudo on the instance) and by the API (who is in an instance's
target, and who may use the API at all), so that a person one refuses can
never hold root through another.

* A **system account** is never a person: the name ``root``, or a directory
  ``uidNumber`` outside ``accounts.min_uid`` .. ``accounts.max_uid``
  (Debian's FIRST_UID and UID_MAX: ``nobody`` is 65534).
* On an instance, sshd logs in to, and sudo grants to, whatever account the
  name resolves to there. So a **local account** of that name must be the
  person's own: the same uid as the directory's ``uidNumber``. A person
  named like an account of the image (``debian``, ``nobody``, ``backup``)
  gets neither keys nor sudo there.
* A **locked** account gets nothing: its entry has ``pwdAccountLockedTime``
  (ppolicy's lock, any value, even a temporary lockout slapd has not cleared
  yet) or a ``shadowExpire`` (days since 1970-01-01, UTC) that is today or
  earlier; ``-1`` means never, as in ``/etc/shadow``.
"""

import time
from typing import TYPE_CHECKING

from opslab.config import AccountSettings

if TYPE_CHECKING:  # the agent's sudo path must not import python-ldap (about 100 ms)
    from opslab.directory import Entry

# Operational (ppolicy), so returned only when asked for by name; a directory
# without ppolicy does not know it and simply leaves it out.
LOCKED_ATTRIBUTE = "pwdAccountLockedTime"
EXPIRE_ATTRIBUTE = "shadowExpire"
UID_NUMBER_ATTRIBUTE = "uidNumber"
# What a reader must ask for to apply these rules to an entry.
ATTRIBUTES = (LOCKED_ATTRIBUTE, EXPIRE_ATTRIBUTE, UID_NUMBER_ATTRIBUTE)

SYSTEM_NAMES = frozenset({"root"})
# Names a new person may not take: Debian's static system accounts
# (base-passwd), the accounts packages on an instance make or may make later,
# and the image's own user. Such a name is no one's login: once an instance
# resolves accounts through the directory, a package would find the person
# where it expects its own account. Names starting with "_" or "systemd-"
# are the packages' conventions, refused as a whole.
RESERVED_NAMES = SYSTEM_NAMES | frozenset({
    "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "nobody", "messagebus", "sshd", "ntp",
    "nslcd", "puppet", "postgres", "mysql", "redis", "memcache", "openldap", "pdns",
    "postfix", "dnsmasq", "tss", "uuidd", "tcpdump", "statd", "avahi", "polkitd", "debian",
    "admin", "administrator", "ubuntu", "cloud-user", "opslab", "opslab-api", "nogroup",
    "sudo", "adm", "staff", "users", "operator",
})
RESERVED_PREFIXES = ("_", "systemd-")


def reserved_reason(name: str) -> str | None:
    """Why ``name`` cannot be a new person's, or None."""
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        return f"{name!r} is the name of a system or package account"
    return None
_SECONDS_PER_DAY = 86400
_NEVER_EXPIRES = -1


def locked_reason(person: "Entry", now: float | None = None) -> str | None:
    """Why the person's account is locked, or None if it is not."""
    if person.values(LOCKED_ATTRIBUTE):
        return f"{LOCKED_ATTRIBUTE} is set"
    expire = person.first(EXPIRE_ATTRIBUTE)
    if expire is None:
        return None
    try:
        day = int(expire)
    except ValueError:
        # The schema's INTEGER syntax allows nothing else; deny on any doubt.
        return f"{EXPIRE_ATTRIBUTE} {expire[:20]!r} is not a number of days"
    today = int((time.time() if now is None else now) // _SECONDS_PER_DAY)
    if day != _NEVER_EXPIRES and day <= today:
        return f"{EXPIRE_ATTRIBUTE} is day {day}, today is day {today}"
    return None


def uid_number(person: "Entry") -> int | None:
    """The person's ``uidNumber``; None when it has none, or one that is not a number."""
    value = person.first(UID_NUMBER_ATTRIBUTE)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def system_account_reason(name: str, person: "Entry | None",
                          settings: AccountSettings) -> str | None:
    """Why ``name`` (with its directory entry, if read) is a system account, or None."""
    if name in SYSTEM_NAMES:
        return f"{name!r} is a system account"
    if person is None or person.first(UID_NUMBER_ATTRIBUTE) is None:
        return None
    number = uid_number(person)
    if number is None:
        return f"its uidNumber {person.first(UID_NUMBER_ATTRIBUTE)!r:.30} is not a number"
    return _outside(f"its uidNumber {number}", number, settings)


def _outside(what: str, number: int, settings: AccountSettings) -> str | None:
    if number < settings.min_uid:
        return f"{what} is below accounts.min_uid ({settings.min_uid})"
    if number > settings.max_uid:
        return f"{what} is above accounts.max_uid ({settings.max_uid})"
    return None


def local_account_reason(name: str, number: int | None,
                         settings: AccountSettings) -> str | None:
    """Why the local account ``name`` (as NSS resolves it here) is not the person's, or None.

    ``number`` is the person's directory ``uidNumber`` (None: unknown). No
    local account of that name: nothing to take over (None).
    """
    import pwd  # only on the instance side

    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
    if (outside := _outside(f"the local account {name!r} has uid {uid}, which", uid,
                            settings)) is not None:
        return outside
    if number is None:
        return (f"a local account {name!r} (uid {uid}) exists, and the directory gives "
                "this person no uidNumber to show it is theirs")
    if uid != number:
        return (f"the local account {name!r} has uid {uid}, not the person's "
                f"uidNumber {number}")
    return None


def refusal(name: str, person: "Entry", settings: AccountSettings,
            now: float | None = None) -> str | None:
    """Why the person ``name`` may not have an account (system or locked), or None."""
    return system_account_reason(name, person, settings) or locked_reason(person, now)

"""People as accounts on instances: who may never log in, and who is locked.

One rule, used by ``opslab-ssh-keys`` (who gets keys at login) and by the API
(who gets sudo in an instance's target), so that a person the first refuses
can never hold root through the second.

* A **system account** is never a person: the name ``root``, a directory
  ``uidNumber`` below ``accounts.min_uid``, or (on an instance) a local
  account that resolves to a uid below it. A directory person whose name is
  also a local system account (``backup``, ``postgres``) would otherwise log
  in as, or get sudo as, that system account.
* A **locked** account gets nothing: its entry has ``pwdAccountLockedTime``
  (ppolicy's lock, any value, even a temporary lockout slapd has not cleared
  yet) or a ``shadowExpire`` (days since 1970-01-01, UTC) that is today or
  earlier; ``-1`` means never, as in ``/etc/shadow``.
"""

import time

from opslab.directory import Entry

# Operational (ppolicy), so returned only when asked for by name; a directory
# without ppolicy does not know it and simply leaves it out.
LOCKED_ATTRIBUTE = "pwdAccountLockedTime"
EXPIRE_ATTRIBUTE = "shadowExpire"
UID_NUMBER_ATTRIBUTE = "uidNumber"
# What a reader must ask for to apply these rules to an entry.
ATTRIBUTES = (LOCKED_ATTRIBUTE, EXPIRE_ATTRIBUTE, UID_NUMBER_ATTRIBUTE)

SYSTEM_NAMES = frozenset({"root"})
_SECONDS_PER_DAY = 86400
_NEVER_EXPIRES = -1


def locked_reason(person: Entry, now: float | None = None) -> str | None:
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


def system_account_reason(name: str, person: Entry | None, min_uid: int) -> str | None:
    """Why ``name`` (with its directory entry, if read) is a system account, or None."""
    if name in SYSTEM_NAMES:
        return f"{name!r} is a system account"
    number = person.first(UID_NUMBER_ATTRIBUTE) if person is not None else None
    if number is not None:
        try:
            if int(number) < min_uid:
                return f"its uidNumber {number} is below accounts.min_uid ({min_uid})"
        except ValueError:
            return f"its uidNumber {number[:20]!r} is not a number"
    return None


def local_system_account_reason(name: str, min_uid: int) -> str | None:
    """Why the local account ``name`` (as NSS resolves it here) is a system account, or None.

    On an instance, sshd logs in to, and sudo grants to, whatever account the
    name resolves to locally; a local system account of that name wins.
    """
    import pwd  # only on the instance side

    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
    if uid < min_uid:
        return f"the local account {name!r} has uid {uid}, below accounts.min_uid ({min_uid})"
    return None


def refusal(name: str, person: Entry, min_uid: int, now: float | None = None) -> str | None:
    """Why the person ``name`` may not have an account (system or locked), or None."""
    return system_account_reason(name, person, min_uid) or locked_reason(person, now)

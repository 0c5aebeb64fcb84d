"""``opslab-ssh-keys USER``: the command sshd's ``AuthorizedKeysCommand`` runs.

On every public-key login sshd asks which keys may log in as USER. The answer
comes from the directory, so that joining or leaving a project takes effect
on the next login without touching the instance: the ``sshPublicKey`` values
of the person ``uid=USER`` below the people base (read at that DN, never
found by a search for any ``uid`` value, which a person could add to their
own entry), but only if USER is a member of this instance's project (or that
project is global), is not a system account (``root``, or a directory
``uidNumber`` outside ``accounts.min_uid`` .. ``accounts.max_uid``), owns
the local account of that name if there is one (sshd logs in to that
account: its uid must be the person's ``uidNumber``) and is not locked
(opslab.accounts). Any doubt is an empty answer: access is denied,
never granted from a guess or a cache.

Contract with sshd: the keys on stdout, one per line, and exit 0; anything
else is a non-zero exit with nothing on stdout (sshd ignores the output of a
failed command, and discards its stderr, but logs the exit status). Exit codes:

  0  keys printed
  1  nothing granted: unknown user, a system account, a local account that is
     not the person's, a locked account, not a member of this instance's
     project, no usable keys, or no host entry (or no project) for this
     instance
  2  bad usage or an invalid user name (refused before any directory query)
  3  the directory could not be asked: unreachable, too slow, refusing the
     bind, or misconfigured (configuration, this instance's certname, a base DN)
 70  an internal error (a bug): the traceback is on stderr

sshd waits for this command on every login, so the whole directory
conversation is bounded by ``agent.ssh_keys_timeout`` and kept to two
searches: the person and this host together, then the membership check.
"""

import argparse
import logging
import sys
import traceback

from ldap.dn import escape_dn_chars
from ldap.filter import filter_format

from opslab import __version__, accounts
from opslab.config import Config, ConfigError, LdapSettings, add_config_option, load
from opslab.directory import (
    Directory,
    DirectoryError,
    DirectoryUnavailable,
    Entry,
    Search,
    fill_filter,
)
from opslab.log import setup
from opslab.names import InvalidName, project_label, this_certname, validate_user_name

log = logging.getLogger("opslab.agent.ssh_keys")
EXIT_NOT_GRANTED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL_ERROR = 70  # sysexits.h EX_SOFTWARE

# The person is read at uid=USER,PEOPLE: a search for (uid=USER) would also
# find an entry that carries USER as a second uid value, such as "uid: root".
PERSON_FILTER = "(objectClass=ldapPublicKey)"
HOST_FILTER = "(&(objectClass=opslabNode)(associatedDomain=%s))"
# Membership is decided by the server: only the project's cn comes back, so a
# long member list never travels on a login.
GRANT_FILTER = "(&(objectClass=groupOfNames)(cn=%s)(|(member=%s)(opslabGlobal=TRUE)))"

KEY_ATTRIBUTE = "sshPublicKey"
PROJECT_ATTRIBUTE = "opslabProject"


class NotGranted(Exception):
    """The directory answered, and its answer grants no key."""



def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="opslab-ssh-keys",
        description="sshd AuthorizedKeysCommand: print USER's SSH keys from the opslab "
        "directory if USER may log in to this instance.",
    )
    parser.add_argument("user", help="the login name, as sshd passes it (%%u)")
    add_config_option(parser)
    parser.add_argument("--version", action="version", version=f"opslab {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the process exit status."""
    arguments = _arguments(argv)
    setup(prefix="opslab-ssh-keys")
    try:
        return _serve(arguments)
    except Exception:
        # Not exit 1, which would read as an ordinary "not granted".
        log.critical("internal error, please report:\n%s", traceback.format_exc())
        return EXIT_INTERNAL_ERROR


def _serve(arguments: argparse.Namespace) -> int:
    # Before anything else: a hostile name must never reach a filter, or the network.
    try:
        user = validate_user_name(arguments.user)
    except InvalidName as error:
        log.error("%s", error)
        return EXIT_USAGE
    try:
        config = load(arguments.config)
        certname = this_certname(config.apply.certname)
    except (ConfigError, InvalidName) as error:
        log.error(f"access denied for {user}: {error}")
        return EXIT_UNAVAILABLE

    try:
        keys = authorized_keys(config, certname, user)
    except NotGranted as error:
        log.info(f"no keys for {user}: {error}")
        return EXIT_NOT_GRANTED
    except (DirectoryUnavailable, DirectoryError) as error:
        log.error(f"access denied for {user}, the directory could not be asked: {error}")
        return EXIT_UNAVAILABLE
    sys.stdout.write("".join(f"{key}\n" for key in keys))
    return 0


def _capped_settings(config: Config) -> LdapSettings:
    """``config.ldap`` with no timeout longer than ``agent.ssh_keys_timeout``."""
    budget = config.agent.ssh_keys_timeout
    return config.ldap._replace(
        connect_timeout=min(config.ldap.connect_timeout, budget),
        timeout=min(config.ldap.timeout, budget),
        deadline=min(config.ldap.deadline, budget),
    )


def authorized_keys(config: Config, certname: str, user: str) -> list[str]:
    """The key lines that may log in as ``user`` on the instance ``certname``.

    Raises NotGranted with the reason when there are none, and
    DirectoryUnavailable or DirectoryError when the directory cannot be asked.
    ``user`` and ``certname`` must be validated names.
    """
    settings = config.accounts
    # Before any query: root is never a person.
    system = accounts.system_account_reason(user, None, settings)
    if system:
        raise NotGranted(f"refused: {system}")
    person_dn = f"uid={escape_dn_chars(user)},{config.people_base_dn}"
    with Directory(_capped_settings(config)) as directory:
        people, hosts = directory.search([
            Search(person_dn, PERSON_FILTER, [KEY_ATTRIBUTE, *accounts.ATTRIBUTES],
                   scope="base"),
            Search(config.hosts_base_dn, fill_filter(HOST_FILTER, certname), [PROJECT_ATTRIBUTE]),
        ])
        host = _single(hosts, f"host entry for this instance ({certname})")
        project, named = _project(host, certname)
        person = _single(people, f"person {person_dn} with objectClass ldapPublicKey")
        # sshd logs in to the local account of that name: it must be this person's.
        system = (accounts.system_account_reason(user, person, settings)
                  or accounts.local_account_reason(user, accounts.uid_number(person), settings))
        if system:
            raise NotGranted(f"{person.dn} is refused: {system}")
        locked = accounts.locked_reason(person)
        if locked:
            raise NotGranted(f"{person.dn} is locked: {locked}")
        keys = [key for key in person.values(KEY_ATTRIBUTE) if _usable(key)]
        if not keys:
            raise NotGranted(f"{person.dn} has no usable {KEY_ATTRIBUTE}")
        # Asked only now, so that the denials above cost one round trip.
        # filter_format escapes each value, as fill_filter does for one. A
        # project without an entry matches nothing, so grants nothing: the
        # one guessed from the certname may well not exist.
        granted = directory.search([
            Search(config.projects_base_dn, filter_format(GRANT_FILTER, [project, person.dn]),
                   ["cn"]),
        ])[0]
    if not granted:
        source = "" if named else " (from this instance's name)"
        raise NotGranted(
            f"{person.dn} is not a member of project {project!r}{source}, and it is not global "
            "(or has no entry)"
        )
    return keys


def _project(host: Entry, certname: str) -> tuple[str, bool]:
    """This instance's project, as the ENC finds it, and whether the host names it.

    The host entry's ``opslabProject``, else the second label of the
    certname (NAME.PROJECT.DOMAIN) when a project of that name exists.
    """
    named = host.first(PROJECT_ATTRIBUTE)
    if named is not None:
        return named, True
    guessed = project_label(certname)
    if guessed is None:
        raise NotGranted(f"{host.dn} names no {PROJECT_ATTRIBUTE}, and {certname} has no "
                         "project label (NAME.PROJECT.DOMAIN)")
    return guessed, False


def _single(entries: list[Entry], what: str) -> Entry:
    if not entries:
        raise NotGranted(f"no {what}")
    if len(entries) > 1:
        # Whichever one we picked could be the wrong one.
        raise NotGranted(f"{len(entries)} entries match the {what}")
    return entries[0]


def _usable(key: str) -> bool:
    # One value must stay one line of sshd's input: a line break inside it
    # would smuggle in a line of its own (another key, other options).
    return bool(key.strip()) and key.splitlines() == [key]

"""The API's side of the directory: who people are, what they belong to, and writes.

The API is the directory's only writer. It binds as ``api.writer_dn`` for
writes and as the person themself to check a password (the directory, not
opslab, compares password hashes). Every operation has the timeouts of
``ldap.*``; every value that goes into a filter is escaped, and every DN is
built from validated names with ``ldap.dn.escape_dn_chars``.
"""

from typing import Any, NamedTuple

import ldap
import ldap.dn
import ldap.modlist
from ldap.dn import escape_dn_chars
from ldap.filter import escape_filter_chars

from opslab.config import Config
from opslab.directory import DirectoryError, DirectoryUnavailable

_TRANSPORT = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE, ldap.BUSY)
Attributes = dict[str, list[str]]


class Membership(NamedTuple):
    """A project's members and owners (lowercased DNs), and whether it is global."""

    members: set[str]
    owners: set[str]
    is_global: bool


class WriteConflict(Exception):
    """The entry to create exists already, or the one to change does not."""


class DirectoryAccess:
    """Connections to the directory for one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.ldap

    def _connection(self) -> "ldap.ldapobject.LDAPObject":
        connection = ldap.initialize(self.settings.uri)
        connection.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        connection.set_option(ldap.OPT_REFERRALS, 0)
        connection.set_option(ldap.OPT_NETWORK_TIMEOUT, self.settings.connect_timeout)
        connection.timeout = self.settings.timeout
        if self.settings.ca_file:
            connection.set_option(ldap.OPT_X_TLS_CACERTFILE, self.settings.ca_file)
            connection.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        if self.settings.starttls:
            connection.start_tls_s()
        return connection

    def person_dn(self, uid: str) -> str:
        return f"uid={escape_dn_chars(uid)},{self.config.people_base_dn}"

    def project_dn(self, project: str) -> str:
        return f"cn={escape_dn_chars(project)},{self.config.projects_base_dn}"

    def host_dn(self, fqdn: str) -> str:
        return f"dc={escape_dn_chars(fqdn)},{self.config.hosts_base_dn}"

    def uids(self, dns: list[str]) -> list[str]:
        """The sorted user names of the people among ``dns`` (members that are not people,
        such as nested groups, are left out)."""
        people = ldap.dn.str2dn(self.config.people_base_dn.lower())
        names = []
        for dn in dns:
            try:
                rdn, *parent = ldap.dn.str2dn(dn.lower())
            except ldap.DECODING_ERROR:
                continue
            if parent == people and len(rdn) == 1 and rdn[0][0] == "uid":
                # uid matches without case and insignificant spaces, as the server does.
                names.append(" ".join(rdn[0][1].split()))
        return sorted(names)

    def check_password(self, uid: str, password: str) -> bool:
        """True if ``password`` is ``uid``'s, by binding as them."""
        if not password:  # an empty password would be an anonymous bind
            return False
        try:
            connection = self._connection()
            try:
                connection.simple_bind_s(self.person_dn(uid), password)
                return True
            finally:
                connection.unbind_s()
        except ldap.INVALID_CREDENTIALS:
            return False
        except _TRANSPORT as error:
            raise DirectoryUnavailable(f"{self.settings.uri}: {type(error).__name__}") from None
        except ldap.LDAPError:
            return False

    def _writer(self) -> "ldap.ldapobject.LDAPObject":
        settings = self.config.api
        if not settings.writer_dn or not settings.writer_password_file:
            raise DirectoryError("api.writer_dn and api.writer_password_file are not set")
        try:
            with open(settings.writer_password_file, encoding="utf-8") as stream:
                password = stream.read().rstrip("\r\n")
        except OSError as error:
            raise DirectoryError(
                f"cannot read api.writer_password_file: {error.strerror}") from None
        connection = self._connection()
        connection.simple_bind_s(settings.writer_dn, password)
        return connection

    def _run(self, operation: Any) -> Any:
        try:
            connection = self._writer()
            try:
                return operation(connection)
            finally:
                connection.unbind_s()
        except _TRANSPORT as error:
            raise DirectoryUnavailable(f"{self.settings.uri}: {type(error).__name__}") from None
        except (ldap.ALREADY_EXISTS, ldap.NO_SUCH_OBJECT, ldap.TYPE_OR_VALUE_EXISTS,
                ldap.NO_SUCH_ATTRIBUTE) as error:
            raise WriteConflict(type(error).__name__) from None
        except ldap.LDAPError as error:
            info = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
            raise DirectoryError(f"{info.get('desc', type(error).__name__)}: "
                                 f"{info.get('info', '')}".rstrip(": ")) from None

    def read(self, dn: str) -> Attributes | None:
        """The attributes of ``dn`` as text, or None if it does not exist."""
        def search(connection: Any) -> Attributes | None:
            try:
                [(_, raw)] = connection.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)")
            except ldap.NO_SUCH_OBJECT:
                return None
            return {name: [value.decode() for value in values] for name, values in raw.items()}
        result: Attributes | None = self._run(search)
        return result

    def membership(self, project: str) -> "Membership | None":
        """Who belongs to ``project``, or None if it does not exist."""
        entry = self.read(self.project_dn(project))
        if entry is None:
            return None
        return Membership({dn.lower() for dn in _get(entry, "member")},
                          {dn.lower() for dn in _get(entry, "owner")},
                          is_global(_get(entry, "opslabGlobal")))

    def add(self, dn: str, attributes: Attributes) -> None:
        encoded = {name: [value.encode() for value in values]
                   for name, values in attributes.items() if values}
        self._run(lambda connection: connection.add_s(dn, ldap.modlist.addModlist(encoded)))

    def replace(self, dn: str, before: Attributes, after: Attributes) -> None:
        """Change ``dn`` from ``before`` to ``after`` (only the attributes that differ)."""
        old = {name: [v.encode() for v in values] for name, values in before.items()}
        new = {name: [v.encode() for v in values] for name, values in after.items() if values}
        changes = ldap.modlist.modifyModlist(old, new)
        if changes:
            self._run(lambda connection: connection.modify_s(dn, changes))

    def modify(self, dn: str, changes: list[tuple[int, str, list[str]]]) -> None:
        """Add or delete single values (``ldap.MOD_ADD``/``MOD_DELETE``); the server matches
        a value to delete by its attribute's equality rule."""
        encoded = [(operation, name, [value.encode() for value in values])
                   for operation, name, values in changes]
        self._run(lambda connection: connection.modify_s(dn, encoded))

    def delete(self, dn: str) -> None:
        self._run(lambda connection: connection.delete_s(dn))

    def search(self, base: str, filter: str) -> list[tuple[str, Attributes]]:
        """Entries directly below ``base`` matching ``filter`` (values already escaped)."""
        def search(connection: Any) -> list[tuple[str, Attributes]]:
            try:
                found = connection.search_s(base, ldap.SCOPE_ONELEVEL, filter)
            except ldap.NO_SUCH_OBJECT:
                return []
            return [(dn, {name: [v.decode() for v in values] for name, values in raw.items()})
                    for dn, raw in found if dn]
        result: list[tuple[str, Attributes]] = self._run(search)
        return result


def is_global(values: list[str]) -> bool:
    """Whether a project's ``opslabGlobal`` values mark it global (shared infrastructure)."""
    return values == ["TRUE"]


def _get(entry: Attributes, name: str) -> list[str]:
    for key, values in entry.items():
        if key.lower() == name.lower():
            return values
    return []


def escape(value: str) -> str:
    """A value escaped for an LDAP filter."""
    return str(escape_filter_chars(value))

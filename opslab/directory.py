"""The LDAP directory: reads and writes with timeouts, a deadline and safe filters.

Every component reads the directory through :class:`Directory`; the API,
its only writer, writes through it too (:meth:`Directory.add`,
:meth:`~Directory.modify`, :meth:`~Directory.delete`) and checks people's
passwords with it (:meth:`~Directory.check_password`).

Two kinds of failure are kept apart because callers act differently on them:
:class:`DirectoryUnavailable` means the directory could not answer (down,
slow, unreachable), so a cached answer may stand in; :class:`DirectoryError`
means it answered and the answer is unusable (bad credentials, no such base),
so nothing may stand in for it.
"""

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import ldap
from ldap.filter import escape_filter_chars

from opslab.config import LdapSettings
from opslab.files import read_secret

# What TLS to the directory is checked against when ldap.ca_file names nothing: Debian's
# bundle of the CAs the system trusts (a site's CA arrives there by cloud-init's
# ca_certs). libldap's own default comes only from /etc/ldap/ldap.conf, which a minimal
# install (libldap without its recommended libldap-common) does not have.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_SCOPES = {"subtree": ldap.SCOPE_SUBTREE, "one": ldap.SCOPE_ONELEVEL, "base": ldap.SCOPE_BASE}

# Errors that mean "no answer", as opposed to "an answer we cannot use".
_TRANSPORT_ERRORS = (
    ldap.SERVER_DOWN,
    ldap.TIMEOUT,
    ldap.CONNECT_ERROR,
    ldap.UNAVAILABLE,
    ldap.BUSY,
    ldap.TIMELIMIT_EXCEEDED,
)


class DirectoryUnavailable(Exception):
    """The directory did not answer in time, or could not be reached."""


class _ConnectionLost(DirectoryUnavailable):
    """The server dropped the connection (not a timeout): a new one may well work."""


class DirectoryError(Exception):
    """The directory answered, but the answer or the request is unusable."""


class DirectoryConflict(DirectoryError):
    """A write found the directory otherwise than it expected: the entry to create exists,
    the one to change does not, a value to add is there or one to delete is not."""


_CONFLICTS = (ldap.ALREADY_EXISTS, ldap.NO_SUCH_OBJECT, ldap.TYPE_OR_VALUE_EXISTS,
              ldap.NO_SUCH_ATTRIBUTE)


class Deadline:
    """An overall time budget shared by every operation of one task."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self, cap: float) -> float:
        """Seconds left, at most ``cap``; raises DirectoryUnavailable when spent."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise DirectoryUnavailable(f"overall deadline of {self.seconds:g} s exceeded")
        return min(left, cap)


def fill_filter(template: str, value: str) -> str:
    """Put ``value`` into every ``%s`` of a filter template, escaped per RFC 4515.

    Escaping happens here, whatever the template, so no value from a
    certname, a parentNode or a project attribute can change a filter's shape.
    """
    return template.replace("%s", escape_filter_chars(value))


def attribute_values(attributes: Mapping[str, list[str]], name: str) -> list[str]:
    """The values of attribute ``name`` in ``attributes``, its name matched without case as
    LDAP matches attribute names (the server sends them as its schema spells them)."""
    wanted = name.lower()
    for key, values in attributes.items():
        if key.lower() == wanted:
            return values
    return []


class Entry:
    """One directory entry: its DN and its attributes as text.

    Attribute names keep the case the server sent (Puppet's terminus exposed
    them that way); :meth:`values` looks them up case-insensitively, as LDAP
    does. Values that are not UTF-8 are kept apart in ``binary``.
    """

    __slots__ = ("attributes", "binary", "dn")

    def __init__(self, dn: str, raw: dict[str, list[bytes]]) -> None:
        self.dn = dn
        self.attributes: dict[str, list[str]] = {}
        self.binary: list[str] = []
        for name, values in raw.items():
            try:
                self.attributes[name] = [value.decode("utf-8") for value in values]
            except UnicodeDecodeError:
                self.binary.append(name)

    def values(self, name: str) -> list[str]:
        """All values of attribute ``name`` (any case), in the server's order."""
        return attribute_values(self.attributes, name)

    def first(self, name: str) -> str | None:
        """The first value of attribute ``name``, or None."""
        values = self.values(name)
        return values[0] if values else None

    def __repr__(self) -> str:
        return f"Entry({self.dn!r})"


class Search:
    """One search to send: where, what, which attributes, how deep.

    ``scope`` is ``"subtree"`` (``base`` and everything below it), ``"one"``
    (the entries directly below ``base``) or ``"base"`` (the one entry at
    ``base``: reading an entry by its DN). A
    base-scope search of a DN that does not exist finds no entry, as a
    subtree search whose filter matches nothing does. ``optional_base`` says
    the same of a subtree search's base (a directory without
    ``ou=projects``), rather than it being a misconfiguration to report.
    """

    __slots__ = ("attributes", "base", "filter", "optional_base", "scope")

    def __init__(
        self,
        base: str,
        filter: str,
        attributes: Sequence[str] | None = None,
        optional_base: bool = False,
        scope: Literal["subtree", "one", "base"] = "subtree",
    ) -> None:
        self.base = base
        self.filter = filter
        self.attributes = list(attributes) if attributes is not None else None
        self.optional_base = optional_base or scope == "base"
        self.scope = scope


class Directory:
    """A connection to the directory that never waits without a limit.

    ``connect_timeout`` bounds the TCP/ldapi connect, ``timeout`` every single
    operation, and the :class:`Deadline` the whole task. A long-lived caller
    (the API) keeps one Directory and its connection, and calls
    :meth:`begin_task` before each task to give it a deadline of its own.
    """

    def __init__(self, settings: LdapSettings, deadline: Deadline | None = None) -> None:
        if not settings.base:
            raise DirectoryError("ldap.base is not set: name the directory's base DN")
        self.settings = settings
        self.deadline = deadline or Deadline(settings.deadline)
        self._connection: ldap.ldapobject.LDAPObject | None = None

    def __enter__(self) -> "Directory":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def begin_task(self) -> None:
        """Start a new task: a fresh overall deadline, the same connection."""
        self.deadline = Deadline(self.settings.deadline)

    def close(self) -> None:
        """Drop the connection; a later search reconnects."""
        if self._connection is not None:
            with contextlib.suppress(ldap.LDAPError):  # going away either way
                self._connection.unbind_s()
            self._connection = None

    def _timeout(self) -> float:
        return self.deadline.remaining(self.settings.timeout)

    def _connect(self) -> "ldap.ldapobject.LDAPObject":
        if self._connection is not None:
            return self._connection
        settings = self.settings
        try:
            connection = ldap.initialize(settings.uri)
        except ldap.LDAPError as error:
            raise DirectoryError(
                f"ldap.uri {settings.uri!r} is not usable: {_describe(error)}"
            ) from None
        connection.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        connection.set_option(ldap.OPT_REFERRALS, 0)
        connection.set_option(ldap.OPT_NETWORK_TIMEOUT, self.deadline.remaining(
            settings.connect_timeout))
        ca_file = settings.ca_file or (SYSTEM_CA_BUNDLE if os.path.exists(SYSTEM_CA_BUNDLE)
                                       else None)
        if ca_file and (settings.starttls or settings.uri.startswith("ldaps://")):
            connection.set_option(ldap.OPT_X_TLS_CACERTFILE, ca_file)
            connection.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            connection.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        try:
            if settings.starttls:
                connection.timeout = self._timeout()
                connection.start_tls_s()
            if settings.bind_dn:
                connection.timeout = self._timeout()
                connection.simple_bind_s(settings.bind_dn, self._password())
        except _TRANSPORT_ERRORS as error:
            raise DirectoryUnavailable(f"{settings.uri}: {_describe(error)}") from None
        except ldap.INVALID_CREDENTIALS:
            raise DirectoryError(
                f"bind as {settings.bind_dn!r} refused: invalid credentials"
            ) from None
        except ldap.LDAPError as error:
            raise DirectoryError(f"{settings.uri}: {_describe(error)}") from None
        self._connection = connection
        return connection

    def _password(self) -> str:
        path = self.settings.bind_password_file
        if not path:
            raise DirectoryError("ldap.bind_dn is set but ldap.bind_password_file is not")
        try:
            return read_secret(path)
        except (OSError, UnicodeDecodeError) as error:
            raise DirectoryError(
                f"cannot read ldap.bind_password_file {path}: "
                f"{getattr(error, 'strerror', None) or 'it is not text'}"
            ) from None

    def search(self, searches: Sequence[Search]) -> list[list[Entry]]:
        """Run several searches at once; one result list per search.

        The searches are pipelined on one connection, so the cost is one
        round trip rather than one per search. A kept connection that turns out
        to be dead (the server restarted) gets one fresh try.
        """
        reused = self._connection is not None
        try:
            return self._search(searches)
        except _ConnectionLost:
            if not reused:
                raise
            # Not after a timeout: a hung server would only make us wait twice.
            return self._search(searches)

    def _search(self, searches: Sequence[Search]) -> list[list[Entry]]:
        connection = self._connect()
        try:
            message_ids = [
                connection.search_ext(
                    search.base,
                    _SCOPES[search.scope],
                    search.filter,
                    search.attributes,
                    timeout=max(1, int(self.settings.timeout)),
                )
                for search in searches
            ]
            results = []
            for search, message_id in zip(searches, message_ids, strict=True):
                try:
                    _, data, _, _ = connection.result3(message_id, all=1, timeout=self._timeout())
                except ldap.NO_SUCH_OBJECT:
                    if not search.optional_base:
                        raise DirectoryError(
                            f"search base {search.base!r} does not exist in {self.settings.uri}"
                        ) from None
                    data = []
                results.append([Entry(dn, attrs) for dn, attrs in data if dn is not None])
            return results
        except _TRANSPORT_ERRORS as error:
            self.close()
            kind = _ConnectionLost if isinstance(error, ldap.SERVER_DOWN) else DirectoryUnavailable
            raise kind(f"{self.settings.uri}: {_describe(error)}") from None
        except ldap.LDAPError as error:
            raise DirectoryError(f"{self.settings.uri}: {_describe(error)}") from None


    # -- reading one entry, writing, checking passwords -------------------

    def read(self, dn: str, attributes: Sequence[str] | None = None) -> Entry | None:
        """The entry at ``dn`` (only ``attributes``, if named), or None if there is none."""
        [found] = self.search([Search(dn, "(objectClass=*)", attributes, scope="base")])
        return found[0] if found else None

    def add(self, dn: str, attributes: dict[str, list[str]]) -> None:
        """Create the entry ``dn``; DirectoryConflict if it exists."""
        values = [(name, [value.encode() for value in items])
                  for name, items in attributes.items() if items]
        self._write(f"adding {dn}", lambda connection: connection.add_ext_s(dn, values))

    def modify(self, dn: str, changes: Sequence[tuple[int, str, list[str] | None]]) -> None:
        """Apply ``(ldap.MOD_ADD | MOD_DELETE | MOD_REPLACE, attribute, values)`` changes to
        ``dn`` at once. The server matches a value to delete by its attribute's equality
        rule; DirectoryConflict if the entry, or a value to delete, is missing, or a value
        to add is there already."""
        encoded = [(operation, name, [value.encode() for value in values]
                    if values is not None else None) for operation, name, values in changes]
        if encoded:
            self._write(f"changing {dn}", lambda connection: connection.modify_ext_s(dn, encoded))

    def delete(self, dn: str) -> None:
        """Delete the entry ``dn``; DirectoryConflict if it does not exist."""
        self._write(f"deleting {dn}", lambda connection: connection.delete_ext_s(dn))

    def set_password(self, dn: str, password: str) -> None:
        """Give ``dn`` the password ``password``, which the server hashes as its own policy
        says (RFC 3062 Password Modify): opslab never makes or stores a hash."""
        self._write(f"giving {dn} a new password",
                    lambda connection: connection.passwd_s(dn, None, password))

    def check_password(self, dn: str, password: str) -> bool:
        """Whether ``password`` is ``dn``'s, by binding this connection as ``dn``.

        The connection is then bound as that person (or anonymous, after a
        refusal): use a Directory of its own for this, with no ``bind_dn``.
        An empty password is refused without asking: it would be an
        anonymous bind, which succeeds.
        """
        if not password:
            return False
        connection = self._usable()
        try:
            connection.timeout = self._timeout()
            connection.simple_bind_s(dn, password)
            return True
        except _TRANSPORT_ERRORS as error:
            self.close()
            raise DirectoryUnavailable(f"{self.settings.uri}: {_describe(error)}") from None
        except ldap.LDAPError:
            # Invalid credentials, or a server that will not let this account bind
            # (a ppolicy lock): either way, not this person's password now.
            return False

    def _usable(self) -> "ldap.ldapobject.LDAPObject":
        """The connection, made sure to be alive when it was kept from an earlier task.

        A write is not retried after the server dropped the connection (it
        may have been made), so a kept connection is probed first: a server
        restarted since the last task costs one reconnect, not a refusal.
        """
        if self._connection is not None:
            try:
                self._connection.timeout = self._timeout()
                self._connection.whoami_s()
            except _TRANSPORT_ERRORS:
                self.close()
            except ldap.LDAPError:
                pass  # alive, just unwilling to say who we are
        return self._connect()

    def _write(self, what: str, operation: Callable[["ldap.ldapobject.LDAPObject"], object]) \
            -> object:
        connection = self._usable()
        try:
            connection.timeout = self._timeout()
            return operation(connection)
        except _CONFLICTS as error:
            raise DirectoryConflict(f"{what}: {_describe(error)}") from None
        except _TRANSPORT_ERRORS as error:
            self.close()
            raise DirectoryUnavailable(f"{what}: {self.settings.uri}: {_describe(error)}") \
                from None
        except ldap.LDAPError as error:
            raise DirectoryError(f"{what}: {_describe(error)}") from None


def _describe(error: ldap.LDAPError) -> str:
    """A one-line reason from a python-ldap error (its args hold a dict)."""
    details = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    reason = details.get("desc") or type(error).__name__
    extra = details.get("info")
    return f"{reason} ({extra})" if extra else str(reason)

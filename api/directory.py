"""The API's side of the directory: its connections, the DNs it builds, and its writes.

Everything goes through :class:`opslab.directory.Directory` (connect and
operation timeouts, an overall deadline per request, the
unavailable/error split). Each worker thread keeps three connections:

* the **reader**, as ``ldap.*`` configures it: what the ENC sees, for
  classifications and the takeover check;
* the **writer**, bound as ``api.writer_dn``: the API is the directory's
  only writer, and reads what it is about to change (and who is a member)
  with the same rights;
* the **authenticator**, anonymous until it binds as a person to check
  their password (the directory, not opslab, compares password hashes).

Every value that goes into a filter is escaped, and every DN is built from
validated names with ``ldap.dn.escape_dn_chars``.
"""

import threading

import ldap
import ldap.dn
import ldap.modlist
from ldap.dn import escape_dn_chars
from ldap.filter import escape_filter_chars

from opslab.config import Config, LdapSettings
from opslab.directory import Directory, DirectoryError, Entry, Search

Attributes = dict[str, list[str]]


class _Accounts:
    """People's entries as last read, each until a moment: ``known`` maps a user name to
    (until, the entry or None); one lock for all of a worker's threads."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[float, Entry | None]] = {}
        self.lock = threading.Lock()


class DirectoryAccess:
    """The API's connections to the directory for one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._kept = threading.local()
        # What people's entries said, for the agents' targets (see api/sudo.py).
        self.accounts = _Accounts()
        ldap_settings = config.ldap
        self._settings = {
            "reader": ldap_settings,
            "writer": ldap_settings._replace(bind_dn=config.api.writer_dn,
                                             bind_password_file=config.api.writer_password_file),
            "authenticator": ldap_settings._replace(bind_dn=None, bind_password_file=None),
        }

    def begin_request(self) -> None:
        """Give this thread's connections a fresh overall deadline for a new request."""
        for directory in vars(self._kept).values():
            directory.begin_task()

    def _directory(self, role: str) -> Directory:
        kept: Directory | None = getattr(self._kept, role, None)
        if kept is None:
            settings: LdapSettings = self._settings[role]
            kept = Directory(settings)
            setattr(self._kept, role, kept)
        return kept

    def reader(self) -> Directory:
        """This thread's connection as ``ldap.*`` configures it (the ENC's view)."""
        return self._directory("reader")

    def writer(self) -> Directory:
        """This thread's connection bound as ``api.writer_dn``."""
        if not self.config.api.writer_dn or not self.config.api.writer_password_file:
            raise DirectoryError("api.writer_dn and api.writer_password_file are not set")
        return self._directory("writer")

    def person_dn(self, uid: str) -> str:
        return f"uid={escape_dn_chars(uid)},{self.config.people_base_dn}"

    def project_dn(self, project: str) -> str:
        return f"cn={escape_dn_chars(project)},{self.config.projects_base_dn}"

    def host_dn(self, fqdn: str) -> str:
        return f"dc={escape_dn_chars(fqdn)},{self.config.hosts_base_dn}"

    def dns_dn(self, name: str) -> str:
        """The DN of the alias entry of the DNS name ``name`` (needs ``api.dns_base``)."""
        return f"dc={escape_dn_chars(name)},{self.config.api.dns_base},{self.config.ldap.base}"

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
        return self._directory("authenticator").check_password(self.person_dn(uid), password)

    def read(self, dn: str, attributes: list[str] | None = None) -> Attributes | None:
        """The text attributes of ``dn`` (only ``attributes``, if named), or None if there is
        no such entry. Values that are not text (a ``jpegPhoto``) are left out."""
        entry = self.writer().read(dn, attributes)
        return dict(entry.attributes) if entry is not None else None

    def search(self, base: str, filter: str) -> list[tuple[str, Attributes]]:
        """Entries directly below ``base`` matching ``filter`` (values already escaped)."""
        [found] = self.writer().search([Search(base, filter, scope="one", optional_base=True)])
        return [(entry.dn, dict(entry.attributes)) for entry in found]

    def add(self, dn: str, attributes: Attributes) -> None:
        self.writer().add(dn, attributes)

    def replace(self, dn: str, before: Attributes, after: Attributes) -> None:
        """Change ``dn`` from ``before`` to ``after`` (only the attributes that differ)."""
        old = {name: [v.encode() for v in values] for name, values in before.items()}
        new = {name: [v.encode() for v in values] for name, values in after.items() if values}
        changes = [(operation, name, [value.decode() for value in values]
                    if values is not None else None)
                   for operation, name, values in ldap.modlist.modifyModlist(old, new)]
        self.writer().modify(dn, changes)

    def modify(self, dn: str, changes: list[tuple[int, str, list[str]]]) -> None:
        """Add or delete single values (``ldap.MOD_ADD``/``MOD_DELETE``); the server matches
        a value to delete by its attribute's equality rule."""
        self.writer().modify(dn, list(changes))

    def delete(self, dn: str) -> None:
        self.writer().delete(dn)


def is_global(values: list[str]) -> bool:
    """Whether a project's ``opslabGlobal`` values mark it global (shared infrastructure)."""
    return values == ["TRUE"]


def escape(value: str) -> str:
    """A value escaped for an LDAP filter."""
    return str(escape_filter_chars(value))

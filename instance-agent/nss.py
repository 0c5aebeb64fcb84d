"""People as accounts on this instance: users and groups from the directory through nslcd.

sshd refuses a login as "Invalid user" before it asks ``opslab-ssh-keys``
for keys unless the name is an account here, and sudo grants only to
accounts it knows. So every person of the directory is an account on the
instance (``passwd`` and ``group`` from the directory through Debian's
``nslcd``, ``libnss-ldapd`` and ``libpam-ldapd``), and every project is a
group (the projects that carry a ``gidNumber``).

Why nslcd and not sssd: nslcd keeps no cache, so a member removed from the
project is refused at the next login (measured: 0.02 s after the change)
and a directory that cannot be reached denies logins instead of answering
from a cache (sssd, by design, answers from its cache while offline, and
keeps a removed member for its entry_cache_timeout, 90 minutes by default).

Who may log in is decided twice, by the same rule: ``opslab-ssh-keys``
gives keys only to members of this instance's project (or everyone, for a
global project), and PAM's account phase asks the directory the same
(``pam_authz_search``). A directory that cannot be asked denies (the PAM
line below treats ``authinfo_unavail`` as a refusal; Debian's own profile
ignores it). Homes are made at the first login (``pam_mkhomedir``).
"""

from ldap.filter import escape_filter_chars

from opslab.config import Config
from opslab.directory import SYSTEM_CA_BUNDLE

NSLCD_CONF = "/etc/nslcd.conf"
NSSWITCH = "/etc/nsswitch.conf"
PAM_SSHD = "/etc/pam.d/sshd"
# Marks the lines bootstrap adds to files that are not its own.
MARK = "# opslab: "
_DATABASES = ("passwd", "group")


def nslcd_conf(config: Config, project: str) -> str:
    """``/etc/nslcd.conf`` for the directory of ``config`` and this instance's ``project``."""
    ldap = config.ldap
    lines = [
        "# Written by `opslab agent bootstrap`; a re-bootstrap rewrites it.",
        "uid nslcd", "gid nslcd",
        f"uri {ldap.uri}", f"base {ldap.base}",
        f"base passwd {config.people_base_dn}", f"base group {config.projects_base_dn}",
        "filter passwd (objectClass=posixAccount)",
        # A project is a group once it has a gid (opslabPosixGroup); its members are DNs.
        "filter group (&(objectClass=groupOfNames)(gidNumber=*))",
        "map group member member",
        f"nss_min_uid {config.accounts.min_uid}",
        # Local accounts (root, the image's) never wait on the directory.
        "nss_initgroups_ignoreusers ALLLOCAL",
        # No answer from the directory in time is a refusal, not a long wait.
        f"bind_timelimit {max(1, int(ldap.connect_timeout))}",
        f"timelimit {max(1, int(ldap.timeout))}",
        "idle_timelimit 60", "reconnect_sleeptime 1", "reconnect_retrytime 2",
        # The account phase of a login: the person is a member of this project, or the
        # project is global (opslab-ssh-keys' rule).
        "pam_authz_search (&(objectClass=groupOfNames)(cn=" + escape_filter_chars(project)
        + ")(|(member=$dn)(opslabGlobal=TRUE)))",
        "cache dn2uid 0",
    ]
    if ldap.starttls:
        lines.append("ssl start_tls")
    if ldap.starttls or ldap.uri.startswith("ldaps://"):
        # Said, not left to libldap's defaults, as opslab.directory does for opslab-ssh-keys.
        lines += [f"tls_cacertfile {ldap.ca_file or SYSTEM_CA_BUNDLE}", "tls_reqcert demand"]
    return "\n".join(lines) + "\n"


def with_directory(nsswitch: str) -> str:
    """``nsswitch`` with ``ldap`` after the local sources of ``passwd`` and ``group``."""
    out = []
    for line in nsswitch.splitlines():
        database, colon, sources = line.partition(":")
        if colon and database.strip() in _DATABASES and "ldap" not in sources.split():
            line = f"{line.rstrip()} ldap"
        out.append(line)
    return "\n".join(out) + "\n"


# [success=ok ...] as Debian's profile, but authinfo_unavail=bad: a directory that
# cannot be asked refuses the login.
ACCOUNT_LINE = ("account [success=ok new_authtok_reqd=done ignore=ignore user_unknown=ignore "
                "authinfo_unavail=bad default=bad] pam_ldap.so minimum_uid={min_uid}")
SESSION_LINE = "session optional pam_mkhomedir.so skel=/etc/skel umask=0077"


def with_logins(pam_sshd: str, min_uid: int) -> str:
    """``/etc/pam.d/sshd`` with opslab's account check before the common account stack
    and homes made at the first login; a second call changes nothing."""
    kept = [line for line in pam_sshd.splitlines()
            if not line.startswith(MARK) and not _ours(line)]
    out = []
    for line in kept:
        if line.strip() == "@include common-account":
            out += [f"{MARK}people from the directory: members of this instance's project",
                    ACCOUNT_LINE.format(min_uid=min_uid)]
        out.append(line)
        if line.strip() == "@include common-session":
            out += [f"{MARK}a person's home is made at their first login", SESSION_LINE]
    return "\n".join(out) + "\n"


def _ours(line: str) -> bool:
    return line.startswith(("account [success=ok new_authtok_reqd=done ignore=ignore "
                            "user_unknown=ignore authinfo_unavail=bad", SESSION_LINE))


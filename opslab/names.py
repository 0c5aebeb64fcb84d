"""Names that cross a boundary between opslab and Puppet, git or DNS.

Every rule about a name lives here once: the ENC, the branch runner and the
API call these functions rather than re-deriving a rule of their own.
"""

import re
from collections.abc import Iterable, Mapping

# RFC 1123 host labels, lowercase only: Puppet certnames are lowercase, and a
# name that differs only in case would be a different cache file and a
# different LDAP value for the same host.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_CERTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_CERTNAME_LENGTH = 253

# Puppet environment names must match \A[a-z0-9_]+\Z (the documented rule;
# Puppet 7 also tolerates uppercase, which we never emit).
_NOT_ENVIRONMENT_CHAR = re.compile(r"[^a-z0-9_]")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

DEFAULT_BRANCH = "production"

# The directory entry that gives every node its defaults; it is not a node.
DEFAULT_ENTRY_NAME = "default"

# Variables that Puppet sets itself; an ENC parameter of that name is either
# ignored or an error in Puppet, so it must never reach Puppet from us.
RESERVED_VARIABLES = frozenset({"trusted", "facts", "server_facts", "environment"})


class InvalidName(ValueError):
    """A name that is not acceptable where it was given."""


def validate_certname(name: str) -> str:
    """Return ``name`` if it is a valid node certname, else raise InvalidName.

    Certnames end up in LDAP filters and in cache file names, so anything but
    lowercase DNS labels is refused rather than cleaned up.
    """
    if not name:
        raise InvalidName("certname is empty")
    if len(name) > MAX_CERTNAME_LENGTH:
        raise InvalidName(
            f"certname is {len(name)} characters long; at most {MAX_CERTNAME_LENGTH} are allowed"
        )
    # fullmatch, not match with $: "$" would accept a trailing newline.
    if not _CERTNAME.fullmatch(name):
        raise InvalidName(
            f"certname {name!r} is not a lowercase DNS name "
            "(labels of a-z, 0-9 and inner '-', 1 to 63 characters, separated by '.')"
        )
    if name == DEFAULT_ENTRY_NAME:
        raise InvalidName(f"certname {name!r} names the defaults entry, not a node")
    return name


# Portable login names (Debian's adduser default, without the Samba "$"), at
# most 32 characters: the name reaches LDAP filters, DNs and sudoers files, so
# anything else is refused rather than escaped three different ways.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def validate_user_name(name: str) -> str:
    """Return ``name`` if it is a valid login name (``uid``), else raise InvalidName."""
    if not _USER_NAME.fullmatch(name):
        raise InvalidName(f"user name {name[:40]!r} is not a login name "
                          "(a-z or _ first, then a-z, 0-9, _ or -, at most 32 characters)")
    return name


# A project name is one DNS label: it is the second label of its hosts' names
# (NAME.PROJECT.DOMAIN), a posix group on instances, and it is written into
# sudoers comments and LDAP DNs. So: lowercase letters, digits and inner '-'.
_PROJECT_NAME = re.compile(_LABEL)


def validate_project_name(name: str) -> str:
    """Return ``name`` if it is a valid project name, else raise InvalidName."""
    if not _PROJECT_NAME.fullmatch(name):
        raise InvalidName(f"project name {name[:70]!r} is not a DNS label "
                          "(a-z, 0-9 and inner '-', 1 to 63 characters)")
    return name


def host_certname(name: str, project: str, domain: str) -> str:
    """The certname of the host ``name`` created in ``project``: NAME.PROJECT.DOMAIN.

    A host created through the API lives in its project's namespace, so no
    member can name a host that belongs to another project or that predates
    opslab. ``name`` is either the one label NAME or the whole certname, which
    must then be exactly NAME.PROJECT.DOMAIN. Raises InvalidName.
    """
    validate_project_name(project)
    suffix = f".{project}.{domain}"
    label = name.removesuffix(suffix) if name.endswith(suffix) else name
    if "." in label:
        raise InvalidName(f"host name {name[:100]!r} is not in project {project}'s namespace: "
                          f"name it LABEL or LABEL{suffix}")
    if not re.fullmatch(_LABEL, label):
        raise InvalidName(f"host name {label[:70]!r} is not a DNS label "
                          "(a-z, 0-9 and inner '-', 1 to 63 characters)")
    if _INSTANCE_LABEL.fullmatch(label):
        raise InvalidName(f"host name {label!r} is kept for instance ids (i- and 8 hex "
                          "digits name an instance by its id in DNS)")
    return validate_certname(label + suffix)


# The DNS name of an instance by its id: i-0000012a.PROJECT.DOMAIN, a CNAME of
# the host's name, as the cloud's ec2-style id names it. Host names never take
# this form, so an id's name can never be a host's.
_INSTANCE_LABEL = re.compile(r"i-[0-9a-f]{8}")


def instance_alias(server_id: str, project: str, domain: str) -> str:
    """The second DNS name of the instance ``server_id`` of ``project``: the id itself when
    it is ec2-style (``i-0000012a``), else ``i-`` and the first 8 hex digits of the id
    (an OpenStack UUID)."""
    label = server_id.lower()
    if not _INSTANCE_LABEL.fullmatch(label):
        digits = "".join(char for char in label if char in "0123456789abcdef")
        if len(digits) < 8:
            raise InvalidName(f"instance id {server_id[:70]!r} has fewer than 8 hex digits")
        label = f"i-{digits[:8]}"
    return validate_certname(f"{label}.{project}.{domain}")


def this_certname(configured: str | None) -> str:
    """This machine's certname: ``configured`` (``apply.certname``), else its FQDN,
    lowercased as Puppet derives its default certname. Raises InvalidName."""
    if configured:
        return validate_certname(configured)
    import socket  # only here: opslab-enc's start-up never needs it

    return validate_certname(socket.getfqdn().lower())


# Puppet's class names as opslab accepts them (the API's ClassName schema says the
# same): lowercase words joined by ``::``, the first word the module's name, so a
# class's smoke checks are found in its module's folder and nowhere else.
_CLASS_NAME = re.compile(r"[a-z][a-z0-9_]*(?:::[a-z][a-z0-9_]*)*")
MAX_CLASS_NAME_LENGTH = 200


def validate_class_name(name: str) -> str:
    """``name`` if it is a Puppet class name (see _CLASS_NAME); else InvalidName."""
    if len(name) > MAX_CLASS_NAME_LENGTH or not _CLASS_NAME.fullmatch(name):
        raise InvalidName(f"{name!r} is not a Puppet class name (lowercase words of a-z, "
                          f"0-9 and _ joined by ::)")
    return name


def module_of(class_name: str) -> str:
    """The module a (valid) class belongs to: its first word, as Puppet's autoloader has it."""
    return class_name.partition("::")[0]


def has_format_characters(text: str) -> bool:
    """Whether ``text`` holds invisible formatting (Unicode category Cf: right-to-left
    overrides, zero-width joiners), which can make a name look like another's."""
    import unicodedata

    return any(unicodedata.category(char) == "Cf" for char in text)


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds ASCII control characters (C0 or DEL)."""
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


def short_name(certname: str) -> str | None:
    """The first label of a dotted certname, or None for a single label."""
    head, dot, _ = certname.partition(".")
    return head if dot else None


def project_label(certname: str) -> str | None:
    """The project part of ``name.project.domain...``, or None if too short."""
    labels = certname.split(".")
    return labels[1] if len(labels) >= 3 else None


def host_project(named: str | None, certname: str) -> tuple[str | None, bool]:
    """The project of the host ``certname`` whose entry names ``named`` (its opslabProject).

    One rule for the ENC, the API and ``opslab-ssh-keys``: ``(project,
    named)``. The project the entry names, which must exist (``named``
    True); else the certname's second label (``NAME.PROJECT.DOMAIN``, as in
    directories written before opslab), which counts only when a project of
    that name exists (``named`` False). None when neither gives one.
    """
    if named:
        # Project names are lowercase (a DNS label); an entry written by hand may
        # spell it otherwise, and cn matches without case, so the ENC finds it.
        return named.lower(), True
    return project_label(certname), False


# Characters git refuses in ref names (git-check-ref-format), plus backslash.
_BRANCH_FORBIDDEN = frozenset(" ~^:?*[\\")
MAX_BRANCH_LENGTH = 200  # its environment name leaves room in a 255-byte file name


def validate_branch(branch: str) -> str:
    """Return ``branch`` if it is safe to hand to git and to map to a path.

    The rules of ``git check-ref-format --branch``, plus: no leading ``-``
    (it would read as an option) and at most 200 characters. Branch names
    only ever reach git as ``refs/heads/NAME``, never as an argument of their
    own, and reach the file system only through environment_for_branch.
    """
    problem = None
    if not branch:
        problem = "it is empty"
    elif len(branch) > MAX_BRANCH_LENGTH:
        problem = f"it is longer than {MAX_BRANCH_LENGTH} characters"
    elif branch.startswith("-"):
        problem = "it starts with '-'"
    elif has_control_characters(branch):
        problem = "it contains control characters"
    elif _BRANCH_FORBIDDEN & set(branch):
        problem = "it contains one of space ~ ^ : ? * [ \\"
    elif ".." in branch or "@{" in branch or branch == "@":
        problem = "it contains '..' or '@{'"
    elif branch.startswith("/") or branch.endswith("/") or "//" in branch:
        problem = "it has an empty path component"
    elif branch.endswith("."):
        problem = "it ends with '.'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in branch.split("/")):
        problem = "a component starts with '.' or ends with '.lock'"
    if problem:
        raise InvalidName(f"branch name {branch!r} is refused: {problem}")
    return branch


def environment_for_branch(branch: str) -> str:
    """Map a git branch to the Puppet environment that deploys it.

    The mapping is deterministic and leaves valid environment names as they
    are, so ``production`` stays ``production``: lowercase, then every
    character Puppet does not allow becomes ``_`` (``feature/Login-2`` ->
    ``feature_login_2``). A branch that validate_branch refuses raises
    InvalidName. Distinct branches can map to one name; callers that hold
    several branches group them with :func:`branches_by_environment`.
    """
    # Only ASCII letters are lowercased: str.lower() may turn one character into
    # two ("İ"), and the name must stay one character per character of the branch.
    return _NOT_ENVIRONMENT_CHAR.sub("_", validate_branch(branch).translate(_ASCII_LOWER))


def branches_by_environment(
    branches: Iterable[str],
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Group branches by the environment each maps to.

    Returns ``({environment: [branches]}, {refused branch: reason})``, the
    refused ones being names validate_branch refuses. Which branch of a
    group gets the environment is :func:`environment_holders`' to say.
    """
    groups: dict[str, list[str]] = {}
    refused: dict[str, str] = {}
    for branch in sorted(branches):
        try:
            groups.setdefault(environment_for_branch(branch), []).append(branch)
        except InvalidName as error:
            refused[branch] = str(error)
    return groups, refused


def environment_holders(
    branches: Iterable[str], deployed: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Which branch holds each environment, when several branches map to one.

    ``branches`` are the branches that exist (on the remote); ``deployed``
    is ``{environment: branch it is deployed from}``. Among the branches
    that map to one environment, the holder is:

    1. the branch already deployed there, while it still exists, so that
       pushing ``Production`` beside ``production`` stops nothing that is
       deployed from updating;
    2. else the branch whose name is exactly the environment's name;
    3. else the only one.

    Returns ``({environment: holder}, {refused branch: reason})``. Every
    other branch of the group is refused, and the reason names the holder
    (or, with no holder, every branch of the group); names that
    validate_branch refuses are refused with its reason.
    """
    groups, refused = branches_by_environment(branches)
    deployed = deployed or {}
    holders: dict[str, str] = {}
    for environment, names in groups.items():
        owner = deployed.get(environment)
        if owner in names:
            holder, why = owner, "is deployed there"
        elif environment in names:
            holder, why = environment, "has exactly that name"
        elif len(names) == 1:
            holder, why = names[0], "is the only one"
        else:
            holder, why = None, ""
        if holder is not None:
            holders[environment] = holder
        for branch in names:
            if branch == holder:
                continue
            refused[branch] = (
                f"branch {branch!r} maps to environment {environment!r}, which belongs to "
                f"branch {holder!r} (it {why})" if holder is not None else
                f"branches {', '.join(map(repr, names))} all map to environment "
                f"{environment!r} and none is deployed there or named exactly so")
    return holders, refused


def applied_branch(
    environment: str, branches: Iterable[str], deployed: str | None = None,
) -> tuple[str | None, str]:
    """The branch a hand-run apply syncs into ``environment`` when no branch is named.

    On an instance the branch its classification names is authoritative
    (the agent always names it). Without one, only a branch that cannot be
    another project's will do: the one ``deployed`` there (the instance's
    own, while it still exists among ``branches``), else the only one that
    maps to the environment. Never :func:`environment_holders`' exact-name
    rule: on a machine that has deployed nothing yet, a branch pushed with
    exactly the environment's name (``feature_tools_motd`` beside tools'
    ``feature/Tools-MOTD``) would take it, and Puppet would run its code as
    root. Returns ``(branch, "")``, or ``(None, why not)``.
    """
    groups, _ = branches_by_environment(branches)
    names = groups.get(environment, [])
    if deployed is not None and deployed in names:
        return deployed, ""
    if len(names) == 1:
        return names[0], ""
    if not names:
        return None, f"no branch of the remote maps to environment {environment!r}"
    return None, (f"several branches map to environment {environment!r} "
                  f"({', '.join(map(repr, names))}) and none is deployed there: name the "
                  "one to apply with --branch BRANCH")

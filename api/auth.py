"""Who is asking, and what they may do: every access rule of the API, in one place.

People authenticate with HTTP Basic, checked by binding to the directory as
themselves. Instances authenticate with their host token (``Authorization:
Bearer TOKEN``).

Reading: the community model is open. Every person of the directory may
read everything the API documents (projects, hosts, classifications,
targets, run reports, the audit log); the Server Admin Log is public. A
host token reads only its own host (its host view, classification, target
and reports). So variables and class parameters are never a place for
secrets.

Changing: a project's members may change it and its hosts; members of the
operations project may change anything; a global project, its hosts and
its members are changed by operations only. Only a host's own token may
report its runs and its agent's state.
"""

import base64
import binascii
import hmac
from typing import NamedTuple

from flask import Request
from sqlalchemy import bindparam, select

from opslab.names import InvalidName, validate_project_name, validate_user_name

from . import context
from .directory import Membership
from .errors import Refused
from .store import HostToken, token_digest

# Built once, a Core statement with a bound parameter: it runs on every
# instance request, and building a select() costs more than running it.
_TOKEN_LOOKUP = (select(HostToken.host, HostToken.project, HostToken.digest,
                        HostToken.incarnation)
                 .where(HostToken.digest == bindparam("digest")))


class Actor(NamedTuple):
    """An authenticated caller: a person (``uid``) or an instance (``host``).

    A host's project and incarnation come with its token, so its reports
    need no directory read.
    """

    kind: str
    name: str
    project: str | None = None
    incarnation: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def authenticate(request: Request) -> Actor | None:
    """The caller of ``request``, or None for an anonymous one; Refused if credentials fail."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if not header:
        return None
    if scheme.lower() == "basic":
        try:
            uid, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Refused(401, "malformed Basic credentials") from None
        try:
            validate_user_name(uid)
        except InvalidName:
            raise Refused(401, "invalid user name or password") from None
        directory = context.directory()
        if not directory.check_password(uid, password):
            raise Refused(401, "invalid user name or password")
        return Actor("person", uid)
    if scheme.lower() == "bearer":
        digest = token_digest(credentials.strip())
        with context.engine().connect() as connection:
            stored = connection.execute(_TOKEN_LOOKUP, {"digest": digest}).first()
        if stored is None or not hmac.compare_digest(stored.digest, digest):
            raise Refused(401, "unknown host token")
        return Actor("host", stored.host, stored.project, stored.incarnation)
    raise Refused(401, f"unsupported authorization scheme {scheme!r}")


def person(actor: Actor | None) -> str:
    """The directory DN of a person actor; Refused for anonymous callers and hosts."""
    if actor is None:
        raise Refused(401, "authentication required")
    if actor.kind != "person":
        raise Refused(403, "a host token may only read its own host and report its own runs")
    directory = context.directory()
    return directory.person_dn(actor.name).lower()


def may_read_host(actor: Actor | None, host: str) -> None:
    """Refused unless ``actor`` is a person, or ``host``'s own token."""
    if actor is not None and actor.kind == "host":
        if actor.name != host:
            raise Refused(403, f"this token belongs to {actor.name}, not {host}")
        return
    person(actor)


def is_operator(dn: str) -> bool:
    """True if ``dn`` is a member of the operations project."""
    directory = context.directory()
    operations = directory.membership(context.config().api.operations_project)
    return operations is not None and dn in operations.members


def project_membership(project: str) -> Membership:
    """The membership of an existing project; Refused (404) otherwise."""
    try:
        validate_project_name(project)
    except InvalidName:
        raise Refused(404, f"no project {project[:70]!r}") from None
    membership = context.directory().membership(project)
    if membership is None:
        raise Refused(404, f"no project {project!r}")
    return membership


def may_change_project(actor: Actor | None, project: str | None) -> Membership | None:
    """Refused unless ``actor`` may change ``project`` and its hosts.

    Members may, operations may; in a global project only operations may. A
    host that belongs to no project (``project`` None, such as an entry
    written for Puppet's old terminus) is changed by operations only.
    """
    dn = person(actor)
    if project is None:
        if not is_operator(dn):
            raise Refused(403, "this host belongs to no project: only operations may change it")
        return None
    membership = project_membership(project)
    if is_operator(dn):
        return membership
    if membership.is_global:
        raise Refused(403, f"project {project!r} is global: only operations may change it")
    if dn not in membership.members:
        raise Refused(403, f"{actor.name if actor else ''} is not a member of project "
                           f"{project!r}")
    return membership


def may_add_member(actor: Actor | None, project: str, owner: bool) -> Membership:
    """Refused unless ``actor`` may add a member (members may) or an owner (owners may)."""
    membership = may_change_project(actor, project)
    assert membership is not None  # a named project always has one
    dn = person(actor)
    if owner and dn not in membership.owners and not is_operator(dn):
        raise Refused(403, f"only owners of {project!r} may add owners")
    return membership


def may_remove_member(actor: Actor | None, project: str, gone: str) -> Membership:
    """Refused unless ``actor`` may take the person ``gone`` (a DN) out of ``project``.

    Anyone may leave; owners and operations may remove others; in a global
    project only operations may change membership at all.
    """
    dn = person(actor)
    membership = project_membership(project)
    operator = is_operator(dn)
    if membership.is_global and not operator:
        raise Refused(403, f"project {project!r} is global: only operations may change it")
    if gone not in membership.members:
        raise Refused(404, f"{_uid(gone)!r} is not a member of project {project!r}")
    if not (gone == dn or dn in membership.owners or operator):
        raise Refused(403, f"only owners of {project!r} may remove other members")
    return membership


def _uid(dn: str) -> str:
    return dn.partition(",")[0].partition("=")[2]


def must_be_host(actor: Actor | None, host: str, what: str) -> Actor:
    """Refused unless ``actor`` is ``host``'s own token; ``what`` says what only it may do."""
    if actor is None or actor.kind != "host":
        raise Refused(401 if actor is None else 403, f"only a host's own token may {what}")
    if actor.name != host:
        raise Refused(403, f"this token belongs to {actor.name}, not {host}")
    return actor

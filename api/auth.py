"""Who is asking, and what they may do.

People authenticate with HTTP Basic, checked by binding to the directory as
themselves. Instances authenticate with their host token (``Authorization:
Bearer TOKEN``), which only lets them report their own runs and read their
own classification. Membership decides the rest: a project's members may
change its hosts; members of the operations project may change anything.
"""

import base64
import binascii
import hmac
import re
from typing import NamedTuple

from flask import Request
from sqlalchemy import bindparam, select

from opslab.names import InvalidName, validate_user_name

from . import context
from .directory import Membership
from .store import HostToken, token_digest

# Built once, a Core statement with a bound parameter: it runs on every
# instance request, and building a select() costs more than running it.
_TOKEN_LOOKUP = (select(HostToken.host, HostToken.project, HostToken.digest)
                 .where(HostToken.digest == bindparam("digest")))
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Actor(NamedTuple):
    """An authenticated caller: a person (``uid``) or an instance (``host``).

    A host's project comes with its token, so its reports need no directory read.
    """

    kind: str
    name: str
    project: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class Refused(Exception):
    """A request the caller may not make; the message says why (a 401 or 403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
        return Actor("host", stored.host, stored.project)
    raise Refused(401, f"unsupported authorization scheme {scheme!r}")


def person(actor: Actor | None) -> str:
    """The directory DN of a person actor; Refused for anonymous callers and hosts."""
    if actor is None:
        raise Refused(401, "authentication required")
    if actor.kind != "person":
        raise Refused(403, "host tokens may only report runs and read their own classification")
    directory = context.directory()
    return directory.person_dn(actor.name).lower()


def is_operator(dn: str) -> bool:
    """True if ``dn`` is a member of the operations project."""
    directory = context.directory()
    operations = directory.membership(context.config().api.operations_project)
    return operations is not None and dn in operations.members


def project_membership(project: str) -> Membership:
    """The membership of an existing project; Refused (404) otherwise."""
    directory = context.directory()
    membership = directory.membership(project) if PROJECT_NAME.fullmatch(project) else None
    if membership is None:
        raise Refused(404, f"no project {project!r}")
    return membership


def may_change_project(actor: Actor | None, project: str) -> Membership:
    """Refused unless ``actor`` may change ``project`` and its hosts.

    Members may, operations may; in a global project only operations may.
    """
    dn = person(actor)
    membership = project_membership(project)
    if is_operator(dn):
        return membership
    if membership.is_global:
        raise Refused(403, f"project {project!r} is global: only operations may change it")
    if dn not in membership.members:
        raise Refused(403, f"{actor.name if actor else ''} is not a member of project "
                           f"{project!r}")
    return membership


def must_be_host(actor: Actor | None, host: str, what: str) -> Actor:
    """Refused unless ``actor`` is ``host``'s own token; ``what`` says what only it may do."""
    if actor is None or actor.kind != "host":
        raise Refused(401 if actor is None else 403, f"only a host's own token may {what}")
    if actor.name != host:
        raise Refused(403, f"this token belongs to {actor.name}, not {host}")
    return actor


def may_read_host(actor: Actor | None, host: str, project: str | None) -> None:
    """Refused unless ``actor`` is that host itself, or may change its project."""
    if actor is not None and actor.kind == "host":
        if actor.name != host:
            raise Refused(403, f"this token belongs to {actor.name}, not {host}")
        return
    may_change_project(actor, project or "")

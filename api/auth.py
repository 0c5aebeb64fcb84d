"""Who is asking, and what they may do: every access rule of the API, in one place.

People authenticate with HTTP Basic, checked by binding to the directory as
themselves. Instances authenticate with their host token (``Authorization:
Bearer TOKEN``). A bot account (``api.bot_accounts``, the IRC log bot)
authenticates like a person but is an actor of its own kind, ``bot``.

Reading: the community model is open. Every person of the directory may
read everything the API documents (projects, hosts, classifications,
targets, run reports, the audit log); the Server Admin Log is public. A
host token reads only its own host (its host view, classification, target
and reports). So variables and class parameters are never a place for
secrets.

Changing: a project's members may change it and its hosts; members of the
operations project may change anything; a global project, its hosts and
its members are changed by operations only. Only a host's own token may
report its runs and its agent's state. A bot account may only relay Server Admin Log
entries from chat on behalf of a nick (:func:`bot`): every check that asks for a
person (:func:`person`) refuses it, so it can read and change nothing else.
"""

import base64
import binascii
import hmac
from typing import NamedTuple
from urllib.parse import urlsplit

from flask import Request
from sqlalchemy import bindparam, select

from opslab import accounts
from opslab.directory import Search, fill_filter
from opslab.names import InvalidName, validate_project_name, validate_user_name

from . import context, logins
from .directory import is_global
from .errors import Refused
from .store import HostToken, token_digest

# Built once, a Core statement with a bound parameter: it runs on every
# instance request, and building a select() costs more than running it.
_TOKEN_LOOKUP = (select(HostToken.host, HostToken.project, HostToken.digest,
                        HostToken.incarnation)
                 .where(HostToken.digest == bindparam("digest")))


class Actor(NamedTuple):
    """An authenticated caller: a person (``uid``), an instance (``host``) or a bot account
    (``bot``, see :func:`bot`).

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
    """The caller of ``request``, or None for an anonymous one; Refused if credentials fail.

    A person whose password is right but whose account opslab.accounts
    refuses (locked, expired, a system account) is refused here too: such a
    person could otherwise still change projects and give others sudo.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if not header:
        return None
    if scheme.lower() == "basic":
        try:
            uid, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Refused(401, "malformed Basic credentials") from None
        if _from_another_site(request):
            raise Refused(403, "a write that a page of another site made is refused: the "
                               "browser sent the Basic credentials it remembers for this "
                               "site on its own")
        return log_in(uid, password, request.remote_addr or "")
    if scheme.lower() == "bearer":
        digest = token_digest(credentials.strip())
        with context.engine().connect() as connection:
            stored = connection.execute(_TOKEN_LOOKUP, {"digest": digest}).first()
        if stored is None or not hmac.compare_digest(stored.digest, digest):
            raise Refused(401, "unknown host token")
        return Actor("host", stored.host, stored.project, stored.incarnation)
    raise Refused(401, f"unsupported authorization scheme {scheme!r}")


def _from_another_site(request: Request) -> bool:
    """True for a write (not GET, HEAD or OPTIONS) a browser made for a page of another site.

    A browser that was asked for Basic credentials (the Atom feeds the pages link to ask)
    remembers them and sends them to this site on its own, even with a form of another
    site's page, and a form needs no JSON to POST (``/v1/people/UID/password`` takes no
    body). Browsers say where a request comes from (``Sec-Fetch-Site``, ``Origin``);
    scripts, agents and the bot send neither, and the site's own pages send their own.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = {_origin(request.host_url), _origin(context.config().api.public_url)}
    return _origin(origin) not in own


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower case, without a default port."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return ""
    netloc = (parts.hostname or "") + (f":{port}" if port and port != {"http": 80, "https": 443}
                                       .get(scheme) else "")
    return f"{scheme}://{netloc}" if scheme and netloc else ""


def log_in(uid: str, password: str, address: str) -> Actor:
    """The person ``uid`` if ``password`` is theirs and their account may be used; Refused
    otherwise, and 429 once ``address`` has tried too many wrong passwords for ``uid``
    (:mod:`.logins`). The pages' login form and HTTP Basic both come here."""
    try:
        validate_user_name(uid)
    except InvalidName:
        raise Refused(401, "invalid user name or password") from None
    failures = logins.check(uid, address)
    if not context.directory().check_password(uid, password):
        logins.failed(uid, address)
        raise Refused(401, "invalid user name or password")
    if failures:
        logins.succeeded(uid, address)
    return still_allowed(uid)


def still_allowed(uid: str) -> Actor:
    """The person ``uid``, Refused (403) if opslab.accounts refuses their account (locked,
    expired, a system account): checked at every login and at every page a session shows,
    so a locked account's session ends with the lock."""
    reason = account_refusal(uid)
    if reason:
        raise Refused(403, f"the account of {uid} may not be used: {reason}")
    return Actor(_kind(uid), uid)


def account_refusal(uid: str) -> str | None:
    """Why the directory's account ``uid`` may not be used (opslab.accounts: locked,
    expired, a system account; or no entry at all), or None when it may."""
    directory = context.directory()
    [found] = directory.writer().search([Search(directory.person_dn(uid), "(objectClass=*)",
                                              list(accounts.ATTRIBUTES), scope="base")])
    return accounts.refusal(uid, found[0], context.config().accounts) if found else "no entry"


def _kind(uid: str) -> str:
    """``bot`` for a bot account, else ``person``: decided once, at authentication, so no
    check can forget it."""
    return "bot" if uid in context.config().api.bot_accounts else "person"


def person(actor: Actor | None) -> str:
    """The directory DN of a person actor; Refused for anonymous callers, hosts and bots."""
    if actor is None:
        raise Refused(401, "authentication required")
    if actor.kind == "bot":
        raise Refused(403, f"{actor.name} is a bot account: it may only relay Server Admin "
                           "Log entries from chat (POST /v1/log/chat with a nick)")
    if actor.kind != "person":
        raise Refused(403, "a host token may only read its own host and report its own runs")
    return context.directory().person_dn(actor.name)


def bot(actor: Actor | None) -> str:
    """The name of a bot account, the one actor that may relay Server Admin Log entries on
    behalf of a chat nick; Refused for everyone else (a person logs as themselves)."""
    if actor is None:
        raise Refused(401, "authentication required")
    if actor.kind != "bot":
        raise Refused(403, "only a bot account (api.bot_accounts) may log on behalf of a "
                           "nick; log as yourself without one")
    return actor.name


def may_read_host(actor: Actor | None, host: str) -> None:
    """Refused unless ``actor`` is a person, or ``host``'s own token."""
    if actor is not None and actor.kind == "host":
        if actor.name != host:
            raise Refused(403, f"this token belongs to {actor.name}, not {host}")
        return
    person(actor)


class Standing(NamedTuple):
    """What the directory says of a project and of people in it.

    Membership is decided by the server's own equality rule for DNs (a
    ``member`` value written as ``UID=Carol, ou=People,...`` is carol), never
    by comparing strings here.
    """

    exists: bool
    is_global: bool
    members: int  # how many member values the project has
    member: bool  # the person asked about is a member
    owner: bool
    operator: bool  # the person is a member of the operations project
    other_member: bool  # the other person asked about (see standing()) is a member
    other_owner: bool


def standing(project: str, dn: str | None = None, other: str | None = None) -> Standing:
    """``project`` and the standing in it of the person ``dn`` and of ``other`` (DNs), asked
    of the server in one round trip."""
    config = context.config()

    def project_with(attribute: str, who: str | None, name: str = project) -> Search:
        # A person not asked about is matched against no DN at all: no hit.
        test = fill_filter(f"({attribute}=%s)", who) if who else "(!(objectClass=*))"
        return Search(config.projects_base_dn,
                      f"(&(objectClass=groupOfNames){fill_filter('(cn=%s)', name)}{test})",
                      ["cn"], optional_base=True)

    found = context.directory().writer().search([
        Search(config.projects_base_dn,
               f"(&(objectClass=groupOfNames){fill_filter('(cn=%s)', project)})",
               ["opslabGlobal", "member"], optional_base=True),
        project_with("member", dn), project_with("owner", dn),
        project_with("member", dn, config.api.operations_project),
        project_with("member", other), project_with("owner", other),
    ])
    entry = found[0][0] if found[0] else None
    return Standing(
        exists=entry is not None,
        is_global=entry is not None and is_global(entry.values("opslabGlobal")),
        members=len(entry.values("member")) if entry is not None else 0,
        member=bool(found[1]), owner=bool(found[2]), operator=bool(found[3]),
        other_member=bool(found[4]), other_owner=bool(found[5]))


def is_operator(dn: str) -> bool:
    """True if ``dn`` is a member of the operations project."""
    return standing(context.config().api.operations_project, dn).operator


def project_membership(project: str) -> None:
    """Refused (404) unless ``project`` is a project."""
    _existing(project, standing(_valid(project)))


def _valid(project: str) -> str:
    try:
        return validate_project_name(project)
    except InvalidName:
        raise Refused(404, f"no project {project[:70]!r}") from None


def _existing(project: str, found: Standing) -> Standing:
    if not found.exists:
        raise Refused(404, f"no project {project!r}")
    return found


def may_change_project(actor: Actor | None, project: str | None) -> Standing | None:
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
    found = _existing(project, standing(_valid(project), dn))
    if found.operator:
        return found
    if found.is_global:
        raise Refused(403, f"project {project!r} is global: only operations may change it")
    if not found.member:
        raise Refused(403, f"{actor.name if actor else ''} is not a member of project "
                           f"{project!r}")
    return found


def may_add_member(actor: Actor | None, project: str, new: str, owner: bool) -> Standing:
    """Refused unless ``actor`` may add ``new`` (a DN) as a member (members may) or an owner
    (owners may); in a global project only operations may."""
    dn = person(actor)
    found = _existing(project, standing(_valid(project), dn, new))
    if found.is_global and not found.operator:
        raise Refused(403, f"project {project!r} is global: only operations may change it")
    if not (found.member or found.operator):
        raise Refused(403, f"{actor.name if actor else ''} is not a member of project "
                           f"{project!r}")
    if owner and not (found.owner or found.operator):
        raise Refused(403, f"only owners of {project!r} may add owners")
    return found


def may_remove_member(actor: Actor | None, project: str, gone: str) -> Standing:
    """Refused unless ``actor`` may take the person ``gone`` (a DN) out of ``project``.

    Anyone may leave; owners and operations may remove others; in a global
    project only operations may change membership at all.
    """
    dn = person(actor)
    found = _existing(project, standing(_valid(project), dn, gone))
    if found.is_global and not found.operator:
        raise Refused(403, f"project {project!r} is global: only operations may change it")
    if not found.other_member:
        raise Refused(404, f"{_uid(gone)!r} is not a member of project {project!r}")
    if not (dn == gone or found.owner or found.operator):
        raise Refused(403, f"only owners of {project!r} may remove other members")
    return found


def _uid(dn: str) -> str:
    return dn.partition(",")[0].partition("=")[2]


def must_be_host(actor: Actor | None, host: str, what: str) -> Actor:
    """Refused unless ``actor`` is ``host``'s own token; ``what`` says what only it may do."""
    if actor is None or actor.kind != "host":
        raise Refused(401 if actor is None else 403, f"only a host's own token may {what}")
    if actor.name != host:
        raise Refused(403, f"this token belongs to {actor.name}, not {host}")
    return actor

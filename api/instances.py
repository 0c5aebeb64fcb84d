"""Instances of hosts: launched when a host is created with one, deleted before its host.

A launch runs inside the request that creates the host, so that a launch
that fails leaves nothing behind (no server, no entry, no token) and says
why. In order:

1. the image and flavor (the request's, else the project's defaults, else
   ``instances.image`` and ``instances.flavor``) and the project's quota
   (instances, cores, RAM);
2. a row in ``instances`` (state ``building``) records the launch before
   the cloud is asked, so a quota is counted by both of two launches at
   once, and an API killed mid-launch leaves a row the reaper explains;
3. the provider creates the server with the host's user-data and waits up
   to ``instances.launch_timeout`` for it to be active (an error, with the
   cloud's fault, is final);
4. the host entry gets the server's addresses (``aRecord``: its A and PTR
   records in PowerDNS's strict mode) and an alias entry names it by its
   id (``i-0000012a.PROJECT.DOMAIN``, a CNAME), with their audit record;
5. the project's Server Admin Log says who launched what.

Any failure after 2 deletes the server (waiting until it is gone) and the
row; the caller then removes the host. Deleting a host deletes its server
first; a cloud that cannot be reached leaves the host as it is (503).
"""

import logging
from typing import Any

import ldap
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opslab.config import InstanceSettings
from opslab.instances.provider import (
    ACTIVE,
    BUILDING,
    ERROR,
    Launch,
    Provider,
    ProviderError,
    ProviderUnavailable,
    Server,
)
from opslab.instances.userdata import Settings, render
from opslab.names import InvalidName, instance_alias

from . import context
from .audit import recorded_write
from .auth import Actor, is_operator, may_change_project, person, project_membership
from .contract import Body
from .errors import Invalid, NotConfigured, Refused
from .store import Change, Instance, LogEntry, ProjectInstanceDefaults, ProjectQuota

log = logging.getLogger(__name__)


def launch(actor: Actor | None, host: dict[str, Any], incarnation: str, token: str,
           request: dict[str, Any]) -> None:
    """Launch the instance of the new ``host`` (created by ``actor``, not yet answered
    for). On failure nothing of the launch is left, and the error says
    why: the caller deletes the host."""
    settings = context.config().instances
    own = _defaults(host["project"])
    image, _ = _chosen("image", request, own, settings.image, host["project"])
    flavor, origin = _chosen("flavor", request, own, settings.flavor, host["project"])
    cloud = context.provider()
    try:
        cores, ram_mb = cloud.flavor(flavor)
    except ProviderUnavailable:
        raise
    except ProviderError as error:
        # A default is not in the request: say whose it is, so the caller knows what to mend.
        raise Invalid(f"instance.flavor: {error}"
                      + (f" ({origin})" if origin else "")) from None
    user_data = _user_data(host["name"], token, settings)
    row = Instance(host=host["name"], incarnation=incarnation, project=host["project"],
                   provider=settings.provider, state=BUILDING, image=image, flavor=flavor,
                   cores=cores, ram_mb=ram_mb, addresses=[])
    _reserve(row)
    server: Server | None = None
    named = False
    try:
        server = cloud.create(Launch(host["name"], host["project"], image, flavor, user_data,
                                     settings.installation))
        _update(host["name"], server_id=server.id)
        server = cloud.wait(server.id, settings.launch_timeout)
        fresh_deadline()
        if server.state == ERROR:
            raise ProviderError(f"the cloud put {host['name']} in ERROR: "
                                f"{server.fault or 'no fault given'}")
        _name_in_dns(actor, host, server, image, flavor)
        named = True
        _update(host["name"], state=ACTIVE, addresses=server.addresses)
    except BaseException:
        fresh_deadline()
        _undo(actor, cloud, host, server, named, settings)
        raise
    _say(actor, host["project"], f"launched {host['name']} ({server.id}, image {image}, "
                                 f"flavor {flavor}) at {', '.join(server.addresses)}")


def _chosen(what: str, request: dict[str, Any], own: dict[str, str | None],
            configured: str | None, project: str) -> tuple[str, str | None]:
    """The image or flavor (``what``) of a launch: the request's, else the project's
    default (``own``), else the configuration's; with whose it is when not the request's.
    Invalid naming all three places when none has one."""
    if request.get(what):
        return request[what], None
    default = own[what]
    if default:
        return default, f"project {project}'s default {what}"
    if configured:
        return configured, f"instances.{what}"
    raise Invalid(f"instance.{what}: none given, project {project!r} has no default {what} "
                  f"(PUT /v1/projects/{project}/instance-defaults), and instances.{what} "
                  "is not set")


def fresh_deadline() -> None:
    """A new overall deadline for the directory after waiting on the cloud: a launch or a
    deletion takes longer than ``ldap.deadline`` allows one request's directory work."""
    context.directory().begin_request()


def destroy(actor: Actor | None, host: dict[str, Any]) -> None:
    """Delete ``host``'s server, if it has one, and wait until it is gone; then its alias
    and its row. ProviderUnavailable leaves everything as it was."""
    with context.session() as session:
        row = session.get(Instance, host["name"])
    if row is None:
        return
    settings = context.config().instances
    if row.server_id is not None:
        context.provider().delete(row.server_id, settings.delete_timeout)
        fresh_deadline()
        forget_alias(actor, host, row.server_id)
    with context.session() as session:
        found = session.get(Instance, host["name"])
        if found is not None:
            session.delete(found)
            session.commit()
    _say(actor, host["project"], f"deleted the instance of {host['name']}"
                                 + (f" ({row.server_id})" if row.server_id else ""))


def view(host: str, incarnation: str | None) -> dict[str, Any] | None:
    """What the host's instance is (in this incarnation of its name): state, the cloud's
    fault, size, addresses."""
    with context.session() as session:
        row = session.get(Instance, host)
    if row is None or row.incarnation != incarnation:
        return None
    return {"provider": row.provider, "server_id": row.server_id, "state": row.state,
            "fault": row.fault, "image": row.image, "flavor": row.flavor,
            "cores": row.cores, "ram_mb": row.ram_mb, "addresses": row.addresses or [],
            "created_at": row.created_at.isoformat()}


def quota(project: str) -> dict[str, Any]:
    """The project's limits (null: none) and what it uses."""
    with context.session() as session:
        limits = session.get(ProjectQuota, project)
        used = session.execute(
            select(func.count(), func.coalesce(func.sum(Instance.cores), 0),
                   func.coalesce(func.sum(Instance.ram_mb), 0))
            .where(Instance.project == project)).one()
    return {"instances": limits.instances if limits else None,
            "cores": limits.cores if limits else None,
            "ram_mb": limits.ram_mb if limits else None,
            "used": {"instances": int(used[0] or 0), "cores": int(used[1] or 0),
                     "ram_mb": int(used[2] or 0)}}


def set_quota(actor: Actor | None, project: str, read_body: Body) -> dict[str, Any]:
    """Set the project's limits (operations only; a null limit is none), with its audit
    record."""
    if not is_operator(person(actor)):
        raise Refused(403, "only operations set quotas")
    project_membership(project)
    limits = read_body()
    before = quota(project)
    with context.session() as session:
        row = session.get(ProjectQuota, project) or ProjectQuota(project=project)
        row.instances, row.cores, row.ram_mb = (limits.get("instances"), limits.get("cores"),
                                                limits.get("ram_mb"))
        session.add(row)
        session.add(Change(actor=str(actor), action="project.quota", target=project,
                           project=project, before=_limits(before), after=dict(limits)))
        _commit_project_row(session, f"the quota of project {project!r}")
    return quota(project)


def defaults(actor: Actor | None, project: str) -> dict[str, str | None]:
    """The project's default image and flavor (null: none, the configuration's applies);
    every person may read them."""
    person(actor)
    project_membership(project)
    return _defaults(project)


def set_defaults(actor: Actor | None, project: str, read_body: Body) -> dict[str, str | None]:
    """Set the project's default image and flavor (whoever may change the project may), with
    its audit record in the same transaction: both are stored, or neither.

    Whether the cloud has them is not asked here: images come and go, and the provider
    says so at each launch, which a missing one refuses with nothing left behind.
    """
    may_change_project(actor, project)
    chosen = read_body()
    with context.session() as session:
        row = (session.get(ProjectInstanceDefaults, project)
               or ProjectInstanceDefaults(project=project))
        before = _as_defaults(row)
        row.image, row.flavor = chosen["image"], chosen["flavor"]
        session.add(row)
        session.add(Change(actor=str(actor), action="project.instance_defaults",
                           target=project, project=project, before=before,
                           after=_as_defaults(row)))
        _commit_project_row(session, f"the instance defaults of project {project!r}")
    return _as_defaults(row)


def _commit_project_row(session: Session, what: str) -> None:
    """Commit a project's row and its audit record; two first writes at once collide on the
    project's key, and the later is told to send again (409), not a 500."""
    try:
        session.commit()
    except IntegrityError:
        raise Refused(409, f"{what} was set by another request at the same time; send "
                           "yours again") from None


def _defaults(project: str) -> dict[str, str | None]:
    with context.session() as session:
        row = session.get(ProjectInstanceDefaults, project)
    return _as_defaults(row or ProjectInstanceDefaults(project=project))


def _as_defaults(row: ProjectInstanceDefaults) -> dict[str, str | None]:
    return {"image": row.image, "flavor": row.flavor}


def _limits(document: dict[str, Any]) -> dict[str, Any]:
    return {key: document[key] for key in ("instances", "cores", "ram_mb")}


def _reserve(row: Instance) -> None:
    """Record the launch, then refuse it (and forget it) if the project is over its quota
    counting it: of two launches at once, neither can slip past the other."""
    with context.session() as session:
        session.merge(row)
        session.commit()
    usage = quota(row.project)
    over = [f"{what}: {usage['used'][what]} of {usage[what]}"
            for what in ("instances", "cores", "ram_mb")
            if usage[what] is not None and usage["used"][what] > usage[what]]
    if over:
        forget(row.host)
        raise Refused(403, f"project {row.project!r} would be over its quota with this "
                           f"instance ({'; '.join(over)}); operations set quotas")


def _update(host: str, **values: Any) -> None:
    with context.session() as session:
        row = session.get(Instance, host)
        if row is not None:
            for name, value in values.items():
                setattr(row, name, value)
            session.commit()


def forget(host: str) -> None:
    """Forget the host's instance row (its server is deleted, or never was)."""
    with context.session() as session:
        row = session.get(Instance, host)
        if row is not None:
            session.delete(row)
            session.commit()


def mark_gone(host: str) -> None:
    """The host's server is gone from the cloud (found by the reaper): its instance is in
    error, for people to decide; the host is kept."""
    _update(host, state=ERROR, fault="the server is gone from the cloud (found by the reaper)")


def _undo(actor: Actor | None, cloud: Provider, host: dict[str, Any], server: Server | None,
          named: bool, settings: InstanceSettings) -> None:
    """Delete what a failed launch made. A server that cannot be deleted now is left
    unclaimed (its row goes): the reaper deletes it as an orphan."""
    if server is not None:
        try:
            cloud.delete(server.id, settings.delete_timeout)
        except ProviderError as error:
            log.error("the server %s of a failed launch of %s could not be deleted (%s); the "
                      "reaper will delete it", server.id, host["name"], error)
        fresh_deadline()
        if named:
            forget_alias(actor, host, server.id)
    forget(host["name"])


def _user_data(certname: str, token: str, settings: InstanceSettings) -> str:
    config = context.config()
    if not settings.bootstrap_url or not settings.package:
        raise NotConfigured("instances are not launched until instances.bootstrap_url and "
                            "instances.package are set")
    try:
        return render(Settings(
            bootstrap_url=settings.bootstrap_url, package=settings.package,
            api_url=settings.api_url or config.api.public_url,
            ldap_uri=settings.ldap_uri or config.ldap.uri, ldap_base=config.ldap.base,
            remote=settings.remote or config.branches.remote or "",
            certname=certname, host_token=token,
            bootstrap_options=settings.bootstrap_options), settings.cloud_config_file)
    except ValueError as error:
        raise NotConfigured(f"the instances' user-data cannot be made: {error}") from None


def _alias(host: dict[str, Any], server_id: str) -> tuple[str, str] | None:
    """(DN, name) of the alias entry that names the instance by its id; None without
    ``api.dns_base``."""
    config = context.config()
    if not config.api.dns_base or not config.api.domain:
        return None
    try:
        name = instance_alias(server_id, host["project"], config.api.domain)
    except InvalidName:
        return None
    return context.directory().dns_dn(name), name


def _name_in_dns(actor: Actor | None, host: dict[str, Any], server: Server, image: str,
                 flavor: str) -> None:
    """The host entry's addresses, and the alias entry, with their audit record (which
    says what was launched: the server, its image and flavor)."""
    directory = context.directory()
    dn = directory.host_dn(host["name"])
    alias = _alias(host, server.id)

    def write() -> None:
        # aRecord holds IPv4 addresses only (an A record); IPv6 would need dnsdomain2's
        # aAAARecord, which an entry made as a dNSDomain cannot take.
        ipv4 = [address for address in server.addresses if ":" not in address]
        directory.writer().modify(dn, [(ldap.MOD_REPLACE, "aRecord", ipv4 or None)])
        if alias is not None:
            directory.add(alias[0], _alias_entry(alias[1], host["name"]))

    def undo() -> None:
        if alias is not None:
            directory.delete(alias[0])
        directory.writer().modify(dn, [(ldap.MOD_REPLACE, "aRecord", None)])

    with context.session() as session:
        change = Change(actor=str(actor), action="instance.launch", target=host["name"],
                        project=host["project"], before=None,
                        after={"server_id": server.id, "image": image, "flavor": flavor,
                               "addresses": server.addresses,
                               "alias": alias[1] if alias else None})
        recorded_write(session, change, write=write, undo=undo)


def forget_alias(actor: Actor | None, host: dict[str, Any], server_id: str) -> None:
    """Remove the alias entry of ``host``'s server ``server_id``, if there is one."""
    alias = _alias(host, server_id)
    if alias is None or context.directory().read(alias[0], ["dc"]) is None:
        return
    directory = context.directory()
    with context.session() as session:
        change = Change(actor=str(actor), action="instance.delete", target=host["name"],
                        project=host["project"], before={"alias": alias[1]}, after=None)
        recorded_write(session, change, write=lambda: directory.delete(alias[0]),
                       undo=lambda: directory.add(alias[0], _alias_entry(alias[1], host["name"])))


def _alias_entry(alias: str, target: str) -> dict[str, list[str]]:
    """The entry PowerDNS's LDAP backend serves as the CNAME ``alias`` -> ``target``."""
    return {"objectClass": ["dNSDomain", "domainRelatedObject"], "dc": [alias],
            "associatedDomain": [alias], "cNAMERecord": [target]}


def _say(actor: Actor | None, project: str, message: str) -> None:
    """A line in the project's Server Admin Log: the instance documents itself. A line
    that cannot be written is logged; the change it tells of stands (the audit log has
    it)."""
    try:
        with context.session() as session:
            session.add(LogEntry(project=project, author=actor.name if actor else "opslab",
                                 message=message))
            session.commit()
    except Exception:
        log.exception("the Server Admin Log line %r of project %s could not be written",
                      message, project)

"""Hosts: the host document, its directory entry, the rules, and the writes with
their audit records (create, change, delete) that every front end calls.

JSON in, JSON out::

    {"name": "web2.web.example.org", "project": "web",
     "classes": ["role::web"], "class_parameters": {"motd": {"message": "hi"}},
     "variables": {"cluster": "eqiad"}, "branch": null, "addresses": ["192.0.2.12"]}

The OpenAPI schema (``HostCreate``, ``HostChanges``) checks the shape, the
names Puppet accepts and the values LDAP can hold; this module adds what a
schema cannot say: the git rules for branches, the size of a class
parameter's JSON, the host's namespace (``NAME.PROJECT.DOMAIN``) and that a
new host takes over no existing entry.

A host's project follows the one rule of ``opslab.names.host_project``: its
``opslabProject``, else the second label of its name when such a project
exists, exactly as the ENC classifies it.
"""

import json
import secrets
from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from opslab.directory import Search, attribute_values, fill_filter
from opslab.enc.classifier import Classifier
from opslab.names import (
    InvalidName,
    host_certname,
    host_project,
    project_label,
    validate_branch,
    validate_certname,
)

from . import context, history, instances
from .audit import recorded_write
from .auth import Actor, may_change_project, may_read_host
from .contract import Body
from .directory import Attributes, escape
from .errors import Invalid, NotConfigured, Refused
from .store import Change, HostToken, new_incarnation, token_digest

EDITABLE = ("classes", "class_parameters", "variables", "branch", "addresses")
MAX_VALUE = 4096
OBJECT_CLASSES = ["dNSDomain", "domainRelatedObject", "puppetClient", "opslabNode"]


def changes(body: dict[str, Any]) -> dict[str, Any]:
    """The editable fields of a schema-valid host (or project) body, checked further."""
    host = {key: body[key] for key in EDITABLE if key in body}
    if host.get("branch") is not None:
        try:
            validate_branch(host["branch"])
        except InvalidName as error:
            raise Invalid(f"branch: {error}") from None
    for class_name, parameters in host.get("class_parameters", {}).items():
        for name, value in parameters.items():
            if len(json.dumps(value)) > MAX_VALUE:
                raise Invalid(f"class_parameters.{class_name}.{name} is larger than "
                              f"{MAX_VALUE} bytes as JSON")
    return host


def new_host(body: dict[str, Any], project: str) -> dict[str, Any]:
    """The host a schema-valid creation body asks for in ``project``, named in its namespace."""
    domain = context.config().api.domain
    if not domain:
        raise NotConfigured("the API creates no hosts until api.domain is set "
                            "(hosts are named NAME.PROJECT.DOMAIN)")
    try:
        name = host_certname(body["name"], project, domain)
    except InvalidName as error:
        raise Invalid(f"name: {error}") from None
    return {"name": name, "project": project, **changes(body)}


def claims(name: str) -> list[str]:
    """Why an entry of ``name``'s own would take over an existing entry (empty: it would not)."""
    classifier = Classifier(context.reader(), context.config())
    return [f"{entry.dn} ({reason})" for reason, entry in classifier.claims(name)]


def to_entry(host: dict[str, Any]) -> Attributes:
    """The directory attributes of a complete host document."""
    return {
        "objectClass": OBJECT_CLASSES,
        "dc": [host["name"]],
        "associatedDomain": [host["name"]],
        "opslabProject": [host["project"]],
        "puppetClass": list(host.get("classes", [])),
        "puppetVar": [f"{k}={v}" for k, v in host.get("variables", {}).items()],
        "opslabClassParameter": [
            f"{class_name}::{name}={json.dumps(value, separators=(',', ':'))}"
            for class_name, parameters in host.get("class_parameters", {}).items()
            for name, value in parameters.items()
        ],
        "environment": [host["branch"]] if host.get("branch") else [],
        "aRecord": list(host.get("addresses", [])),
    }


# The attributes a change through the API writes; everything else on an entry
# (written by hand, or by other tools) is left as it is.
EDITED_ATTRIBUTES = ("puppetClass", "puppetVar", "opslabClassParameter", "environment",
                     "aRecord")


def changed_entry(before: Attributes, host: dict[str, Any]) -> Attributes:
    """``before`` with the Puppet settings and addresses of the document ``host``.

    An entry written for Puppet's old terminus (a ``device``) gains the
    auxiliary class ``opslabNode`` when it gets class parameters; it cannot
    hold addresses (``aRecord`` belongs to ``dNSDomain``).
    """
    edited = {name.lower() for name in EDITED_ATTRIBUTES}
    written = to_entry(host)
    after = {**{key: values for key, values in before.items() if key.lower() not in edited},
             **{name: written[name] for name in EDITED_ATTRIBUTES}}
    classes = {value.lower() for value in attribute_values(before, "objectClass")}
    if written["aRecord"] and "dnsdomain" not in classes:
        raise Invalid("addresses: this entry (written for Puppet's old terminus) cannot hold "
                      "addresses")
    if written["opslabClassParameter"] and "opslabnode" not in classes:
        key = next((k for k in before if k.lower() == "objectclass"), "objectClass")
        after[key] = [*before.get(key, []), "opslabNode"]
    return after


def entry_name(entry: Attributes) -> str:
    """The name of a host entry (entries written for Puppet's old terminus have only cn)."""
    return (attribute_values(entry, "associatedDomain") or attribute_values(entry, "dc")
            or attribute_values(entry, "cn") or [""])[0]


def from_entry(entry: Attributes) -> dict[str, Any]:
    """The Puppet settings of a host (or project) entry; ``project`` is its opslabProject."""
    def values(name: str) -> list[str]:
        return attribute_values(entry, name)

    class_parameters: dict[str, dict[str, Any]] = {}
    for assignment in values("opslabClassParameter"):
        target, _, encoded = assignment.partition("=")
        class_name, _, name = target.rpartition("::")
        try:
            value = json.loads(encoded)
        except ValueError:
            value = encoded  # written by hand; the ENC reports it, the view shows it as text
        class_parameters.setdefault(class_name, {})[name] = value
    variables = dict(value.partition("=")[::2] for value in values("puppetVar"))
    return {
        "name": entry_name(entry),
        "project": next(iter(values("opslabProject")), None),
        "classes": values("puppetClass"),
        "class_parameters": class_parameters,
        "variables": variables,
        "branch": next(iter(values("environment")), None),
        "addresses": values("aRecord"),
    }


def documents(entries: list[Attributes]) -> list[dict[str, Any]]:
    """The host documents of ``entries``, each with its project by the one rule."""
    hosts = [from_entry(entry) for entry in entries]
    for host, project in zip(hosts, projects_of([(host["project"], str(host["name"]))
                                                 for host in hosts]), strict=True):
        host["project"] = project
    return hosts


def projects_of(hosts: list[tuple[str | None, str]]) -> list[str | None]:
    """The project of each host given as (its opslabProject, its name), by the one rule
    (:func:`opslab.names.host_project`); the projects guessed from names are checked to
    exist in one search."""
    decided = [host_project(named, name) for named, name in hosts]
    existing = _existing_projects({project for project, named in decided
                                   if project is not None and not named})
    return [project if named or project in existing else None for project, named in decided]


def _existing_projects(names: set[str]) -> set[str]:
    if not names:
        return set()
    wanted = "".join(f"(cn={escape(name)})" for name in sorted(names))
    found = context.directory().search(context.config().projects_base_dn,
                                       f"(&(objectClass=groupOfNames)(|{wanted}))")
    return {value.lower() for _, entry in found for value in attribute_values(entry, "cn")}


def named_into(project: str) -> list[str]:
    """Hosts that name no project and whose names put them in ``project`` once it exists."""
    guessed = f"*.{escape(project)}.*"
    found = context.directory().search(
        context.config().hosts_base_dn,
        f"(&(objectClass=puppetClient)(!(opslabProject=*))"
        f"(|(associatedDomain={guessed})(cn={guessed})))")
    names = (str(from_entry(entry)["name"]) for _, entry in found)
    return sorted(name for name in names if project_label(name) == project)


def existing(fqdn: str) -> tuple[str, Attributes, dict[str, Any]]:
    """(DN, attributes, document) of the host ``fqdn``; Refused (404) if there is none.

    Found as the ENC finds a node by its own name (``enc.node_filter``: by
    ``cn`` or ``associatedDomain``), so entries written for Puppet's old
    terminus (``cn=NAME``) are hosts here too.
    """
    try:
        name = validate_certname(fqdn)
    except InvalidName as error:
        raise Refused(404, f"no host {fqdn[:100]!r}: {error}") from None
    config = context.config()
    found = context.directory().search(config.hosts_base_dn,
                                       fill_filter(config.enc.node_filter, name))
    if not found:
        raise Refused(404, f"no host {fqdn!r}")
    if len(found) > 1:
        raise Refused(409, f"{fqdn} matches {len(found)} entries: "
                           + "; ".join(dn for dn, _ in found[:5]))
    dn, entry = found[0]
    return dn, entry, documents([entry])[0]


QUERY_FILTERS = ("project", "class", "var", "failing")


class Filters(NamedTuple):
    """A host query's filters (see :func:`query`)."""

    projects: list[str]
    classes: list[str]
    variables: list[str]
    failing: bool | None


def parse_filters(given: Mapping[str, list[str]]) -> Filters:
    """The filters of a host query from a request's parameters (each with its values):
    ``project``, ``class``, ``var`` (``NAME=VALUE``), ``failing`` (``true`` or
    ``false``, once); Invalid for anything else, saying what was wrong."""
    unknown = sorted(set(given) - set(QUERY_FILTERS))
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(name[:40] for name in unknown)} "
                      f"(allowed: {', '.join(QUERY_FILTERS)})")
    variables = list(given.get("var", []))
    for assignment in variables:
        if "=" not in assignment:
            raise Invalid(f"var must be NAME=VALUE, got {assignment[:100]!r}")
    failing = given.get("failing", [])
    if len(failing) > 1 or (failing and failing[0] not in ("true", "false")):
        raise Invalid(f"failing must be given once, as true or false, got "
                      f"{', '.join(repr(value[:100]) for value in failing)}")
    return Filters(list(given.get("project", [])), list(given.get("class", [])), variables,
                   failing[0] == "true" if failing else None)


def query(projects: list[str], classes: list[str], variables: list[str],
          failing: bool | None = None) -> list[dict[str, Any]]:
    """Hosts in every one of ``projects`` with all ``classes`` and ``NAME=VALUE`` variables,
    and, unless ``failing`` is None, failing or not (as the host view says).

    The directory narrows by attribute (values escaped, so matched literally);
    the project of each host found is then decided by the one rule.
    """
    parts = ["(objectClass=puppetClient)"]
    for project in projects:
        guessed = f"*.{escape(project)}.*"
        # opslabProject matches without case (its syntax is caseIgnore).
        parts.append(f"(|(opslabProject={escape(project)})(&(!(opslabProject=*))"
                     f"(|(associatedDomain={guessed})(cn={guessed}))))")
    parts += [f"(puppetClass={escape(name)})" for name in classes]
    parts += [f"(puppetVar={escape(assignment)})" for assignment in variables]
    found = context.directory().search(context.config().hosts_base_dn, f"(&{''.join(parts)})")
    hosts = sorted((host for host in documents([entry for _, entry in found])
                    if all(host["project"] == p for p in projects)),
                   key=lambda host: str(host["name"]))
    if failing is None:
        return hosts
    failing_names = history.failing_hosts([str(host["name"]) for host in hosts])
    return [host for host in hosts if (host["name"] in failing_names) == failing]


# What the one project rule reads of a host entry: its name (entry_name) and opslabProject.
_PROJECT_ATTRIBUTES = ["associatedDomain", "dc", "cn", "opslabProject"]


def counts_by_project() -> Counter[str]:
    """How many hosts each project has, by the one project rule (the list of projects).

    One search reading only what the rule needs: a site's every host, with all
    its classes and parameters parsed, would take seconds.
    """
    [found] = context.directory().writer().search([Search(
        context.config().hosts_base_dn, "(objectClass=puppetClient)", _PROJECT_ATTRIBUTES,
        scope="one", optional_base=True)])
    hosts = [(next(iter(attribute_values(entry.attributes, "opslabProject")), None),
              entry_name(entry.attributes)) for entry in found]
    return Counter(project for project in projects_of(hosts) if project is not None)


def view(actor: Actor | None, fqdn: str) -> dict[str, Any]:
    """The host as the directory has it, with what its agent last said, its last run, its
    latest smoke results, whether it is failing, and its instance."""
    _, _, host = existing(fqdn)
    may_read_host(actor, host["name"])
    incarnation = history.current_incarnation(host["name"])
    last_run = history.latest_report(host["name"], incarnation)
    smoke = history.latest_smoke(host["name"], incarnation)
    return {**host, "agent": history.agent_state(host["name"], incarnation),
            "last_run": last_run, "smoke": smoke,
            "failing": history.host_failing(last_run, smoke),
            "instance": instances.view(host["name"], incarnation)}


def create(actor: Actor | None, project: str, body: Body) -> tuple[dict[str, Any], str]:
    """Create the host ``body`` asks for in ``project``, and launch its instance if it asks
    for one: (its document, its token). The token is given this once; the store keeps
    only its digest. A launch that fails takes the host away again."""
    may_change_project(actor, project)
    document = body()
    host = new_host(document, project)
    taken = claims(host["name"])
    if taken:
        raise Refused(409, f"{host['name']} would take over existing entries: "
                           + "; ".join(taken[:5]))
    directory = context.directory()
    dn = directory.host_dn(host["name"])
    entry = to_entry(host)
    token = secrets.token_urlsafe(32)
    incarnation = new_incarnation()

    def token_row(rows: Session) -> None:
        # merge: a token left behind by an entry deleted by hand is replaced.
        rows.merge(HostToken(host=host["name"], project=project, digest=token_digest(token),
                             incarnation=incarnation))

    with context.session() as session:
        change = Change(actor=str(actor), action="host.create", target=host["name"],
                        project=project, before=None, after=from_entry(entry))
        # Two requests creating one name: the directory takes one entry, and the
        # other request's write is a conflict (409) before any token is stored.
        recorded_write(session, change, write=lambda: directory.add(dn, entry),
                       undo=lambda: directory.delete(dn), rows=token_row)
    created = from_entry(entry)
    if document.get("instance") is not None:
        try:
            instances.launch(actor, created, incarnation, token, document["instance"])
        except BaseException:
            _remove(actor, dn, entry, created)
            raise
        return view(actor, host["name"]), token
    return created, token


def update(actor: Actor | None, fqdn: str, body: Body) -> dict[str, Any]:
    """Change a host's classes, class parameters, variables, branch or addresses."""
    dn, before_entry, before = existing(fqdn)
    may_change_project(actor, before["project"])
    after = {**before, **changes(body())}
    after_entry = changed_entry(before_entry, after)
    directory = context.directory()
    with context.session() as session:
        change = Change(actor=str(actor), action="host.update", target=before["name"],
                        project=before["project"], before=before, after=after)
        recorded_write(session, change,
                       write=lambda: directory.replace(dn, before_entry, after_entry),
                       undo=lambda: directory.replace(dn, after_entry, before_entry))
    return after


def delete(actor: Actor | None, fqdn: str) -> None:
    """Delete a host: its instance first (a cloud that cannot be reached leaves the host
    as it is), then its entry and token; its agent state, smoke results and reports are
    retired."""
    dn, before_entry, before = existing(fqdn)
    may_change_project(actor, before["project"])
    instances.destroy(actor, before)
    _remove(actor, dn, before_entry, before)


def discard(actor: Actor, fqdn: str) -> None:
    """Remove a host whose launch was abandoned (the reaper's: no access check); its
    instance must be dealt with first."""
    dn, before_entry, before = existing(fqdn)
    _remove(actor, dn, before_entry, before)


def _remove(actor: Actor | None, dn: str, before_entry: Attributes,
            before: dict[str, Any]) -> None:
    directory = context.directory()
    with context.session() as session:
        change = Change(actor=str(actor), action="host.delete", target=before["name"],
                        project=before["project"], before=before, after=None)
        recorded_write(session, change, write=lambda: directory.delete(dn),
                       undo=lambda: directory.add(dn, before_entry),
                       rows=lambda rows: history.retire(rows, before["name"]))

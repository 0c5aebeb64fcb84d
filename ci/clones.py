"""The throwaway clone of the infrastructure a change is tested on.

Which hosts: the hosts of the projects that follow the change's target branch
(``ci.clone_projects`` names them per branch; without an entry for the branch, the
projects whose branch it is), narrowed to the hosts whose classes belong to the modules
the change touches when it touches only modules, at most ``ci.max_hosts`` of them (the
rest listed as left out). A host's modules are its classes' first name segments: a role
that includes another module's classes is not seen through, so a change to such a module
clones the hosts that name its classes, not those that only include them; when no host
names one, every host following the branch is cloned.

Each clone is a host of the API in ``ci.clone_project``, made by the CI's account through
the same rules as anyone's, with an instance, and classified like its original: the
classes with their parameters and the variables the ENC gives the original (project-wide
and inherited values included), on the target branch. Its name says which run it belongs
to (``c42p3x1f2e-web1``): the reaper deletes any clone older than ``ci.run_timeout``, so
a run killed without its clean-up leaves nothing for long.
"""

import ipaddress
import json
import time
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import quote

from opslab.apiclient import ApiRefused, ApiUnavailable, Client, document
from opslab.config import CiSettings
from opslab.names import RESERVED_VARIABLES

# A clone's label: c<change>p<patch set>x<run token>-<original's label>, within DNS's 63.
_LABEL_LIMIT = 63


class CloneError(Exception):
    """The clone could not be made or used: an infrastructure failure, never the change's."""


class Original(NamedTuple):
    """A host to clone, as its classification stands."""

    name: str
    project: str
    classes: dict[str, dict[str, Any]]  # class -> its parameters
    variables: dict[str, Any]


class Clone(NamedTuple):
    """A clone made for ``original``: its certname and its instance's address."""

    original: str
    name: str
    address: str


class Plan(NamedTuple):
    """The hosts to clone, in name order, and those left out past the maximum."""

    hosts: list[Original]
    left_out: list[str]


def _json(client: Client, method: str, path: str, body: Any = None) -> Any:
    try:
        answer = client.request(method, path, body)
    except ApiUnavailable as error:
        raise CloneError(f"the API did not answer {method} {path}: {error}") from None
    except ApiRefused as error:
        raise CloneError(f"the API refused {method} {path}: {error}") from None
    return document(answer.body) if answer.body else None


def following_projects(client: Client, ci: CiSettings, branch: str) -> list[str]:
    """The projects whose hosts a change to ``branch`` clones."""
    named = sorted({entry.partition(":")[2] for entry in ci.clone_projects
                    if entry.partition(":")[0] == branch})
    if named:
        return named
    projects = _json(client, "GET", "/v1/projects") or []
    return sorted(item["name"] for item in projects
                  if item.get("branch") == branch and item["name"] != ci.clone_project)


def module_of(class_name: str) -> str:
    """The module a Puppet class lives in: ``profile::web`` is in ``profile``."""
    return class_name.lstrip(":").partition("::")[0]


def plan(client: Client, ci: CiSettings, branch: str, modules: set[str] | None) -> Plan:
    """What to clone for a change to ``branch`` touching ``modules`` (None: anything).

    When no host names a class of those modules, every host following the branch is
    cloned: the modules may be used through a role, which the names do not show.
    """
    following: list[Original] = []
    for project in following_projects(client, ci, branch):
        for host in _json(client, "GET", f"/v1/hosts?project={quote(project)}") or []:
            # A host whose own branch is another one does not follow this branch.
            if host.get("branch") in (None, branch):
                following.append(classified(client, host["name"], project))
    chosen = [original for original in following if modules is None
              or modules & {module_of(name) for name in original.classes}] or following
    chosen.sort(key=lambda item: item.name)
    return Plan(chosen[:ci.max_hosts], [item.name for item in chosen[ci.max_hosts:]])


def classified(client: Client, name: str, project: str) -> Original:
    """``name`` as the ENC classifies it: classes with parameters, and variables."""
    found = _json(client, "GET", f"/v1/nodes/{quote(name)}")
    if not isinstance(found, dict):
        raise CloneError(f"the API gave no classification for {name}")
    classes = found.get("classes") or {}
    if isinstance(classes, list):
        classes = {item: {} for item in classes}
    variables = {key: value for key, value in (found.get("parameters") or {}).items()
                 if key not in RESERVED_VARIABLES}
    return Original(name, project, {key: dict(value or {}) for key, value in classes.items()},
                    variables)


def clone_label(change: int, patchset: int, token: str, original: str) -> str:
    """The label of ``original``'s clone for one run: unique per run, readable, valid."""
    prefix = f"c{change}p{patchset}x{token}-"
    label = original.partition(".")[0]
    return (prefix + label)[:_LABEL_LIMIT].rstrip("-")


def create(client: Client, ci: CiSettings, original: Original, label: str,
           branch: str) -> Clone:
    """Make ``original``'s clone on ``branch``, with its instance (launched by the API)."""
    variables = {key: value if isinstance(value, str) else _text(value)
                 for key, value in original.variables.items()}
    body = {"name": label, "classes": sorted(original.classes),
            "class_parameters": {name: params for name, params in original.classes.items()
                                 if params},
            "variables": variables, "branch": branch, "instance": {}}
    answer = _json(client, "POST", f"/v1/projects/{quote(ci.clone_project)}/hosts", body)
    host = (answer or {}).get("host") or {}
    addresses = (host.get("instance") or {}).get("addresses") or []
    if not host.get("name") or not addresses:
        raise CloneError(f"the clone of {original.name} was made without an address")
    return Clone(original.name, host["name"], _ipv4_first(addresses))


def _text(value: Any) -> str:
    # A variable the ENC gives as a structure is kept as its JSON text: hosts' variables
    # are strings.
    return json.dumps(value, sort_keys=True)


def _ipv4_first(addresses: Iterable[str]) -> str:
    """The clone's address to reach it by, IPv4 first; only addresses, since it becomes an
    argument of ssh (never an option or a host alias)."""
    found = []
    for address in addresses:
        try:
            found.append(ipaddress.ip_address(address))
        except ValueError:
            raise CloneError(f"the API gave the clone an address that is not one: "
                             f"{address[:60]!r}") from None
    return str(sorted(found, key=lambda address: address.version)[0])


def first_report(client: Client, clone: Clone, deadline: float, poll: float = 2.0) -> dict[
        str, Any]:
    """The clone's first run report (the target branch applied by its agent), waited for
    until ``deadline`` (monotonic), in the words of ``opslab branch apply``'s result."""
    while True:
        reports = _json(client, "GET", f"/v1/hosts/{quote(clone.name)}/reports") or []
        if reports:
            stored = reports[0]
            return {"success": stored.get("status") in ("changed", "unchanged"),
                    "status": stored.get("status"), "meaning": stored.get("status"),
                    "commit": stored.get("commit"), "duration": stored.get("duration"),
                    "failed_resources": stored.get("failures") or [],
                    "errors": stored.get("errors") or []}
        if time.monotonic() + poll > deadline:
            raise CloneError(f"{clone.name} (the clone of {clone.original}) did not report "
                             "its first Puppet run in time")
        time.sleep(poll)


def set_branch(client: Client, clone: Clone, branch: str) -> None:
    """Point the clone at ``branch``: its classification's environment follows."""
    _json(client, "PATCH", f"/v1/hosts/{quote(clone.name)}", {"branch": branch})


def delete(client: Client, name: str) -> None:
    """Delete a clone (its instance with it); one already gone is not an error."""
    try:
        client.request("DELETE", f"/v1/hosts/{quote(name)}")
    except ApiRefused as error:
        if error.status != 404:
            raise CloneError(f"the API refused to delete {name}: {error}") from None
    except ApiUnavailable as error:
        raise CloneError(f"the API did not answer deleting {name}: {error}") from None

"""Hosts by class for monitoring: Prometheus service discovery from the directory.

A community's monitoring follows the Puppet classes of its hosts: every host
with ``role::web`` gets its web checks, every host with ``prometheus::node_exporter``
is scraped on port 9100. :func:`file_sd` gives the groups Prometheus reads from a
``file_sd_configs`` file, and takes over HTTP (``http_sd_configs``), which reads
the same format: a list of ``{"targets": ["HOST:PORT", ...], "labels": {...}}``.

There is one group per class and project, labelled ``opslab_class`` and
``opslab_project`` (a host without a project has no ``opslab_project``). A host
with several of the classes asked for is in the group of each. The hosts are those
:func:`opslab.api.hosts.query` finds, the query ``GET /v1/hosts`` answers.
"""

import re
from typing import Any

from . import hosts
from .errors import Invalid

# Prometheus' rule for label names; every name below obeys it, and the test checks.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
CLASS_LABEL = "opslab_class"
PROJECT_LABEL = "opslab_project"
MAX_CLASSES = 50


def port_number(text: str) -> int:
    """The ``port`` parameter as a TCP port; Invalid, saying why, otherwise."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535):
        raise Invalid(f"port must be a TCP port number, 1 to 65535, got {text[:20]!r}")
    return int(text)


def file_sd(classes: list[str], projects: list[str], port: int) -> list[dict[str, Any]]:
    """The Prometheus target groups of the hosts with each of ``classes`` (in every one of
    ``projects``, when given), each host as ``NAME:port``; sorted, so that an unchanged
    directory gives the same document (a file_sd file rewritten only when it changes)."""
    if not classes:
        raise Invalid("class: give at least one Puppet class (class=role::web); each "
                      "becomes a group of targets")
    if len(classes) > MAX_CLASSES:
        raise Invalid(f"class: at most {MAX_CLASSES} classes in one request")
    if "" in classes or "" in projects:
        raise Invalid("class and project may not be empty")
    groups: dict[tuple[str, str | None], list[str]] = {}
    for name in sorted(set(classes)):
        for host in hosts.query(projects, [name], []):
            if not host["name"]:
                continue  # an entry written by hand without a name: nothing to scrape
            groups.setdefault((name, host["project"]), []).append(f"{host['name']}:{port}")
    return [{"targets": sorted(targets),
             "labels": {CLASS_LABEL: name, **({PROJECT_LABEL: project} if project else {})}}
            for (name, project), targets in sorted(groups.items(),
                                                   key=lambda item: (item[0][0],
                                                                     item[0][1] or ""))]

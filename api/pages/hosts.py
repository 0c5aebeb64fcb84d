"""Hosts on the pages: a project's host table, each host's page, and the members' forms.

Reading goes through the modules the JSON API's handlers call
(:mod:`opslab.api.hosts`, :mod:`opslab.api.history`,
:mod:`opslab.api.instances`, :mod:`opslab.api.targets`); every write goes
through :func:`opslab.api.hosts.create`, ``update`` and ``delete`` with a
body built from the form and checked against the same OpenAPI schema the
JSON route checks, so the rules, validation and audit are the API's.
"""

from typing import Any

from flask import g, render_template
from sqlalchemy import and_, select

from .. import context, history
from .. import hosts as host_rules
from ..auth import person
from ..store import AgentState, HostToken, Instance, SmokeResult
from . import blueprint


def project_hosts(project: str) -> list[dict[str, Any]]:
    """Each host of ``project`` for its table: name, classes, instance state, address,
    last run, smoke status and agent state (the caller checks the reader is a person).

    One directory search for the hosts, one SQL query for all their last runs and one
    for their agents, smoke results and instances, each of the current incarnation.
    """
    found = host_rules.query([project], [], [])
    names = [str(host["name"]) for host in found]
    last_runs = {report["host"]: report for report in history.latest_per_host(names)}
    current = _current_rows(names)
    hosts = []
    for host in found:
        agent, smoke, instance = current.get(host["name"], (None, None, None))
        addresses = (instance.addresses if instance is not None and instance.addresses
                     else host["addresses"])
        last_run = last_runs.get(host["name"])
        hosts.append({
            "name": host["name"],
            "classes": host["classes"],
            "state": instance.state if instance is not None else None,
            "address": addresses[0] if addresses else None,
            "last_run": last_run,
            "smoke": history.smoke_json(smoke.summary, smoke.received_at)
            if smoke is not None else None,
            "agent": history.state_json(agent) if agent is not None else None,
            "failing": history.host_failing(last_run, smoke.summary if smoke else None),
        })
    return hosts


def _current_rows(names: list[str]) -> dict[str, tuple[Any, Any, Any]]:
    """(agent state, smoke results, instance) of each of ``names`` in its current
    incarnation (its token's), in one query; a host without a token has none."""
    if not names:
        return {}
    with context.session() as session:
        rows = session.execute(
            select(HostToken.host, AgentState, SmokeResult, Instance)
            .outerjoin(AgentState, and_(AgentState.host == HostToken.host,
                                        AgentState.incarnation == HostToken.incarnation))
            .outerjoin(SmokeResult, and_(SmokeResult.host == HostToken.host,
                                         SmokeResult.incarnation == HostToken.incarnation))
            .outerjoin(Instance, and_(Instance.host == HostToken.host,
                                      Instance.incarnation == HostToken.incarnation))
            .where(HostToken.host.in_(names))).all()
        session.expunge_all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


@blueprint.get("/hosts/<fqdn>")
def host(fqdn: str) -> Any:
    return render_template("host.html", host=host_rules.view(g.actor, fqdn),
                           reader=person(g.actor))

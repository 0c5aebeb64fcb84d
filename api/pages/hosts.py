"""Hosts on the pages: a project's host table, each host's page, and the members' forms.

Reading goes through the modules the JSON API's handlers call
(:mod:`opslab.api.hosts`, :mod:`opslab.api.history`,
:mod:`opslab.api.instances`, :mod:`opslab.api.targets`). Every write goes
through :func:`opslab.api.hosts.create`, ``update`` or ``delete``, the
functions the JSON routes call, with a ``read_body`` built from the form and
checked as the JSON route checks its body (:func:`opslab.api.contract.body_for`:
the same JSON parsing and the same operation's schema in ``api/openapi.yaml``), so the
rules, the validation, the refusals' words and the audit records are the
API's. A form changing one class parameter or variable reads the host when
the change is made (inside ``read_body``, after the access check), so a
change someone else made since the page was shown is kept.
"""

import json
import re
from collections.abc import Callable
from typing import Any

import ldap.dn
from flask import current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import and_, select

from .. import context, history, instances, targets
from .. import hosts as host_rules
from ..auth import may_change_project, person
from ..contract import body_for, parse_json
from ..errors import Invalid, Refused
from ..failures import HANDLED, answer
from ..store import AgentState, HostToken, Instance, SmokeResult
from .blueprint import blueprint

RUNS_SHOWN = 10  # the host page's last runs, newest first
# The JSON routes whose bodies the forms build: their schemas check the forms' too.
CREATE_ROUTE = ("/v1/projects/<project>/hosts", "POST")
CHANGE_ROUTE = ("/v1/hosts/<fqdn>", "PATCH")
# Classes typed in one field: one per line, or separated by spaces or commas.
_SEPARATORS = re.compile(r"[\s,]+")


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


# Reading a host.

def _explained(fqdn: str) -> tuple[dict[str, Any] | None, str | None]:
    """(what ``opslab-enc --explain`` says of ``fqdn``, as the page shows it; None and the
    API's reason when the node cannot be classified)."""
    try:
        found = targets.classification(g.actor, fqdn)
    except Refused as refused:
        return None, refused.reason
    roles = {dn.lower(): role for role, dn in found.layers}

    def source(dn: str) -> dict[str, str]:
        role = roles.get(dn.lower(), "entry")
        # Parents are told apart by name; the project says which it is.
        named = role in ("parent", "project")
        return {"role": role, "dn": dn, "label": f"{role} {_first_value(dn)}" if named else role}

    def values(named: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": name, "value": _shown(value.value), "source": source(value.origin)}
                for name, value in named.items()]

    return {
        "layers": [{"role": role, "dn": dn} for role, dn in found.layers],
        "environment": found.environment, "branch": found.branch,
        "branch_source": source(found.environment_origin)
        if found.environment_origin else None,
        "classes": [{"name": name, "sources": [source(dn) for dn in origins],
                     "parameters": values(found.class_parameters.get(name, {}))}
                    for name, origins in found.classes.items()],
        "variables": values(found.parameters),
        "overridden": [{"name": name, "value": _shown(loser.value),
                        "source": source(loser.origin), "winner": source(winner)}
                       for name, loser, winner in found.overridden],
        "unused": [{"name": f"{class_name}::{name}", "value": _shown(value.value),
                    "source": source(value.origin)}
                   for class_name, parameters in found.unused_class_parameters.items()
                   for name, value in parameters.items()],
        "warnings": found.warnings,
    }, None


def _first_value(dn: str) -> str:
    """The value of a DN's first RDN (``web`` of ``cn=web,ou=projects,...``)."""
    try:
        return str(ldap.dn.str2dn(dn)[0][0][1])
    except (ldap.DECODING_ERROR, IndexError):
        return dn


def _shown(value: Any) -> str:
    """A value as JSON, as the API stores and serves it: ``"80"`` is text, ``80`` a number."""
    return json.dumps(value, ensure_ascii=False)


def _why_not(project: str | None) -> str | None:
    """Why the reader may not change ``project``'s hosts (the API's rule and words), or None
    when they may: the page then offers its forms."""
    try:
        may_change_project(g.actor, project)
    except Refused as refused:
        return refused.reason
    return None


def _host_page(fqdn: str, refusal: str | None = None, status: int = 200,
               form: str | None = None) -> Any:
    """The host's page; with the refusal of a form (named ``form``) and its status."""
    host = host_rules.view(g.actor, fqdn)
    incarnation = history.current_incarnation(str(host["name"]))
    explained, unclassified = _explained(str(host["name"]))
    return render_template(
        "host.html", host=host, explained=explained, unclassified=unclassified,
        runs=history.reports(str(host["name"]), incarnation, limit=RUNS_SHOWN),
        not_allowed=_why_not(host["project"]), refusal=refusal, refused_form=form,
        project_url=_project_page(host["project"]),
        typed=request.form if refusal else {}, shown=_shown), status


@blueprint.get("/hosts/<fqdn>")
def host(fqdn: str) -> Any:
    return _host_page(fqdn)


# Changing a host: each form is one PATCH of the JSON API, through the same function.

def _change(fqdn: str, form: str, what: str,
            build: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Change the host with the body ``build`` makes from the host as it is when the
    change is made; then back to its page, saying ``what`` was done (Post/Redirect/Get),
    or its page with the API's refusal, nothing changed."""
    person(g.actor)

    def read_body() -> dict[str, Any]:
        _, _, current = host_rules.existing(fqdn)
        return body_for(*CHANGE_ROUTE, build(current))

    try:
        changed = host_rules.update(g.actor, fqdn, read_body)
    except HANDLED as failure:
        status, message = answer(failure)
        return _host_page(fqdn, refusal=message, status=status, form=form)
    flash(what, "info")
    return redirect(url_for("pages.host", fqdn=changed["name"], _anchor=form), 303)


def _field(name: str) -> str:
    return request.form.get(name, "").strip()


@blueprint.post("/hosts/<fqdn>/classes")
def host_classes(fqdn: str) -> Any:
    classes = [name for name in _SEPARATORS.split(request.form.get("classes", "")) if name]
    return _change(fqdn, "classes", "The classes are saved.",
                   lambda current: {"classes": classes})


@blueprint.post("/hosts/<fqdn>/class-parameter")
def host_class_parameter(fqdn: str) -> Any:
    class_name, name = _field("class"), _field("parameter")
    if request.form.get("action") == "remove":
        def removed(current: dict[str, Any]) -> dict[str, Any]:
            parameters = {cls: dict(values) for cls, values in
                          current["class_parameters"].items()}
            if name not in parameters.get(class_name, {}):
                raise Refused(404, f"{current['name']} has no class parameter "
                                   f"{class_name}::{name}")
            del parameters[class_name][name]
            if not parameters[class_name]:
                del parameters[class_name]
            return {"class_parameters": parameters}

        return _change(fqdn, "class-parameters",
                       f"The class parameter {class_name}::{name} is removed.", removed)

    def set_one(current: dict[str, Any]) -> dict[str, Any]:
        parameters = {cls: dict(values) for cls, values in current["class_parameters"].items()}
        parameters.setdefault(class_name, {})[name] = _typed_value(class_name, name)
        return {"class_parameters": parameters}

    return _change(fqdn, "class-parameters", f"The class parameter {class_name}::{name} "
                                             "is set.", set_one)


def _typed_value(class_name: str, name: str) -> Any:
    """The form's value: its text, or the JSON value it writes when the person says so
    (read as the API reads a JSON body)."""
    text = request.form.get("value", "")
    if request.form.get("kind") != "json":
        return text
    try:
        return parse_json(text.encode())
    except Invalid as error:
        raise Invalid(f"class_parameters.{class_name}.{name}: {error} (the value was "
                      "to be read as JSON; choose text for a plain text)") from None


@blueprint.post("/hosts/<fqdn>/variable")
def host_variable(fqdn: str) -> Any:
    name = _field("name")
    if request.form.get("action") == "remove":
        def removed(current: dict[str, Any]) -> dict[str, Any]:
            if name not in current["variables"]:
                raise Refused(404, f"{current['name']} has no variable {name}")
            return {"variables": {key: value for key, value in current["variables"].items()
                                  if key != name}}

        return _change(fqdn, "variables", f"The variable {name} is removed.", removed)
    value = request.form.get("value", "")
    return _change(fqdn, "variables", f"The variable {name} is set.",
                   lambda current: {"variables": {**current["variables"], name: value}})


@blueprint.post("/hosts/<fqdn>/branch")
def host_branch(fqdn: str) -> Any:
    # An empty field is no branch of its own: the host follows its project's.
    branch = _field("branch") or None
    return _change(fqdn, "branch", f"The branch is {branch}." if branch
                   else "The host follows its project's branch.",
                   lambda current: {"branch": branch})


@blueprint.route("/hosts/<fqdn>/delete", methods=["GET", "POST"])
def host_delete(fqdn: str) -> Any:
    """A page asking to confirm; its POST deletes the host, its instance first."""
    host = host_rules.view(g.actor, fqdn)
    if request.method == "GET":
        return render_template("host_delete.html", host=host,
                               not_allowed=_why_not(host["project"]))
    try:
        host_rules.delete(g.actor, fqdn)
    except HANDLED as failure:
        status, message = answer(failure)
        return render_template("host_delete.html", host=host, refusal=message,
                               not_allowed=_why_not(host["project"])), status
    flash(f"{host['name']} is deleted"
          + (", with its instance." if host["instance"] else "."), "info")
    return redirect(_project_page(host["project"]) or url_for("pages.projects"), 303)


def _project_page(project: str | None) -> str | None:
    """The address of ``project``'s page, if it has one."""
    if project is not None and "pages.project" in current_app.view_functions:
        return url_for("pages.project", project=project)
    return None


# Creating a host, with its instance if asked.

@blueprint.route("/projects/<project>/hosts/new", methods=["GET", "POST"])
def new_host(project: str) -> Any:
    person(g.actor)
    if request.method == "GET":
        return _new_host_form(project, {})
    document: dict[str, Any] = {
        "name": _field("name"),
        "classes": [name for name in _SEPARATORS.split(request.form.get("classes", ""))
                    if name],
    }
    if request.form.get("launch"):
        # An empty field is the project's default (or the site's): the API picks it.
        document["instance"] = {key: _field(key) for key in ("image", "flavor")
                                if _field(key)}
    try:
        created, token = host_rules.create(g.actor, project,
                                           lambda: body_for(*CREATE_ROUTE, document))
    except HANDLED as failure:
        status, message = answer(failure)
        return _new_host_form(project, request.form, message, status)
    # Not a redirect: the token is shown this once, and must not travel through a URL,
    # a cookie or a log to reach the next page. The answer is never cached.
    return render_template("new_host_created.html", host=created, token=token,
                           project=project), 201


def _new_host_form(project: str, typed: Any, refusal: str | None = None,
                   status: int = 200) -> Any:
    defaults = instances.defaults(g.actor, project)  # and a 404 for no such project
    return render_template(
        "new_host.html", project=project, typed=typed, refusal=refusal,
        not_allowed=_why_not(project), defaults=defaults, settings=context.config(),
        quota=instances.quota(project)), status

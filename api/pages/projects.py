"""The projects: the list, and each project's page with its members' forms.

Reading goes through the modules the JSON API's handlers call
(:mod:`opslab.api.projects`, :mod:`opslab.api.documents`,
:mod:`opslab.api.adminlog`, :mod:`opslab.api.audit`, :mod:`opslab.api.ciruns`;
the hosts' table is :func:`.hosts.project_hosts`). Every form is one call of
the function its JSON route calls, with a body built from the form and
checked against the same operation's schema in ``api/openapi.yaml``, so the
rules, validation and audit are the API's. A form that is refused shows the
project's page again with the API's words at the form, what was typed kept,
nothing changed; one that is taken redirects to the page (Post/Redirect/Get).
"""

import re
from collections.abc import Callable
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from .. import adminlog, audit, ciruns, documents
from .. import hosts as host_rules
from .. import projects as project_rules
from ..auth import may_add_member, may_change_project, may_remove_member, person
from ..contract import body_for
from ..errors import Refused
from ..failures import HANDLED, answer
from .blueprint import blueprint
from .format import markdown
from .hosts import project_hosts

LOG_SHOWN = 10
CHANGES_SHOWN = 10
CI_SHOWN = 10
# CI runs name the hosts they cloned, not a project: the project's are found among
# this many of the newest.
CI_SCANNED = 200
MEMBERS_LISTED = 8  # in the list of projects; the project's page shows them all

# The JSON routes whose bodies the forms stand for (OpenAPI path, method).
PROJECT_ROUTE = ("/v1/projects/{project}", "PATCH")
MEMBERS_ROUTE = ("/v1/projects/{project}/members", "POST")
LOG_ROUTE = ("/v1/projects/{project}/log", "POST")
DOCUMENTATION_ROUTE = ("/v1/projects/{project}/documentation", "PUT")

_HEADING = re.compile(r"<(/?)h([1-6])>")


@blueprint.get("/projects")
def projects() -> Any:
    person(g.actor)
    instances = host_rules.counts_by_project()
    return render_template("projects.html", projects=project_rules.overviews(),
                           instances=instances, listed=MEMBERS_LISTED)


@blueprint.get("/projects/<project>")
def project(project: str) -> Any:
    return _project_page(project)


@blueprint.before_app_request
def _documentation_body_limit() -> None:
    """A whole documentation may be larger than api.max_body allows other forms. Set before
    the pages' CSRF check reads the form (app-wide hooks run before the blueprint's)."""
    if request.endpoint == "pages.project_documentation":
        request.max_content_length = request.max_form_memory_size = documents.body_limit()


@blueprint.post("/projects/<project>/documentation")
def project_documentation(project: str) -> Any:
    text = request.form.get("text", "")
    version = request.form.get("version", "")
    # At most 19 digits: a longer one is no version (and int() of thousands of digits fails).
    if not (version.isascii() and version.isdigit() and len(version) <= 19):
        # Only a form not made by this page lacks it.
        return _project_page(project, "the form does not say which version it was made from",
                             422, "documentation", {"text": text})

    def read_body() -> dict[str, Any]:
        return body_for(*DOCUMENTATION_ROUTE, {"text": text, "version": int(version)})

    try:
        documents.update(g.actor, project, read_body)
    except HANDLED as failure:
        status, message = answer(failure)
        # After a conflict the form is made from the current version, shown beside it:
        # saving again is then a choice made having seen the other edit.
        kept = {"text": text, "conflict": True} if status == 409 else \
            {"text": text, "version": version}
        return _project_page(project, message, status, "documentation", kept)
    return _done(project, "documentation", "The documentation is saved.")


@blueprint.post("/projects/<project>/members")
def project_member_add(project: str) -> Any:
    uid = request.form.get("uid", "").strip()
    owner = request.form.get("owner") == "yes"
    try:
        body = body_for(*MEMBERS_ROUTE, {"uid": uid, "owner": owner})
        project_rules.add_member(g.actor, project, body["uid"], body["owner"])
    except HANDLED as failure:
        return _refused(project, failure, "members", {"uid": uid, "owner": owner})
    return _done(project, "members", f"{uid} is now {'an owner' if owner else 'a member'} "
                                      f"of {project}.")


@blueprint.post("/projects/<project>/members/remove")
def project_member_remove(project: str) -> Any:
    uid = request.form.get("uid", "")
    try:
        project_rules.remove_member(g.actor, project, uid)
    except HANDLED as failure:
        return _refused(project, failure, "members", {})
    if g.actor is not None and uid == g.actor.name:
        flash(f"You have left {project}.", "info")
        return redirect(url_for("pages.projects"), 303)
    return _done(project, "members", f"{uid} is no longer a member of {project}.")


@blueprint.post("/projects/<project>/branch")
def project_branch(project: str) -> Any:
    branch = request.form.get("branch", "").strip()

    def read_body() -> dict[str, Any]:
        # An empty field is no branch of the project's own: its hosts follow production.
        return body_for(*PROJECT_ROUTE, {"branch": branch or None})

    try:
        changed = project_rules.update(g.actor, project, read_body)
    except HANDLED as failure:
        return _refused(project, failure, "branch", {"branch": branch})
    return _done(project, "branch", f"The hosts of {project} now follow the branch "
                                    f"{changed['branch']}.")


@blueprint.post("/projects/<project>/log")
def project_log_line(project: str) -> Any:
    message = request.form.get("message", "")
    try:
        body = body_for(*LOG_ROUTE, {"message": message})
        adminlog.record(g.actor, project, body["message"].strip())
    except HANDLED as failure:
        return _refused(project, failure, "log", {"message": message})
    return _done(project, "log", "Logged.")


def _done(project: str, form: str, message: str) -> Any:
    flash(message, "info")
    return redirect(url_for("pages.project", project=project, _anchor=form), 303)


def _refused(project: str, failure: Exception, form: str, kept: dict[str, Any]) -> Any:
    status, message = answer(failure)
    return _project_page(project, message, status, form, kept)


def _project_page(project: str, refusal: str | None = None, status: int = 200,
                  form: str | None = None, kept: dict[str, Any] | None = None) -> Any:
    """The project's page; with the refusal of the form named ``form``, its status, and
    what was typed in it (``kept``)."""
    person(g.actor)
    shown = project_rules.document(project_rules.read(project))
    documentation = documents.read(g.actor, project)
    hosts = project_hosts(project)
    return render_template(
        "project.html", project=shown, documentation=documentation,
        documentation_html=_under_h2(markdown(documentation["text"])),
        hosts=hosts, log=adminlog.entries(project, LOG_SHOWN),
        changes=audit.recent({"project": project}, CHANGES_SHOWN),
        runs=_ci_runs({str(host["name"]) for host in hosts}),
        may=_may(project), refusal=refusal, refused_form=form, kept=kept or {}), status


def _may(project: str) -> dict[str, bool]:
    """Which forms to show the reader, asked of the API's own rules (which refuse anyway,
    whatever is shown)."""
    dn = person(g.actor)

    def allowed(check: Callable[[], object]) -> bool:
        try:
            check()
        except Refused:
            return False
        return True

    add_owners = allowed(lambda: may_add_member(g.actor, project, dn, True))
    return {"change": allowed(lambda: may_change_project(g.actor, project)),
            "add_members": allowed(lambda: may_add_member(g.actor, project, dn, False)),
            "add_owners": add_owners,
            # Removing others takes the standing adding owners takes: an owner, or operations
            # (only operations in a global project).
            "remove_others": add_owners,
            "leave": allowed(lambda: may_remove_member(g.actor, project, dn))}


def _ci_runs(names: set[str]) -> list[Any]:
    """The newest runs that tested (or left out) one of the hosts ``names``."""
    runs = ciruns.recent(g.actor, {}, CI_SCANNED)
    return [run for run in runs
            if names & ({host["original"] for host in run.hosts} | set(run.left_out or ()))
            ][:CI_SHOWN]


def _under_h2(html: Markup) -> Markup:
    """The documentation's headings moved down to start at h3, keeping their order: the
    page has one h1, and the documentation sits under an h2."""
    levels = [int(level) for _, level in _HEADING.findall(html)]
    if not levels:
        return html
    shift = 3 - min(levels)
    # Safe: only the names of tags nh3 already kept are changed.
    return Markup(_HEADING.sub(  # noqa: S704
        lambda tag: f"<{tag[1]}h{min(int(tag[2]) + shift, 6)}>", html))

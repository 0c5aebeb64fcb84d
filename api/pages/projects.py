"""The projects: the list, and each project's page."""

from typing import Any

from flask import g, render_template

from .. import projects as project_rules
from ..auth import person
from . import blueprint


@blueprint.get("/projects")
def projects() -> Any:
    person(g.actor)
    return render_template("projects.html", projects=project_rules.all_summaries())

"""The host query: hosts by project, class and variable, as a table, JSON or CSV.

The hosts are those :func:`opslab.api.hosts.query` finds, the function ``GET
/v1/hosts`` calls with the same filters; ``?format=json`` answers exactly that
route's document. The CSV is for spreadsheets, so no cell may start a formula.
"""

import csv
import io
from typing import Any

from flask import Response, g, jsonify, render_template, request

from .. import hosts
from ..auth import person
from ..errors import Invalid
from .blueprint import blueprint

FILTERS = ("project", "class", "var", "failing")
FORMATS = ("html", "json", "csv")
CSV_COLUMNS = ("name", "project", "classes", "variables", "branch", "addresses")
# A spreadsheet reads a cell starting with one of these as a formula (and tab and carriage
# return can hide one): such a cell gets a leading apostrophe, which shows it as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _given(name: str) -> list[str]:
    """The values of the filter ``name``; an empty field (a form left blank) is none."""
    return [value for value in request.args.getlist(name) if value.strip()]


def _failing() -> bool | None:
    given = _given("failing")
    if not given:
        return None
    if len(given) > 1 or given[0] not in ("true", "false"):
        raise Invalid("failing must be given once, as true or false")
    return given[0] == "true"


@blueprint.get("/query")
def query() -> Any:
    person(g.actor)
    unknown = sorted(set(request.args) - {*FILTERS, "format"})
    if unknown:
        raise Invalid(f"unknown filters: {', '.join(name[:40] for name in unknown)} "
                      f"(allowed: {', '.join(FILTERS)})")
    answer = request.args.get("format") or "html"
    if answer not in FORMATS:
        raise Invalid(f"format must be one of {', '.join(FORMATS)}")
    projects, classes, variables = _given("project"), _given("class"), _given("var")
    for assignment in variables:
        if "=" not in assignment:
            raise Invalid(f"var must be NAME=VALUE, got {assignment[:100]!r}")
    failing = _failing()
    found = hosts.query(projects, classes, variables, failing)
    if answer == "json":
        return jsonify(found)
    if answer == "csv":
        return Response(as_csv(found), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="hosts.csv"'})
    asked = {name: _given(name) for name in FILTERS if _given(name)}
    return render_template("query.html", hosts=found, asked=asked, projects=projects,
                           classes=classes, variables=variables, failing=failing)


def as_csv(found: list[dict[str, Any]]) -> str:
    """The hosts as CSV, a row each: lists joined by spaces, variables as NAME=VALUE."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for host in found:
        writer.writerow([inert(cell) for cell in (
            host["name"], host["project"] or "", " ".join(host["classes"]),
            " ".join(f"{name}={value}" for name, value in sorted(host["variables"].items())),
            host["branch"] or "", " ".join(host["addresses"]))])
    return out.getvalue()


def inert(cell: str) -> str:
    """``cell``, that no spreadsheet takes for a formula."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell

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

FORMATS = ("html", "json", "csv")
CSV_COLUMNS = ("name", "project", "classes", "variables", "branch", "addresses")
# A spreadsheet reads a cell starting with one of these as a formula (and tab and carriage
# return can hide one): such a cell gets a leading apostrophe, which shows it as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@blueprint.get("/query")
def query() -> Any:
    person(g.actor)
    answer = request.args.get("format") or "html"
    if answer not in FORMATS:
        raise Invalid(f"format must be one of {', '.join(FORMATS)}")
    # A field of the form left blank filters nothing.
    filled = {name: [value for value in values if value.strip()]
              for name, values in request.args.to_dict(flat=False).items() if name != "format"}
    given = {name: values for name, values in filled.items() if values}
    filters = hosts.parse_filters(given)
    found = hosts.query(*filters)
    if answer == "json":
        return jsonify(found)
    if answer == "csv":
        return Response(as_csv(found), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="hosts.csv"'})
    return render_template("query.html", hosts=found, asked=given, projects=filters.projects,
                           classes=filters.classes, variables=filters.variables,
                           failing=filters.failing)


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

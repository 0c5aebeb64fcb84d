"""``GET /v1/openapi.yaml``: the API's OpenAPI document, as kept in the repository."""

from pathlib import Path
from typing import Any

from flask import Blueprint, Response

blueprint = Blueprint("document", __name__)
DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.yaml"


@blueprint.get("/openapi.yaml")
def openapi() -> Any:
    return Response(DOCUMENT.read_text(encoding="utf-8"), mimetype="application/yaml")

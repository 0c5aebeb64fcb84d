"""Reading the SQL store's logs the same way everywhere: the newest rows, and one by id."""

from typing import Any, TypeVar

from sqlalchemy import select

from . import context
from .errors import Refused
from .store import Base

Row = TypeVar("Row", bound=Base)


def newest(model: type[Row], limit: int, maximum: int, **equal: Any) -> list[Row]:
    """The newest ``limit`` rows of ``model`` (at least 1, at most ``maximum``) whose
    columns ``equal`` name have exactly those values."""
    query = select(model).order_by(model.id.desc())  # type: ignore[attr-defined]
    for name, value in equal.items():
        query = query.where(getattr(model, name) == value)
    with context.session() as session:
        return list(session.scalars(query.limit(min(max(limit, 1), maximum))).all())


def by_id(model: type[Row], row_id: int, what: str) -> Row:
    """The row ``row_id`` of ``model``; Refused (404) naming ``what`` if there is none."""
    with context.session() as session:
        found = session.get(model, row_id)
    if found is None:
        raise Refused(404, f"no {what} {row_id}")
    return found

"""Filters the templates share: times, Markdown, and text from people and instances."""

from datetime import UTC, datetime

from markupsafe import Markup, escape

from .blueprint import blueprint
from .markdown import render


@blueprint.app_template_filter("when")
def when(value: datetime | str | None) -> Markup:
    """A moment as ``<time>``, in UTC, minutes shown (the API's ISO text or a datetime)."""
    if value is None or value == "":
        return Markup("never")
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    # Both strings come from the datetime alone: nothing in them needs escaping
    # (and Markup.format was most of a long list's rendering time).
    return Markup(f'<time datetime="{moment.isoformat()}">'  # noqa: S704
                  f'{moment.strftime("%Y-%m-%d %H:%M UTC")}</time>')


@blueprint.app_template_filter("markdown")
def markdown(source: str | None) -> Markup:
    return render(source or "")


@blueprint.app_template_filter("visible")
def visible(text: object) -> Markup:
    """``text`` escaped, its control and format characters shown as ``\\x..`` (an instance's
    output, a hostile name): none can reorder what is shown (a right-to-left override)
    or move the cursor of a terminal the text is copied to."""
    value = str(text)
    if value.isprintable():  # the common case, at C speed
        return escape(value)
    return escape("".join(char if char in "\n\t" or char.isprintable() else f"\\x{ord(char):02x}"
                          for char in value))

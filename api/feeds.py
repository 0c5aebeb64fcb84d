"""Atom feeds (RFC 4287) of the audit log and the Server Admin Log, for feed readers.

Every entry's id is the URL the API serves it at, and its ``alternate``
link points there too; every time is RFC 3339 with its zone.
"""

from datetime import datetime
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

from flask import Response

EPOCH = "1970-01-01T00:00:00+00:00"


class FeedEntry(NamedTuple):
    id: str  # the entry's own URL
    title: str
    updated: datetime
    author: str
    content: str


def atom(feed_id: str, title: str, entries: list[FeedEntry]) -> Response:
    """An Atom document of ``entries`` (newest first); ``feed_id`` is the feed's own URL."""
    updated = entries[0].updated.isoformat() if entries else EPOCH
    body = "".join(
        f"<entry><id>{escape(entry.id)}</id><title>{escape(entry.title)}</title>"
        f'<link rel="alternate" type="application/json" href={quoteattr(entry.id)}/>'
        f"<updated>{entry.updated.isoformat()}</updated>"
        f"<author><name>{escape(entry.author)}</name></author>"
        f'<content type="text">{escape(entry.content)}</content></entry>'
        for entry in entries
    )
    document = ('<?xml version="1.0" encoding="utf-8"?>'
                '<feed xmlns="http://www.w3.org/2005/Atom">'
                f"<id>{escape(feed_id)}</id><title>{escape(title)}</title>"
                f'<link rel="self" href={quoteattr(feed_id)}/>'
                f"<updated>{updated}</updated>{body}</feed>")
    return Response(document, mimetype="application/atom+xml")

"""Atom feeds (RFC 4287) of the audit log and the Server Admin Log, for feed readers."""

from datetime import datetime
from typing import NamedTuple
from xml.sax.saxutils import escape

from flask import Response

EPOCH = "1970-01-01T00:00:00+00:00"


class FeedEntry(NamedTuple):
    id: str
    title: str
    updated: datetime
    author: str
    content: str


def atom(feed_id: str, title: str, entries: list[FeedEntry]) -> Response:
    """An Atom document of ``entries`` (newest first)."""
    updated = entries[0].updated.isoformat() if entries else EPOCH
    body = "".join(
        f"<entry><id>{escape(entry.id)}</id><title>{escape(entry.title)}</title>"
        f"<updated>{entry.updated.isoformat()}</updated>"
        f"<author><name>{escape(entry.author)}</name></author>"
        f'<content type="text">{escape(entry.content)}</content></entry>'
        for entry in entries
    )
    document = ('<?xml version="1.0" encoding="utf-8"?>'
                '<feed xmlns="http://www.w3.org/2005/Atom">'
                f"<id>{escape(feed_id)}</id><title>{escape(title)}</title>"
                f"<updated>{updated}</updated>{body}</feed>")
    return Response(document, mimetype="application/atom+xml")

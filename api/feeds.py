"""Atom feeds (RFC 4287) of the audit log and the Server Admin Log, for feed readers.

Every entry's id is the URL the API serves it at, and its ``alternate``
link points there too; every time is RFC 3339 with its zone.
"""

import re
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


# Characters XML 1.0 does not allow in a document at all, escaped or not. The
# API refuses them in what people write, but a feed must stay well-formed
# whatever an older row or an entry written by hand holds.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value))


def _attribute(value: str) -> str:
    return quoteattr(_NOT_XML.sub("\ufffd", value))


def atom(feed_id: str, title: str, entries: list[FeedEntry]) -> Response:
    """An Atom document of ``entries`` (newest first); ``feed_id`` is the feed's own URL."""
    updated = entries[0].updated.isoformat() if entries else EPOCH
    body = "".join(
        f"<entry><id>{_text(entry.id)}</id><title>{_text(entry.title)}</title>"
        f'<link rel="alternate" type="application/json" href={_attribute(entry.id)}/>'
        f"<updated>{entry.updated.isoformat()}</updated>"
        f"<author><name>{_text(entry.author)}</name></author>"
        f'<content type="text">{_text(entry.content)}</content></entry>'
        for entry in entries
    )
    document = ('<?xml version="1.0" encoding="utf-8"?>'
                '<feed xmlns="http://www.w3.org/2005/Atom">'
                f"<id>{_text(feed_id)}</id><title>{_text(title)}</title>"
                f'<link rel="self" href={_attribute(feed_id)}/>'
                f"<updated>{updated}</updated>{body}</feed>")
    return Response(document, mimetype="application/atom+xml")

"""Members' Markdown, rendered so that nobody can plant a script in a page.

markdown-it-py renders CommonMark with raw HTML off (a ``<script>`` in the
text stays text); nh3 (ammonia) then keeps only an allowlist of tags,
attributes and URL schemes, so even a renderer bug or a ``javascript:``
link cannot reach the browser. Links get ``rel="nofollow noopener"``.
"""

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

MAX_SOURCE = 65536  # characters: the longest documentation a project may keep

_RENDERER = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}) \
    .enable("table").enable("strikethrough")
_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
         "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "s", "strong", "sub", "sup",
         "table", "tbody", "td", "th", "thead", "tr", "ul"}
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"},
               "td": {"align"}, "th": {"align"}, "ol": {"start"}}
_SCHEMES = {"http", "https", "mailto"}
# Rendered texts kept: markdown-it takes seconds over some texts of 65,536 characters
# ("[\n" repeated), which every view of the project's page would spend again.
RENDERED_KEPT = 32


@lru_cache(maxsize=RENDERED_KEPT)
def render(source: str) -> Markup:
    """``source`` (Markdown) as safe HTML (the same text rendered once while it is among
    the RENDERED_KEPT last ones)."""
    html = _RENDERER.render(source)
    # Safe by construction: nh3 has kept only the allowlist above.
    return Markup(nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES,  # noqa: S704
                            url_schemes=_SCHEMES, link_rel="nofollow noopener noreferrer"))

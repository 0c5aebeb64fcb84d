"""What the bot reads from IRC and what it says back, cleaned of what could do harm.

Chat text may hold mIRC formatting (bold, colours, ...), CTCP quoting, other
control characters and bidirectional overrides that make a line read other
than it is. None of it belongs in the Server Admin Log, and none of it, nor a
line break (which would end the bot's line and start a command of the
sender's choosing), may reach a reply.
"""

import re

# mIRC formatting: colour (\x03 with up to two numbers), hex colour (\x04 with up to two
# RGB triples), and bold, reset, monospace, reverse, italic, strikethrough, underline.
_FORMATTING = re.compile(r"\x03(?:\d{1,2}(?:,\d{1,2})?)?"
                         r"|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"
                         r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
# Every other control character (C0, DEL, C1), line and paragraph separators,
# bidirectional embeddings, overrides and isolates, and noncharacters.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufffe\uffff]")
_BLANKS = re.compile(r"\s+")
_COMMAND = re.compile(r"!log(?:\s|$)")
ELLIPSIS = "…"


def plain(text: str) -> str:
    """``text`` without formatting codes, each other unsafe character a space, blanks
    folded to one space, stripped."""
    return _BLANKS.sub(" ", _UNSAFE.sub(" ", _FORMATTING.sub("", text))).strip()


def log_line(text: str) -> str | None:
    """The ``!log ...`` command in the channel message ``text``, made plain; None if the
    message is not one (``!logs`` is not)."""
    line = plain(text)
    return line if _COMMAND.match(line) else None


def reply(text: str, limit: int) -> str:
    """``text`` made plain and cut to at most ``limit`` bytes of UTF-8 (an ellipsis where it
    was cut), so that the server relays the whole line."""
    line = plain(text)
    if len(line.encode()) <= limit:
        return line
    room = limit - len(ELLIPSIS.encode())
    cut = line.encode()[:room].decode(errors="ignore")
    return cut + ELLIPSIS

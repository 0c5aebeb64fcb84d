"""The API's refusals, in one place: each becomes a 4xx (or 503) with ``{"error": "..."}``.

Service modules raise these; the application factory turns them into
answers. A message always says what was wrong, never holds a secret.
"""


class Invalid(ValueError):
    """A request that cannot be taken as it is; the message names the field (422)."""


class Refused(Exception):
    """A request the caller may not make, or about something that does not exist.

    ``status`` is 401, 403, 404 or 409; the message says why.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class NotConfigured(Exception):
    """The API lacks a setting this request needs (503 until an operator sets it)."""

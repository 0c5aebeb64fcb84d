"""What each failure of a request is answered with: one status and one message for the
JSON API and the pages alike.

A message says what was wrong and never holds a secret: the directory's and
the cloud's errors are worded by opslab.directory and the providers.
"""

from flask import current_app
from werkzeug.exceptions import HTTPException

from opslab.directory import DirectoryConflict, DirectoryError, DirectoryUnavailable
from opslab.instances.provider import ProviderError, ProviderUnavailable

from .audit import AuditFailed
from .errors import Invalid, NotConfigured, Refused

# Most specific first: DirectoryConflict and DirectoryUnavailable are DirectoryErrors,
# ProviderUnavailable a ProviderError.
HANDLED: tuple[type[Exception], ...] = (
    Refused, Invalid, NotConfigured, DirectoryConflict, DirectoryUnavailable, DirectoryError,
    ProviderUnavailable, ProviderError, AuditFailed, HTTPException)


def answer(error: Exception) -> tuple[int, str]:
    """The HTTP status and the message for ``error``, one of HANDLED."""
    if isinstance(error, Refused):
        return error.status, error.reason
    if isinstance(error, Invalid):
        return 422, str(error)
    if isinstance(error, NotConfigured | AuditFailed):
        return 503, str(error)
    if isinstance(error, DirectoryConflict):
        return 409, f"the directory refused the write: {error}"
    if isinstance(error, DirectoryUnavailable):
        return 503, f"the directory is unavailable: {error}"
    if isinstance(error, DirectoryError):
        return 502, f"the directory refused: {error}"
    if isinstance(error, ProviderUnavailable):
        return 503, f"the cloud is unavailable: {error}"
    if isinstance(error, ProviderError):
        return 502, f"the cloud refused: {error}"
    if isinstance(error, HTTPException):
        status = error.code or 500
        if status == 413:
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            return status, f"the body is larger than {limit} bytes"
        return status, error.description or ""
    raise TypeError(f"no answer for {type(error).__name__}")

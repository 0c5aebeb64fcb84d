"""Classification through the API (``GET /v1/nodes/CERTNAME``), for instances without LDAP.

The API answers with exactly what ``opslab-enc`` prints (the same code); the
same cache rules apply: a transport failure (no connection, no complete
answer within ``enc.api_timeout``, a 5xx) may be covered by the cache, an
answer may not. "unknown node" from the API is the directory saying so; any
other refusal is an error to fix, and so is a redirect: it is never followed
(the host token would go along to wherever it points), and never covered by
the cache, since the API did answer.

The request is the agent's (:func:`opslab.agent.client.exchange`): plain
``http.client``, ``enc.api_timeout`` for the whole request, no redirects.
"""

import http.client
import json
from urllib.parse import quote

import yaml

from opslab.agent.client import exchange, redirect_refusal
from opslab.config import EncSettings
from opslab.directory import DirectoryError, DirectoryUnavailable

from .classifier import ClassificationError, UnknownNode

USER_AGENT = "opslab-enc"


def fetch(settings: EncSettings, certname: str) -> str:
    """The YAML classification of ``certname`` from the API (``settings.api_url``)."""
    token = _token(settings.api_token_file)
    headers = {"Accept": "application/yaml", "Authorization": f"Bearer {token}",
               "User-Agent": USER_AGENT}
    try:
        status, response_headers, body = exchange(
            settings.api_url or "", "GET", f"/v1/nodes/{quote(certname)}", headers, None,
            settings.api_timeout)
    except (OSError, http.client.HTTPException) as error:
        raise DirectoryUnavailable(f"{settings.api_url}: {error or type(error).__name__}") \
            from None
    redirect = redirect_refusal(status, response_headers, "opslab-enc")
    if redirect is not None:
        raise DirectoryError(f"{settings.api_url} answered {redirect}")
    if status >= 400:
        reason = _reason(body)
        if status >= 500:
            raise DirectoryUnavailable(f"{settings.api_url}: HTTP {status}: {reason}")
        if status == 404 and reason.startswith("unknown node"):
            raise UnknownNode(f"the API says: {reason}")
        if status == 409:
            raise ClassificationError(f"the API says: {reason}")
        raise DirectoryError(f"{settings.api_url} refused (HTTP {status}): {reason}")
    try:
        text = body.decode("utf-8")
        document = yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError):
        text, document = "", None
    if (status != 200 or not text.startswith("---") or not isinstance(document, dict)
            or "classes" not in document):
        raise DirectoryError(f"{settings.api_url} answered something that is not a "
                             "classification")
    return text


def _token(path: str | None) -> str:
    if not path:
        raise DirectoryError("enc.api_url is set but enc.api_token_file is not")
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read().strip()
    except OSError as error:
        raise DirectoryError(f"cannot read enc.api_token_file {path}: {error.strerror}") from None


def _reason(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    return str(document.get("error", "")) if isinstance(document, dict) else ""

"""Classification through the API (``GET /v1/nodes/CERTNAME``), for instances without LDAP.

The API answers with exactly what ``opslab-enc`` prints (the same code); the
same cache rules apply: a transport failure (no connection, timeout, a 5xx)
may be covered by the cache, an answer may not. "unknown node" from the API
is the directory saying so; any other refusal is an error to fix.
"""

import json
import urllib.error
import urllib.request

import yaml

from opslab.config import EncSettings
from opslab.directory import DirectoryError, DirectoryUnavailable

from .classifier import ClassificationError, UnknownNode


def fetch(settings: EncSettings, certname: str) -> str:
    """The YAML classification of ``certname`` from the API (``settings.api_url``)."""
    url = (settings.api_url or "").rstrip("/")
    token = _token(settings.api_token_file)
    request = urllib.request.Request(  # noqa: S310 (the config allows http and https only)
        f"{url}/v1/nodes/{certname}",
        headers={"Accept": "application/yaml", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.api_timeout) as response:  # noqa: S310
            text: str = response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        reason = _reason(error)
        if error.code >= 500:
            raise DirectoryUnavailable(f"{settings.api_url}: HTTP {error.code}: {reason}") from None
        if error.code == 404 and reason.startswith("unknown node"):
            raise UnknownNode(f"the API says: {reason}") from None
        if error.code == 409:
            raise ClassificationError(f"the API says: {reason}") from None
        raise DirectoryError(f"{settings.api_url} refused (HTTP {error.code}): {reason}") from None
    except urllib.error.URLError as error:
        raise DirectoryUnavailable(f"{settings.api_url}: {error.reason}") from None
    except OSError as error:  # timeouts and resets while reading
        raise DirectoryUnavailable(f"{settings.api_url}: {error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        document = None
    if not text.startswith("---") or not isinstance(document, dict) or "classes" not in document:
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


def _reason(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("error", ""))
    except (ValueError, AttributeError, OSError):
        return error.reason if isinstance(error.reason, str) else ""

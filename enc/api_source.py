"""Classification through the API (``GET /v1/nodes/CERTNAME``), for instances without LDAP.

The API answers with exactly what ``opslab-enc`` prints (the same code); the
same cache rules apply: a transport failure (no connection, no complete
answer within ``enc.api_timeout``, a 5xx) may be covered by the cache, an
answer may not. "unknown node" from the API is the directory saying so; any
other refusal is an error to fix, and so is a redirect: it is never followed
(the host token would go along to wherever it points), and never covered by
the cache, since the API did answer.

The request is the one client's (:mod:`opslab.apiclient`): plain
``http.client``, ``enc.api_timeout`` for the whole request, no redirects.
"""

from urllib.parse import quote

import yaml

from opslab.apiclient import ApiRedirected, ApiRefused, ApiUnavailable, Client, TokenUnreadable
from opslab.config import EncSettings
from opslab.directory import DirectoryError, DirectoryUnavailable

from .classifier import ClassificationError, UnknownNode

USER_AGENT = "opslab-enc"


def fetch(settings: EncSettings, certname: str) -> str:
    """The YAML classification of ``certname`` from the API (``settings.api_url``)."""
    if not settings.api_token_file:
        raise DirectoryError("enc.api_url is set but enc.api_token_file is not")
    client = Client(settings.api_url or "", settings.api_token_file, settings.api_timeout,
                    USER_AGENT)
    try:
        answer = client.request("GET", f"/v1/nodes/{quote(certname)}",
                                headers={"Accept": "application/yaml"})
    except (ApiRedirected, TokenUnreadable) as error:
        raise DirectoryError(str(error)) from None
    except ApiUnavailable as error:
        raise DirectoryUnavailable(str(error)) from None
    except ApiRefused as error:
        if error.status == 404 and error.reason.startswith("unknown node"):
            raise UnknownNode(f"the API says: {error.reason}") from None
        if error.status == 409:
            raise ClassificationError(f"the API says: {error.reason}") from None
        raise DirectoryError(f"{settings.api_url} refused (HTTP {error.status}): "
                             f"{error.reason}") from None
    try:
        text = answer.body.decode("utf-8")
        document = yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError):
        text, document = "", None
    if (answer.status != 200 or not text.startswith("---") or not isinstance(document, dict)
            or "classes" not in document):
        raise DirectoryError(f"{settings.api_url} answered something that is not a "
                             "classification")
    return text

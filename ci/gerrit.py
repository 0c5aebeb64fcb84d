"""Gerrit's REST API as opslab uses it: one pygerrit2 session, and every answer and error
read the one way (contract section 3; gotchas 1 and 2).

- Always an ``HTTPBasicAuth`` with the account's HTTP password (section 3.1, Gerrit 2.14
  and later), so every request goes to ``/a/...`` and ``~/.netrc`` is never read.
- Every request carries the timeout, and nothing is retried: pygerrit2's own adapter
  would retry a read five times (a hanging Gerrit would cost six timeouts), and a review
  must not be posted twice.
- pygerrit2 strips the ``)]}'`` line only from an ``application/json`` answer and hands
  back a string otherwise: an answer that is not the JSON asked for is an error.
- Errors say what to check: the account refused (401, 403) names the settings; another
  error status is :class:`GerritRefused` with its status, for the caller to read (404 an
  unknown change, 409 a closed one); no answer in time, or none at all, says so.

The vote (ci/reporter.py), the catch-up (ci/catchup.py) and the job's check of who asked
(ci/job.py, through the reporter) speak to Gerrit through this module only.
"""

from typing import TYPE_CHECKING, Any

from opslab import files

if TYPE_CHECKING:
    from opslab.config import CiSettings

_SHOWN = 300  # characters of Gerrit's error text kept in a message


class GerritError(Exception):
    """Gerrit could not be asked or told: refused, unreachable, too slow, or unexpected."""


class GerritRefused(GerritError):
    """Gerrit answered an error status other than 401 or 403 (``status``, its ``text``)."""

    def __init__(self, status: int, text: str, where: str) -> None:
        super().__init__(f"Gerrit answered {status} {text} to {where}")
        self.status = status
        self.text = text


class GerritRest:
    """Requests to one Gerrit's REST API as ``user``."""

    def __init__(self, url: str, user: str, password: str, *, timeout: float = 30.0,
                 verify: bool | str = True) -> None:
        # Imported here: events, trigger and parameters need only the base install.
        from pygerrit2 import GerritRestAPI
        from requests.adapters import HTTPAdapter
        from requests.auth import HTTPBasicAuth

        self.url = url.rstrip("/")
        self.user = user
        self.timeout = timeout
        self.api = GerritRestAPI(self.url, auth=HTTPBasicAuth(user, password), verify=verify,
                                 adapter=HTTPAdapter(max_retries=0))

    @classmethod
    def from_settings(cls, ci: "CiSettings", purpose: str) -> "GerritRest":
        """The session ``ci`` describes (``ci.gerrit_url``, ``ci.gerrit_user`` else
        ``ci.account``, the password in ``ci.gerrit_password_file``); GerritError naming
        what is missing for ``purpose`` ("cannot vote", "no catch-up")."""
        user = ci.gerrit_user or ci.account
        missing = [name for name, value in (
            ("ci.gerrit_url", ci.gerrit_url), ("ci.gerrit_user (or ci.account)", user),
            ("ci.gerrit_password_file", ci.gerrit_password_file)) if not value]
        if missing:
            raise GerritError(f"{purpose}: {', '.join(missing)} not set")
        try:
            password = files.read_secret(ci.gerrit_password_file or "")
        except (OSError, UnicodeDecodeError) as error:
            raise GerritError(f"cannot read ci.gerrit_password_file "
                              f"{ci.gerrit_password_file}: "
                              f"{getattr(error, 'strerror', None) or 'not text'}") from None
        return cls(ci.gerrit_url or "", user or "", password, timeout=ci.request_timeout)

    def call(self, method: str, endpoint: str, shape: type, **kwargs: Any) -> Any:
        """``METHOD /a/endpoint``'s JSON answer, which must be a ``shape`` (dict or list)."""
        import requests

        where = f"{self.url}/a/{endpoint.lstrip('/').split('?')[0]}"
        try:
            answer = getattr(self.api, method)(endpoint, timeout=self.timeout, **kwargs)
        except requests.HTTPError as error:
            response = error.response
            status = response.status_code if response is not None else 0
            text = _clean(response.text if response is not None else "")[:_SHOWN].strip()
            if status in (401, 403):
                raise GerritError(
                    f"Gerrit refused the account {self.user!r} ({status} {text}) at {where}: "
                    "check ci.gerrit_user and the HTTP password in ci.gerrit_password_file"
                ) from None
            raise GerritRefused(status, text, where) from None
        except requests.Timeout:
            raise GerritError(f"Gerrit did not answer {method.upper()} {where} within "
                              f"{self.timeout:g} s") from None
        except requests.RequestException as error:
            raise GerritError(f"cannot reach Gerrit at {self.url}: "
                              f"{type(error).__name__}: {_clean(str(error))[:_SHOWN]}") from None
        if not isinstance(answer, shape):
            raise GerritError(f"the answer to {method.upper()} {where} is not Gerrit's JSON "
                              f"(a ')]}}'' line then a {shape.__name__}): {str(answer)[:120]!r}")
        return answer


def _clean(text: str) -> str:
    """One line of ``text``: control characters and runs of blanks as one space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())

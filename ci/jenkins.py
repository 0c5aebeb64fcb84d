"""Jenkins, as the CI dispatcher uses it: queue the job, follow its queue item to its build,
cancel or stop it, and ask how it went. opslab's one use of python-jenkins.

Contract (contracts/gerrit-jenkins-openstack.md) section 5, gotchas 5 to 7, and what
python-jenkins 1.8.3 does on the wire:

- ``build_job`` is ``POST /job/NAME/buildWithParameters?<urlencoded>`` with an empty
  body; only the ``Location`` header of the answer is read (``.../queue/item/N/``), and
  ``N`` is the queue item. A job in a folder is ``folder/job`` (``job/folder/job/job/``).
- python-jenkins fetches a CSRF crumb once (``GET /crumbIssuer/api/json``) and sends it
  with every later request, for ever. The crumb belongs to Jenkins' web session: after
  Jenkins restarts, every POST is refused with 403. So a POST refused with 403 is tried
  once more with a crumb fetched again (nothing was done by the refused one).
- ``cancel_queue`` swallows a 404 (the item is gone); a newer Jenkins answers 500 or 422
  when the item has already left the queue, and python-jenkins lets those through: a
  cancel then looks at the item, and stops its build if it has one.
- ``stop_build`` is answered with a 302 to the build's page, which requests follows
  with a GET; a build that has already finished is answered the same way.
- A queue item stays readable about five minutes after it leaves the queue, then 404s:
  :meth:`Jenkins.build_of` must follow it within that time.
- python-jenkins turns 401, 403 **and 500** into one ``JenkinsException`` ("Possibly
  authentication failed"), 404 into ``NotFoundException``, other errors into requests'
  ``HTTPError``, a timeout into ``TimeoutException``, and lets requests'
  ``ConnectionError`` through. Here the HTTP status is read back from the exception's
  chain and each case becomes :class:`JenkinsUnavailable` (unreachable, too slow, 5xx:
  worth trying again later) or :class:`JenkinsError` (refused: a setting to fix), with
  a message naming what to check. The API token never appears in a message.

Every request carries ``ci.jenkins_timeout`` (python-jenkins passes it to requests as
the connect and the read timeout), and nothing is retried but the one POST after a 403.
"""

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

from opslab import files
from opslab.config import CiSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a cancel waits for a queue item that has left the queue to name its build.
_STARTING_POLL = 0.2


class JenkinsError(Exception):
    """Jenkins refused: bad credentials, no such job, an answer that is not Jenkins'."""


class JenkinsUnavailable(JenkinsError):
    """Jenkins could not be reached, did not answer in time, or failed (5xx)."""


class Build(NamedTuple):
    number: int
    url: str


def _shown_url(url: str) -> str:
    """``url`` without any ``user:password@`` (never in a message)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _status(error: BaseException) -> int | None:
    """The HTTP status behind a python-jenkins or requests exception, if any: python-jenkins
    raises its own exceptions while handling requests' ``HTTPError``, so the status is
    found along the chain of causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return None


class Jenkins:
    """One Jenkins job (``job``, ``folder/job`` for a job in a folder) on one Jenkins."""

    def __init__(self, url: str, user: str | None, token: str | None, job: str,
                 timeout: float) -> None:
        # Imported here: the rest of opslab.ci needs only the base install.
        import jenkins

        if (user is None) != (token is None):
            raise JenkinsError("Jenkins needs both a user and an API token, or neither "
                               "(anonymous)")
        self.url = url.rstrip("/")
        self.shown_url = _shown_url(self.url)
        self.user = user
        self.job = job.strip("/")
        self.timeout = timeout
        self._token = token
        # retries=0 (python-jenkins' default, said here): a POST is never sent twice by
        # the HTTP layer, and a Jenkins that is down costs one timeout, not several.
        self._client = jenkins.Jenkins(self.url, username=user, password=token,
                                       timeout=timeout, retries=0)

    @classmethod
    def from_settings(cls, ci: CiSettings) -> "Jenkins":
        """The Jenkins ``ci`` describes; JenkinsError naming the setting that is missing or
        the token file that cannot be read."""
        if not ci.jenkins_url:
            raise JenkinsError("cannot queue builds: ci.jenkins_url is not set")
        if ci.jenkins_user and not ci.jenkins_token_file:
            raise JenkinsError("cannot queue builds: ci.jenkins_user is set but "
                               "ci.jenkins_token_file (the user's API token) is not")
        if ci.jenkins_token_file and not ci.jenkins_user:
            raise JenkinsError("cannot queue builds: ci.jenkins_token_file is set but "
                               "ci.jenkins_user is not")
        token = None
        if ci.jenkins_token_file:
            try:
                token = files.read_secret(ci.jenkins_token_file)
            except (OSError, UnicodeDecodeError) as error:
                raise JenkinsError(f"cannot read ci.jenkins_token_file "
                                   f"{ci.jenkins_token_file}: {error}") from None
            if not token:
                raise JenkinsError(f"ci.jenkins_token_file {ci.jenkins_token_file} is empty")
        return cls(ci.jenkins_url, ci.jenkins_user, token, ci.jenkins_job,
                   ci.jenkins_timeout)

    # -- the job -----------------------------------------------------------------------

    def check(self) -> str:
        """Who Jenkins takes us for and its version (``user on Jenkins 2.440.3 at URL``),
        for the dispatcher's log at start; JenkinsError if it refuses or is not Jenkins.

        ``get_whoami`` first: python-jenkins attaches the credentials only on the first
        request that goes through its ``jenkins_request``, and ``get_version`` (``GET /``)
        does not, so on a fresh client it would go out anonymous (gotcha 4)."""
        me = self._call("asking who we are", self._client.get_whoami)
        if not isinstance(me, dict) or not isinstance(me.get("id"), str):
            raise JenkinsError(f"{self.shown_url}/me/api/json did not answer Jenkins' JSON: "
                               "is ci.jenkins_url Jenkins' URL?")
        try:
            version = self._call("asking its version", self._client.get_version)
        except KeyError:
            raise JenkinsError(f"{self.shown_url} answered without an X-Jenkins header: is "
                               "ci.jenkins_url Jenkins' URL (not a proxy's page)?") from None
        if self.user is not None and me["id"] != self.user:
            raise JenkinsError(f"Jenkins at {self.shown_url} takes us for {me['id']!r}, not "
                               f"{self.user!r}: check ci.jenkins_user and ci.jenkins_token_file")
        return f"{me['id']} on Jenkins {version} at {self.shown_url}"

    def queue(self, parameters: dict[str, str]) -> int:
        """Queue a build of the job with ``parameters``; its queue item's number."""
        try:
            # A copy: python-jenkins adds to the dict it is given in some cases.
            number: int = self._post("queueing a build", self._client.build_job, self.job,
                                     dict(parameters))
            return number
        except JenkinsError as error:
            if _status(error) == 404:
                raise JenkinsError(f"Jenkins at {self.shown_url} has no job {self.job!r}: "
                                   "check ci.jenkins_job ('folder/job' for a job in a "
                                   "folder) and that the user may see it") from None
            if _status(error) == 400:
                raise JenkinsError(f"Jenkins at {self.shown_url} refused the parameters of "
                                   f"job {self.job!r} (HTTP 400): is it the job of "
                                   "ci/jobs/opslab-ci.xml, with its parameters?") from None
            raise

    def build_of(self, queue_id: int, deadline: float, poll: float = 1.0) -> Build | None:
        """Follow queue item ``queue_id`` until it leaves the queue: its Build, or None if it
        was cancelled. JenkinsUnavailable when it is still waiting at ``deadline`` (a
        ``time.monotonic()`` value; the last request may run ``timeout`` past it)."""
        while True:
            item = self._queue_item(queue_id)
            if item is None:
                raise JenkinsError(
                    f"queue item {queue_id} of Jenkins at {self.shown_url} is gone (404): "
                    "Jenkins forgets an item about 5 minutes after it leaves the queue, and "
                    "every item when it restarts; follow it sooner, or find its build by "
                    "its GERRIT_EVENT_HASH parameter")
            build = self._executable(item, queue_id)
            if build is not None:
                return build
            if item.get("cancelled") is True:
                return None
            now = time.monotonic()
            if now >= deadline:
                why = item.get("why")
                raise JenkinsUnavailable(
                    f"queue item {queue_id} of job {self.job!r} on {self.shown_url} has not "
                    f"started in time" + (f" (Jenkins: {why})" if isinstance(why, str) else "")
                    + ": check Jenkins' executors and its queue")
            time.sleep(max(0.0, min(poll, deadline - now)))

    def cancel(self, queue_id: int, build: Build | None) -> None:
        """Take the run out of the queue, and stop its build when it has one (``build``, or
        the one the queue item names by now). A queue item already gone or a build already
        finished is not an error."""
        refused: JenkinsError | None = None
        try:
            self._post("cancelling a queue item", self._client.cancel_queue, queue_id)
        except JenkinsUnavailable as error:
            # A newer Jenkins answers 500 when the item has already left the queue: seen
            # below. A Jenkins that is down is down.
            if _status(error) != 500:
                raise
            refused = error
        except JenkinsError as error:
            refused = error  # 422 "not cancellable" for an item that has left, or refused
        if build is None:
            build = self._started_build(queue_id, refused)
        if build is not None:
            self._stop(build)

    def build_state(self, build: Build) -> tuple[bool, str | None]:
        """(building, result) of ``build``: result None while it runs, else ``SUCCESS``,
        ``UNSTABLE``, ``FAILURE``, ``NOT_BUILT`` or ``ABORTED``."""
        try:
            info = self._call(f"reading build {build.number}", self._client.get_build_info,
                              self.job, build.number)
        except JenkinsError as error:
            if _status(error) == 404:
                raise JenkinsError(f"build {build.number} of job {self.job!r} is gone from "
                                   f"Jenkins at {self.shown_url} (discarded?)") from None
            raise
        building, result = (info.get("building"), info.get("result")) \
            if isinstance(info, dict) else (None, None)
        if not isinstance(building, bool) or not (result is None or isinstance(result, str)):
            raise JenkinsError(f"Jenkins at {self.shown_url} answered something that is not a "
                               f"build for build {build.number} of job {self.job!r}")
        return building, result

    # -- steps -------------------------------------------------------------------------

    def _queue_item(self, queue_id: int) -> dict[str, Any] | None:
        """The queue item's JSON; None when Jenkins no longer knows it (404)."""
        try:
            item = self._call(f"reading queue item {queue_id}", self._client.get_queue_item,
                              queue_id)
        except JenkinsError as error:
            if _status(error) == 404:
                return None
            raise
        if not isinstance(item, dict):
            raise JenkinsError(f"Jenkins at {self.shown_url} answered something that is not a "
                               f"queue item for item {queue_id}")
        return item

    def _executable(self, item: dict[str, Any], queue_id: int) -> Build | None:
        executable = item.get("executable")
        if executable is None:
            return None
        number = executable.get("number") if isinstance(executable, dict) else None
        url = executable.get("url") if isinstance(executable, dict) else None
        if not isinstance(number, int) or isinstance(number, bool) or not isinstance(url, str):
            raise JenkinsError(f"queue item {queue_id} of Jenkins at {self.shown_url} names a "
                               f"build that is not one: {str(executable)[:200]}")
        return Build(number, url)

    def _started_build(self, queue_id: int, refused: JenkinsError | None) -> Build | None:
        """The build queue item ``queue_id`` started, after a cancel: None when it was
        cancelled or is gone. ``refused`` is why the cancel failed, raised if the item is
        still waiting (the cancel really was refused)."""
        # Between leaving the queue and its build's creation an item names no build yet
        # (contract 5.2, "pending"): wait for it, at most one request timeout.
        give_up = time.monotonic() + self.timeout
        while True:
            item = self._queue_item(queue_id)
            if item is None:
                return None
            build = self._executable(item, queue_id)
            if build is not None or item.get("cancelled") is True:
                return build
            left = str(item.get("_class", "")).endswith("$LeftItem")
            if not left and refused is not None:
                raise refused
            if not left or time.monotonic() >= give_up:
                if left:
                    log.warning("queue item %d left the queue but named no build within "
                                "%.0f s: not stopped", queue_id, self.timeout)
                return None
            time.sleep(_STARTING_POLL)

    def _stop(self, build: Build) -> None:
        try:
            self._post(f"stopping build {build.number}", self._client.stop_build, self.job,
                       build.number)
        except JenkinsError as error:
            if _status(error) != 404:
                raise
            log.info("build %d of %s is gone: nothing to stop", build.number, self.job)

    def _post(self, doing: str, method: Callable[..., T], *args: Any) -> T:
        """A POST: refused with 403 (a crumb of a session Jenkins has forgotten, after a
        restart), it is made once more with a crumb fetched again."""
        try:
            return self._call(doing, method, *args)
        except JenkinsError as error:
            if _status(error) != 403:
                raise
            self._client.crumb = None  # python-jenkins fetches it again
            return self._call(doing, method, *args)

    def _call(self, doing: str, method: Callable[..., T], *args: Any) -> T:
        """``method(*args)``, its failures as JenkinsError or JenkinsUnavailable."""
        import jenkins
        import requests

        where = f"Jenkins at {self.shown_url}"
        try:
            return method(*args)
        except (jenkins.TimeoutException, requests.Timeout):
            raise JenkinsUnavailable(f"{where} did not answer within {self.timeout:g} s "
                                     f"({doing}): check that it is up and not overloaded "
                                     "(ci.jenkins_timeout)") from None
        except requests.ConnectionError as error:
            raise JenkinsUnavailable(f"cannot reach {where} ({doing}): "
                                     f"{self._redacted(str(error))[:300]}: check ci.jenkins_url "
                                     "and that Jenkins is up") from error
        except jenkins.EmptyResponseException:
            raise JenkinsError(f"{where} answered with nothing ({doing}): is ci.jenkins_url "
                               "Jenkins' URL (not a proxy's page or another site)?") from None
        except (jenkins.JenkinsException, requests.RequestException) as error:
            status = _status(error)
            if status is None:
                raise JenkinsError(f"{where} failed ({doing}): "
                                   f"{self._redacted(str(error))[:300]}") from error
            raise self._refused(status, doing) from error
        except ValueError:
            # JSON that is not JSON, a Location that does not end in a number.
            raise JenkinsError(f"{where} answered something that is not Jenkins' ({doing}): "
                               "is ci.jenkins_url Jenkins' URL?") from None

    def _refused(self, status: int, doing: str) -> JenkinsError:
        where = f"Jenkins at {self.shown_url}"
        if status == 401:
            who = f"user {self.user!r}" if self.user is not None else "anonymous requests"
            return JenkinsError(f"{where} refused {who} (HTTP 401, {doing}): check "
                                "ci.jenkins_user and the API token in ci.jenkins_token_file")
        if status == 403:
            who = f"user {self.user!r}" if self.user is not None else "anonymous requests"
            return JenkinsError(f"{where} does not let {who} do this (HTTP 403, {doing}): "
                                f"check the user's permissions on job {self.job!r} (Job/Read, "
                                "Job/Build, Job/Cancel) and Jenkins' CSRF settings")
        if status >= 500:
            return JenkinsUnavailable(f"{where} failed (HTTP {status}, {doing}): check "
                                      "Jenkins' log")
        return JenkinsError(f"{where} answered HTTP {status} ({doing})")

    def _redacted(self, text: str) -> str:
        text = text.replace(self.url, self.shown_url)
        return text.replace(self._token, "***") if self._token else text

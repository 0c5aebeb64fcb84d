"""The commit each branch of the control repository points at, as the API tells instances.

Thousands of instances ask "has anything changed?" every minute. If each of
them asked the git remote, the remote would carry the whole fleet's
polling; instead each API worker lists the remote's branches (``git
ls-remote``, one round trip for all of them) at most once per
``api.heads_ttl`` seconds and answers every instance from that list. A
worker that finds the list stale refreshes it while the others keep
answering from the old one; a failed refresh keeps the old list and is
retried after another ``heads_ttl``. So an instance learns of a push within
``heads_ttl`` plus its own check interval.

Heads are looked up by branch, the one a classification names, not by
environment: when several branches map to one environment, only the
instance knows which of them it deployed there (opslab.names.
environment_holders decides it, on the instance), and a ``Production``
pushed beside ``production`` must not take the commit out of every
``production`` instance's target.
"""

import logging
import threading
import time

from opslab.branchrunner.git import GitError, remote_heads

# A request waits at most this long on the remote; the git remote's own
# branches.git_timeout is sized for fetches, not for a request.
LIST_TIMEOUT = 10.0

log = logging.getLogger(__name__)


class BranchHeads:
    """The remote's branches and their commits, listed at most once per ``ttl``."""

    def __init__(self, remote: str, ttl: float, timeout: float) -> None:
        self.remote = remote
        self.ttl = ttl
        self.timeout = min(timeout, LIST_TIMEOUT)
        self._commits: dict[str, str] | None = None
        self._listed_at = float("-inf")
        self._attempted = False
        self._lock = threading.Lock()

    def commit(self, branch: str) -> str | None:
        """The commit ``branch`` points at; None when unknown.

        None when no remote is configured, when it was never listed, or when
        it has no such branch.
        """
        if not self.remote:
            return None
        commits = self._current()
        return commits.get(branch) if commits is not None else None

    def _current(self) -> dict[str, str] | None:
        if time.monotonic() - self._listed_at < self.ttl:
            return self._commits
        # Only the very first listing of a worker is waited for (its targets
        # would otherwise all change once it arrives). After one attempt, good
        # or failed, a stale listing is refreshed by one request while the
        # others answer at once from what is known: a hanging remote must not
        # hold every thread of the worker, every ttl.
        if not self._lock.acquire(blocking=not self._attempted):
            return self._commits
        try:
            if time.monotonic() - self._listed_at >= self.ttl:
                self._refresh()
            return self._commits
        finally:
            self._lock.release()

    def _refresh(self) -> None:
        try:
            self._commits = remote_heads(self.remote, self.timeout)
        except GitError as error:
            log.warning("cannot list the branches of the control repository: %s", error)
        self._listed_at = time.monotonic()
        self._attempted = True

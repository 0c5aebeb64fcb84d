"""``opslab branch sync``: bring the environments in line with the remote's branches.

Under the sync lock: fetch into the mirror, map branches to environment
names (one function, opslab.names), build what changed, swap, and, after a
complete listing of the remote, purge environments whose branch is gone.
A failed fetch changes no environment. Every environment touched gets a
record: branch, commit, previous commit, when, how long, result.
"""

import fnmatch
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opslab.config import BranchSettings
from opslab.lock import FileLock
from opslab.names import branches_by_environment, validate_branch

from .environments import EnvironmentConflict, EnvironmentsDirectory, UnsafeTree
from .git import GitError, Mirror

Log = Callable[[str], None]


class SyncFailed(Exception):
    """The sync could not run at all (lock, fetch, listing); nothing was changed."""


class Outcome:
    """What one sync did to one environment (or to one branch it refused)."""

    def __init__(self, environment: str | None, branch: str) -> None:
        self.environment = environment
        self.branch = branch
        self.commit: str | None = None
        self.previous_commit: str | None = None
        self.result = "failed"
        self.error: str | None = None
        self.started = time.time()
        self.duration = 0.0

    @property
    def ok(self) -> bool:
        return self.result in ("deployed", "unchanged", "purged")

    def as_record(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "branch": self.branch,
            "commit": self.commit,
            "previous_commit": self.previous_commit,
            "result": self.result,
            "error": self.error,
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "duration": round(self.duration, 4),
        }


class Deployment:
    """The mirror and the environments directory of one configuration."""

    def __init__(self, settings: BranchSettings, log: Log | None = None) -> None:
        self.settings = settings
        self.environments = EnvironmentsDirectory(
            Path(settings.environments), settings.keep_previous, settings.keep_seconds)
        self.mirror = Mirror(Path(settings.cache) / "mirror.git", settings.remote,
                             settings.git_timeout)
        self.log = log or (lambda message: None)

    def lock(self, purpose: str) -> FileLock:
        return FileLock(str(self.environments.lock_path), purpose, self.settings.lock_timeout)

    def sync(self, branches: Sequence[str] | None = None) -> list[Outcome]:
        """Sync the named branches, or (None) every branch the filters select.

        Each environment whose state changed gets its record replaced; the
        whole sync, unchanged environments included, is recorded in
        ``records/last-sync.json``.
        """
        started = time.time()
        self.environments.prepare()
        with self.lock("opslab branch sync"):
            self.environments.clear_leftovers()
            try:
                self.mirror.prepare()
                self.mirror.fetch(branches)
                listing = self.mirror.branches()
            except GitError as error:
                raise SyncFailed(f"fetch from the remote failed, nothing changed: {error}") \
                    from None
            if branches is None:
                wanted = {name: commit for name, commit in listing.items() if self._selected(name)}
            else:
                wanted = {name: listing[name] for name in branches}
            outcomes = self._deploy_all(wanted, full=branches is None)
            if branches is None:
                outcomes += self._purge(set(wanted))
            self.environments.prune()
            self.environments.write_sync_record({
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
                "duration": round(time.time() - started, 4),
                "branches": list(branches) if branches is not None else "all",
                "ok": all(outcome.ok for outcome in outcomes),
                "environments": [outcome.as_record() for outcome in outcomes],
            })
            return outcomes

    def _selected(self, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in self.settings.include) and not any(
            fnmatch.fnmatchcase(branch, p) for p in self.settings.exclude)

    def _deploy_all(self, wanted: dict[str, str], full: bool) -> list[Outcome]:
        """Deploy each wanted branch, unless it shares its environment name with another."""
        claimants, unusable = branches_by_environment(wanted)
        outcomes = [self._refuse(None, branch, reason) for branch, reason in unusable.items()]
        for environment, names in sorted(claimants.items()):
            # A deployed environment belongs to the branch it was deployed
            # from, for as long as that branch exists.
            owner = None
            if self.environments.current(environment):
                owner = self.environments.read_record(environment).get("branch")
                if full and owner not in wanted:
                    owner = None
            contenders = sorted(set(names) | ({owner} if owner else set()))
            for branch in names:
                if len(contenders) == 1 or branch == owner:
                    outcomes.append(self._deploy(environment, branch, wanted[branch]))
                else:
                    outcomes.append(self._refuse(environment, branch, (
                        f"branches {', '.join(map(repr, contenders))} all map to "
                        f"environment {environment!r}")))
        return outcomes

    def _refuse(self, environment: str | None, branch: str, reason: str) -> Outcome:
        outcome = Outcome(environment, branch)
        outcome.result, outcome.error = "refused", reason
        self.log(f"refused branch {branch!r}: {reason}")
        return outcome

    def _deploy(self, environment: str, branch: str, commit: str) -> Outcome:
        outcome = Outcome(environment, branch)
        outcome.commit = commit
        outcome.previous_commit = self.environments.current(environment)
        try:
            if outcome.previous_commit == commit and self.environments.has_tree(
                    environment, commit):
                outcome.result = "unchanged"
                outcome.previous_commit = self.environments.read_record(environment).get(
                    "previous_commit", commit)
            else:
                if not self.environments.has_tree(environment, commit):
                    self._build(environment, branch, commit)
                self.environments.activate(environment, commit)
                outcome.result = "deployed"
                self.log(f"deployed {branch} at {commit[:12]} as {environment}")
        except (GitError, UnsafeTree, EnvironmentConflict, OSError) as error:
            outcome.error = str(error)
            self.log(f"failed to deploy {branch} as {environment}: {error}")
        outcome.duration = time.time() - outcome.started
        if outcome.result != "unchanged":
            self.environments.write_record(environment, outcome.as_record())
        return outcome

    def _build(self, environment: str, branch: str, commit: str) -> None:
        entries = self.mirror.tree(commit)
        store = self.environments.store
        missing = store.missing(
            (e.sha, e.executable, e.size) for e in entries if not e.submodule)
        flags_by_sha: dict[str, list[bool]] = {}
        for sha, executable in missing:
            flags_by_sha.setdefault(sha, []).append(executable)
        for sha, content in self.mirror.blobs(list(flags_by_sha)):
            for executable in flags_by_sha[sha]:
                store.add(sha, executable, content)
        def add_git_metadata(tree: Path) -> None:
            self.mirror.add_worktree_metadata(tree, commit)

        self.environments.build(environment, commit, entries, branch,
                                add_git_metadata if self.settings.git_metadata else None)

    def _purge(self, kept_branches: set[str]) -> list[Outcome]:
        outcomes = []
        live = set(branches_by_environment(kept_branches)[0])
        for environment in sorted(set(self.environments.deployed()) - live):
            record = self.environments.read_record(environment)
            outcome = Outcome(environment, record.get("branch", ""))
            outcome.previous_commit = self.environments.deactivate(environment)
            outcome.result = "purged"
            outcome.duration = time.time() - outcome.started
            self.environments.write_record(environment, outcome.as_record())
            self.log(f"purged {environment}: its branch is gone")
            outcomes.append(outcome)
        return outcomes


def named_branches(branches: Sequence[str]) -> list[str]:
    """Check branch names given on the command line; raises InvalidName."""
    return [validate_branch(branch) for branch in branches]

"""``opslab branch sync``: bring the environments in line with the remote's branches.

Under the sync lock: fetch into the mirror, map branches to environment
names and decide which branch holds an environment several map to (one
rule each, opslab.names), make the trees of what changed (an environment's
spare tree brought up to date by the difference, else a new tree), write
them to disk (one syncfs), mark and swap them in, and, after a complete
fetch, purge the environments whose selected branch is gone; the swaps are
made durable before the records tell of them and before anything is pruned.
A failed fetch changes no environment. Every environment touched gets a
record: branch, commit, previous commit, when, how long, result.
"""

import fnmatch
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opslab.clock import iso_utc
from opslab.config import BranchSettings
from opslab.lazylog import logger
from opslab.lock import FileLock
from opslab.names import branches_by_environment, environment_holders, validate_branch

from .environments import (
    FILE_MODES,
    EnvironmentConflict,
    EnvironmentsDirectory,
    Layout,
    UnsafeTree,
)
from .git import GitError, Mirror, TreeEntry


class SyncFailed(Exception):
    """The sync could not run at all (lock, fetch, listing); nothing was changed."""


class Outcome:
    """What one sync did to one environment (or to one branch it refused)."""

    def __init__(self, environment: str | None, branch: str) -> None:
        self.environment = environment
        self.branch = branch
        self.commit: str | None = None
        self.previous_commit: str | None = None
        self.recycled_from: str | None = None  # the spare tree's commit, when one was used
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
            "recycled_from": self.recycled_from,
            "result": self.result,
            "error": self.error,
            "started_at": iso_utc(self.started),
            "duration": round(self.duration, 4),
        }


class Deployment:
    """The mirror and the environments directory of one configuration."""

    def __init__(self, settings: BranchSettings, **log_context: Any) -> None:
        """``log_context``: ``key=value`` pairs on every line this sync logs (apply's
        certname)."""
        self.settings = settings
        self.environments = EnvironmentsDirectory(
            settings.environments, settings.keep_previous, settings.keep_seconds)
        self.mirror = Mirror(f"{settings.cache}/mirror.git", settings.remote,
                             settings.git_timeout)
        # A sync that finds nothing changed logs nothing: logging is imported at the
        # first line (opslab.lazylog).
        self.log = logger(__name__, **log_context)
        # Where this sync's time went, for its record: asking the remote and fetching,
        # listing commits, reading objects from the mirror and storing them, making
        # trees, writing them to disk.
        self.seconds = dict.fromkeys(("fetch", "listing", "objects", "trees", "flush"), 0.0)
        # The last commit listed in this sync and its files by path: the next
        # commit's listing is that one plus their difference (forty branches
        # a commit apart cost one ls-tree and forty small diffs).
        self._listed: tuple[str, dict[str, TreeEntry], Layout] | None = None

    def lock(self, purpose: str) -> FileLock:
        return FileLock(self.environments.lock_path, purpose, self.settings.lock_timeout)

    def sync(self, branches: Sequence[str] | None = None,
             remote_branches: Mapping[str, str] | None = None,
             claim: bool = False) -> list[Outcome]:
        """Sync the named branches, or (None) every branch the filters select.

        The remote's branches are listed first (``remote_branches`` when the
        caller has just listed them, else ``git ls-remote`` here), and the
        mirror fetches only when they differ from its own: a sync that finds
        nothing changed costs two small git calls, not a fetch.

        Which branch holds an environment that several branches map to is
        decided among every branch of the remote: the mirror's after a full
        fetch; for named branches, the remote's listing (the mirror holds
        only what was fetched so far, so a new machine would otherwise let
        ``Production`` take an environment ``production`` holds). Each
        environment whose state changed gets its record replaced; the whole
        sync, unchanged environments included, is recorded in
        ``records/last-sync.json``.

        ``claim`` (named branches only): each named branch takes its
        environment, whatever other branches map there or which one is
        deployed there. For apply on an instance, whose environments are its
        own and whose classification names the branch: the holder rule there
        would let another project's branch, pushed with exactly the
        environment's name, take it. Two named branches of one environment
        are both refused.
        """
        if claim and branches is None:
            raise ValueError("only named branches can claim their environments")
        started = time.time()
        self.environments.prepare()
        with self.lock("opslab branch sync"):
            self.environments.clear_leftovers()
            fetching = time.monotonic()
            try:
                self.mirror.prepare()
                listing, remote = self._listings(remote_branches)
                if _behind(listing, remote, branches):
                    self.mirror.fetch(branches)
                    listing = self.mirror.branches()
            except GitError as error:
                raise SyncFailed(f"fetch from the remote failed, nothing changed: {error}") \
                    from None
            self.seconds["fetch"] = time.monotonic() - fetching
            if branches is None:
                wanted = {name: commit for name, commit in listing.items() if self._selected(name)}
            else:
                wanted = {name: listing[name] for name in branches}
            existing = set(listing if branches is None else remote)
            outcomes = self._deploy_all(wanted, existing | set(wanted), claim)
            if branches is None:
                # The branch of an environment this sync deployed or failed to deploy is
                # the outcome's (its record is written below, after the swaps are durable).
                handled = {outcome.environment: outcome.branch for outcome in outcomes
                           if outcome.environment is not None
                           and outcome.result in ("deployed", "failed")}
                outcomes += self._purge(set(listing), handled)
            changed = {outcome.environment: outcome for outcome in outcomes
                       if outcome.environment is not None
                       and outcome.result in ("deployed", "failed", "purged")}
            if any(outcome.result != "failed" for outcome in changed.values()):
                # The swaps on disk before the records say so, and before pruning may
                # delete or bring up to date a tree a lost swap would leave live.
                self.environments.flush_links()
            for environment, outcome in changed.items():
                self.environments.write_record(environment, outcome.as_record())
            self.environments.prune()
            self.environments.write_sync_record({
                "started_at": iso_utc(started),
                "duration": round(time.time() - started, 4),
                "seconds": {phase: round(value, 4) for phase, value in self.seconds.items()},
                "branches": list(branches) if branches is not None else "all",
                "ok": all(outcome.ok for outcome in outcomes),
                "environments": [outcome.as_record() for outcome in outcomes],
            })
            return outcomes

    def _selected(self, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in self.settings.include) and not any(
            fnmatch.fnmatchcase(branch, p) for p in self.settings.exclude)

    def _listings(self, remote_branches: Mapping[str, str] | None,
                  ) -> tuple[dict[str, str], dict[str, str]]:
        """The mirror's branches and the remote's (``remote_branches``, else listed)."""
        if remote_branches is not None:
            return self.mirror.branches(), dict(remote_branches)
        return self.mirror.both_branches()

    def _deploy_all(self, wanted: dict[str, str], existing: set[str],
                    claim: bool = False) -> list[Outcome]:
        """Deploy each wanted branch that holds its environment; refuse the others.

        With ``claim``, the wanted branches hold their environments (see sync).
        """
        groups, unusable = branches_by_environment(wanted)
        if claim:
            holders, refused = _claims(groups)
        else:
            deployed = {environment: branch for environment in groups
                        if (branch := self.environments.deployed_from(environment))}
            holders, refused = environment_holders(existing, deployed)
        outcomes = [self._refuse(None, branch, reason) for branch, reason in unusable.items()]
        swaps: list[tuple[Outcome, bool]] = []
        for environment, names in sorted(groups.items()):
            for branch in names:
                if holders.get(environment) == branch:
                    outcome, made = self._prepare(environment, branch, wanted[branch])
                    outcomes.append(outcome)
                    if made is not None:
                        swaps.append((outcome, made))
                else:
                    outcomes.append(self._refuse(environment, branch, refused[branch]))
        self._swap(swaps)
        return outcomes

    def _refuse(self, environment: str | None, branch: str, reason: str) -> Outcome:
        outcome = Outcome(environment, branch)
        outcome.result, outcome.error = "refused", reason
        self.log.warning("refused branch %r: %s", branch, reason)
        return outcome

    def _prepare(self, environment: str, branch: str,
                 commit: str) -> tuple[Outcome, bool | None]:
        """The environment's outcome, and whether its swap needs a tree made here (True),
        only a swap to a tree kept from before (False), or nothing (None: unchanged or
        failed, and finished)."""
        outcome = Outcome(environment, branch)
        outcome.commit = commit
        outcome.previous_commit = self.environments.current(environment)
        try:
            if outcome.previous_commit == commit:
                # The live tree: swapped in only once on disk. Without its marker (lost
                # in a power cut) it is complete all the same: it vouches for it again.
                if not self.environments.has_tree(environment, commit):
                    self.environments.mark(environment, commit, branch)
                outcome.result = "unchanged"
                outcome.previous_commit = self.environments.read_record(environment).get(
                    "previous_commit", commit)
                return outcome, None
            if self.environments.has_tree(environment, commit):
                return outcome, False
            self._make_tree(outcome)
            return outcome, True
        except (GitError, UnsafeTree, OSError) as error:
            self._failed(outcome, error)
            return outcome, None

    def _swap(self, swaps: list[tuple[Outcome, bool]]) -> None:
        """Write the trees made in this sync to disk (once), then mark each and swap it in."""
        if any(made for _, made in swaps):
            flushed = time.monotonic()
            try:
                self.environments.flush()
            except OSError as error:  # not on disk: neither marked nor swapped in
                for outcome, _ in swaps:
                    self._failed(outcome, error)
                return
            finally:
                self.seconds["flush"] += time.monotonic() - flushed
        for outcome, made in swaps:
            environment, commit = outcome.environment or "", outcome.commit or ""
            try:
                if made:
                    self.environments.mark(environment, commit, outcome.branch)
                self.environments.activate(environment, commit)
            except (EnvironmentConflict, OSError) as error:
                self._failed(outcome, error)
                continue
            outcome.result = "deployed"
            outcome.duration = time.time() - outcome.started
            self.log.info("deployed %s at %s as %s", outcome.branch, commit[:12], environment)

    def _failed(self, outcome: Outcome, error: Exception) -> None:
        outcome.result, outcome.error = "failed", str(error)
        outcome.duration = time.time() - outcome.started
        self.log.error("failed to deploy %s as %s: %s", outcome.branch, outcome.environment,
                       error)

    def _make_tree(self, outcome: Outcome) -> None:
        """Make the tree of the outcome's commit, unmarked in ``trees/``: the environment's
        spare brought up to it when it has one (``recycled_from`` says the spare's
        commit), else a new tree."""
        environment, commit = outcome.environment or "", outcome.commit or ""

        def add_git_metadata(tree: str) -> None:
            self.mirror.add_worktree_metadata(tree, commit)

        finish = add_git_metadata if self.settings.git_metadata else None
        spare = self.environments.spare(environment)
        if spare is not None:
            started = time.monotonic()
            try:
                changes = self.mirror.changes(spare, commit)
            except GitError:  # the spare's commit is gone from the mirror: build anew
                spare = None
            else:
                self.seconds["listing"] += time.monotonic() - started
                self._store(change.new for change in changes if change.new is not None)
                started = time.monotonic()
                self.environments.recycle(environment, spare, commit, changes, finish)
                self.seconds["trees"] += time.monotonic() - started
                outcome.recycled_from = spare
                return
        started = time.monotonic()
        layout, entries, new = self._layout(commit)
        self.seconds["listing"] += time.monotonic() - started
        self._store(new)
        # The next commit's listing can now be derived from this one: its files are stored.
        self._listed = (commit, entries, layout)
        started = time.monotonic()
        self.environments.build(environment, commit, layout, finish)
        self.seconds["trees"] += time.monotonic() - started

    def _layout(self, commit: str) -> tuple[Layout, dict[str, TreeEntry], list[TreeEntry]]:
        """The checked layout of ``commit``, its files by path, and those that may not be
        in the store yet: listed in full the first time, then derived from the commit
        listed before it in this sync and their difference."""
        if self._listed is None:
            listing = self.mirror.tree(commit)
            entries = {entry.path: entry for entry in listing}
            if len(entries) != len(listing):
                raise UnsafeTree(f"commit {commit} lists a path twice")
            layout, new = Layout(listing), listing
        else:
            base, base_entries, base_layout = self._listed
            changes = self.mirror.changes(base, commit)
            entries = dict(base_entries)
            for change in changes:
                if change.new is None:
                    entries.pop(change.path, None)
                else:
                    entries[change.path] = change.new
            new = [change.new for change in changes if change.new is not None]
            if all(change.old is not None and change.new is not None
                   and change.old.mode in FILE_MODES and change.new.mode in FILE_MODES
                   for change in changes):
                layout = base_layout.with_contents({entry.path: entry for entry in new})
            else:
                layout = Layout(entries.values())
        return layout, entries, new

    def _store(self, entries: Iterable[TreeEntry]) -> None:
        """Make sure the store holds every blob of ``entries`` intact, reading what it lacks
        from the mirror in one stream."""
        started = time.monotonic()
        try:
            self._store_objects(entries)
        finally:
            self.seconds["objects"] += time.monotonic() - started

    def _store_objects(self, entries: Iterable[TreeEntry]) -> None:
        store = self.environments.store
        missing = store.missing((e.sha, e.executable, e.size) for e in entries if not e.submodule)
        flags_by_sha: dict[str, list[bool]] = {}
        for sha, executable in missing:
            flags_by_sha.setdefault(sha, []).append(executable)
        if flags_by_sha:
            for sha, content in self.mirror.blobs(list(flags_by_sha)):
                for executable in flags_by_sha[sha]:
                    store.add(sha, executable, content)

    def _purge(self, existing: set[str], handled: Mapping[str, str]) -> list[Outcome]:
        """Retire each environment whose branch is selected and gone from ``existing``.

        Only after a complete fetch. An environment deployed from a branch
        outside the selection (``--include 'feature/*'`` and ``production``)
        is not this sync's to judge, and one whose record names no branch
        cannot be judged at all: both stay.
        """
        outcomes = []
        for environment in sorted(self.environments.deployed()):
            branch = handled.get(environment) or self.environments.deployed_from(environment)
            if branch is None or branch in existing or not self._selected(branch):
                continue
            outcome = Outcome(environment, branch)
            outcome.previous_commit = self.environments.deactivate(environment)
            outcome.result = "purged"
            outcome.duration = time.time() - outcome.started
            self.log.info("purged %s: its branch %r is gone", environment, branch)
            outcomes.append(outcome)
        return outcomes


def _behind(mirrored: Mapping[str, str], remote: Mapping[str, str],
            branches: Sequence[str] | None) -> bool:
    """True if the mirror must fetch: every branch, or only the named ones, as the remote
    has them (a named branch the remote lacks too: the fetch fails, naming it)."""
    if branches is None:
        return mirrored != remote
    return any(branch not in remote or mirrored.get(branch) != remote[branch]
               for branch in branches)


def _claims(groups: dict[str, list[str]]) -> tuple[dict[str, str], dict[str, str]]:
    """Each environment's one claiming branch; every branch of a contested one is refused."""
    holders: dict[str, str] = {}
    refused: dict[str, str] = {}
    for environment, names in groups.items():
        if len(names) == 1:
            holders[environment] = names[0]
            continue
        for branch in names:
            refused[branch] = (f"branches {', '.join(map(repr, names))} were all asked to "
                               f"take environment {environment!r}")
    return holders, refused


def named_branches(branches: Sequence[str]) -> list[str]:
    """Check branch names given on the command line; raises InvalidName."""
    return [validate_branch(branch) for branch in branches]

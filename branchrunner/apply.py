"""``opslab branch apply``: this host's Puppet run, on the branch the directory says.

1. Unless disabled (``opslab branch disable``, like ``puppet agent
   --disable``) and unless another apply runs (its own lock), ask the ENC
   which environment this host is in.
2. Sync the branch the caller names (the agent, from its target; ``--branch``
   by hand) into it, whatever other branches map there: an instance's
   environments are its own. Named by nobody, the branch deployed there,
   else the only one that maps there (opslab.names.applied_branch), never
   one chosen by its name alone. Skipped with ``--no-sync``; a failed or
   refused sync leaves the deployed tree in use, with a warning and the
   reason in ``sync_error``.
3. Run ``puppet apply --detailed-exitcodes`` on that exact tree: the run
   gets an environmentpath of its own whose one entry points at the tree
   resolved before the run, so a sync during the run cannot change what
   it reads.
4. Build a structured result from Puppet's summary and report, write it
   to ``STATE_DIR/last_apply.json`` and return it.
"""

import getpass
import json
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from opslab import process
from opslab.clock import iso_utc
from opslab.config import Config
from opslab.files import write_atomic
from opslab.lock import FileLock, LockHeld
from opslab.log import context
from opslab.names import (
    DEFAULT_BRANCH,
    InvalidName,
    applied_branch,
    environment_for_branch,
    this_certname,
    validate_certname,
)
from opslab.puppet import (
    CLIENT_DATA,
    EXIT_MEANINGS,
    SUCCESS_CODES,
    ClassificationError,
    apply_command,
    classification,
    enc_command,
    kept_catalog,
)

from .deployment import Deployment, SyncFailed
from .git import GitError
from .report import RunResult, read_run

KILL_GRACE = 30.0
log = logging.getLogger(__name__)


class ApplyError(Exception):
    """The run could not start: no classification, no environment, ..."""


def disabled_path(config: Config) -> Path:
    return Path(config.apply.state_dir) / "disabled.json"


def disable(config: Config, reason: str) -> None:
    """Stop further applies on this host until :func:`enable`, saying why."""
    Path(config.apply.state_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(str(disabled_path(config)), json.dumps({
        "reason": reason, "by": getpass.getuser(),
        "at": iso_utc(time.time(), fraction=False),
    }), mode=0o644)


def enable(config: Config) -> bool:
    """Allow applies again; False if they were not disabled."""
    try:
        disabled_path(config).unlink()
        return True
    except FileNotFoundError:
        return False


def disabled_reason(config: Config) -> str | None:
    """Why applies are disabled on this host, or None if they are not."""
    try:
        flag = json.loads(disabled_path(config).read_text())
        return f"{flag.get('reason') or 'no reason given'} (by {flag.get('by')}, {flag.get('at')})"
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "the disabled flag exists but cannot be read"


class Apply:
    """One apply run for this host."""

    def __init__(self, config: Config, certname: str | None = None,
                 branch: str | None = None):
        """``branch``: the branch this host's classification names, when the caller knows it
        (the agent, from its target); it takes the environment. Else the branch deployed
        there, or the only one that maps there (opslab.names.applied_branch)."""
        self.config = config
        self.branch = branch
        self.settings = config.apply
        self.certname = (validate_certname(certname) if certname
                         else this_certname(self.settings.certname))
        self.log = context(log, certname=self.certname)
        self.state_dir = Path(self.settings.state_dir)
        if self.settings.enc:
            self.enc = self.settings.enc.split()
        elif config.source != "embedded defaults":
            self.enc = enc_command(config.source)
        else:
            raise ApplyError("apply needs a configuration file: the ENC reads the directory "
                             "settings from it (or set apply.enc)")

    def run(self, sync: bool = True) -> RunResult:
        """Run and return the structured result (also written to last_apply.json)."""
        started = time.time()
        result: RunResult = {
            "certname": self.certname, "started_at": iso_utc(started, fraction=False),
            "environment": None, "branch": None, "commit": None,
        }
        reason = disabled_reason(self.config)
        if reason is not None:
            return self._finish(result, started, "disabled", 1,
                                f"applies are disabled on this host: {reason}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.state_dir / "apply.lock"), "opslab branch apply")
        try:
            lock.acquire()
        except LockHeld as error:
            return self._finish(result, started, "locked", 1, f"another apply runs: {error}")
        try:
            return self._run_locked(result, started, sync)
        except ApplyError as error:
            return self._finish(result, started, "failed", 1, str(error))
        finally:
            lock.release()

    def _run_locked(self, result: RunResult, started: float, sync: bool) -> RunResult:
        environment = self._classify()
        result["environment"] = environment
        deployment = Deployment(self.config.branches, certname=self.certname)
        if sync:
            self._sync(deployment, environment, result)
        commit = deployment.environments.current(environment)
        if commit is None:
            raise ApplyError(f"environment {environment!r} is not deployed "
                             f"in {deployment.environments.root}")
        result["commit"] = commit
        result["branch"] = result["branch"] or deployment.environments.read_record(
            environment).get("branch")
        tree = deployment.environments.tree_path(environment, commit)

        # Puppet keeps the catalog it applies (for the smoke tests), but given a kept
        # one, `puppet apply` applies it again instead of compiling: it must go first.
        # A run that compiles nothing then leaves none, and nothing stale.
        Path(kept_catalog(str(self.state_dir), self.certname)).unlink(missing_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.state_dir))
        try:
            (run_dir / "environments").mkdir()
            (run_dir / "environments" / environment).symlink_to(tree)
            manifest = tree / "manifests"
            command = apply_command(
                manifest=manifest if manifest.exists() else None,
                certname=self.certname,
                environmentpath=run_dir / "environments",
                enc=self.enc,
                environment=environment,
                state_dir=Path(self.settings.puppet_state_dir)
                if self.settings.puppet_state_dir else None,
                report_dir=run_dir,
                client_data_dir=self.state_dir / CLIENT_DATA,
                puppet=self.settings.puppet,
            )
            exit_code, output = self._puppet(command)
            result.update(read_run(run_dir, output))
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        if exit_code is None:
            return self._finish(result, started, "timeout", 1,
                                f"puppet apply ran past apply.timeout "
                                f"({self.settings.timeout:g} s) and was stopped", output)
        status = {0: "unchanged", 2: "changed"}.get(exit_code, "failed")
        error = None if status != "failed" else f"puppet apply: {EXIT_MEANINGS.get(exit_code)}"
        return self._finish(result, started, status, exit_code, error, output)

    def _classify(self) -> str:
        """The environment the ENC gives this host (Puppet asks it again, identically)."""
        try:
            found = classification(self.enc, self.certname)
        except ClassificationError as error:
            raise ApplyError(str(error)) from None
        return str(found.get("environment") or DEFAULT_BRANCH)

    def _sync(self, deployment: Deployment, environment: str, result: RunResult) -> None:
        try:
            branches = deployment.mirror.remote_branches()
        except GitError as error:
            self._sync_failed(result, f"cannot list the remote's branches; "
                                      f"using what is deployed: {error}")
            return
        branch = self._branch_for(deployment, environment, branches, result)
        if branch is None:
            return
        try:
            # The instance's environment is its own: the branch takes it (see _branch_for).
            for outcome in deployment.sync([branch], remote_branches=branches, claim=True):
                if not outcome.ok:
                    self._sync_failed(result,
                                      f"sync of {outcome.branch!r} failed: {outcome.error}")
            # After a refused or failed sync the result names the deployed tree's branch.
            if "sync_error" not in result:
                result["branch"] = branch
        except (SyncFailed, LockHeld, GitError) as error:
            self._sync_failed(result, f"sync failed; using what is deployed: {error}")

    def _branch_for(self, deployment: Deployment, environment: str, branches: dict[str, str],
                    result: RunResult) -> str | None:
        """The branch to sync for ``environment``; None, with the reason recorded, if none.

        The branch the caller named, when it maps to the environment the ENC
        gave (if not, the classification changed since the caller learnt it,
        and the ENC's answer is what Puppet uses); else the branch deployed
        there, or the only one that maps there (opslab.names.applied_branch):
        never the holder rule of shared servers, whose exact-name rule would
        let a branch named like the environment take it here.
        """
        named = self.branch
        if named is not None and _environment_of(named) != environment:
            self._warn(result, f"branch {named!r} does not map to environment "
                               f"{environment!r}; syncing the environment's own branch")
            named = None
        if named is not None:
            if named in branches:
                return named
            problem = f"branch {named!r} is not on the remote"
        else:
            chosen, problem = applied_branch(
                environment, branches, deployment.environments.deployed_from(environment))
            if chosen is not None:
                return chosen
        self._sync_failed(result, f"{problem}; using what is deployed")
        return None

    def _sync_failed(self, result: RunResult, message: str) -> None:
        """The branch could not be brought up to date: the run uses what is deployed."""
        result.setdefault("sync_error", message)
        self._warn(result, message)

    def _warn(self, result: RunResult, message: str) -> None:
        result.setdefault("warnings", []).append(message)
        self.log.warning("%s", message)

    def _puppet(self, command: list[str]) -> tuple[int | None, str]:
        """Run Puppet in its own process group; (exit code or None on timeout, output).

        At the timeout Puppet gets SIGTERM and KILL_GRACE seconds to stop what
        it runs cleanly before the whole group is killed.
        """
        try:
            puppet = process.run(command, self.settings.timeout, stderr=subprocess.STDOUT,
                                 text=True, grace=KILL_GRACE)
        except process.TimedOut as timed_out:
            return None, timed_out.output or ""
        except OSError as error:
            raise ApplyError(f"puppet could not run: {error}") from None
        return puppet.returncode, puppet.stdout

    def _finish(self, result: RunResult, started: float, status: str, exit_code: int,
                error: str | None, output: str = "") -> RunResult:
        result.update({
            "status": status,
            "exit_code": exit_code,
            "meaning": EXIT_MEANINGS.get(exit_code, status),
            "success": status in ("changed", "unchanged") and exit_code in SUCCESS_CODES,
            "error": error,
            "duration": round(time.time() - started, 3),
            "output_tail": output[-4000:],
        })
        if self.state_dir.exists():
            write_atomic(str(self.state_dir / "last_apply.json"),
                         json.dumps(result, indent=2, default=str) + "\n", mode=0o644)
        return result


def _environment_of(branch: str) -> str | None:
    try:
        return environment_for_branch(branch)
    except InvalidName:
        return None



"""``opslab ci run``: the Jenkins job that tests one patch set on a throwaway clone.

1. Read the ``GERRIT_*`` parameters (ci/parameters.py), fetch the patch set's ref and
   check it is the announced revision (ci/source.py).
2. Scan what it adds for secrets (ci/secrets.py).
3. Choose the hosts to clone (ci/clones.py), push the patch set as the branch
   ``ci.branch_prefix/CHANGE/PATCHSET`` for the clones to apply, and make one clone per
   host through the API, on the target branch: its agent's first run applies the target
   branch.
4. On each clone, over SSH (ci/shell.py): stop the agent (the job drives the runs from
   now on), point the host at the change's branch, apply it, apply it again (the second
   run must change nothing), run the smoke tests inside, and from here the outside
   checks against the clone's address.
5. Write JUnit (ci/junit.py), vote on the exact revision (ci/reporter.py), record the run
   in the API, and delete the clones and the branch, whatever happened before.

A failure of the change is a -1 with the reasons; a failure to test it (the cloud, the
API, Gerrit, a timeout) is an :class:`InfrastructureFailure`: a message, never a -1.
Exit status: 0 passed, 1 the change failed, 2 the change could not be tested.
"""

import argparse
import json
import logging
import os
import re
import secrets as tokens
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from opslab import process
from opslab.apiclient import ApiRefused, ApiUnavailable, Client
from opslab.config import CiSettings, Config, ConfigError, add_config_option, load

from . import clones, junit, outcome, records
from .clones import Clone, CloneError
from .events import CommentAdded, parse_event
from .gerrit import GerritError
from .outcome import HostRun
from .parameters import JobParameters, ParameterError, read_parameters
from .reporter import Reporter, Target
from .result import InfrastructureFailure, RunResult, SecretFound
from .secrets import ScanError, scan
from .shell import OPSLAB, Shell, ShellError
from .source import SourceError, change_files, fetch_patchset, git_url, touched_modules
from .trigger import PolicyUnavailable, Trigger, matching_phrase

log = logging.getLogger(__name__)

PASSED, FAILED, INFRASTRUCTURE = 0, 1, 2
# The catalog Puppet keeps on an instance (opslab.puppet.kept_catalog, bootstrap's paths).
CATALOG = "/var/lib/opslab/client_data/catalog/{certname}.json"
# A CI branch's name: PREFIX/CHANGE/PATCHSET-TIME-TOKEN.
_BRANCH_TIME = re.compile(r"/[0-9]+/[0-9]+-([0-9]{9,11})-[0-9a-f]{6}$")
PRUNE_GRACE = 600.0  # past ci.run_timeout, before a run's branch is taken as left behind


class Abandoned(Exception):
    """The job was told to stop (SIGTERM from Jenkins' abort, SIGINT)."""


def _api(config: Config) -> Client:
    client = records.api_client(config)
    if client is None:
        raise ConfigError("opslab ci run makes its clones through the API: set ci.api_user, "
                          "ci.api_password_file and ci.api_url (or enc.api_url)")
    return client


def _slow(api: Client, ci: CiSettings) -> Client:
    """The same API for what waits for the cloud: creating a clone launches its instance,
    deleting one waits until it is gone, both within the API's own deadlines."""
    return Client(api.url, api.token_file, max(ci.request_timeout, ci.clone_timeout),
                  api.user_agent, user=api.user)


class Job:
    """One run of the job, for the patch set ``parameters`` names."""

    def __init__(self, config: Config, parameters: JobParameters, workdir: Path,
                 api: Client, reporter: Reporter, shell: Shell, trigger: str) -> None:
        self.config = config
        self.ci = config.ci
        self.parameters = parameters
        self.target = Target.from_parameters(parameters)
        self.workdir = workdir
        self.api = api
        self.cloud_api = _slow(api, config.ci)
        self.reporter = reporter
        self.shell = shell
        self.deadline = time.monotonic() + self.ci.run_timeout
        self.token = tokens.token_hex(3)
        # The time in the name lets a later run delete a branch a killed one left.
        self.branch = (f"{self.ci.branch_prefix}/{parameters.change}/{parameters.patchset}"
                       f"-{int(time.time())}-{self.token}")
        self.trigger = trigger
        self.stopping = threading.Event()
        self.cleaning = False
        self.hosts: list[HostRun] = []
        self.left_out: list[str] = []
        self.secrets: list[SecretFound] = []
        self.scan_error: str | None = None
        self.pushed = False
        self.run_url: str | None = None
        self.run_id: int | None = None

    # The run, step by step -------------------------------------------------------------

    def run(self, junit_path: Path | None) -> int:
        """Test the patch set, vote, clean up; the exit status."""
        self.run_url = self._record_start()
        failure: InfrastructureFailure | None = None
        result: RunResult | None = None
        cancelled: str | None = None
        try:
            result = self._test()
        except (SourceError, CloneError, ShellError, ApiUnavailable) as error:
            failure = InfrastructureFailure(records.line(str(error), 500)
                                            or type(error).__name__,
                                            run_url=self.run_url)
        except Abandoned as error:
            cancelled = str(error)
        finally:
            self._clean_up()
            if junit_path is not None:
                junit.write(junit_path, outcome.suites(self.hosts, self.secrets,
                                                       self.scan_error))
        if cancelled is not None:
            # Stopped from outside (Jenkins' abort: a newer patch set, the change closed,
            # an operator): whoever stopped it knows why; Gerrit hears nothing.
            log.warning("%s: the run is cancelled, nothing is posted", cancelled)
            self._record_end("cancelled", None, cancelled, None)
            return INFRASTRUCTURE
        return self._conclude(result, failure)

    def _test(self) -> RunResult | None:
        """The result, or None when no host follows the branch (nothing to test)."""
        fetched = fetch_patchset(self._remote(), self.target.change, self.target.patchset,
                                 self.target.revision, self.workdir / "repository",
                                 self.ci.fetch_timeout)
        try:
            self.secrets = scan(fetched, self.ci.fetch_timeout)
        except ScanError as error:
            self.scan_error = str(error)
        if self.secrets or self.scan_error:
            # It fails whatever the clones say, and a change that may carry a secret is
            # pushed nowhere: no branch, no clone.
            return RunResult((), tuple(self.secrets), self.run_url, (), self.scan_error)
        modules = touched_modules(change_files(fetched, self.ci.fetch_timeout))
        chosen = clones.plan(self.api, self.ci, self.target.branch, modules)
        if not chosen.hosts:
            return None
        self.left_out = chosen.left_out
        self.hosts = [HostRun(original) for original in chosen.hosts]
        self._prune_branches(fetched.directory)
        self._push(fetched.directory)
        self._on_every_host()
        errors = [host for host in self.hosts if host.error]
        if errors:
            raise CloneError("; ".join(f"{host.original.name}: {host.error}"
                                       for host in errors))
        return RunResult(tuple(outcome.host_result(host) for host in self.hosts), (), self.run_url,
                         tuple(self.left_out))

    def _on_every_host(self) -> None:
        """Each host in a thread of its own. Stopped, the threads are told and not waited
        for: the clean-up starts at once (what a thread makes after it is its own to
        delete, or the reaper's)."""
        pool = ThreadPoolExecutor(max_workers=len(self.hosts), thread_name_prefix="clone")
        futures = [pool.submit(self._host, host) for host in self.hosts]
        try:
            wait(futures)
        except Abandoned:
            self.stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def _remote(self) -> str:
        return git_url(self.ci.git_url or self.ci.gerrit_url or "", self.target.project)

    def _prune_branches(self, repository: Path) -> None:
        """Delete the branches of runs older than ``ci.run_timeout`` that a killed job left
        (their names carry their time)."""
        remote = self.ci.push_url or self._remote()
        prefix = f"refs/heads/{self.ci.branch_prefix}/"
        try:
            listed = self._git(repository, "ls-remote", "--heads", remote, f"{prefix}*")
        except SourceError as error:
            log.warning("the old CI branches could not be listed: %s", error)
            return
        limit = time.time() - self.ci.run_timeout - PRUNE_GRACE
        for line in listed.splitlines():
            ref = line.partition("\t")[2]
            made = _BRANCH_TIME.search(ref)
            if ref.startswith(prefix) and made and int(made.group(1)) < limit:
                try:
                    self._git(repository, "push", "--quiet", remote, f":{ref}")
                    log.info("deleted %s, left by a run that did not finish", ref)
                except SourceError as error:
                    log.warning("%s could not be deleted: %s", ref, error)

    def _push(self, repository: Path) -> None:
        remote = self.ci.push_url or self._remote()
        self._git(repository, "push", "--quiet", remote,
                  f"{self.target.revision}:refs/heads/{self.branch}")
        self.pushed = True

    def _host(self, host: HostRun) -> None:
        """Clone one host and test the change on it; what fails to run is host.error."""
        try:
            label = clones.clone_label(self.target.change, self.target.patchset, self.token,
                                       host.original.name)
            self._check_time()
            host.clone = clones.create(self.cloud_api, self.ci, host.original, label,
                                       self.target.branch)
            if self.stopping.is_set():  # made while the clean-up ran: this thread's to delete
                clones.delete(self.cloud_api, host.clone.name)
                raise Abandoned("stopped")
            report = clones.first_report(self.api, host.clone, min(
                self.deadline, time.monotonic() + self.ci.clone_timeout))
            host.runs["target"] = report
            address = host.clone.address
            self._sudo(address, "systemctl stop opslab-agent.service opslab-agent.timer")
            clones.set_branch(self.api, host.clone, self.branch)
            for phase in ("change", "again"):
                self._check_time()
                host.runs[phase] = self._apply(address)
            # A change Puppet cannot apply fails already, and a catalog that was never
            # compiled has nothing to check.
            if host.runs["again"].get("success"):
                host.inside = self._smoke_inside(address)
                host.outside = self._smoke_outside(host.clone)
        except (CloneError, ShellError, Abandoned) as error:
            host.error = records.line(str(error), 500)
        except Exception as error:  # a bug must not leave the other hosts' clones behind
            log.exception("testing on the clone of %s failed", host.original.name)
            host.error = f"{type(error).__name__}: {records.line(str(error), 500)}"

    def _sudo(self, address: str, command: str, timeout: float = 120.0
              ) -> subprocess.CompletedProcess[str]:
        return self.shell.run(address, f"sudo -n {command}", min(timeout, self._left()))

    def _apply(self, address: str) -> dict[str, Any]:
        ran = self._sudo(address, f"{OPSLAB} branch apply --branch {shlex.quote(self.branch)} "
                         "--json", self.ci.apply_timeout)
        try:
            result = json.loads(ran.stdout)
        except ValueError:
            raise ShellError(f"opslab branch apply on {address} printed no result "
                             f"(status {ran.returncode}): {ran.stderr.strip()[-300:]}") from None
        if not isinstance(result, dict):
            raise ShellError(f"opslab branch apply on {address} printed no result")
        if result.get("commit") != self.target.revision:
            # The branch could not be brought to the patch set (the git remote, a push not
            # served yet): what ran is not the change, so it is no verdict on it.
            raise ShellError(f"{address} applied {str(result.get('commit'))[:12]}, not the "
                             f"patch set's revision: {result.get('sync_error') or 'no reason'}")
        return result

    def _smoke_inside(self, address: str) -> dict[str, Any]:
        ran = self._sudo(address, f"{OPSLAB} smoke run --json", 900)
        return _smoke_json(ran, f"the smoke tests on {address}")

    def _smoke_outside(self, clone: Clone) -> dict[str, Any]:
        """The outside checks, from here, as ``opslab smoke run --target`` with the clone's
        catalog (over SSH) and classification (the API) and the change's tree."""
        catalog = self._sudo(clone.address,
                             "cat " + shlex.quote(CATALOG.format(certname=clone.name)))
        if catalog.returncode != 0:
            raise ShellError(f"the catalog of {clone.name} could not be read: "
                             f"{catalog.stderr.strip()[-300:]}")
        directory = self.workdir / "outside" / clone.name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "catalog.json").write_text(catalog.stdout)
        classification = self.api.request("GET", f"/v1/nodes/{quote(clone.name)}")
        (directory / "classification.json").write_bytes(classification.body)
        argv = [sys.executable, "-m", "opslab.cli", "smoke", "run", "--json",
                "--target", clone.address, "--certname", clone.name,
                "--tree", str(self.workdir / "repository"),
                "--classification", str(directory / "classification.json"),
                "--catalog", str(directory / "catalog.json")]
        try:
            ran = process.run(argv, min(900.0, self._left()), text=True)
        except process.TimedOut:
            raise ShellError(f"the outside checks of {clone.name} did not finish") from None
        return _smoke_json(ran, f"the outside checks of {clone.name}")

    # Endings ---------------------------------------------------------------------------

    def _conclude(self, result: RunResult | None, failure: InfrastructureFailure | None
                  ) -> int:
        if result is None and failure is None:
            return self._nothing_to_test()
        try:
            if failure is not None:
                self.reporter.report_failure(self.target, failure)
                state, vote, message = "error", None, failure.what
            else:
                assert result is not None
                report = self.reporter.report(self.target, result)
                vote, message = report.vote, report.message
                state = ("passed" if result.passed else "failed") if report.vote is not None \
                    else "stale"
        except GerritError as error:
            log.error("the result could not be posted to Gerrit: %s", error)
            state, vote, message = "error", None, f"Gerrit: {error}"
            failure = failure or InfrastructureFailure(str(error))
        self._record_end(state, vote, message, result)
        if failure is not None:
            log.error("the change could not be tested: %s", failure.what)
            return INFRASTRUCTURE
        assert result is not None
        log.info("%s: %s", "passed" if result.passed else "failed", message.splitlines()[0])
        return PASSED if result.passed else FAILED

    def _nothing_to_test(self) -> int:
        """No host follows the branch: nothing to vote on, said so."""
        message = (f"opslab CI: nothing to test: no host follows branch {self.target.branch} "
                   "(ci.clone_projects, or the projects whose branch it is). The secret scan "
                   "found nothing. No vote.")
        if self.run_url:
            message += f"\n\nRun: {self.run_url}"
        try:
            self.reporter.inform(self.target, message)
        except GerritError as error:
            log.error("the result could not be posted to Gerrit: %s", error)
            self._record_end("error", None, f"Gerrit: {error}", None)
            return INFRASTRUCTURE
        self._record_end("passed", None, message, None)
        log.info("nothing to test: no host follows %s", self.target.branch)
        return PASSED

    def _clean_up(self) -> None:
        """Delete the clones and the branch; what cannot be deleted is the reaper's."""
        self.cleaning = True  # a stop signal now must not cut the clean-up short
        for host in self.hosts:
            if host.clone is None:
                continue
            try:
                clones.delete(self.cloud_api, host.clone.name)
            except CloneError as error:
                log.error("%s is left for the reaper: %s", host.clone.name, error)
        if self.pushed:
            remote = self.ci.push_url or self._remote()
            try:
                self._git(self.workdir / "repository", "push", "--quiet", remote,
                          f":refs/heads/{self.branch}")
            except SourceError as error:
                log.error("the branch %s is left behind: %s", self.branch, error)

    # The API's record of the run ---------------------------------------------------------

    def _record_start(self) -> str | None:
        """The run in the API: the one the dispatcher queued for this event (the same
        event key), or a new one when the job was started another way (the Gerrit Trigger
        plugin, by hand); marked running, with this build's URL."""
        p = self.parameters
        body = {"event_key": records.run_key(p.project, p.change, p.patchset, p.event_hash),
                "project": p.project, "change": p.change,
                "patchset": p.patchset, "revision": p.revision, "branch": p.branch,
                "change_id": p.change_id or None, "change_url": p.change_url or None,
                "subject": records.line(p.subject, 1000) or None, "state": "running",
                "trigger": self.trigger,
                "requested_by": p.event_account or self.ci.account or "unknown"}
        try:
            run = records.create(self.api, body)
            if run.get("state") not in ("queued", "running"):
                # That event's run is over: this is a rebuild (Jenkins' "Rebuild", a
                # build by hand with the same parameters), a run of its own.
                run = records.create(self.api, {**body,
                                                "event_key": f"{body['event_key']} {self.token}"})
            self.run_id = int(run["id"])
            changes: dict[str, Any] = {}
            if run.get("state") == "queued":
                changes["state"] = "running"
            if os.environ.get("BUILD_URL"):
                changes["build_url"] = os.environ["BUILD_URL"]
            if changes:
                records.change(self.api, self.run_id, changes)
            return str(run.get("url") or f"{self.api.url}/ci/{self.run_id}")
        except (ApiUnavailable, ApiRefused, ValueError, KeyError, TypeError) as error:
            log.warning("the run is not recorded in the API: %s", error)
            return None

    def _record_end(self, state: str, vote: int | None, message: str,
                    result: RunResult | None) -> None:
        if self.run_id is None:
            return
        body = {"state": state, "vote": vote, "message": message[:16000],
                "hosts": [{"original": host.original.name,
                           "clone": host.clone.name if host.clone else None,
                           "result": outcome.host_state(host)} for host in self.hosts],
                "left_out": self.left_out,
                "result": outcome.summary(result, self.secrets)}
        try:
            records.change(self.api, self.run_id, body)
        except (ApiUnavailable, ApiRefused) as error:
            log.warning("the run's result is not recorded in the API: %s", error)

    # Helpers ---------------------------------------------------------------------------

    def _left(self) -> float:
        return max(1.0, self.deadline - time.monotonic())

    def _check_time(self) -> None:
        if self.stopping.is_set():
            raise Abandoned("the run was stopped")
        if time.monotonic() > self.deadline:
            raise Abandoned(f"the run took longer than ci.run_timeout "
                            f"({self.ci.run_timeout:g} s)")

    def _git(self, directory: Path, *arguments: str) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            ran = process.run(["git", "-C", str(directory), *arguments],
                              self.ci.fetch_timeout, env=env, text=True)
        except (process.TimedOut, OSError) as error:
            raise SourceError(f"git {arguments[0]}: {error}") from None
        if ran.returncode != 0:
            raise SourceError(f"git {arguments[0]} failed: {ran.stderr.strip()[-500:]}")
        return str(ran.stdout)


def _smoke_json(ran: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    if ran.returncode not in (0, 1):
        raise ShellError(f"{what} could not run (status {ran.returncode}): "
                         f"{ran.stderr.strip()[-300:]}")
    try:
        found = json.loads(ran.stdout)
    except ValueError:
        raise ShellError(f"{what} printed no results") from None
    if not isinstance(found, dict):
        raise ShellError(f"{what} printed no results")
    return found


def refusal(config: Config, parameters: JobParameters, reporter: Reporter
            ) -> tuple[str | None, str]:
    """Why this run is not one to make (or None), and the trigger phrase asked for.

    The job asks again whatever started it, and believes Gerrit, not its parameters: the
    dispatcher decided already, but the Gerrit Trigger plugin matches text only, and
    anyone who may build the job in Jenkins (or holds the webhook secret) could otherwise
    name an operator and have any patch set cloned and Gerrit told anything. So the
    trigger's rules (ci/trigger.py) are applied to the event the parameters describe, and
    then Gerrit must have that change on that project and branch, with a review message
    on that patch set by that person asking for that phrase.
    """
    if parameters.event_type != "comment-added" or parameters.comment_text is None:
        return (f"a {parameters.event_type} event: opslab ci run tests the changes a "
                "reviewer asks for in a comment"), ""
    event = parse_event({
        "type": "comment-added", "comment": parameters.comment_text,
        "author": {"username": parameters.event_account} if parameters.event_account else {},
        "change": {"project": parameters.project, "branch": parameters.branch,
                   "number": parameters.change, "id": parameters.change_id or None,
                   "status": "NEW"},
        "patchSet": {"number": parameters.patchset, "revision": parameters.revision}})
    if not isinstance(event, CommentAdded):
        return f"the parameters do not describe a comment: {event}", ""
    trigger = Trigger.from_config(config)
    try:
        decision = trigger.decide(event)
    finally:
        close = getattr(trigger.may_trigger, "close", None)
        if close is not None:
            close()
    if decision.run is None:
        return decision.reason, ""
    phrase = decision.run.trigger
    found = reporter.comments(Target.from_parameters(parameters))
    if (found.project, found.branch, found.number) != (
            parameters.project, parameters.branch, parameters.change):
        return (f"Gerrit has change {found.number} on {found.project} {found.branch}, not "
                f"{parameters.change} on {parameters.project} {parameters.branch}"), phrase
    who = parameters.event_account.casefold()
    if not any(name.casefold() == who and matching_phrase(text, (phrase,))
               for name, text in found.said):
        return (f"Gerrit has no review message by {parameters.event_account} asking for "
                f"{phrase!r} on patch set {parameters.patchset}"), phrase
    return None, phrase



def main(argv: list[str], config_path: str | None = None) -> int:
    """``opslab ci run``: test the patch set the GERRIT_* environment names."""
    parser = argparse.ArgumentParser(
        prog="opslab ci run",
        description="Test the patch set the GERRIT_* environment names on throwaway clones, "
                    "and vote. Exit 0: passed; 1: failed; 2: it could not be tested.")
    add_config_option(parser)
    parser.add_argument("--junit", metavar="FILE", help="write the results as JUnit XML")
    parser.add_argument("--workdir", metavar="DIR",
                        help="where the patch set is fetched (default: a temporary directory)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="opslab ci run: %(message)s")
    try:
        config = load(options.config or config_path)
        parameters = read_parameters(os.environ)
        reporter = Reporter.from_settings(config.ci)
        api = _api(config)
        if not config.ci.clone_key_file:
            raise ConfigError("set ci.clone_key_file: the CI's account logs in to its clones "
                              "with that key")
        refused, phrase = refusal(config, parameters, reporter)
    except (ConfigError, ParameterError, GerritError, ValueError) as error:
        sys.stderr.write(f"opslab ci run: {error}\n")
        return INFRASTRUCTURE
    except PolicyUnavailable as error:
        sys.stderr.write(f"opslab ci run: cannot tell who may start runs: {error}\n")
        return INFRASTRUCTURE
    if refused is not None:
        sys.stderr.write(f"opslab ci run: not a run to make, nothing is tested or posted: "
                         f"{refused}\n")
        return INFRASTRUCTURE
    with tempfile.TemporaryDirectory(prefix="opslab-ci-") as temporary:
        workdir = Path(options.workdir) if options.workdir else Path(temporary)
        shell = Shell(config.ci.api_user or "", config.ci.clone_key_file,
                      Path(temporary) / "known_hosts")
        job = Job(config, parameters, workdir, api, reporter, shell, phrase)

        def stop(number: int, frame: FrameType | None) -> None:
            # The threads are told; the main one is stopped once, unless it is cleaning up
            # already: the clean-up is never cut short by a signal (Jenkins' SIGKILL will
            # be, and then the reaper removes what is left).
            job.stopping.set()
            if job.cleaning:
                return
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise Abandoned(f"stopped by signal {signal.Signals(number).name}")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        return job.run(Path(options.junit) if options.junit else None)

"""Attacks on the CI harness (issue 13), at the unit level: the job `opslab ci run`
(ci/job.py) with its parts stubbed where they would need the cloud, the secret scan on a
real git repository, the webhook endpoint over real HTTP on the loopback, the API's
schema for CI runs, and ci/shell.py with a fake ssh.

Each test asserts what must hold; they were written as the holes were found, and the
holes fixed since. One is still marked ``xfail(strict=True)``: a hole mitigated by the
deployment (docs/ci.md says how), not by the code. No site is started here; keys are made
at test time.
"""

import base64
import contextlib
import http.client
import json
import os
import queue
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opslab.api.contract import Contract
from opslab.apiclient import ApiUnavailable
from opslab.ci import job as job_module
from opslab.ci import records, secrets
from opslab.ci import trigger as trigger_module
from opslab.ci.clones import Clone, Original, Plan
from opslab.ci.events import CommentAdded, Event, SeenEvents, parse_event
from opslab.ci.job import Job, refusal
from opslab.ci.outcome import HostRun
from opslab.ci.parameters import JobParameters, read_parameters
from opslab.ci.reporter import Comments, Report
from opslab.ci.shell import Shell, ShellError
from opslab.ci.source import Fetched, fetch_patchset
from opslab.ci.trigger import RunKey
from opslab.ci.webhook import WebhookListener
from opslab.config import CiSettings, Config
from tests.remote import Remote

PROJECT = "operations/puppet"
KEY_FILE = "modules/tls/files/wildcard.key"
SECRET = "s3cret-Of-The-webhook_0123456789"


# Helpers -----------------------------------------------------------------------------


def private_key(tmp_path: Path) -> str:
    path = tmp_path / "made.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path.read_text()


def settings(**overrides: Any) -> CiSettings:
    fields: dict[str, Any] = {"projects": (PROJECT,), "account": "ci", "api_user": "cibot",
                              "gerrit_url": "https://review.example.org",
                              "clone_key_file": "unused", "fetch_timeout": 60.0}
    return CiSettings(**{**fields, **overrides})


def environment(revision: str = "a" * 40, **overrides: str) -> dict[str, str]:
    """GERRIT_* parameters as the dispatcher (or a Jenkins user) passes them."""
    values = {
        "GERRIT_EVENT_TYPE": "comment-added", "GERRIT_PROJECT": PROJECT,
        "GERRIT_BRANCH": "production", "GERRIT_CHANGE_NUMBER": "42",
        "GERRIT_PATCHSET_NUMBER": "1", "GERRIT_PATCHSET_REVISION": revision,
        "GERRIT_EVENT_COMMENT_TEXT": base64.b64encode(b"Patch Set 1:\n\nrecheck").decode(),
        "GERRIT_EVENT_ACCOUNT_USERNAME": "alice", "GERRIT_EVENT_HASH": "1234",
        "GERRIT_CHANGE_SUBJECT": "web: serve the new motd",
    }
    values.update(overrides)
    return values


class DownApi:
    """The API as the job holds it, down: every request is ApiUnavailable. The bodies the
    job tried to send are kept."""

    url = "http://127.0.0.1:9"
    token_file = "unused"
    user_agent = "opslab-ci-attacks"
    user = "cibot"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None) -> Any:
        self.sent.append((method, path, body))
        raise ApiUnavailable("down (a test)")


class FakeReporter:
    """Gerrit as the job sees it: every report is kept; the vote is the result's."""

    def __init__(self, said: tuple[tuple[str, str], ...] = ()) -> None:
        self.reports: list[Any] = []
        self.failures: list[Any] = []
        self.informed: list[str] = []
        self.said = said

    def report(self, target: Any, result: Any) -> Report:
        self.reports.append(result)
        return Report("opslab CI: ...", 1 if result.passed else -1)

    def report_failure(self, target: Any, failure: Any) -> Report:
        self.failures.append(failure)
        return Report(f"opslab CI could not test this change: {failure.what}", None)

    def inform(self, target: Any, message: str) -> Report:
        self.informed.append(message)
        return Report(message, None, "nothing was tested")

    def comments(self, target: Any) -> Comments:
        """Gerrit has the change, and only the messages the test gives it."""
        return Comments(target.project, target.branch, target.change, tuple(self.said))


class RecordingShell:
    """A clone that answers every command, as a passing host would."""

    def __init__(self, revision: str = "a" * 40) -> None:
        self.revision = revision
        self.commands: list[str] = []

    def run(self, address: str, command: str, timeout: float
            ) -> "subprocess.CompletedProcess[str]":
        self.commands.append(command)
        stdout = json.dumps({"success": True, "duration": 1.0, "changed_resources": [],
                             "commit": self.revision}) \
            if " branch apply " in command else "{}"
        return subprocess.CompletedProcess(["ssh"], 0, stdout, "")


def passing_host(self: Job, host: HostRun) -> None:
    """Job._host for a host whose every run and check passed (no clone left to delete)."""
    for phase in ("target", "change", "again"):
        host.runs[phase] = {"success": True, "duration": 1.0, "changed_resources": []}
    host.inside = {"results": []}
    host.outside = {"results": []}


def make_job(tmp_path: Path, parameters: JobParameters, ci: CiSettings,
             shell: Any = None) -> tuple[Job, FakeReporter, DownApi]:
    reporter, api = FakeReporter(), DownApi()
    job = Job(Config(ci=ci), parameters, tmp_path / "work", api,  # type: ignore[arg-type]
              reporter, shell or RecordingShell(), "recheck")  # type: ignore[arg-type]
    return job, reporter, api


def one_host(*_: Any) -> Plan:
    return Plan([Original("web1.web.example.org", "web", {"web": {}}, {})], [])


@pytest.fixture
def change_with(tmp_path: Path) -> Any:
    """A remote with production and a change on it as refs/changes/42/42/1; its revision."""
    remote = Remote(tmp_path / "remote")
    remote.commit("production", {"manifests/site.pp": "node default {}\n",
                                 "modules/web/manifests/init.pp": "class web {}\n"})

    def make(files: dict[str, str | None]) -> tuple[Remote, str]:
        revision = remote.commit("change", files, base="production")
        remote.git("push", "--quiet", "--force", "origin",
                   f"{revision}:refs/changes/42/42/1")
        return remote, revision

    return make


# 1. The secret scan is blind to what the change marks binary ---------------------------


@pytest.mark.parametrize("files", [
    pytest.param({".gitattributes": "*.key -diff\n"}, id="root-gitattributes-minus-diff"),
    pytest.param({"modules/tls/.gitattributes": "*.key binary\n"},
                 id="module-gitattributes-binary"),
    pytest.param({}, id="nul-byte-in-the-key-file"),
])
def test_a_private_key_is_found_whatever_the_change_says_of_its_files(
        change_with: Any, files: dict[str, str], tmp_path: Path) -> None:
    key = private_key(tmp_path)
    if not files:
        key += "\0\n"  # one NUL byte: git takes the whole file for binary
    remote, revision = change_with({**files, KEY_FILE: key})
    fetched = fetch_patchset(remote.url, 42, 1, revision, tmp_path / "mirror", 60)

    found = secrets.scan(fetched, 60)

    assert [(item.file, item.kind) for item in found] == [(KEY_FILE, "Private Key")]


def test_the_same_key_without_tricks_is_found(change_with: Any, tmp_path: Path) -> None:
    """The control for the test above: the scan works on a plain text key."""
    remote, revision = change_with({KEY_FILE: private_key(tmp_path)})
    fetched = fetch_patchset(remote.url, 42, 1, revision, tmp_path / "mirror", 60)
    assert [(item.file, item.kind) for item in secrets.scan(fetched, 60)] == [
        (KEY_FILE, "Private Key")]


# 2. A scan that could not run does not stop a +1 -------------------------------------


def test_a_change_the_scan_cannot_read_is_not_voted_plus_one(
        change_with: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 MiB in production; 4 KiB here to keep the test fast: the same code path.
    monkeypatch.setattr(secrets, "MAX_DIFF_BYTES", 4096)
    remote, revision = change_with({KEY_FILE: private_key(tmp_path),
                                    "modules/web/files/padding.txt": "x\n" * 4096})
    monkeypatch.setattr(job_module.clones, "plan", one_host)
    monkeypatch.setattr(Job, "_host", passing_host)
    # The project's URL, as ci.git_url names it: {project} in a template.
    (tmp_path / "repos" / "operations").mkdir(parents=True)
    (tmp_path / "repos" / PROJECT).symlink_to(remote.url)
    ci = settings(git_url=str(tmp_path / "repos" / "{project}"), push_url=remote.url)
    job, reporter, _ = make_job(tmp_path, read_parameters(environment(revision)), ci)

    status = job.run(tmp_path / "junit.xml")

    assert job.scan_error is not None
    assert "MiB" in job.scan_error
    assert "the scan could not run" in (tmp_path / "junit.xml").read_text()
    assert reporter.reports, "the job posted nothing"
    assert not reporter.reports[0].passed, "voted +1 on a change carrying a private key"
    assert status != job_module.PASSED


# 3. Nothing tested, +1 all the same ----------------------------------------------------


def test_a_run_that_tested_no_host_gives_no_plus_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    revision = "b" * 40
    monkeypatch.setattr(job_module, "fetch_patchset", lambda *a: Fetched(
        "refs/changes/42/42/1", revision, "c" * 40, tmp_path))
    monkeypatch.setattr(job_module, "scan", lambda *a: [])
    monkeypatch.setattr(job_module, "change_files", lambda *a: ["modules/nginx/init.pp"])
    monkeypatch.setattr(job_module.clones, "plan", lambda *a: Plan([], []))
    job, reporter, _ = make_job(tmp_path, read_parameters(environment(revision)), settings())

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    job.run(None)

    # The job leaves the process's signals as they were (its caller's to set: ignored,
    # they would be ignored by every process started after it).
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert reporter.reports == [], "a vote for a change nothing tested"
    [said] = reporter.informed
    assert said.startswith("opslab CI: nothing to test: no host follows branch production")


# 4. A stop signal waits for every clone in flight --------------------------------------


@pytest.fixture
def restored_signals() -> Iterator[None]:
    saved = {number: signal.getsignal(number)
             for number in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_a_stop_signal_cleans_up_promptly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_signals: None) -> None:
    revision = "b" * 40
    monkeypatch.setattr(job_module, "fetch_patchset", lambda *a: Fetched(
        "refs/changes/42/42/1", revision, "c" * 40, tmp_path))
    monkeypatch.setattr(job_module, "scan", lambda *a: [])
    monkeypatch.setattr(job_module, "change_files", lambda *a: ["manifests/site.pp"])
    monkeypatch.setattr(job_module.clones, "plan", one_host)
    monkeypatch.setattr(Job, "_push", lambda self, repository: None)
    after_stop: list[str] = []
    stopped = threading.Event()

    def slow_host(self: Job, host: HostRun) -> None:
        # As clones.create waiting on the cloud (up to ci.clone_timeout): 3 s here.
        time.sleep(3)
        if stopped.is_set():
            after_stop.append("still cloning and testing after the stop signal")

    monkeypatch.setattr(Job, "_host", slow_host)
    job, reporter, _ = make_job(tmp_path, read_parameters(environment(revision)), settings())

    def stop(number: int, frame: Any) -> None:
        # What opslab ci run's handler does: tell the threads, raise in the main one.
        stopped.set()
        job.stopping.set()
        raise job_module.Abandoned("stopped by a test")

    signal.signal(signal.SIGALRM, stop)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    status = job.run(None)
    elapsed = time.monotonic() - started

    assert status == job_module.INFRASTRUCTURE
    assert not reporter.reports
    assert elapsed < 1.5, (f"the job ended {elapsed:.1f} s after it started, "
                           f"{elapsed - 0.3:.1f} s after the stop signal; {after_stop}")


# 5. The job's own check trusts whatever the Jenkins user typed -------------------------


class Operations:
    """ProjectMembers, as the directory would answer: alice is in operations."""

    description = "not a member of operations"

    def __init__(self, config: Any, project: str) -> None:
        pass

    def __call__(self, username: str) -> bool:
        return username == "alice"


def test_the_job_refuses_a_commenter_outside_operations(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What holds: the rules are asked again inside the job."""
    monkeypatch.setattr(trigger_module, "ProjectMembers", Operations)
    parameters = read_parameters(environment(GERRIT_EVENT_ACCOUNT_USERNAME="mallory"))
    reporter = FakeReporter()
    assert refusal(Config(ci=settings()), parameters, reporter)[0] == (  # type: ignore[arg-type]
        "mallory may not start runs (not a member of operations)")
    parameters = read_parameters(environment(GERRIT_PROJECT="other/repo"))
    assert refusal(Config(ci=settings()), parameters,  # type: ignore[arg-type]
                   reporter)[0] == "other/repo is not one of ci.projects"


def test_the_job_does_not_take_a_jenkins_users_word_for_who_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trigger_module, "ProjectMembers", Operations)
    # mallory, who may build the job in Jenkins, types alice's name: no such comment exists.
    forged = read_parameters(environment(GERRIT_EVENT_ACCOUNT_USERNAME="alice"))
    others = FakeReporter(said=(("mallory", "Patch Set 1:\n\nrecheck"),
                                ("alice", "Patch Set 1: Code-Review+1\n\nlooks good")))
    reason, _ = refusal(Config(ci=settings()), forged, others)  # type: ignore[arg-type]
    assert reason == "Gerrit has no review message by alice asking for 'recheck' on patch set 1"
    # alice's own comment, as Gerrit has it: the run is hers to ask for.
    hers = FakeReporter(said=(("Alice", "Patch Set 1:\n\nrecheck"),))
    assert refusal(Config(ci=settings()), forged, hers) == (None, "recheck")  # type: ignore[arg-type]


# 6. The webhook's 32 slots, held by anyone who can connect -----------------------------


@pytest.mark.xfail(strict=True, reason="32 idle connections from anyone (no secret needed) "
                   "take every slot of ci/webhook.py for 10 s each: Gerrit's POSTs are closed "
                   "at once, retried maxTries times, then dropped. Mitigated where it is "
                   "deployed: behind nginx, which buffers whole requests before passing them "
                   "on (docs/ci.md), never exposed directly")
def test_idle_anonymous_connections_do_not_lock_gerrit_out() -> None:
    events: queue.Queue[Event] = queue.Queue()
    listener = WebhookListener("127.0.0.1", 0, SECRET, events, SeenEvents(3600, 1000))
    listener.start()
    idle: list[socket.socket] = []
    try:
        for _ in range(32):
            idle.append(socket.create_connection(("127.0.0.1", listener.port), timeout=5))
        time.sleep(0.3)  # accepted, each holding a slot while it says nothing
        body = json.dumps({
            "type": "comment-added", "eventCreatedOn": 1_700_000_100,
            "change": {"project": "demo", "branch": "master", "number": 42,
                       "status": "NEW"},
            "patchSet": {"number": 1, "revision": "c" * 40},
            "author": {"username": "rev"}, "comment": "Patch Set 1:\n\nrecheck"}).encode()
        connection = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=5)
        try:
            connection.request("POST", f"/gerrit-events/{SECRET}", body=body,
                               headers={"Content-Type": "application/json"})
            answer: tuple[int, str] | str = (connection.getresponse().status, "")
        except (OSError, http.client.HTTPException) as error:
            answer = f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        assert answer == (200, ""), f"Gerrit's delivery was refused: {answer}"
    finally:
        for sock in idle:
            sock.close()
        assert listener.stop(timeout=5)


# 7. A change's subject can keep its run out of the API's records -----------------------


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


SUBJECTS = [pytest.param("web: \x1b[2Jserve the new motd", id="terminal-escape"),
            pytest.param("web: serve\x07 the new motd", id="bell")]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_the_jobs_record_of_a_hostile_subject_is_accepted(
        tmp_path: Path, contract: Contract, subject: str) -> None:
    parameters = read_parameters(environment(GERRIT_CHANGE_SUBJECT=subject))
    job, _, api = make_job(tmp_path, parameters, settings())

    job._record_start()

    method, path, body = api.sent[0]
    assert (method, path) == ("POST", "/v1/ci/runs")
    errors = [error.message for error in contract.schema("CiRunCreate").iter_errors(body)]
    assert errors == []


@pytest.mark.parametrize("subject", SUBJECTS)
def test_the_dispatchers_record_of_a_hostile_subject_is_accepted(
        contract: Contract, subject: str) -> None:
    event = parse_event({
        "type": "comment-added", "eventCreatedOn": 1_700_000_100,
        "change": {"project": PROJECT, "branch": "production", "number": 42,
                   "id": "I" + "0" * 40, "subject": subject, "status": "NEW",
                   "url": "https://review.example.org/c/42"},
        "patchSet": {"number": 1, "revision": "c" * 40},
        "author": {"username": "alice"}, "comment": "Patch Set 1:\n\nrecheck"})
    assert isinstance(event, CommentAdded)
    api = DownApi()
    with pytest.raises(ApiUnavailable):
        records.ApiRecorder(api).started(  # type: ignore[arg-type]
            RunKey(PROJECT, 42, 1, "recheck"), event, 7)
    errors = [error.message
              for error in contract.schema("CiRunCreate").iter_errors(api.sent[0][2])]
    assert errors == []


# 8. What reaches the clone's shell -----------------------------------------------------


HOSTILE = ["production;touch${IFS}pwned", "$(id)", "`id`", "a'b\"c", "-x --y"]


@pytest.mark.parametrize("branch", HOSTILE)
def test_hostile_gerrit_values_never_reach_the_clones_shell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, branch: str) -> None:
    """What holds: the branch pushed is made of the prefix, two numbers and a token, and
    is quoted; GERRIT_BRANCH, GERRIT_PROJECT, the subject and the comment reach no
    command line of the clone."""
    parameters = read_parameters(environment(
        GERRIT_BRANCH=branch, GERRIT_CHANGE_SUBJECT=branch,
        GERRIT_CHANGE_ID="I" + "0" * 40))
    shell = RecordingShell()
    job, _, _ = make_job(tmp_path, parameters, settings(), shell)
    clone = Clone("web1.web.example.org", "c42p1xabc123-web1.ci.example.org", "192.0.2.10")
    monkeypatch.setattr(job_module.clones, "create", lambda *a: clone)
    monkeypatch.setattr(job_module.clones, "first_report", lambda *a: {"success": True})
    monkeypatch.setattr(job_module.clones, "set_branch", lambda *a: None)
    monkeypatch.setattr(Job, "_smoke_outside", lambda self, clone: {"results": []})

    host = HostRun(Original("web1.web.example.org", "web", {"web": {}}, {}))
    job._host(host)

    assert host.error is None
    assert job.branch.startswith("ci/42/1-")
    assert len(shell.commands) == 4
    for command in shell.commands:
        assert branch not in command
        words = shlex.split(command)
        assert words[:2] == ["sudo", "-n"]
    assert f"--branch {job.branch} --json" in shell.commands[1]


def test_the_clones_name_is_quoted_in_the_catalog_command(tmp_path: Path) -> None:
    shell = RecordingShell()
    job, _, _ = make_job(tmp_path, read_parameters(environment()), settings(), shell)
    with contextlib.suppress(Exception):
        job._smoke_outside(Clone("web1.web.example.org", "x;id", "192.0.2.10"))
    (command,) = shell.commands
    # As the clone's shell reads it: ";" ends a command unless it is quoted.
    words = list(shlex.shlex(command, posix=True, punctuation_chars=True))
    assert ";" not in words, words


# 9. What a hostile clone prints is kept whole --------------------------------------------


def test_what_a_clone_prints_is_bounded(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec head -c 33554432 /dev/zero\n")  # 32 MiB
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    shell = Shell("cibot", str(tmp_path / "key"), tmp_path / "known_hosts")

    try:
        ran = shell.run("192.0.2.10", "sudo -n cat /var/lib/opslab/x.json", 30)
        kept = len(ran.stdout)
    except ShellError:
        kept = 0  # refused as too large: what should happen
    assert kept <= 8 * 1024 * 1024, f"{kept} bytes of a clone's output held in memory"


# 10. A change with a secret found is pushed as a branch all the same -------------------


def test_a_change_carrying_a_secret_is_not_pushed_as_a_branch(
        change_with: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote, revision = change_with({KEY_FILE: private_key(tmp_path)})
    (tmp_path / "repos" / "operations").mkdir(parents=True)
    (tmp_path / "repos" / PROJECT).symlink_to(remote.url)
    monkeypatch.setattr(job_module.clones, "plan", one_host)
    monkeypatch.setattr(Job, "_host", passing_host)
    pushed: list[str] = []
    push = Job._push

    def recorded(self: Job, repository: Path) -> None:
        pushed.append(self.branch)
        push(self, repository)

    monkeypatch.setattr(Job, "_push", recorded)
    ci = settings(git_url=str(tmp_path / "repos" / "{project}"), push_url=remote.url)
    job, reporter, _ = make_job(tmp_path, read_parameters(environment(revision)), ci)

    assert job.run(None) == job_module.FAILED
    assert [item.kind for item in reporter.reports[0].secrets] == ["Private Key"]
    assert pushed == [], f"pushed as {pushed}"


# 11. What the API says of a clone, and a run that is over -----------------------------


def test_a_clones_address_must_be_an_address() -> None:
    """It becomes an argument of ssh: an option or an alias must never get there."""
    from opslab.ci.clones import CloneError, _ipv4_first

    assert _ipv4_first(["2001:db8::5", "192.0.2.5"]) == "192.0.2.5"
    assert _ipv4_first(["2001:db8::5"]) == "2001:db8::5"
    for hostile in ("-oProxyCommand=touch /tmp/x", "evil.example.org", "192.0.2.5 -v"):
        with pytest.raises(CloneError, match="not one"):
            _ipv4_first(["192.0.2.6", hostile])


class StoredRuns(DownApi):
    """The API as the job records with it: the event's run is over already (a rebuild)."""

    def request(self, method: str, path: str, body: Any = None) -> Any:
        self.sent.append((method, path, body))
        if method == "POST" and body["event_key"].count(" ") == 3:
            run = {"id": 7, "state": "passed", "url": "https://opslab/v1/ci/runs/7"}
        else:
            run = {"id": 8, "state": "running", "url": "https://opslab/v1/ci/runs/8"}
        return http_answer(run)


def http_answer(document: Any) -> Any:
    from opslab.apiclient import Response

    return Response(201, {}, json.dumps(document).encode())


def test_a_rebuild_of_a_finished_run_is_a_run_of_its_own(tmp_path: Path) -> None:
    """Jenkins' Rebuild (or a build by hand with the same parameters) of an event whose run
    is over: not refused and lost, but recorded as another run."""
    job, _, _ = make_job(tmp_path, read_parameters(environment()), settings())
    api = StoredRuns()
    job.api = api  # type: ignore[assignment]

    assert job._record_start() == "https://opslab/v1/ci/runs/8"

    [first, second] = [body for method, _, body in api.sent if method == "POST"]
    assert second["event_key"] == f"{first['event_key']} {job.token}"
    assert job.run_id == 8

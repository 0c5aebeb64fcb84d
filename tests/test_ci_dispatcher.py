"""The dispatcher (opslab.ci.dispatcher) end to end: Gerrit's SSH stand-in
(tests/gerrit_ssh_standin.py), the webhook endpoint, Gerrit's REST stand-in for the
catch-up (tests/gerrit_standin.py) and the Jenkins stand-in (tests/jenkins_standin.py)
running a job of one shell step, all through the real clients (paramiko, pygerrit2,
python-jenkins).

Settings are short (a reconnect after 0.05 s, retries after 0.1 s) and every wait is on
a condition with a deadline.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from opslab.ci.dispatcher import Service, SetupError, build_service
from opslab.ci.events import CommentAdded
from opslab.ci.parameters import read_parameters
from opslab.ci.trigger import PolicyUnavailable, RunKey
from opslab.config import CiSettings, Config
from opslab.slapd import free_port
from tests.gerrit_ssh_standin import USER, GerritSshStandIn
from tests.gerrit_standin import GerritStandIn
from tests.jenkins_standin import JenkinsStandIn

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

PROJECT = "operations/puppet"
SECRET = "webhook-secret-0123456789abcdef"
JOB = "opslab-ci"
DEADLINE = 20.0
# The parameters build_parameters gives a comment-added event (a job must declare
# them: Jenkins drops the others).
PARAMETERS = (
    "GERRIT_EVENT_TYPE", "GERRIT_EVENT_HASH", "GERRIT_BRANCH", "GERRIT_TOPIC",
    "GERRIT_CHANGE_NUMBER", "GERRIT_CHANGE_ID", "GERRIT_PROJECT", "GERRIT_HASHTAGS",
    "GERRIT_CHANGE_WIP_STATE", "GERRIT_CHANGE_PRIVATE_STATE", "GERRIT_CHANGE_SUBJECT",
    "GERRIT_CHANGE_URL", "GERRIT_CHANGE_COMMIT_MESSAGE", "GERRIT_PATCHSET_NUMBER",
    "GERRIT_PATCHSET_REVISION", "GERRIT_REFSPEC", "GERRIT_CHANGE_OWNER",
    "GERRIT_CHANGE_OWNER_NAME", "GERRIT_CHANGE_OWNER_EMAIL", "GERRIT_CHANGE_OWNER_USERNAME",
    "GERRIT_PATCHSET_UPLOADER", "GERRIT_PATCHSET_UPLOADER_NAME",
    "GERRIT_PATCHSET_UPLOADER_EMAIL", "GERRIT_PATCHSET_UPLOADER_USERNAME",
    "GERRIT_EVENT_ACCOUNT", "GERRIT_EVENT_ACCOUNT_NAME", "GERRIT_EVENT_ACCOUNT_EMAIL",
    "GERRIT_EVENT_ACCOUNT_USERNAME", "GERRIT_EVENT_COMMENT_TEXT",
    "GERRIT_EVENT_UPDATED_APPROVALS", "GERRIT_NAME", "GERRIT_HOST", "GERRIT_PORT",
    "GERRIT_SCHEME", "GERRIT_VERSION",
)
# The job: one shell step that lasts while the hold file exists.
JOB_XML = """<project>
  <properties><hudson.model.ParametersDefinitionProperty><parameterDefinitions>
  {parameters}
  </parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>
  <concurrentBuild>true</concurrentBuild>
  <builders><hudson.tasks.Shell><command>while [ -e "$HOLD_FILE" ]; do sleep 0.05; done
</command></hudson.tasks.Shell></builders>
</project>""".format(parameters="\n  ".join(
    f"<hudson.model.StringParameterDefinition><name>{name}</name><defaultValue/>"
    "</hudson.model.StringParameterDefinition>" for name in PARAMETERS))


def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


class Recorded:
    """A recorder that remembers what it was told (and can fail, as an unreachable API)."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.calls: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def started(self, run: RunKey, event: CommentAdded, queue_id: int) -> str | None:
        if self.failing:
            raise OSError("the API is unreachable")
        with self._lock:
            self.calls.append(("started", run, queue_id))
            return f"run-{len(self.calls)}"

    def update(self, run_id: str, *, state: str, build_url: str | None = None) -> None:
        with self._lock:
            self.calls.append(("update", run_id, state, build_url))


class Site:
    """Gerrit (SSH and REST), Jenkins, and what the dispatcher needs to reach them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gerrit = GerritStandIn(root / "gerrit")
        user_key = paramiko.ECDSAKey.generate()
        self.ssh = GerritSshStandIn(user_key)
        self.hold = root / "hold"
        self.jenkins = JenkinsStandIn(root / "jenkins", executors=4,
                                      environ={**os.environ, "HOLD_FILE": str(self.hold)})
        self.jenkins.add_job(JOB, JOB_XML)
        key_file = root / "id_ecdsa"
        user_key.write_private_key_file(str(key_file))
        (root / "gerrit-password").write_text(self.gerrit.password)
        (root / "jenkins-token").write_text(self.jenkins.token)
        (root / "webhook-secret").write_text(SECRET)
        self.settings = CiSettings(
            projects=(PROJECT,), account="opslab-ci", gerrit_url=self.gerrit.url,
            gerrit_user=self.gerrit.user, gerrit_password_file=str(root / "gerrit-password"),
            request_timeout=5.0, gerrit_ssh_host="127.0.0.1", gerrit_ssh_port=self.ssh.port,
            gerrit_ssh_user=USER, ssh_key_file=str(key_file),
            known_hosts_file=str(self.ssh.write_known_hosts(root / "known_hosts")),
            ssh_timeout=2.0, ssh_keepalive=1.0, reconnect_min_seconds=0.05,
            reconnect_max_seconds=0.4, webhook_listen="127.0.0.1:0",
            webhook_secret_file=str(root / "webhook-secret"), state_dir=str(root / "state"),
            jenkins_url=self.jenkins.url, jenkins_user=self.jenkins.user,
            jenkins_token_file=str(root / "jenkins-token"), jenkins_job=JOB,
            jenkins_timeout=5.0, build_start_timeout=30.0)
        self.services: list[Service] = []

    def start(self, policy: Callable[[str], bool] = lambda username: username == "rev",
              recorder: Recorded | None = None, **overrides: Any) -> Service:
        service = build_service(Config(ci=self.settings._replace(**overrides)), policy=policy,
                                recorder=recorder, retry_delays=(0.1, 0.2), poll=0.05)
        self.services.append(service)
        service.start()
        if service.stream is not None:
            self.ssh.wait_for_streams(self.ssh.streams_opened + 1)
        return service

    def post(self, service: Service, event: dict[str, Any]) -> int:
        assert service.listener is not None
        body = {**event, "project": {"name": event["project"]}}  # as the plugin may send it
        request = urllib.request.Request(
            f"http://127.0.0.1:{service.listener.port}/gerrit-events/{SECRET}",
            data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json; charset=utf-8"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)

    def queued(self) -> list[dict[str, str]]:
        """The parameters of every build queued, in order."""
        from urllib.parse import parse_qsl, urlsplit
        return [dict(parse_qsl(urlsplit(r.path).query))
                for r in self.jenkins.requests_to("/buildWithParameters")]

    def settle(self, service: Service) -> None:
        """Wait until the dispatcher has taken every event queued, and a little more."""
        wait_until(lambda: service.events.empty(), "the event queue to empty")
        time.sleep(0.3)

    def stop(self) -> None:
        for service in self.services:
            assert service.stop(10), "the service's threads did not end"
        self.ssh.stop()
        self.jenkins.stop()
        self.gerrit.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path)
    yield made
    made.hold.unlink(missing_ok=True)
    made.stop()


def test_a_comment_by_both_paths_and_replayed_gives_exactly_one_build(site: Site) -> None:
    recorder = Recorded()
    service = site.start(recorder=recorder)
    change = site.gerrit.add_change()
    line = site.gerrit.add_comment(change.number, "recheck")
    site.ssh.push(line)
    assert site.post(service, line) == 200
    site.ssh.push(line)  # a replay
    service.reconnected(time.time() - 60)  # and the catch-up finds it too
    wait_until(lambda: site.queued(), "a build queued")
    wait_until(lambda: site.gerrit.requests and any(
        "/a/changes/?q=" in path for _, path, _ in site.gerrit.requests), "the catch-up")
    site.settle(service)
    [parameters] = site.queued()
    assert parameters["GERRIT_CHANGE_NUMBER"] == str(change.number)
    assert parameters["GERRIT_PATCHSET_REVISION"] == change.current.revision
    build = site.jenkins.wait_build(JOB, 1)
    assert build.result == "SUCCESS"
    job = read_parameters({name: value for name, value, _ in build.parameters})
    assert (job.project, job.change, job.patchset, job.comment_text) == \
        (PROJECT, change.number, 1, "Patch Set 1:\n\nrecheck")
    assert job.event_account == "rev"
    # Recorded: started with the queue item, then the build's URL.
    [queued] = service.dispatcher.queued
    assert queued.run == RunKey(PROJECT, change.number, 1, "recheck")
    assert queued.taken <= queued.queued
    wait_until(lambda: len(recorder.calls) == 2, "the build recorded")
    assert recorder.calls == [("started", queued.run, queued.queue_id),
                              ("update", "run-1", "running", build.url)]


def test_a_new_patch_set_cancels_the_running_build_of_the_older_one(site: Site) -> None:
    site.hold.touch()
    service = site.start()
    change = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck"))
    wait_until(lambda: (JOB, 1) in site.jenkins.builds, "the build to start")
    wait_until(lambda: any(run.build for run in service.dispatcher.runs()), "the build followed")
    other = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(other.number, "recheck"))
    wait_until(lambda: (JOB, 2) in site.jenkins.builds, "the other change's build")
    site.gerrit.add_patchset(change.number, {"README": "second\n"})
    site.ssh.push(site.gerrit.patchset_event(change.number))
    build = site.jenkins.wait_build(JOB, 1)
    assert build.result == "ABORTED"
    assert site.jenkins.build(JOB, 2).building  # another change's build is left alone
    [run] = [run for run in service.dispatcher.runs() if run.key.change == change.number]
    assert run.state == "cancelled"


def test_a_new_patch_set_cancels_a_build_still_in_the_queue(site: Site) -> None:
    site.jenkins.executors = 0
    recorder = Recorded()
    service = site.start(recorder=recorder)
    change = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(change.number, "check infra"))
    wait_until(lambda: service.dispatcher.queued, "the build queued")
    queue_id = service.dispatcher.queued[0].queue_id
    site.gerrit.add_patchset(change.number, {"README": "second\n"})
    site.ssh.push(site.gerrit.patchset_event(change.number))
    wait_until(lambda: (item := site.jenkins.item(queue_id)) is not None and item.cancelled,
               "the queue item cancelled")
    site.jenkins.executors = 2
    time.sleep(0.3)
    assert site.jenkins.builds == {}
    wait_until(lambda: ("update", "run-1", "cancelled", None) in recorder.calls,
               "the cancel recorded")


def test_a_comment_by_someone_not_allowed_starts_nothing(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="opslab")
    asked: list[str] = []

    def policy(username: str) -> bool:
        asked.append(username)
        return username == "rev"

    service = site.start(policy=policy)
    change = site.gerrit.add_change()
    mallory = {"_account_id": 1000666, "name": "Mallory", "email": "m@example.org",
               "username": "mallory"}
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck", author=mallory))
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck", author={
        "_account_id": 1, "name": "CI", "username": "opslab-ci"}))
    site.ssh.push(site.gerrit.add_comment(change.number, "looks good to me"))
    wait_until(lambda: caplog.text.count("no run for") >= 3, "three decisions")
    site.settle(service)
    assert site.queued() == []
    assert asked == ["mallory"]  # the policy is asked about requests for a run only
    assert "mallory may not start runs" in caplog.text
    assert "the comment is the CI account's own" in caplog.text


def test_the_stream_dropped_while_a_comment_is_made_still_triggers_after_the_catch_up(
        site: Site) -> None:
    service = site.start(webhook_listen=None)
    change = site.gerrit.add_change()
    site.ssh.refusing = True
    site.ssh.drop()
    line = site.gerrit.add_comment(change.number, "recheck")
    site.ssh.push(line)  # reaches no stream: lost, as with Gerrit
    time.sleep(0.2)
    site.ssh.refusing = False
    wait_until(lambda: site.queued(), "the build queued after the catch-up")
    site.settle(service)
    [parameters] = site.queued()
    assert parameters["GERRIT_CHANGE_NUMBER"] == str(change.number)
    assert parameters["GERRIT_EVENT_TYPE"] == "comment-added"


def test_a_recheck_while_running_starts_nothing_after_it_finished_a_new_build(
        site: Site) -> None:
    site.hold.touch()
    service = site.start()
    change = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck"))
    wait_until(lambda: any(run.build for run in service.dispatcher.runs()), "the build")
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck", created=time.time() + 1))
    site.settle(service)
    assert len(site.queued()) == 1
    site.hold.unlink()
    assert site.jenkins.wait_build(JOB, 1).result == "SUCCESS"
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck", created=time.time() + 2))
    wait_until(lambda: len(site.queued()) == 2, "a second build")
    # Another phrase is another run, even while one runs.
    site.hold.touch()
    site.ssh.push(site.gerrit.add_comment(change.number, "check infra",
                                          created=time.time() + 3))
    wait_until(lambda: len(site.queued()) == 3, "the check infra build")


def test_undecided_is_tried_again_then_given_up(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    answers = [PolicyUnavailable("the directory did not answer"), True]
    down = {"always": False}

    def policy(username: str) -> bool:
        if down["always"]:
            raise PolicyUnavailable("the directory did not answer")
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    service = site.start(policy=policy)
    change = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck"))
    wait_until(lambda: site.queued(), "the build after a retry")
    down["always"] = True
    other = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(other.number, "recheck"))
    wait_until(lambda: "gave up on comment-added" in caplog.text, "the error")
    assert "after 3 attempt(s): cannot tell whether rev may start runs" in caplog.text
    site.settle(service)
    assert len(site.queued()) == 1


def test_an_unreachable_api_does_not_stop_a_run(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    service = site.start(recorder=Recorded(failing=True))
    change = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck"))
    assert site.jenkins.wait_build(JOB, 1).result == "SUCCESS"
    wait_until(lambda: "not recorded in the API: the API is unreachable" in caplog.text,
               "the warning")
    assert service.dispatcher.queued


def test_a_restart_catches_up_from_the_position_and_repeats_nothing(site: Site) -> None:
    first = site.start()
    change = site.gerrit.add_change()
    site.ssh.push(site.gerrit.add_comment(change.number, "recheck"))
    wait_until(lambda: site.queued(), "the first build")
    site.settle(first)
    assert first.stop(10)
    site.services.remove(first)
    later = site.gerrit.add_change()
    site.gerrit.add_comment(later.number, "recheck")  # while no dispatcher runs
    second = site.start()
    wait_until(lambda: len(site.queued()) == 2, "the build of the comment made meanwhile")
    site.settle(second)
    time.sleep(0.3)
    assert [p["GERRIT_CHANGE_NUMBER"] for p in site.queued()] == \
        [str(change.number), str(later.number)]


def test_nothing_in_is_refused(site: Site) -> None:
    with pytest.raises(SetupError, match="no events would come in"):
        build_service(Config(ci=site.settings._replace(gerrit_ssh_host=None,
                                                       webhook_listen=None)))


def test_sigterm_stops_the_command_within_its_deadline(site: Site, tmp_path: Path) -> None:
    ci = site.settings._replace(webhook_listen=f"127.0.0.1:{free_port()}")
    document = {"ci": {key: list(value) if isinstance(value, tuple) else value
                       for key, value in ci._asdict().items()
                       if value != getattr(CiSettings(), key)}}
    config = tmp_path / "opslab.yaml"
    config.write_text(yaml.safe_dump(document))
    process = subprocess.Popen([sys.executable, "-m", "opslab.cli", "--config", str(config),
                                "ci", "dispatch"], stderr=subprocess.PIPE, text=True)
    try:
        site.ssh.wait_for_streams(1, timeout=DEADLINE)
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == 0, errors
    assert "SIGTERM: stopping" in errors
    assert "listening for Gerrit's webhooks" in errors

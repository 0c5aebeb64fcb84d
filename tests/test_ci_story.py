"""The CI harness's job end to end on the local provider: ``opslab ci run`` started with the
GERRIT_* parameters of a reviewer's comment fetches the patch set from the Gerrit
stand-in's repository, clones the hosts the change affects through the site's API (real
instances: cloud-init, bootstrap, the agent's first run on the target branch), applies the
change twice over SSH, runs the smoke tests inside and outside, scans for secrets, votes
through pygerrit2 on the exact revision, and deletes its clones.

Everything but Gerrit is real: the site of :mod:`tests.site` (nginx, gunicorn, slapd,
apt-cacher-ng, the control repository over git's dumb HTTP), real ``puppet apply`` on the
clones, real smoke tests, real git. Several jobs run side by side, as Jenkins' executors
would run them, so the module costs about one clone's time.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from opslab.api import context
from opslab.api.app import create_app
from opslab.api.reaper import GRACE, reap
from opslab.api.store import now
from opslab.ci.events import parse_event
from opslab.ci.parameters import build_parameters
from opslab.config import load
from tests.ci_site import (
    OPERATOR,
    PROJECT,
    REPO,
    Chain,
    Harness,
    build_of,
    ci_site,
    clones_left,
    review,
    review_loop,
    running_clone,
    wait_for,
    webhook,
)
from tests.local_instances import local_image_fixture  # noqa: F401 (a fixture)

JOB_DEADLINE = 900.0
GREETER = "modules/greeter/manifests/init.pp"


class Ran(NamedTuple):
    status: int
    output: str
    junit: Path


def start_job(harness: Harness, number: int, name: str,
              author: dict[str, Any] | None = None) -> "subprocess.Popen[str]":
    """The job for a new comment on change ``number`` (by ``author``, default an operator),
    as Jenkins starts it: the GERRIT_* parameters in its environment, in a workspace of
    its own."""
    event = parse_event(harness.gerrit.add_comment(number, "check infra",
                                                   author=author or OPERATOR))
    assert not hasattr(event, "reason"), event
    workspace = harness.work / "workspace" / name
    workspace.mkdir(parents=True)
    assert harness.site.certificates is not None
    environment = {**os.environ, **build_parameters(event),  # type: ignore[arg-type]
                   "WORKSPACE": str(workspace), "BUILD_URL": f"http://jenkins/job/x/{number}/",
                   "SSL_CERT_FILE": str(harness.site.certificates.ca)}
    return subprocess.Popen(
        [sys.executable, "-m", "opslab.cli", "--config", str(harness.config), "ci", "run",
         "--junit", str(workspace / "junit.xml")],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=workspace, start_new_session=True)


def finish(job: "subprocess.Popen[str]", junit: Path) -> Ran:
    try:
        output, _ = job.communicate(timeout=JOB_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
        raise AssertionError(f"the job did not finish in {JOB_DEADLINE:g} s:\n{output}") \
            from None
    return Ran(job.returncode, output, junit)


def greeter(extra: str) -> str:
    """The example greeter's manifest with ``extra`` resources in its class."""
    source = (REPO / "examples" / "control-repo" / GREETER).read_text()
    return source.replace("  service { 'greeter':", extra + "  service { 'greeter':", 1)


@pytest.fixture(scope="module")
def harness(local_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with ci_site(tmp_path_factory.mktemp("ci-site"), local_image) as made:
        yield made


@pytest.fixture(scope="module")
def outcomes(harness: Harness) -> dict[str, tuple[int, Ran]]:
    """Four changes tested side by side: a good one, one that breaks the greeter's Puppet
    run, one that is not idempotent, one that adds a private key."""
    key = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    changes = {
        "good": {"modules/greeter/files/motto": "be kind\n"},
        "broken": {GREETER: greeter("  exec { 'greeter-fails': command => '/bin/false' }\n")},
        # An exec with no guard runs on every run: the second apply changes it again.
        "unidempotent": {GREETER: greeter("  exec { 'greeter-touch': command => '/bin/true' }\n")},
        "key": {"modules/greeter/files/wildcard.key": key},
    }
    numbers = {name: harness.gerrit.add_change(PROJECT, "production", f"The {name} change",
                                               files).number
               for name, files in changes.items()}
    jobs = {name: start_job(harness, number, name) for name, number in numbers.items()}
    return {name: (numbers[name], finish(job, harness.work / "workspace" / name / "junit.xml"))
            for name, job in jobs.items()}


def test_a_good_change_gets_verified_plus_one(harness: Harness,
                                             outcomes: dict[str, tuple[int, Ran]]) -> None:
    number, ran = outcomes["good"]
    assert ran.status == 0, ran.output
    voted = review(harness, number)
    assert voted["labels"] == {"Verified": 1}, voted
    assert voted["revision"] == harness.gerrit.changes[number].current.revision
    assert voted["message"].startswith("opslab CI: passed"), voted["message"]
    assert "clone of app1.web.example.org" in voted["message"], voted["message"]
    # Narrowed: the change touches only the greeter module, which web1 does not use.
    assert "web1" not in voted["message"], voted["message"]
    junit = ran.junit.read_text()
    assert "Puppet run of the change" in junit
    assert 'name="answers with its greeting from outside"' in junit
    assert 'name="answers with its greeting"' in junit


def test_clones_are_deleted_after_every_run(harness: Harness,
                                            outcomes: dict[str, tuple[int, Ran]]) -> None:
    assert clones_left(harness) == []
    assert harness.local.records() == []


def test_a_change_that_breaks_a_class_gets_minus_one_with_the_failure(
        harness: Harness, outcomes: dict[str, tuple[int, Ran]]) -> None:
    number, ran = outcomes["broken"]
    assert ran.status == 1, ran.output
    voted = review(harness, number)
    assert voted["labels"] == {"Verified": -1}, voted
    assert "* Puppet failed: Exec[greeter-fails]:" in voted["message"], voted["message"]
    assert "returned 1 instead of one of [0]" in voted["message"], voted["message"]
    assert 'name="Puppet run of the change"' in ran.junit.read_text()


def test_a_change_that_is_not_idempotent_gets_minus_one_naming_the_resource(
        harness: Harness, outcomes: dict[str, tuple[int, Ran]]) -> None:
    number, ran = outcomes["unidempotent"]
    assert ran.status == 1, ran.output
    voted = review(harness, number)
    assert voted["labels"] == {"Verified": -1}, voted
    message = voted["message"]
    assert "* Changed again by the second apply (not idempotent): Exec[greeter-touch]" in \
        message, message
    assert "second run of the change changes nothing" in ran.junit.read_text()


def test_a_change_that_adds_a_private_key_gets_minus_one_naming_the_file_and_goes_nowhere(
        harness: Harness, outcomes: dict[str, tuple[int, Ran]]) -> None:
    number, ran = outcomes["key"]
    assert ran.status == 1, ran.output
    voted = review(harness, number)
    assert voted["labels"] == {"Verified": -1}, voted
    message = voted["message"]
    assert "* modules/greeter/files/wildcard.key, line 1: Private Key" in message, message
    assert "Nothing was cloned" in message, message
    assert "PRIVATE KEY-----" not in message
    assert "modules/greeter/files/wildcard.key:1: Private Key" in ran.junit.read_text()
    # Not pushed: no branch of this change in the control repository.
    assert harness.site.remote is not None
    assert harness.site.remote.git("ls-remote", "--heads", harness.site.remote.url,
                                   f"refs/heads/ci/{number}/*") == ""


def test_a_cloud_that_refuses_gives_a_message_and_no_vote(
        harness: Harness, outcomes: dict[str, tuple[int, Ran]]) -> None:
    """The CI project's quota at nothing: the API refuses the clone, which is not the
    change's fault: no label, a message saying what failed and how to run it again."""
    status, answer = harness.site.request("PUT", "/v1/projects/ci/quota", {
        "instances": 0, "cores": None, "ram_mb": None}, as_="olga")
    assert status == 200, answer
    try:
        number = harness.gerrit.add_change(PROJECT, "production", "Refused",
                                           {"modules/greeter/files/motto": "hi\n"}).number
        ran = finish(start_job(harness, number, "refused"),
                     harness.work / "workspace" / "refused" / "junit.xml")
    finally:
        status, answer = harness.site.request("PUT", "/v1/projects/ci/quota", {
            "instances": None, "cores": None, "ram_mb": None}, as_="olga")
        assert status == 200, answer
    assert ran.status == 2, ran.output
    voted = review(harness, number)
    assert voted["labels"] in ({}, None), voted
    assert voted["message"].startswith("opslab CI could not test this change:"), voted
    assert "quota" in voted["message"], voted["message"]
    assert 'Comment "check infra" to run it again.' in voted["message"], voted["message"]
    assert clones_left(harness) == []


def test_a_job_killed_leaves_nothing_after_the_reaper(
        harness: Harness, outcomes: dict[str, tuple[int, Ran]]) -> None:
    """kill -9 of the job (and everything it started) once its clone exists: the clone
    stays until the reaper's pass past ci.run_timeout removes it, instance and all."""
    number = harness.gerrit.add_change(PROJECT, "production", "Killed",
                                       {"modules/greeter/files/motto": "bye\n"}).number
    job = start_job(harness, number, "killed")
    try:
        deadline = time.monotonic() + 300
        while not running_clone(harness, f"c{number}p1x"):
            assert job.poll() is None, job.communicate()[0]
            assert time.monotonic() < deadline, "the job made no clone"
            time.sleep(1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
    [clone] = clones_left(harness)
    assert [record.name for record in harness.local.records()] == [clone]
    assert harness.site.api is not None
    config = load(str(harness.site.api.config))
    app = create_app(config)
    with app.app_context():
        context.directory().begin_request()
        assert reap(now()).clones == []  # its run may still be going
        past = timedelta(seconds=config.ci.run_timeout + 1) + GRACE
        assert reap(now() + past).clones == [clone]
    app.extensions["opslab.engine"].dispose()
    assert clones_left(harness) == []
    assert harness.local.records() == []
    assert not [item for item in harness.gerrit.reviews if item.change == number]


def test_a_build_asked_by_someone_not_allowed_tests_nothing(
        harness: Harness, outcomes: dict[str, tuple[int, Ran]]) -> None:
    """The job asks the trigger's rules again, whoever started it (the Gerrit Trigger
    plugin matches text only; a Jenkins user could pass any parameters): a commenter who
    is not in operations gets no clone and no message."""
    number = harness.gerrit.add_change(PROJECT, "production", "Outsider",
                                       {"modules/greeter/files/motto": "x\n"}).number
    outsider = {"_account_id": 1000011, "name": "Dave", "username": "dave"}
    ran = finish(start_job(harness, number, "outsider", outsider),
                 harness.work / "workspace" / "outsider" / "junit.xml")
    assert ran.status == 2, ran.output
    assert "dave may not start runs" in ran.output, ran.output
    assert not [item for item in harness.gerrit.reviews if item.change == number]
    assert clones_left(harness) == []


@pytest.fixture(scope="module")
def chain(harness: Harness) -> Iterator[Chain]:
    with review_loop(harness) as made:
        yield made


def test_a_comment_in_gerrit_gets_a_vote_through_jenkins(
        harness: Harness, chain: Chain, outcomes: dict[str, tuple[int, Ran]]) -> None:
    """The review loop whole: a change touching the site manifest (every web host is
    cloned: two), a reviewer's comment arriving by SSH and by webhook and replayed; one
    Jenkins build, whose job tests the change and votes +1; the run recorded in the API
    with its build, and written to the web project's Server Admin Log."""
    number = harness.gerrit.add_change(PROJECT, "production", "A comment on the site manifest", {
        "manifests/site.pp": (REPO / "examples/control-repo/manifests/site.pp").read_text()
        + "# reviewed\n"}).number
    line = harness.gerrit.add_comment(number, "check infra", author=OPERATOR)
    started = time.monotonic()
    chain.ssh.push(line)
    assert webhook(chain, line) == 200
    chain.ssh.push(line)  # a replay
    wait_for(lambda: [item for item in harness.gerrit.reviews if item.change == number],
             "the vote", JOB_DEADLINE)
    voted = review(harness, number)
    assert voted["labels"] == {"Verified": 1}, voted
    assert "clone of web1.web.example.org" in voted["message"], voted["message"]
    assert "clone of app1.web.example.org" in voted["message"], voted["message"]
    [queued] = [item for item in chain.service.dispatcher.queued if item.run.change == number]
    assert queued.queued - started < 5.0  # the benchmark measures it properly
    build = build_of(chain, number)
    assert build is not None
    wait_for(lambda: build.result is not None, "the build's end", 60)
    assert build.result == "SUCCESS", build.console.decode(errors="replace")
    status, runs = harness.site.request("GET", f"/v1/ci/runs?change={number}", as_="olga")
    assert status == 200, runs
    [run] = runs
    assert (run["state"], run["vote"], run["requested_by"]) == ("passed", 1, "olga"), run
    # Recorded by the dispatcher when it queued the build (the job carried it on).
    assert run["jenkins_queue_id"] == build.queue_id, run
    assert str(run["build_url"]).startswith(chain.jenkins.url), run
    status, log = harness.site.request("GET", "/v1/projects/web/log", as_="olga")
    assert any(entry["message"].startswith(f"CI run {run['id']} ") for entry in log), log
    assert clones_left(harness) == []


def test_a_new_patch_set_cancels_the_running_build_and_the_old_one_gets_no_vote(
        harness: Harness, chain: Chain, outcomes: dict[str, tuple[int, Ran]]) -> None:
    """A new patch set while the job runs: its build is stopped, its clone deleted, no
    vote, the run recorded as cancelled. The comment that started it was made while the
    SSH stream was down: the catch-up after the reconnect found it."""
    change = harness.gerrit.add_change(PROJECT, "production", "Superseded",
                                       {"modules/greeter/files/motto": "v1\n"})
    chain.ssh.refusing = True
    chain.ssh.drop()
    # Lost, as Gerrit loses what it streams to nobody.
    chain.ssh.push(harness.gerrit.add_comment(change.number, "check infra", author=OPERATOR))
    time.sleep(1)
    opened = chain.ssh.streams_opened
    chain.ssh.refusing = False
    chain.ssh.wait_for_streams(opened + 1, timeout=60)
    wait_for(lambda: running_clone(harness, f"c{change.number}p1x"), "the clone", 300)
    harness.gerrit.add_patchset(change.number, {"modules/greeter/files/motto": "v2\n"})
    chain.ssh.push(harness.gerrit.patchset_event(change.number))
    build = build_of(chain, change.number)
    assert build is not None
    wait_for(lambda: build.result is not None, "the build's end", 120)
    assert build.result == "ABORTED", build.console.decode(errors="replace")
    assert not [item for item in harness.gerrit.reviews if item.change == change.number]
    wait_for(lambda: clones_left(harness) == [], "the clone's deletion", 120)
    status, runs = harness.site.request("GET", f"/v1/ci/runs?change={change.number}",
                                        as_="olga")
    assert status == 200, runs
    assert [run["state"] for run in runs] == ["cancelled"], runs

"""Jenkins through opslab.ci.jenkins (the real python-jenkins) against the Jenkins stand-in
(contract section 5): the wire sequence, parameters byte-exact, a queue item followed to
its build, cancelled and stopped builds, a job's shell step run for real with the GERRIT_*
parameters, errors that name what to check; and the shipped job: the Jenkins Job Builder
YAML renders to the shipped config.xml, whose shell step runs `opslab ci run`."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree as ET

import jenkins as python_jenkins
import pytest

from opslab.ci.events import Event, Malformed, parse_event
from opslab.ci.jenkins import Build, Jenkins, JenkinsError, JenkinsUnavailable
from opslab.ci.parameters import GerritServer, build_parameters
from opslab.config import CiSettings
from tests.jenkins_standin import JenkinsStandIn, live_in_group, read_junit
from tests.processes import settle
from tests.test_ci_events import change, comment_event

JOBS = Path(__file__).resolve().parent.parent / "ci" / "jobs"
SERVER = GerritServer("review", "gerrit.example.org", 29418, "ssh", "3.9.1",
                      "https://gerrit.example.org/")
# Values python-jenkins must carry byte for byte: quoting, form encoding, non-ASCII.
AWKWARD = {
    "QUOTES": '\\"Dev\\" <dev@example.org>',
    "AMP_PLUS": "a&b=c+d e%20f;g?h#i",
    "UNICODE": "Çà et là, ☃ — 雪",
    "EMPTY": "",
    "SPACES": "  two  spaces  ",
}


def job_xml(command: str, parameters: dict[str, str], *, concurrent: bool = True,
            junit: str | None = None) -> str:
    """A freestyle config.xml with string parameters (name: default), one shell step
    and, when ``junit`` is given, a junit publisher with allowEmptyResults."""
    definitions = "".join(
        "<hudson.model.StringParameterDefinition>"
        f"<name>{name}</name><defaultValue>{default}</defaultValue>"
        "</hudson.model.StringParameterDefinition>" for name, default in parameters.items())
    publisher = "" if junit is None else (
        "<hudson.tasks.junit.JUnitResultArchiver plugin='junit'>"
        f"<testResults>{junit}</testResults><allowEmptyResults>true</allowEmptyResults>"
        "</hudson.tasks.junit.JUnitResultArchiver>")
    command = command.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f"<?xml version='1.1' encoding='UTF-8'?><project><properties>"
            f"<hudson.model.ParametersDefinitionProperty><parameterDefinitions>{definitions}"
            f"</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties>"
            f"<concurrentBuild>{'true' if concurrent else 'false'}</concurrentBuild>"
            f"<builders><hudson.tasks.Shell><command>{command}</command></hudson.tasks.Shell>"
            f"</builders><publishers>{publisher}</publishers></project>")


def comment_parameters(text: str, subject: str = "Fix") -> dict[str, str]:
    event = parse_event(comment_event(text=text, change=change(subject=subject)))
    assert not isinstance(event, Malformed), event
    assert isinstance(event, Event)
    return build_parameters(event, SERVER)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[JenkinsStandIn]:
    environ = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    with JenkinsStandIn(tmp_path / "jenkins", environ=environ, grace=0.5) as server:
        yield server


def client(standin: JenkinsStandIn, job: str = "opslab-ci", timeout: float = 5.0) -> Jenkins:
    return Jenkins(standin.url, standin.user, standin.token, job, timeout)


def raw(standin: JenkinsStandIn) -> Any:
    """python-jenkins itself, for what the dispatcher does not ask (console, test report)."""
    return python_jenkins.Jenkins(standin.url, standin.user, standin.token, timeout=5)


# -- the wire ------------------------------------------------------------------------


def test_queue_sends_crumb_then_post_with_parameters_byte_exact(standin: JenkinsStandIn,
                                                                tmp_path: Path) -> None:
    parameters = {**comment_parameters("Patch Set 1:\n\nrecheck \"now\" & +1 ☃",
                                       subject='Say "hi" & +1 — ünïcode'), **AWKWARD}
    # The step writes each parameter's value, exactly, to a file named after it.
    names = [*sorted(parameters), "DECLARED_ONLY"]
    command = "".join(f'printf %s "${name}" > {name}.value\n' for name in names) \
        + 'printf %s "${UNDECLARED-unset}" > UNDECLARED.value\n'
    standin.add_job("opslab-ci", job_xml(command, {**dict.fromkeys(parameters, ""),
                                                   "DECLARED_ONLY": "its default"}))
    jenkins = client(standin)

    queue_id = jenkins.queue({**parameters, "UNDECLARED": "dropped"})

    crumb_request, post = standin.requests
    assert (crumb_request.method, crumb_request.path) == ("GET", "/crumbIssuer/api/json")
    assert crumb_request.user == standin.user
    assert crumb_request.header("Jenkins-Crumb") is None
    assert post.method == "POST"
    assert urlsplit(post.path).path == "/job/opslab-ci/buildWithParameters"
    assert post.user == standin.user
    assert post.cookie
    # The crumb: the stand-in refuses a POST without the right one (403), and queued it.
    assert post.header("Jenkins-Crumb")
    assert queue_id == 1
    assert post.header("Content-Length") in (None, "0")
    # Byte-exact on the wire, in the order given, empty values kept.
    assert parse_qsl(urlsplit(post.path).query, keep_blank_values=True) == \
        list({**parameters, "UNDECLARED": "dropped"}.items())

    build = jenkins.build_of(queue_id, time.monotonic() + 10, poll=0.05)
    assert build is not None
    assert build.number == 1
    workspace = standin.wait_build("opslab-ci", 1).workspace
    for name, value in parameters.items():
        assert (workspace / f"{name}.value").read_bytes() == value.encode(), name
    assert (workspace / "DECLARED_ONLY.value").read_text() == "its default"
    assert (workspace / "UNDECLARED.value").read_text() == "unset"
    assert jenkins.build_state(build) == (False, "SUCCESS")


def test_check_names_user_and_version_after_authenticating(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {}))
    assert client(standin).check() == f"{standin.user} on Jenkins 2.440.3 at {standin.url}"
    # whoami first: its request resolves python-jenkins' auth, so GET / carries it.
    paths = [(r.method, urlsplit(r.path).path, r.user) for r in standin.requests]
    assert paths == [("GET", "/crumbIssuer/api/json", standin.user),
                     ("GET", "/me/api/json", standin.user), ("GET", "/", standin.user)]


def test_a_forgotten_session_costs_one_refused_post(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {"A": ""}))
    jenkins = client(standin)
    jenkins.queue({"A": "1"})
    standin.forget_sessions()  # Jenkins restarted: the crumb python-jenkins keeps is stale
    before = len(standin.requests)

    assert jenkins.queue({"A": "2"}) == 2

    sequence = [(r.method, urlsplit(r.path).path) for r in standin.requests[before:]]
    assert sequence == [("POST", "/job/opslab-ci/buildWithParameters"),
                        ("GET", "/crumbIssuer/api/json"),
                        ("POST", "/job/opslab-ci/buildWithParameters")]


def test_same_parameters_merge_into_the_queued_item(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {"GERRIT_EVENT_HASH": ""}))
    standin.executors = 0
    jenkins = client(standin)
    first = jenkins.queue({"GERRIT_EVENT_HASH": "1"})
    assert jenkins.queue({"GERRIT_EVENT_HASH": "1"}) == first  # as Jenkins merges them
    assert jenkins.queue({"GERRIT_EVENT_HASH": "2"}) != first


# -- the queue item and its build ------------------------------------------------------


def test_a_queue_item_is_followed_to_its_build(standin: JenkinsStandIn, tmp_path: Path) -> None:
    release = tmp_path / "release"
    standin.add_job("folder/opslab-ci", job_xml(
        f'for i in $(seq 400); do [ -e "{release}" ] && exit 0; sleep 0.05; done; exit 1', {}))
    standin.executors = 0
    jenkins = client(standin, "folder/opslab-ci")
    queue_id = jenkins.queue({"IGNORED": "x"})

    # No executor: still in the queue at the deadline, and why.
    started = time.monotonic()
    with pytest.raises(JenkinsUnavailable, match="Waiting for next available executor"):
        jenkins.build_of(queue_id, time.monotonic() + 0.5, poll=0.05)
    assert time.monotonic() - started < 2

    standin.executors = 1
    build = jenkins.build_of(queue_id, time.monotonic() + 10, poll=0.05)
    assert build == Build(1, f"{standin.url}/job/folder/job/opslab-ci/1/")
    assert jenkins.build_state(build) == (True, None)
    release.touch()
    standin.wait_build("folder/opslab-ci", 1)
    assert jenkins.build_state(build) == (False, "SUCCESS")
    assert any(urlsplit(r.path).path == "/job/folder/job/opslab-ci/1/api/json"
               for r in standin.requests)


def test_a_forgotten_queue_item_is_an_error_naming_why(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {}))
    jenkins = client(standin)
    queue_id = jenkins.queue({"X": "1"})
    assert jenkins.build_of(queue_id, time.monotonic() + 10, poll=0.05) is not None
    standin.forget_left_items()
    with pytest.raises(JenkinsError, match="5 minutes") as error:
        jenkins.build_of(queue_id, time.monotonic() + 10, poll=0.05)
    assert not isinstance(error.value, JenkinsUnavailable)


def test_cancelling_a_waiting_item(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {}))
    standin.executors = 0
    jenkins = client(standin)
    queue_id = jenkins.queue({"X": "1"})

    jenkins.cancel(queue_id, None)

    assert jenkins.build_of(queue_id, time.monotonic() + 5, poll=0.05) is None
    cancel = standin.requests_to("cancelItem")[0]
    assert (cancel.method, cancel.path) == ("POST", f"/queue/cancelItem?id={queue_id}")
    assert cancel.header("Referer") == standin.url + "/"
    assert cancel.header("Jenkins-Crumb")
    assert not standin.builds
    standin.executors = 2
    time.sleep(0.3)
    assert not standin.builds  # a cancelled item never builds
    jenkins.cancel(queue_id, None)  # again: nothing to do, no error


def stubborn_job(tmp_path: Path, marker: str) -> str:
    """A step whose processes resist: one ignores SIGTERM (as do its children), one left
    its process group. Each runs a copy of sleep named after ``marker``, to be found."""
    return job_xml(textwrap.dedent(f"""\
        cp "$(command -v sleep)" ./{marker}-sleep
        sh -c 'trap "" TERM; ./{marker}-sleep 300' >/dev/null 2>&1 &
        setsid ./{marker}-sleep 301 >/dev/null 2>&1 &
        echo started > "{tmp_path}/started"
        ./{marker}-sleep 302
        """), {})


def test_stopping_a_running_build_leaves_no_process(standin: JenkinsStandIn,
                                                    tmp_path: Path) -> None:
    marker = f"stop-{os.getpid()}"
    standin.add_job("opslab-ci", stubborn_job(tmp_path, marker))
    jenkins = client(standin)
    queue_id = jenkins.queue({"X": "1"})
    build = jenkins.build_of(queue_id, time.monotonic() + 10, poll=0.05)
    assert build is not None
    give_up = time.monotonic() + 10
    while not (tmp_path / "started").exists():
        assert time.monotonic() < give_up
        time.sleep(0.02)

    jenkins.cancel(queue_id, build)

    stopped = standin.wait_build("opslab-ci", build.number, timeout=10)
    assert jenkins.build_state(build) == (False, "ABORTED")
    assert stopped.console.decode().endswith("Build was aborted\nFinished: ABORTED\n")
    assert stopped.pgids
    assert all(live_in_group(pgid) == [] for pgid in stopped.pgids)
    assert settle(marker) == []
    stop = standin.requests_to(f"/{build.number}/stop")
    assert [r.method for r in stop] == ["POST"]
    # The 302 to the build's page was followed with a GET.
    follow = standin.requests[standin.requests.index(stop[0]) + 1]
    assert (follow.method, follow.path) == ("GET", f"/job/opslab-ci/{build.number}/")
    jenkins.cancel(queue_id, build)  # a finished build: not an error


def test_cancel_after_the_item_left_stops_its_build_on_a_newer_jenkins(tmp_path: Path) -> None:
    # A newer Jenkins answers 500 to cancelItem for an item that has left the queue.
    marker = f"left-{os.getpid()}"
    with JenkinsStandIn(tmp_path / "jenkins", grace=0.5, cancel_answer="status") as standin:
        standin.add_job("opslab-ci", stubborn_job(tmp_path, marker))
        jenkins = client(standin)
        queue_id = jenkins.queue({"X": "1"})
        assert jenkins.build_of(queue_id, time.monotonic() + 10, poll=0.05) is not None

        jenkins.cancel(queue_id, None)  # the dispatcher had not seen the build yet

        assert standin.wait_build("opslab-ci", 1).result == "ABORTED"
        assert settle(marker) == []
        assert standin.requests_to("stop")


# -- a job's step, for real ---------------------------------------------------------


def test_a_step_reads_the_comment_and_writes_junit(standin: JenkinsStandIn) -> None:
    command = textwrap.dedent("""\
        comment=$(printf %s "$GERRIT_EVENT_COMMENT_TEXT" | base64 -d)
        echo "comment: $comment"
        echo "change $GERRIT_CHANGE_NUMBER,$GERRIT_PATCHSET_NUMBER of $GERRIT_PROJECT"
        cat > "$WORKSPACE/report.xml" <<EOF
        <testsuites tests="99">
          <testsuite name="apply" package="ci">
            <testcase classname="host1" name="puppet apply" time="1.5"/>
            <testcase classname="host1" name="smoke: greeter">
              <failure message="greeter answered 503">curl said 503</failure>
            </testcase>
            <testcase name="host2.skipped"><skipped message="not cloned"/></testcase>
          </testsuite>
        </testsuites>
        EOF
        """)
    parameters = comment_parameters("Patch Set 1:\n\ncheck infra ☃")
    standin.add_job("opslab-ci", job_xml(command, dict.fromkeys(parameters, ""),
                                         junit="report.xml"))
    jenkins = client(standin)
    build = jenkins.build_of(jenkins.queue(parameters), time.monotonic() + 10, poll=0.05)
    assert build is not None
    standin.wait_build("opslab-ci", build.number)

    assert jenkins.build_state(build) == (False, "UNSTABLE")  # a failing test
    console = raw(standin).get_build_console_output("opslab-ci", build.number)
    assert "comment: Patch Set 1:\n\ncheck infra ☃\n" in console
    assert "change 42,1 of demo\n" in console
    assert "+ echo 'change 42,1 of demo'" in console or "+ echo change 42,1 of demo" in console
    assert "[opslab-ci] $ /bin/sh -xe " in console
    assert console.endswith("Recording test results\nFinished: UNSTABLE\n")
    report = raw(standin).get_build_test_report("opslab-ci", build.number)
    assert (report["failCount"], report["passCount"], report["skipCount"]) == (1, 1, 1)
    [suite] = report["suites"]
    assert suite["name"] == "ci.apply"
    cases = {(c["className"], c["name"]): c for c in suite["cases"]}
    assert cases[("host1", "smoke: greeter")]["status"] == "FAILED"
    assert cases[("host1", "smoke: greeter")]["errorDetails"] == "greeter answered 503"
    assert cases[("host1", "puppet apply")]["duration"] == 1.5
    assert cases[("host2", "skipped")]["skippedMessage"] == "not cloned"
    info = raw(standin).get_build_info("opslab-ci", build.number)
    [action] = [a for a in info["actions"] if a.get("_class") == "hudson.model.ParametersAction"]
    assert {p["name"]: p["value"] for p in action["parameters"]} == parameters


def test_a_failing_step_without_junit_fails_the_build(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("echo about to fail\nexit 3\necho never",
                                         {}, junit="none.xml"))
    jenkins = client(standin)
    build = jenkins.build_of(jenkins.queue({}), time.monotonic() + 10, poll=0.05)
    assert build is not None
    standin.wait_build("opslab-ci", build.number)
    assert jenkins.build_state(build) == (False, "FAILURE")
    console = raw(standin).get_build_console_output("opslab-ci", build.number)
    assert "about to fail" in console
    assert "never" not in console.split("exit 3", 1)[1]
    assert raw(standin).get_build_test_report("opslab-ci", build.number) is None  # 404


def test_junit_read_as_the_plugin_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "nested.xml"
    path.write_text("""<testsuites><testsuite name="outer" tests="0" failures="9">
        <testcase name="a.b.c"/>
        <testsuite name="inner"><error message="setup broke">trace</error>
          <testcase classname="k" name="n"><error message="boom"/></testcase>
        </testsuite></testsuite></testsuites>""")
    suites = read_junit(path)
    assert [s["name"] for s in suites] == ["outer", "inner"]
    assert [(c["className"], c["name"], c["failed"]) for s in suites for c in s["cases"]] == [
        ("a.b", "c", False), ("inner", "<init>", True), ("k", "n", True)]


# -- errors that say what to check ---------------------------------------------------


def test_wrong_credentials_name_the_settings_never_the_token(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {}))
    wrong = "11" + "f" * 32
    with pytest.raises(JenkinsError) as error:
        Jenkins(standin.url, standin.user, wrong, "opslab-ci", 5).queue({"X": "1"})
    message = str(error.value)
    assert "HTTP 401" in message
    assert "ci.jenkins_token_file" in message
    assert "ci.jenkins_user" in message
    assert not isinstance(error.value, JenkinsUnavailable)
    assert wrong not in message
    assert standin.token not in message
    assert all(request.user is None for request in standin.requests)


def test_an_unknown_job_names_the_setting(standin: JenkinsStandIn) -> None:
    standin.add_job("folder/opslab-ci", job_xml("true", {}))
    with pytest.raises(JenkinsError, match=r"no job 'opslab-ci': check ci.jenkins_job"):
        client(standin, "opslab-ci").queue({"X": "1"})
    assert client(standin, "folder/opslab-ci").queue({"X": "1"}) == 1


def test_a_hanging_jenkins_is_unavailable_within_the_timeout(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {}))
    standin.hang(30)
    started = time.monotonic()
    with pytest.raises(JenkinsUnavailable, match=r"did not answer within 0.5 s.*"
                                                 r"ci.jenkins_timeout"):
        client(standin, timeout=0.5).queue({"X": "1"})
    assert time.monotonic() - started < 3
    assert len(standin.requests) == 1  # the crumb's request, not retried


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_failing_jenkins_is_unavailable(standin: JenkinsStandIn, status: int) -> None:
    # python-jenkins calls a 500 "Possibly authentication failed": it is Jenkins failing.
    standin.add_job("opslab-ci", job_xml("true", {}))
    standin.fail(status, lambda method, path: method == "POST")
    with pytest.raises(JenkinsUnavailable, match=f"HTTP {status}.*Jenkins' log"):
        client(standin).queue({"X": "1"})


def test_an_unreachable_jenkins_is_unavailable(tmp_path: Path) -> None:
    with JenkinsStandIn(tmp_path / "gone") as gone:
        url = gone.url
    with pytest.raises(JenkinsUnavailable, match=r"cannot reach Jenkins at .*ci.jenkins_url"):
        Jenkins(url, "u", "secret-token", "opslab-ci", 2).queue({"X": "1"})


def test_not_jenkins_is_an_error(standin: JenkinsStandIn) -> None:
    standin.add_job("opslab-ci", job_xml("true", {}))
    # Something that answers 201 without a Location: a proxy's page, another site.
    standin.fail(200, lambda method, path: method == "POST")
    with pytest.raises(JenkinsError, match=r"answered with nothing.*Jenkins' URL"):
        client(standin).queue({"X": "1"})


def test_from_settings(standin: JenkinsStandIn, tmp_path: Path) -> None:
    with pytest.raises(JenkinsError, match=r"ci.jenkins_url is not set"):
        Jenkins.from_settings(CiSettings())
    with pytest.raises(JenkinsError, match=r"ci.jenkins_token_file"):
        Jenkins.from_settings(CiSettings(jenkins_url=standin.url, jenkins_user="u"))
    missing = tmp_path / "no-token"
    with pytest.raises(JenkinsError, match=f"cannot read ci.jenkins_token_file {missing}"):
        Jenkins.from_settings(CiSettings(jenkins_url=standin.url, jenkins_user="u",
                                         jenkins_token_file=str(missing)))
    token = tmp_path / "token"
    token.write_text(standin.token + "\n")
    standin.add_job("ci/opslab-ci", job_xml("true", {}))
    jenkins = Jenkins.from_settings(CiSettings(
        jenkins_url=f"http://{standin.user}:{standin.token}@{standin.url[7:]}/",
        jenkins_user=standin.user, jenkins_token_file=str(token), jenkins_job="ci/opslab-ci",
        jenkins_timeout=3))
    assert standin.token not in jenkins.shown_url
    assert (jenkins.job, jenkins.timeout) == ("ci/opslab-ci", 3)
    assert jenkins.queue({"X": "1"}) == 1


# -- the shipped job -----------------------------------------------------------------


def canonical(element: ET.Element) -> Any:
    """An element as nested tuples: tag, attributes, stripped text, children in order."""
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(),
            [canonical(child) for child in element])


def test_the_job_builder_yaml_renders_the_shipped_xml(tmp_path: Path) -> None:
    pytest.importorskip("jenkins_jobs")
    jenkins_jobs = Path(sys.executable).with_name("jenkins-jobs")
    command = [str(jenkins_jobs)] if jenkins_jobs.exists() else [shutil.which("jenkins-jobs")]
    assert command[0], "jenkins-jobs not found"
    rendered = subprocess.run(
        [*command, "--conf", os.devnull, "test", str(JOBS / "opslab-ci.yaml")],
        capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, "HOME": str(tmp_path)}).stdout
    assert canonical(ET.fromstring(rendered.encode())) == \
        canonical(ET.parse(JOBS / "opslab-ci.xml").getroot())


def test_the_shipped_job_runs_opslab_ci_run(tmp_path: Path) -> None:
    # A fake `opslab` first on PATH: it records how it was called and writes JUnit.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    release = tmp_path / "release"
    fake = bin_dir / "opslab"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, pathlib, sys, time
        here = pathlib.Path(os.environ["WORKSPACE"])
        (here / "called.json").write_text(json.dumps({{
            "argv": sys.argv[1:], "cwd": os.getcwd(),
            "gerrit": {{k: v for k, v in os.environ.items() if k.startswith("GERRIT_")}},
        }}))
        give_up = time.monotonic() + 20
        while not os.path.exists({str(release)!r}) and time.monotonic() < give_up:
            time.sleep(0.02)
        pathlib.Path(sys.argv[sys.argv.index("--junit") + 1]).write_text(
            '<testsuite name="opslab-ci"><testcase classname="run" name="apply"/></testsuite>')
        """))
    fake.chmod(0o755)
    environ = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
               "LANG": "C.UTF-8"}
    with JenkinsStandIn(tmp_path / "jenkins", environ=environ, grace=0.5) as standin:
        job = standin.add_job("opslab-ci", JOBS / "opslab-ci.xml")
        assert job.config.concurrent
        assert job.config.timeout == 90 * 60
        jenkins = client(standin)
        first = comment_parameters("Patch Set 1:\n\nrecheck")
        second = comment_parameters("Patch Set 1:\n\ncheck infra", subject='A "quoted" one')
        builds = [jenkins.build_of(jenkins.queue(p), time.monotonic() + 10, poll=0.05)
                  for p in (first, second)]
        assert all(build is not None for build in builds)
        # Both run at once (concurrentBuild), each waiting for the release.
        assert [jenkins.build_state(b) for b in builds if b] == [(True, None), (True, None)]
        release.touch()
        for parameters, build in zip((first, second), builds, strict=True):
            assert build is not None
            done = standin.wait_build("opslab-ci", build.number)
            called = json.loads((done.workspace / "called.json").read_text())
            assert called["argv"] == ["ci", "run", "--junit",
                                      f"{done.workspace}/opslab-ci-junit.xml"]
            assert called["cwd"] == str(done.workspace)
            # Every GERRIT_* parameter arrives, exactly; the job declares each one.
            assert called["gerrit"] == {**{p.name: "" for p in job.config.parameters},
                                        **parameters}
            assert jenkins.build_state(build) == (False, "SUCCESS")
            report = raw(standin).get_build_test_report("opslab-ci", build.number)
            assert report["passCount"] == 1
        declared = {p.name for p in job.config.parameters}
        assert set(first) <= declared
        assert set(second) <= declared

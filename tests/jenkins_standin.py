"""A stand-in for a Jenkins server, enough of it for opslab's dispatcher, on a loopback port
in threads of this process; its builds run their jobs' shell steps for real.

It follows the project's wire contract for Jenkins (contracts/gerrit-jenkins-openstack.md,
section 5; gotchas 4 to 7) as python-jenkins 1.8.3 meets it:

- every answer has the ``X-Jenkins`` header (``GET /`` is how python-jenkins reads the
  version); every request needs HTTP Basic auth of its one user and API token: **401**
  with a ``WWW-Authenticate`` challenge otherwise;
- a web session: a request without the session cookie is given one (``Set-Cookie:
  JSESSIONID.<hash>=...``); ``GET /crumbIssuer/api/json`` answers the CSRF crumb of the
  user and the session, and every POST must carry it in ``Jenkins-Crumb`` (403 ``No valid
  crumb was included in the request`` otherwise; a real Jenkins 2.96 or later lets a
  request with an API token through without one: the stand-in is the stricter case);
- ``GET /me/api/json``, ``GET /api/json``, ``GET /queue/api/json``;
- ``POST /job/NAME/buildWithParameters?...`` (``job/a/job/b`` for a job in a folder):
  **201** with ``Location: <url>/queue/item/N/``; the parameters are read from the query
  string as python-jenkins sends them; a parameter the job does not declare is dropped
  (as Jenkins does since SECURITY-170), one it declares and was not given gets its
  default; the same parameters as an item still in the queue give that item (Jenkins
  merges them: hence ``GERRIT_EVENT_HASH``); 404 for an unknown job;
- queue items go Waiting (the quiet period) → Blocked (a build of a job that is not
  ``concurrentBuild`` is running) or Buildable (no free executor) → Left, with
  ``executable`` ``{number, url}`` or ``cancelled: true`` (5.2); a left item is
  forgotten (404) after ``left_retention`` seconds; ``POST /queue/cancelItem?id=N``
  answers as the contract's probe saw (302 to ``/queue/``, whatever the item), or as a
  newer Jenkins does with ``cancel_answer="status"``: 204, 404 for an unknown item, 500
  for one that has left;
- builds: ``GET /job/NAME/N/api/json`` (5.3: ``building``, ``result`` null while
  building, ``actions`` with the ``ParametersAction``), ``POST .../N/stop`` (302 to the
  build's page, for a finished build too), ``.../N/consoleText``,
  ``.../N/testReport/api/json`` (404 when the build published no test result).

A job is loaded from a ``config.xml`` (:meth:`JenkinsStandIn.add_job`): its string, text
and boolean parameters, ``concurrentBuild``, its ``hudson.tasks.Shell`` steps, the junit
publisher (``testResults``, ``allowEmptyResults``, ``skipMarkingBuildUnstable``) and the
build-timeout wrapper's absolute timeout. A build runs each shell step as Jenkins does:
the command written to a script file, run with ``/bin/sh -xe SCRIPT`` (or the script's
own ``#!`` line) in the build's own fresh workspace, in a process group of its own, with
the test's base environment plus the build's parameters, ``WORKSPACE``,
``BUILD_NUMBER``, ``BUILD_ID``, ``BUILD_URL``, ``BUILD_TAG``, ``JOB_NAME``,
``JOB_BASE_NAME``, ``JOB_URL``, ``JENKINS_URL``, ``NODE_NAME`` and
``JENKINS_NODE_COOKIE``; its output (stdout and stderr) is the console. A step that
exits non-zero fails the build and the steps after it do not run. A stop (or the
timeout) sends SIGTERM to the step's process group, then SIGKILL after ``grace``
seconds; when the steps are over, every process still carrying the build's
``JENKINS_NODE_COOKIE`` is killed (Jenkins' ProcessTreeKiller). Then the junit publisher
reads the files its pattern matches in the workspace as the junit plugin does (5.4):
failing tests make the build UNSTABLE; no file is a failure unless
``allowEmptyResults``. The console ends ``Finished: RESULT``.

It never imports opslab: it is a server, and a test double of one only.

Tests read :attr:`JenkinsStandIn.requests` (every request as it arrived), make requests
hang (:meth:`hang`) or fail with a status (:meth:`fail`), set :attr:`executors` (0 keeps
items in the queue), :meth:`forget_sessions` (what a restart does to clients' sessions
and crumbs) and :meth:`forget_left_items` (what five minutes do), and wait for builds
(:meth:`wait_build`).
"""

import base64
import binascii
import contextlib
import hashlib
import hmac
import html
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

USERNAME = "opslab-ci"
VERSION = "2.440.3"
CRUMB_FIELD = "Jenkins-Crumb"
JOIN_DEADLINE = 10.0
RESULTS = ("SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED")  # better to worse
_READ_CHUNK = 65536


# -- the job's config.xml ----------------------------------------------------------------

@dataclass(frozen=True)
class Parameter:
    name: str
    default: str
    kind: str  # "String", "Text", "Boolean"


@dataclass(frozen=True)
class JunitPublisher:
    results: str  # the Ant pattern(s), comma-separated
    allow_empty: bool
    skip_unstable: bool


@dataclass(frozen=True)
class JobConfig:
    parameters: tuple[Parameter, ...]
    concurrent: bool
    shells: tuple[str, ...]
    junit: JunitPublisher | None
    timeout: float | None  # seconds, from the build-timeout wrapper
    timeout_fails: bool  # its FailOperation (else the build is aborted)
    disabled: bool


def _text(element: ET.Element | None, default: str = "") -> str:
    return element.text or "" if element is not None else default


def _flag(element: ET.Element | None, default: bool = False) -> bool:
    return _text(element).strip() == "true" if element is not None else default


def parse_config(xml: str) -> JobConfig:
    """What the stand-in runs of a freestyle job's ``config.xml``."""
    root = ET.fromstring(xml)
    if root.tag != "project":
        raise ValueError(f"not a freestyle job's config.xml: <{root.tag}>")
    parameters = []
    for definition in root.iterfind(
            "properties/hudson.model.ParametersDefinitionProperty/parameterDefinitions/*"):
        kind = definition.tag.rsplit(".", 1)[-1].removesuffix("ParameterDefinition")
        if kind not in ("String", "Text", "Boolean"):
            raise ValueError(f"the stand-in does not know {definition.tag}")
        default = _text(definition.find("defaultValue"))
        parameters.append(Parameter(_text(definition.find("name")),
                                    default if kind != "Boolean" else
                                    ("true" if default.strip() == "true" else "false"), kind))
    shells = tuple(_text(shell.find("command"))
                   for shell in root.iterfind("builders/hudson.tasks.Shell"))
    junit = None
    archiver = root.find("publishers/hudson.tasks.junit.JUnitResultArchiver")
    if archiver is not None:
        junit = JunitPublisher(_text(archiver.find("testResults")),
                               _flag(archiver.find("allowEmptyResults")),
                               _flag(archiver.find("skipMarkingBuildUnstable")))
    timeout = None
    timeout_fails = False
    wrapper = root.find("buildWrappers/hudson.plugins.build__timeout.BuildTimeoutWrapper")
    if wrapper is not None:
        minutes = wrapper.find("strategy/timeoutMinutes")
        if minutes is not None:
            timeout = float(_text(minutes)) * 60
        timeout_fails = wrapper.find(
            "operationList/hudson.plugins.build__timeout.operations.FailOperation") is not None
    return JobConfig(tuple(parameters), _flag(root.find("concurrentBuild")), shells, junit,
                     timeout, timeout_fails, _flag(root.find("disabled")))


# -- JUnit as the junit plugin reads it (contract 5.4) -----------------------------------

def _seconds(value: str | None) -> float:
    try:
        return float((value or "0").replace(",", ""))
    except ValueError:
        return 0.0


def _case(element: ET.Element, suite: str) -> dict[str, Any]:
    classname = element.get("classname") or ""
    name = element.get("name") or ""
    if not classname:
        if "." in name:
            classname, name = name.rsplit(".", 1)
        else:
            classname = suite
    failure = element.find("failure")
    if failure is None:
        failure = element.find("error")
    skipped = element.find("skipped")
    return {
        "_class": "hudson.tasks.junit.CaseResult", "testActions": [],
        "className": classname, "name": name, "duration": _seconds(element.get("time")),
        "errorDetails": failure.get("message") if failure is not None else None,
        "errorStackTrace": failure.text if failure is not None else None,
        "skipped": skipped is not None and failure is None,
        "skippedMessage": (skipped.get("message") or skipped.text)
        if skipped is not None else None,
        "stdout": _text(element.find("system-out")) or None,
        "stderr": _text(element.find("system-err")) or None,
        "failed": failure is not None,
    }


def _suite(element: ET.Element, filename: str) -> dict[str, Any]:
    name = element.get("name") or ""
    package = element.get("package")
    if name and package:
        name = f"{package}.{name}"
    name = name or f"({filename})"
    cases = [_case(case, name) for case in element.findall("testcase")]
    error = element.find("error")
    if error is not None:  # a suite-level error: a case named <init>
        cases.insert(0, {"_class": "hudson.tasks.junit.CaseResult", "testActions": [],
                         "className": name, "name": "<init>", "duration": 0.0,
                         "errorDetails": error.get("message"), "errorStackTrace": error.text,
                         "skipped": False, "skippedMessage": None, "stdout": None,
                         "stderr": None, "failed": True})
    properties = {prop.get("name") or "": prop.get("value") or ""
                  for prop in element.iterfind("properties/property")}
    return {"cases": cases, "duration": _seconds(element.get("time")),
            "enclosingBlockNames": [], "enclosingBlocks": [], "id": element.get("id"),
            "name": name, "nodeId": None, "properties": properties,
            "stdout": _text(element.find("system-out")) or None,
            "stderr": _text(element.find("system-err")) or None,
            "timestamp": element.get("timestamp")}


def read_junit(path: Path) -> list[dict[str, Any]]:
    """The suites of one JUnit XML file: a ``<testsuites>`` root's suites (nested ones
    too; the root itself when it has ``<testcase>`` or ``<error>`` children), or a bare
    ``<testsuite>``. The counters in the attributes are ignored, as the plugin does."""
    root = ET.parse(path).getroot()
    suites: list[dict[str, Any]] = []

    def walk(element: ET.Element) -> None:
        if element.find("testcase") is not None or element.find("error") is not None \
                or element.tag == "testsuite":
            suites.append(_suite(element, path.name))
        for child in element.findall("testsuite"):
            walk(child)

    if root.tag not in ("testsuites", "testsuite"):
        raise ValueError(f"{path.name} is not a JUnit report: its root is <{root.tag}>")
    walk(root)
    return suites


# -- the server's state ----------------------------------------------------------------

@dataclass
class Job:
    name: str  # the full name, "folder/job" for a job in a folder
    config: JobConfig
    next_number: int = 1

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def path(self) -> str:
        return "".join(f"job/{quote(part, safe='')}/" for part in self.name.split("/"))


@dataclass
class QueueItem:
    id: int
    job: Job
    parameters: list[tuple[str, str, str]]  # (name, value, kind)
    user: str
    since: float  # time.time()
    quiet_until: float  # time.monotonic()
    state: str = "waiting"  # waiting, blocked, buildable, left
    why: str | None = "In the quiet period."
    buildable_since: float | None = None
    cancelled: bool = False
    build: "Build | None" = None
    left_at: float | None = None  # time.monotonic()


@dataclass
class Build:
    job: Job
    number: int
    queue_id: int
    parameters: list[tuple[str, str, str]]
    user: str
    url: str
    workspace: Path
    cookie: str
    started: float = field(default_factory=time.time)
    building: bool = True
    result: str | None = None
    duration: float = 0.0
    console: bytearray = field(default_factory=bytearray)
    report: dict[str, Any] | None = None
    stop_by: str | None = None
    pgids: list[int] = field(default_factory=list)  # the steps' process groups
    stopped: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def say(self, text: str | bytes) -> None:
        self.console += text.encode() if isinstance(text, str) else text


@dataclass(frozen=True)
class WireRequest:
    """One request as it arrived."""

    method: str
    path: str  # raw, with the query string
    headers: dict[str, str]
    user: str | None  # whom the Basic auth named, when it was right
    cookie: bool  # whether it carried a session the stand-in had given

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class _Answer(Exception):
    """An answer other than the usual, raised from deep inside the routing."""

    def __init__(self, status: int, body: str = "", headers: dict[str, str] | None = None,
                 content_type: str = "text/html;charset=utf-8") -> None:
        super().__init__(status)
        self.status = status
        self.body = body.encode()
        self.headers = headers or {}
        self.content_type = content_type


class JenkinsStandIn:
    """One Jenkins controller: its user, its jobs, its queue, its executors."""

    def __init__(self, root: Path, *, executors: int = 2, environ: dict[str, str] | None = None,
                 quiet_period: float = 0.1, grace: float = 3.0, left_retention: float = 300.0,
                 cancel_answer: str = "redirect") -> None:
        assert cancel_answer in ("redirect", "status"), cancel_answer
        self.root = root
        self.user = USERNAME
        self.token = "11" + secrets.token_hex(16)  # an API token's form: 34 hex digits
        self.environ = dict(os.environ if environ is None else environ)
        self.quiet_period = quiet_period
        self.grace = grace
        self.left_retention = left_retention
        self.cancel_answer = cancel_answer
        self.jobs: dict[str, Job] = {}
        self.items: dict[int, QueueItem] = {}
        self.builds: dict[tuple[str, int], Build] = {}
        self.requests: list[WireRequest] = []
        self.hangs: list[tuple[Callable[[str, str], bool], float]] = []
        self.failures: list[tuple[Callable[[str, str], bool], int, str]] = []
        self._executors = executors
        self._next_item = 1
        self._sessions: set[str] = set()
        self._salt = secrets.token_bytes(16)
        self._instance = secrets.token_hex(4)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        (root / "workspace").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True, name="jenkins-standin")
        self._scheduler = threading.Thread(target=self._schedule, daemon=True,
                                           name="jenkins-standin-queue")
        self._thread.start()
        self._scheduler.start()

    # -- for tests -----------------------------------------------------------------

    def add_job(self, name: str, config: str | Path) -> Job:
        """The job ``name`` (``folder/job`` in a folder) from a config.xml's text or file."""
        text = config.read_text() if isinstance(config, Path) else config
        job = Job(name.strip("/"), parse_config(text))
        with self._lock:
            self.jobs[job.name] = job
        return job

    @property
    def executors(self) -> int:
        return self._executors

    @executors.setter
    def executors(self, count: int) -> None:
        with self._changed:
            self._executors = count
            self._changed.notify_all()

    def hang(self, seconds: float,
             when: Callable[[str, str], bool] = lambda method, path: True) -> None:
        """Requests for which ``when(method, raw path)`` holds wait ``seconds`` before
        their answer (cut short when the stand-in stops)."""
        self.hangs.append((when, seconds))

    def fail(self, status: int, when: Callable[[str, str], bool] = lambda method, path: True,
             body: str = "") -> None:
        """The next request for which ``when(method, raw path)`` holds is answered
        ``status`` (once)."""
        self.failures.append((when, status, body))

    def forget_sessions(self) -> None:
        """Forget every web session and crumb, as a restart does."""
        with self._lock:
            self._sessions.clear()
            self._salt = secrets.token_bytes(16)

    def forget_left_items(self) -> None:
        """Forget the items that have left the queue, as Jenkins does after 5 minutes."""
        with self._lock:
            for number in [n for n, item in self.items.items() if item.state == "left"]:
                del self.items[number]

    def item(self, number: int) -> QueueItem | None:
        with self._lock:
            return self.items.get(number)

    def build(self, job: str, number: int) -> Build:
        with self._lock:
            return self.builds[(job, number)]

    def wait_build(self, job: str, number: int, timeout: float = 20.0) -> Build:
        """The build, once it has finished; AssertionError after ``timeout``."""
        give_up = time.monotonic() + timeout
        while (job, number) not in self.builds:
            assert time.monotonic() < give_up, f"no build {number} of {job}"
            time.sleep(0.02)
        build = self.build(job, number)
        assert build.done.wait(max(0.0, give_up - time.monotonic())), \
            f"build {number} of {job} still running after {timeout} s"
        return build

    def requests_to(self, text: str) -> list[WireRequest]:
        return [request for request in list(self.requests) if text in request.path]

    def stop(self) -> None:
        """Stop the builds (their processes killed), serving and the queue; join threads."""
        self._stopping.set()
        with self._changed:
            builds = list(self.builds.values())
            self._changed.notify_all()
        for build in builds:
            build.stop_by = build.stop_by or "the stand-in's stop"
            build.stopped.set()
        for build in builds:
            if build.thread is not None:
                build.thread.join(JOIN_DEADLINE + self.grace)
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(JOIN_DEADLINE)
        self._scheduler.join(JOIN_DEADLINE)

    def __enter__(self) -> "JenkinsStandIn":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # -- security ----------------------------------------------------------------------

    def _user(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, token = base64.b64decode(header[6:], validate=True) \
                .decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if hmac.compare_digest(user.encode(), self.user.encode()) and \
                hmac.compare_digest(token.encode(), self.token.encode()):
            return user
        return None

    def _crumb(self, user: str, session: str) -> str:
        # Jenkins' DefaultCrumbIssuer: a hash of the user, the web session and a salt.
        return hmac.new(self._salt, f"{user};{session}".encode(), hashlib.sha256).hexdigest()

    @property
    def _cookie_name(self) -> str:
        return f"JSESSIONID.{self._instance}"

    # -- the queue ---------------------------------------------------------------------

    def _enqueue(self, job: Job, given: list[tuple[str, str]], user: str) -> QueueItem:
        values = dict(given)  # the last of a repeated name, as Jenkins' request does
        parameters = [(p.name, values.get(p.name, p.default), p.kind)
                      for p in job.config.parameters]
        with self._changed:
            for item in self.items.values():
                if item.job is job and item.state != "left" and item.parameters == parameters:
                    return item  # Jenkins merges an identical item into the one queued
            item = QueueItem(self._next_item, job, parameters, user, time.time(),
                             time.monotonic() + self.quiet_period)
            self._next_item += 1
            self.items[item.id] = item
            self._changed.notify_all()
            return item

    def _cancel(self, item: QueueItem) -> bool:
        with self._changed:
            if item.state == "left":
                return False
            item.state, item.cancelled, item.why = "left", True, None
            item.left_at = time.monotonic()
            self._changed.notify_all()
            return True

    def _schedule(self) -> None:
        with self._changed:
            while not self._stopping.is_set():
                self._maintain()
                self._changed.wait(0.05)

    def _maintain(self) -> None:
        now = time.monotonic()
        running = [b for b in self.builds.values() if b.building]
        for number, item in list(self.items.items()):
            if item.state == "left":
                if item.left_at is not None and now - item.left_at > self.left_retention:
                    del self.items[number]
                continue
            if item.state == "waiting" and now < item.quiet_until:
                continue
            busy = [b for b in running if b.job is item.job]
            if busy and not item.job.config.concurrent:
                item.state = "blocked"
                item.why = f"Build #{busy[0].number} is already in progress (ETA: N/A)"
                continue
            if len(running) >= self._executors:
                if item.state != "buildable":
                    item.buildable_since = time.time()
                item.state, item.why = "buildable", "Waiting for next available executor"
                continue
            running.append(self._start(item))

    def _start(self, item: QueueItem) -> Build:
        job = item.job
        number = job.next_number
        job.next_number += 1
        workspace = self.root / "workspace" / f"{job.name.replace('/', '_')}_{number}"
        workspace.mkdir(parents=True)
        build = Build(job, number, item.id, item.parameters, item.user,
                      f"{self.url}/{job.path}{number}/", workspace, secrets.token_hex(16))
        self.builds[(job.name, number)] = build
        item.state, item.why, item.build, item.left_at = "left", None, build, time.monotonic()
        build.thread = threading.Thread(target=self._run, args=(build,), daemon=True,
                                        name=f"jenkins-standin-{job.short_name}-{number}")
        build.thread.start()
        return build

    # -- a build -----------------------------------------------------------------------

    def _environment(self, build: Build) -> dict[str, str]:
        environ = dict(self.environ)
        environ.update({name: value for name, value, _ in build.parameters})
        job = build.job
        environ.update({
            "WORKSPACE": str(build.workspace), "BUILD_NUMBER": str(build.number),
            "BUILD_ID": str(build.number), "BUILD_URL": build.url,
            "BUILD_TAG": f"jenkins-{job.name.replace('/', '-')}-{build.number}",
            "JOB_NAME": job.name, "JOB_BASE_NAME": job.short_name,
            "JOB_URL": f"{self.url}/{job.path}", "JENKINS_URL": f"{self.url}/",
            "NODE_NAME": "built-in", "EXECUTOR_NUMBER": "0",
            "JENKINS_NODE_COOKIE": build.cookie,
        })
        return environ

    def _run(self, build: Build) -> None:
        try:
            self._steps(build)
        except BaseException:
            # A fault of the stand-in itself: the build must still end, and say so.
            with self._changed:
                build.say("FATAL: the stand-in failed\nFinished: FAILURE\n")
                build.result, build.building = "FAILURE", False
                self._changed.notify_all()
            raise
        finally:
            build.done.set()

    def _steps(self, build: Build) -> None:
        build.say(f"Started by user {build.user}\nRunning as SYSTEM\n"
                  f"Building in workspace {build.workspace}\n")
        result = "SUCCESS"
        timeout = build.job.config.timeout
        deadline = time.monotonic() + timeout if timeout is not None else None
        timed_out = False
        try:
            for command in build.job.config.shells:
                if build.stopped.is_set():
                    break
                status, timed_out = self._shell(build, command, deadline)
                if build.stopped.is_set() or timed_out:
                    break
                if status != 0:
                    build.say("Build step 'Execute shell' marked build as failure\n")
                    result = "FAILURE"
                    break
        except OSError as error:
            build.say(f"FATAL: {error}\n")
            result = "FAILURE"
        finally:
            self._kill_leftovers(build)
        if timed_out:
            assert timeout is not None
            operation = "failed" if build.job.config.timeout_fails else "aborted"
            build.say(f"Build timed out (after {timeout / 60:g} minutes). Marking the build "
                      f"as {operation}.\n")
            result = "FAILURE" if build.job.config.timeout_fails else "ABORTED"
        elif build.stopped.is_set():
            build.say(f"Aborted by {build.stop_by}\nBuild was aborted\n")
            result = "ABORTED"
        if build.job.config.junit is not None:
            result = _worse(result, self._publish_junit(build, build.job.config.junit))
        with self._changed:
            build.say(f"Finished: {result}\n")
            build.result, build.building = result, False
            build.duration = time.time() - build.started
            self._changed.notify_all()

    def _shell(self, build: Build, command: str, deadline: float | None) -> tuple[int, bool]:
        """Run one shell step; (its exit status, whether the build timed out)."""
        script = self.root / "tmp" / f"jenkins{secrets.randbelow(10**18)}.sh"
        script.write_text(command)
        try:
            first = command.split("\n", 1)[0]
            argv = [*first[2:].split(), str(script)] if first.startswith("#!") \
                else ["/bin/sh", "-xe", str(script)]
            build.say(f"[{build.job.short_name}] $ {' '.join(argv)}\n")
            process = subprocess.Popen(argv, cwd=build.workspace,
                                       env=self._environment(build),
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            build.pgids.append(process.pid)
            assert process.stdout is not None
            reader = threading.Thread(target=self._pump, args=(process.stdout, build),
                                      daemon=True)
            reader.start()
            timed_out = False
            while process.poll() is None:
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                if build.stopped.is_set() or timed_out:
                    self._terminate(process.pid, process)
                    break
                build.stopped.wait(0.02)
            process.wait(JOIN_DEADLINE)
            # Output of a process that left the group running keeps the pipe open: wait a
            # little, as Jenkins does, then go on without it.
            reader.join(2.0)
            if reader.is_alive():
                build.say("Process leaked file descriptors.\n")
            return process.returncode, timed_out
        finally:
            script.unlink(missing_ok=True)

    @staticmethod
    def _pump(stream: Any, build: Build) -> None:
        with stream:
            while chunk := os.read(stream.fileno(), _READ_CHUNK):
                build.say(chunk)

    def _terminate(self, pgid: int, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the step's process group, SIGKILL to what is left after ``grace``."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        give_up = time.monotonic() + self.grace
        while time.monotonic() < give_up:
            process.poll()  # reap the leader
            if not live_in_group(pgid):
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def _kill_leftovers(self, build: Build) -> None:
        """Kill every process that still has the build's cookie in its environment
        (Jenkins' ProcessTreeKiller), SIGTERM then SIGKILL after ``grace``."""
        marker = f"JENKINS_NODE_COOKIE={build.cookie}".encode()
        pids = list(_processes_with(marker))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            give_up = time.monotonic() + self.grace
            while pids and time.monotonic() < give_up:
                time.sleep(0.02)
                pids = list(_processes_with(marker))
            if not pids:
                return

    def _publish_junit(self, build: Build, publisher: JunitPublisher) -> str:
        """Record the test results (contract 5.4); the result the publisher gives."""
        build.say("Recording test results\n")
        paths: list[Path] = []
        for pattern in (part.strip() for part in publisher.results.split(",")):
            if pattern:
                paths.extend(sorted(p for p in build.workspace.glob(pattern) if p.is_file()))
        if not paths:
            if publisher.allow_empty:
                build.say("No test report files were found. Configuration error?\n")
                return "SUCCESS"
            build.say("ERROR: Step 'Publish JUnit test result report' failed: No test report "
                      "files were found. Configuration error?\n")
            return "FAILURE"
        suites: list[dict[str, Any]] = []
        for path in paths:
            try:
                suites.extend(read_junit(path))
            except (ET.ParseError, ValueError, OSError) as error:
                build.say(f"ERROR: Step 'Publish JUnit test result report' aborted due to "
                          f"exception: Failed to read {path.name}: {error}\n")
                return "FAILURE"
        cases = [case for suite in suites for case in suite["cases"]]
        if not cases:
            build.say("None of the test reports contained any result\n")
            return "SUCCESS" if publisher.allow_empty else "FAILURE"
        build.report = self._report(build, suites)
        failed = build.report["failCount"]
        return "UNSTABLE" if failed and not publisher.skip_unstable else "SUCCESS"

    def _report(self, build: Build, suites: list[dict[str, Any]]) -> dict[str, Any]:
        previous = self.builds.get((build.job.name, build.number - 1))
        old_report = previous.report if previous is not None else None
        before = {(case["className"], case["name"]): case
                  for suite in (old_report or {}).get("suites", [])
                  for case in suite["cases"]}
        counts = {"failCount": 0, "passCount": 0, "skipCount": 0}
        for suite in suites:
            for case in suite["cases"]:
                failed = case.pop("failed")
                old = before.get((case["className"], case["name"]))
                old_failed = old is not None and old["status"] in ("FAILED", "REGRESSION")
                if failed:
                    case["status"] = "REGRESSION" if old is not None and not old_failed \
                        else "FAILED"
                    case["age"] = old["age"] + 1 if old_failed and old is not None else 1
                    case["failedSince"] = old["failedSince"] if old_failed and old is not None \
                        else build.number
                    counts["failCount"] += 1
                elif case["skipped"]:
                    case.update(status="SKIPPED", age=0, failedSince=0)
                    counts["skipCount"] += 1
                else:
                    case.update(status="FIXED" if old_failed else "PASSED", age=0,
                                failedSince=0)
                    counts["passCount"] += 1
        return {"_class": "hudson.tasks.junit.TestResult", "testActions": [],
                "duration": sum(suite["duration"] for suite in suites),
                "empty": False, **counts, "suites": suites}

    # -- JSON --------------------------------------------------------------------------

    def _parameters_action(self, parameters: list[tuple[str, str, str]]) -> dict[str, Any]:
        return {"_class": "hudson.model.ParametersAction", "parameters": [
            {"_class": f"hudson.model.{kind}ParameterValue", "name": name,
             "value": value == "true" if kind == "Boolean" else value}
            for name, value, kind in parameters]}

    def _cause(self, user: str) -> dict[str, Any]:
        return {"_class": "hudson.model.CauseAction", "causes": [{
            "_class": "hudson.model.Cause$UserIdCause",
            "shortDescription": f"Started by user {user}", "userId": user, "userName": user}]}

    def _item_json(self, item: QueueItem) -> dict[str, Any]:
        kind = {"waiting": "WaitingItem", "blocked": "BlockedItem",
                "buildable": "BuildableItem", "left": "LeftItem"}[item.state]
        answer: dict[str, Any] = {
            "_class": f"hudson.model.Queue${kind}",
            "actions": [self._parameters_action(item.parameters), self._cause(item.user)],
            "blocked": item.state == "blocked", "buildable": item.state == "buildable",
            "id": item.id, "inQueueSince": int(item.since * 1000),
            "params": "".join(f"\n{name}={value}" for name, value, _ in item.parameters),
            "stuck": False, "task": self._job_summary(item.job),
            "url": f"queue/item/{item.id}/", "why": item.why,
        }
        if item.state == "waiting":
            answer["timestamp"] = int((item.since + self.quiet_period) * 1000)
        if item.state == "buildable":
            answer["buildableStartMilliseconds"] = int((item.buildable_since or 0) * 1000)
            answer["pending"] = False
        if item.state == "left":
            answer["cancelled"] = item.cancelled
            answer["executable"] = None if item.build is None else {
                "_class": "hudson.model.FreeStyleBuild", "number": item.build.number,
                "url": item.build.url}
        return answer

    def _job_summary(self, job: Job) -> dict[str, Any]:
        return {"_class": "hudson.model.FreeStyleProject", "name": job.short_name,
                "url": f"{self.url}/{job.path}", "color": "blue"}

    def _build_json(self, build: Build) -> dict[str, Any]:
        actions: list[dict[str, Any]] = [self._parameters_action(build.parameters),
                                         self._cause(build.user), {}]
        if build.report is not None:
            actions.append({"_class": "hudson.tasks.junit.TestResultAction",
                            "failCount": build.report["failCount"],
                            "skipCount": build.report["skipCount"],
                            "totalCount": build.report["failCount"]
                            + build.report["skipCount"] + build.report["passCount"],
                            "urlName": "testReport"})
        return {
            "_class": "hudson.model.FreeStyleBuild", "actions": actions, "artifacts": [],
            "building": build.building, "description": None,
            "displayName": f"#{build.number}",
            "duration": 0 if build.building else int(build.duration * 1000),
            "estimatedDuration": -1, "executor": {} if build.building else None,
            "fullDisplayName": f"{build.job.name} #{build.number}", "id": str(build.number),
            "keepLog": False, "number": build.number, "queueId": build.queue_id,
            "result": build.result, "timestamp": int(build.started * 1000),
            "url": build.url, "builtOn": "",
            "changeSet": {"_class": "hudson.scm.EmptyChangeLogSet", "items": [],
                          "kind": None},
            "culprits": [],
        }

    # -- HTTP --------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: list[tuple[str, str]], user: str,
               session: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """(status, body: JSON-able, bytes or str, extra headers) for one request."""
        parts = [unquote(part) for part in path.split("/")[1:]]
        if parts and parts[-1] == "":
            parts.pop()
        if method == "POST":
            crumb = headers.get(CRUMB_FIELD.lower(), "").encode("utf-8", "surrogateescape")
            if not crumb or not hmac.compare_digest(crumb,
                                                    self._crumb(user, session).encode()):
                raise _Answer(403, "<html><body><h2>HTTP ERROR 403 No valid crumb was included "
                                   "in the request</h2></body></html>")
        if not parts:
            return 200, "<html><body>Dashboard [Jenkins]</body></html>", {}
        if parts == ["api", "json"]:
            return 200, self._instance_json(), {}
        if parts == ["me", "api", "json"]:
            return 200, {"_class": "hudson.model.User", "absoluteUrl": f"{self.url}/user/{user}",
                         "description": None, "fullName": user, "id": user,
                         "property": []}, {}
        if parts == ["crumbIssuer", "api", "json"]:
            return 200, {"_class": "hudson.security.csrf.DefaultCrumbIssuer",
                         "crumb": self._crumb(user, session),
                         "crumbRequestField": CRUMB_FIELD}, {}
        if parts[0] == "queue":
            return self._route_queue(method, parts[1:], query)
        if parts[0] == "job":
            return self._route_job(method, parts, query, user)
        raise _Answer(404, "<html><body>Not Found</body></html>")

    def _route_queue(self, method: str, parts: list[str],
                     query: list[tuple[str, str]]) -> tuple[int, Any, dict[str, str]]:
        if method == "GET" and not parts:
            return 200, "<html><body>Build Queue</body></html>", {}
        if method == "GET" and parts == ["api", "json"]:
            with self._lock:
                items = [self._item_json(item) for item in self.items.values()
                         if item.state != "left"]
            return 200, {"_class": "hudson.model.Queue", "discoverableItems": [],
                         "items": items}, {}
        if method == "GET" and len(parts) == 4 and parts[0] == "item" \
                and parts[2:] == ["api", "json"] and parts[1].isdigit():
            with self._lock:
                item = self.items.get(int(parts[1]))
                if item is None:
                    raise _Answer(404, "<html><body>Not Found</body></html>")
                return 200, self._item_json(item), {}
        if method == "POST" and parts == ["cancelItem"]:
            number = dict(query).get("id", "")
            with self._lock:
                item = self.items.get(int(number)) if number.isdigit() else None
            cancelled = item is not None and self._cancel(item)
            if self.cancel_answer == "redirect":
                return 302, "", {"Location": f"{self.url}/queue/"}
            if item is None:
                raise _Answer(404, f"Provided id ({number}) not found", {}, "text/plain")
            if not cancelled:
                raise _Answer(500, f"Could not cancel run for id {number}", {}, "text/plain")
            return 204, b"", {}
        raise _Answer(404, "<html><body>Not Found</body></html>")

    def _route_job(self, method: str, parts: list[str], query: list[tuple[str, str]],
                   user: str) -> tuple[int, Any, dict[str, str]]:
        names = []
        while len(parts) >= 2 and parts[0] == "job":
            names.append(parts[1])
            parts = parts[2:]
        name = "/".join(names)
        with self._lock:
            job = self.jobs.get(name)
            folder = any(other.startswith(name + "/") for other in self.jobs)
        if job is None:
            if folder and method == "GET" and parts in ([], ["api", "json"]):
                return 200, {"_class": "com.cloudbees.hudson.plugins.folder.Folder",
                             "name": names[-1], "jobs": [
                                 self._job_summary(j) for j in self.jobs.values()
                                 if j.name.rsplit("/", 1)[0] == name]}, {}
            raise _Answer(404, "<html><body>Not Found</body></html>")
        if method == "POST" and parts in (["buildWithParameters"], ["build"]):
            if job.config.disabled:
                raise _Answer(409, f"{job.name} is disabled", {}, "text/plain")
            item = self._enqueue(job, [pair for pair in query if pair[0] != "token"], user)
            return 201, b"", {"Location": f"{self.url}/queue/item/{item.id}/"}
        if method == "GET" and parts in ([], ["api", "json"]):
            if not parts:
                return 200, f"<html><body>{html.escape(job.name)}</body></html>", {}
            return 200, {**self._job_summary(job), "fullName": job.name,
                         "concurrentBuild": job.config.concurrent,
                         "nextBuildNumber": job.next_number,
                         "builds": [{"number": b.number, "url": b.url}
                                    for b in self.builds.values() if b.job is job]}, {}
        if not parts or not parts[0].isdigit():
            raise _Answer(404, "<html><body>Not Found</body></html>")
        with self._lock:
            build = self.builds.get((job.name, int(parts[0])))
        if build is None:
            raise _Answer(404, "<html><body>Not Found</body></html>")
        rest = parts[1:]
        if method == "GET" and not rest:
            return 200, f"<html><body>{html.escape(job.name)} #{build.number}</body></html>", {}
        if method == "GET" and rest == ["api", "json"]:
            with self._lock:
                return 200, self._build_json(build), {}
        if method == "POST" and rest == ["stop"]:
            if build.building:
                build.stop_by = build.stop_by or user
                build.stopped.set()
            return 302, "", {"Location": build.url}
        if method == "GET" and rest == ["consoleText"]:
            with self._lock:
                return 200, bytes(build.console), {"Content-Type": "text/plain;charset=UTF-8"}
        if method == "GET" and rest == ["testReport", "api", "json"]:
            if build.report is None:
                raise _Answer(404, "<html><body>Not Found</body></html>")
            return 200, build.report, {}
        raise _Answer(404, "<html><body>Not Found</body></html>")

    def _instance_json(self) -> dict[str, Any]:
        with self._lock:
            top = {}
            for job in self.jobs.values():
                first = job.name.split("/", 1)[0]
                top[first] = self._job_summary(job) if "/" not in job.name else {
                    "_class": "com.cloudbees.hudson.plugins.folder.Folder", "name": first,
                    "url": f"{self.url}/job/{quote(first, safe='')}/"}
        return {"_class": "hudson.model.Hudson", "assignedLabels": [{"name": "built-in"}],
                "mode": "NORMAL", "nodeDescription": "the Jenkins controller's built-in node",
                "nodeName": "", "numExecutors": self._executors, "description": None,
                "jobs": list(top.values()), "quietingDown": False, "slaveAgentPort": -1,
                "url": f"{self.url}/", "useCrumbs": True, "useSecurity": True, "views": []}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                user = standin._user(self.headers.get("Authorization"))
                session, known = self._session()
                standin.requests.append(WireRequest(method, self.path, dict(self.headers),
                                                    user, known))
                for when, seconds in list(standin.hangs):
                    if when(method, self.path):
                        standin._stopping.wait(seconds)
                for index, (when, status, body) in enumerate(list(standin.failures)):
                    if when(method, self.path):
                        with contextlib.suppress(IndexError):
                            del standin.failures[index]
                        self._send(status, body.encode(), "text/html;charset=utf-8", {},
                                   session, known)
                        return
                if user is None:
                    self._send(401, b"<html><body>Invalid password/token for user</body></html>",
                               "text/html;charset=utf-8",
                               {"WWW-Authenticate": 'Basic realm="Jenkins"'}, session, known)
                    return
                split = urlsplit(self.path)
                query = parse_qsl(split.query, keep_blank_values=True)
                try:
                    status, body, extra = standin._route(method, split.path, query, user,
                                                         session, headers)
                except _Answer as answer:
                    self._send(answer.status, answer.body, answer.content_type,
                               answer.headers, session, known)
                    return
                content_type = extra.pop("Content-Type", "text/html;charset=utf-8")
                if isinstance(body, (dict, list)):
                    body, content_type = json.dumps(body).encode(), "application/json;charset=utf-8"
                elif isinstance(body, str):
                    body = body.encode()
                self._send(status, body, content_type, extra, session, known)

            def _session(self) -> tuple[str, bool]:
                for part in (self.headers.get("Cookie") or "").split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == standin._cookie_name and value in standin._sessions:
                        return value, True
                session = secrets.token_hex(12)
                with standin._lock:
                    standin._sessions.add(session)
                return session, False

            def _send(self, status: int, body: bytes, content_type: str,
                      headers: dict[str, str], session: str, known: bool) -> None:
                self.send_response(status)
                self.send_header("X-Jenkins", VERSION)
                self.send_header("X-Hudson", "1.395")
                self.send_header("X-Jenkins-Session", standin._instance)
                if not known:
                    self.send_header("Set-Cookie",
                                     f"{standin._cookie_name}={session}; Path=/; HttpOnly")
                for name, value in headers.items():
                    self.send_header(name, value)
                if body or status not in (204, 302):
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _worse(one: str, other: str) -> str:
    return max(one, other, key=RESULTS.index)


def live_in_group(pgid: int) -> list[int]:
    """The pids of process group ``pgid`` that are not zombies. (An orphan's zombie stays
    in its group until PID 1 reaps it, which some container inits do late or never.)"""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def _processes_with(marker: bytes) -> Iterable[int]:
    """The pids whose environment holds ``marker`` (``NAME=value``); zombies have none."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            yield int(entry.name)

"""The dispatcher: Gerrit's events in, Jenkins builds out (``opslab ci dispatch``).

One long-running process ties the harness together:

- **Events in**, onto one queue, each event once (:class:`SeenEvents`): the SSH
  stream (:mod:`.connection`) when ``ci.gerrit_ssh_host`` is set, the webhook
  endpoint (:mod:`.webhook`) when ``ci.webhook_listen`` is, and the REST
  catch-up (:mod:`.catchup`) at start, from the position kept in
  ``ci.state_dir``, and after every reconnect of the stream, in a thread of its
  own.
- **One loop** takes each event in turn: :func:`~.trigger.cancellation` first
  (the queued or running builds of the runs it makes pointless are cancelled),
  then :meth:`Trigger.decide`. A run to start is queued in Jenkins with the
  Gerrit Trigger plugin's parameters (:func:`~.parameters.build_parameters`),
  recorded in the API, and its queue item followed to its build by a worker
  thread (at most ``ci.build_start_timeout``), whose URL is recorded too.
- **One run per run key at a time**: while a run of the same change, patch set
  and phrase is queued or running, another request for it starts nothing; once
  its build has finished (asked of Jenkins when the next request comes), a
  ``recheck`` starts a new one.
- **Undecided** (the directory did not answer) or **Jenkins unavailable**: the
  event is tried again after each of ``retry_delays``, then given up with an
  error in the log.
- **Recording is not a reason not to test**: without ``ci.api_url``, or with
  the API unreachable, runs go on and a warning says they are not recorded.
- **SIGTERM** (or SIGINT) stops everything within a deadline: the stream, the
  listener, the catch-up, the loop, and the worker threads joined with a
  timeout.
"""

import heapq
import itertools
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from opslab.config import ConfigError

from .catchup import CatchUp, CatchUpError, Position
from .events import CommentAdded, Event, SeenEvents
from .jenkins import Build, Jenkins, JenkinsError, JenkinsUnavailable
from .parameters import GerritServer, build_parameters
from .records import ApiRecorder, api_client
from .trigger import (
    Cancellation,
    Decision,
    Policy,
    ProjectMembers,
    RunKey,
    Trigger,
    cancellation,
)

if TYPE_CHECKING:
    from opslab.config import CiSettings, Config

    from .connection import GerritEventStream
    from .webhook import WebhookListener

log = logging.getLogger(__name__)

# Waits before deciding an undecided event again, or queueing a run Jenkins refused
# for being unavailable; then it is given up.
RETRY_DELAYS = (5.0, 30.0, 120.0)
# A worker following a queue item looks at the stop flag at least this often.
FOLLOW_SLICE = 5.0
# The catch-up tried again after a failure: from this wait, doubling, up to the most.
CATCHUP_RETRY_MIN = 5.0
CATCHUP_RETRY_MAX = 300.0
STOP_DEADLINE = 20.0
# The most recent runs queued kept for :attr:`Dispatcher.queued` (the latency's measure).
QUEUED_KEPT = 1000


class JenkinsJobs(Protocol):
    """What the dispatcher asks of Jenkins (:class:`opslab.ci.jenkins.Jenkins`)."""

    def queue(self, parameters: dict[str, str]) -> int: ...

    def build_of(self, queue_id: int, deadline: float, poll: float = 1.0) -> Build | None: ...

    def cancel(self, queue_id: int, build: Build | None) -> None: ...

    def build_state(self, build: Build) -> tuple[bool, str | None]: ...


class Recorder(Protocol):
    """Where runs are recorded (the API's ``/v1/ci/runs``). ``started`` gives the run's
    id there, or None when it could not be recorded; neither method may stop a run."""

    def started(self, run: RunKey, event: CommentAdded, queue_id: int) -> str | None: ...

    def update(self, run_id: str, *, state: str, build_url: str | None = None) -> None: ...


class NoRecorder:
    """No API configured: runs go on, unrecorded."""

    def started(self, run: RunKey, event: CommentAdded, queue_id: int) -> str | None:
        return None

    def update(self, run_id: str, *, state: str, build_url: str | None = None) -> None:
        pass


@dataclass
class Run:
    """A run the dispatcher started: queued in Jenkins, maybe building."""

    key: RunKey
    event: CommentAdded
    queue_id: int
    queued_at: float  # time.monotonic() when Jenkins gave the queue item
    state: str = "queued"  # queued, running, finished, cancelled, error
    build: Build | None = None
    run_id: str | None = None  # the API's id
    cancelled: bool = False

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


@dataclass(frozen=True)
class Queued:
    """When a run was queued (for the benchmark of the latency): the event taken from
    the queue, and Jenkins' answer, both ``time.monotonic()``."""

    run: RunKey
    queue_id: int
    taken: float
    queued: float


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    attempt: int = field(compare=False)
    event: Event = field(compare=False)


class Dispatcher:
    """The loop: each event to cancellation and to the trigger, runs queued in Jenkins
    and followed. :meth:`run` until :meth:`stop`; :meth:`handle` is one event."""

    def __init__(self, settings: "CiSettings", trigger: Trigger, jenkins: JenkinsJobs,
                 recorder: Recorder, events: "queue.Queue[Event]", *,
                 position: Position | None = None, server: GerritServer | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS, poll: float = 1.0) -> None:
        self.settings = settings
        self.trigger = trigger
        self.jenkins = jenkins
        self.recorder = recorder
        self.events = events
        self.position = position
        self.server = server
        self.retry_delays = retry_delays
        self.poll = poll
        self.queued: deque[Queued] = deque(maxlen=QUEUED_KEPT)  # runs queued, in order
        self._runs: dict[RunKey, Run] = {}
        self._retries: list[_Retry] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Take events until :meth:`stop`."""
        while not self._stopping.is_set():
            wait = 0.5
            if self._retries:
                wait = min(wait, max(0.0, self._retries[0].due - time.monotonic()))
            try:
                event = self.events.get(timeout=wait)
            except queue.Empty:
                event = None
            if event is not None:
                self._safely(event, 0)
            while self._retries and self._retries[0].due <= time.monotonic() \
                    and not self._stopping.is_set():
                retry = heapq.heappop(self._retries)
                self._safely(retry.event, retry.attempt)
            self._forget_old_runs()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        """Wait until ``timeout`` for the worker threads; True if all ended."""
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        alive = [worker.name for worker in workers if worker.is_alive()]
        if alive:
            log.warning("%d worker(s) still waiting on Jenkins or the API at the stop: %s",
                        len(alive), ", ".join(alive))
        return not alive

    def runs(self) -> list[Run]:
        """The runs known (active, and ended ones not yet forgotten)."""
        with self._lock:
            return list(self._runs.values())

    def _safely(self, event: Event, attempt: int) -> None:
        try:
            self.handle(event, attempt)
        except Exception:  # one event must not end the loop
            log.exception("handling %s failed", event.key)

    def handle(self, event: Event, attempt: int = 0) -> None:
        """One event: what it cancels, then whether it starts a run."""
        taken = time.monotonic()
        if attempt == 0:
            cancelled = cancellation(event)
            if cancelled is not None:
                self._cancel(cancelled)
        try:
            decision = self.trigger.decide(event)
        except Exception as error:  # the policy failed otherwise than unavailable
            log.exception("deciding %s failed", event.key)
            decision = Decision(event.key, f"the decision failed: {error}", undecided=True)
        if decision.undecided:
            self._later(event, attempt, decision.reason)
        elif decision.run is not None and isinstance(event, CommentAdded):
            self._start(decision.run, event, attempt, taken)
        elif isinstance(event, CommentAdded):
            log.info("no run for %s: %s", event.key, decision.reason)
        if attempt == 0 and self.position is not None:
            self.position.record(event)

    def _later(self, event: Event, attempt: int, reason: str) -> None:
        if attempt >= len(self.retry_delays):
            log.error("gave up on %s after %d attempt(s): %s", event.key, attempt + 1, reason)
            return
        delay = self.retry_delays[attempt]
        log.warning("%s: %s; trying again in %g s", event.key, reason, delay)
        heapq.heappush(self._retries, _Retry(time.monotonic() + delay, next(self._order),
                                             attempt + 1, event))

    # -- starting ----------------------------------------------------------------------

    def _start(self, key: RunKey, event: CommentAdded, attempt: int, taken: float) -> None:
        with self._lock:
            existing = self._runs.get(key)
        if existing is not None and self._still_active(existing):
            log.info("no run for %s: %s is already %s (Jenkins queue item %d)", event.key,
                     key, existing.state, existing.queue_id)
            return
        try:
            queue_id = self.jenkins.queue(build_parameters(event, self.server))
        except JenkinsUnavailable as error:
            self._later(event, attempt, f"cannot queue {key}: {error}")
            return
        except JenkinsError as error:
            log.error("cannot queue %s for %s: %s", key, event.key, error)
            return
        queued = time.monotonic()
        run = Run(key, event, queue_id, queued)
        with self._lock:
            self._runs[key] = run
            self.queued.append(Queued(key, queue_id, taken, queued))
        log.info("queued %s as Jenkins queue item %d, %.1f ms after taking %s", key, queue_id,
                 (queued - taken) * 1000, event.key)
        self._worker(f"follow queue item {queue_id}", self._follow, run)

    def _still_active(self, run: Run) -> bool:
        """Whether ``run`` still counts: queued, or its build still going (asked of
        Jenkins; when Jenkins cannot say, it counts, rather than start a second)."""
        with self._lock:
            if not run.active or run.build is None:
                return run.active
            build = run.build
        try:
            building, result = self.jenkins.build_state(build)
        except JenkinsError as error:
            log.warning("cannot tell whether %s still runs (%s): taken as running", run.key,
                        error)
            return True
        if building:
            return True
        with self._lock:
            run.state = "finished"
        log.info("%s: build %s finished (%s)", run.key, build.url, result)
        return False

    def _follow(self, run: Run) -> None:
        """In a worker: record the run, follow its queue item to its build, record that."""
        run.run_id = self._record(lambda: self.recorder.started(run.key, run.event,
                                                                run.queue_id), run)
        final = run.queued_at + self.settings.build_start_timeout
        while True:
            if self._stopping.is_set():
                return
            try:
                build = self.jenkins.build_of(
                    run.queue_id, min(final, time.monotonic() + FOLLOW_SLICE), self.poll)
                break
            except JenkinsUnavailable as error:
                if time.monotonic() < final:
                    self._stopping.wait(self.poll)
                    continue
                log.error("%s: queue item %d did not start within ci.build_start_timeout "
                          "(%g s): cancelled (%s)", run.key, run.queue_id,
                          self.settings.build_start_timeout, error)
                self._cancel_in_jenkins(run, None)
                self._ended(run, "error")
                return
            except JenkinsError as error:
                log.error("%s: cannot follow queue item %d: %s", run.key, run.queue_id, error)
                self._ended(run, "error")
                return
        with self._lock:
            run.build = build
            cancelled = run.cancelled
            if build is not None and not cancelled:
                run.state = "running"
        if build is None:
            log.info("%s: queue item %d was cancelled", run.key, run.queue_id)
            self._ended(run, "cancelled")
            return
        if cancelled:  # started while being cancelled: stop it
            self._cancel_in_jenkins(run, build)
            return
        log.info("%s: queue item %d is build %s", run.key, run.queue_id, build.url)
        if run.run_id is not None:
            self._record(lambda: self.recorder.update(run.run_id or "", state="running",
                                                      build_url=build.url), run)

    def _ended(self, run: Run, state: str) -> None:
        with self._lock:
            already = run.state == "cancelled"
            if not already:
                run.state = state
        if run.run_id is not None and not already:
            self._record(lambda: self.recorder.update(run.run_id or "", state=state), run)

    def _record(self, call: "Callable[[], str | None]", run: Run) -> str | None:
        try:
            return call()
        except Exception as error:  # recording must never stop a run
            log.warning("%s: not recorded in the API: %s", run.key, error)
            return None

    # -- cancelling --------------------------------------------------------------------

    def _cancel(self, cancelled: Cancellation) -> None:
        with self._lock:
            runs = [run for key, run in self._runs.items()
                    if cancelled.applies_to(key) and run.active]
            for run in runs:
                run.cancelled = True
                run.state = "cancelled"
        for run in runs:
            log.info("cancelling %s (queue item %d): %s", run.key, run.queue_id,
                     cancelled.reason)
            self._worker(f"cancel queue item {run.queue_id}", self._cancel_run, run)

    def _cancel_run(self, run: Run) -> None:
        with self._lock:
            build = run.build
        self._cancel_in_jenkins(run, build)
        if run.run_id is not None:
            self._record(lambda: self.recorder.update(run.run_id or "", state="cancelled"),
                         run)

    def _cancel_in_jenkins(self, run: Run, build: Build | None) -> None:
        try:
            self.jenkins.cancel(run.queue_id, build)
        except JenkinsError as error:
            log.error("%s: cannot cancel queue item %d%s in Jenkins: %s", run.key,
                      run.queue_id, f" (build {build.url})" if build else "", error)

    # -- threads and memory ------------------------------------------------------------

    def _worker(self, name: str, target: Callable[[Run], None], run: Run) -> None:
        thread = threading.Thread(target=self._guarded, args=(target, run), name=name,
                                  daemon=True)
        with self._lock:
            self._workers = [worker for worker in self._workers if worker.is_alive()]
            self._workers.append(thread)
        thread.start()

    @staticmethod
    def _guarded(target: Callable[[Run], None], run: Run) -> None:
        try:
            target(run)
        except Exception:
            log.exception("%s: a worker failed", run.key)

    def _forget_old_runs(self) -> None:
        """Runs older than a build may live (waiting, then ``ci.run_timeout``) are over,
        whatever Jenkins says: forgotten, so memory stays bounded."""
        horizon = time.monotonic() - self.settings.build_start_timeout \
            - self.settings.run_timeout
        with self._lock:
            for key in [key for key, run in self._runs.items() if run.queued_at < horizon]:
                del self._runs[key]


class _CatchUpThread:
    """Runs the catch-up in a thread of its own when asked (by the stream's thread, which
    must not wait for it), one at a time: requests made meanwhile are merged into one
    from the earliest time asked for. A failed catch-up is tried again with backoff."""

    def __init__(self, catchup: CatchUp) -> None:
        self.catchup = catchup
        self._since: float | None = None
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gerrit catch-up")

    def start(self) -> None:
        self._thread.start()

    def request(self, since: float) -> None:
        with self._changed:
            self._since = since if self._since is None else min(self._since, since)
            self._changed.notify_all()

    def stop(self, timeout: float) -> bool:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._changed:
                while self._since is None and not self._stopping.is_set():
                    self._changed.wait(1.0)
                since, self._since = self._since, None
            if since is None:
                return
            try:
                self.catchup.run(since, self._stopping)
                failures = 0
            except CatchUpError as error:
                delay = min(CATCHUP_RETRY_MAX, CATCHUP_RETRY_MIN * 2 ** failures)
                failures += 1
                log.warning("the catch-up since %s failed: %s; trying again in %g s",
                            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)), error,
                            delay)
                self.request(since)
                self._stopping.wait(delay)
            except Exception:
                log.exception("the catch-up failed")


class Service:
    """Everything ``opslab ci dispatch`` runs: the event paths, the catch-up and the
    dispatcher's loop, started together and stopped together."""

    def __init__(self, settings: "CiSettings", dispatcher: Dispatcher,
                 events: "queue.Queue[Event]", seen: SeenEvents, position: Position, *,
                 stream: "GerritEventStream | None" = None,
                 listener: "WebhookListener | None" = None,
                 catchup: CatchUp | None = None) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.events = events
        self.seen = seen
        self.position = position
        self.stream = stream
        self.listener = listener
        self._catchup = _CatchUpThread(catchup) if catchup is not None else None
        self._started = time.time()
        self._loop = threading.Thread(target=dispatcher.run, daemon=True,
                                      name="ci dispatcher")

    def start(self) -> None:
        """Start the loop, the event paths, then the catch-up from the position kept."""
        # Events handled before a restart are known: a catch-up reaching back over them
        # must not start them again.
        for key in self.position.keys:
            self.seen.first_time(key)
        since = self.position.time
        self.position.start_from(self._started)
        self._loop.start()
        if self.listener is not None:
            self.listener.start()
        if self.stream is not None:
            self.stream.on_reconnect = self.reconnected
            self.stream.start()
        if self._catchup is not None:
            self._catchup.start()
            if since is not None:
                self._catchup.request(since)
            else:
                log.info("no position kept in %s: nothing to catch up on at this first start",
                         self.position.path)

    def reconnected(self, last_seen: float | None) -> None:
        """The stream's ``on_reconnect``: catch up from the earliest of the newest event
        it received and the position (the start, if neither is known)."""
        known = [when for when in (last_seen, self.position.time) if when is not None]
        since = min(known) if known else self._started
        if self._catchup is not None:
            self._catchup.request(since)

    def stop(self, timeout: float = STOP_DEADLINE) -> bool:
        """Stop taking events, then the loop and the workers, within ``timeout``."""
        deadline = time.monotonic() + timeout
        ended = True

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        if self.stream is not None:
            ended = self.stream.stop(left()) and ended
        if self.listener is not None:
            ended = self.listener.stop(left()) and ended
        if self._catchup is not None:
            ended = self._catchup.stop(left()) and ended
        self.dispatcher.stop()
        self._loop.join(left())
        ended = not self._loop.is_alive() and ended
        return self.dispatcher.join(left()) and ended

    def wait(self, stopping: threading.Event) -> None:
        """Until ``stopping`` is set (by a signal)."""
        while not stopping.wait(1.0):
            if not self._loop.is_alive():
                log.error("the dispatcher's loop ended: stopping")
                return


def gerrit_server(settings: "CiSettings") -> GerritServer | None:
    """The ``GERRIT_NAME``/``HOST``/``PORT``/``SCHEME`` of the builds: the SSH daemon
    events come from, else the web URL's host; the front-end URL for change links."""
    front = f"{settings.gerrit_url.rstrip('/')}/" if settings.gerrit_url else ""
    host = settings.gerrit_ssh_host or (urlsplit(settings.gerrit_url).hostname
                                        if settings.gerrit_url else None)
    if host is None:
        return None
    return GerritServer(name=host, host=host, port=settings.gerrit_ssh_port,
                        front_end_url=front)


class SetupError(Exception):
    """The dispatcher cannot start as configured."""


def build_service(config: "Config", *, policy: Policy | None = None,
                  recorder: Recorder | None = None,
                  retry_delays: tuple[float, ...] = RETRY_DELAYS,
                  poll: float = 1.0) -> Service:
    """The service ``config``'s ci section describes: the SSH stream if
    ``ci.gerrit_ssh_host`` is set, the webhook endpoint if ``ci.webhook_listen`` is, the
    catch-up if ``ci.gerrit_url`` is; Jenkins; the trigger with ``policy`` (default: the
    directory's members of ``ci.trigger_project``). SetupError saying what is missing."""
    from .connection import GerritEventStream
    from .webhook import WebhookError, WebhookListener

    ci = config.ci
    if ci.gerrit_ssh_host is None and ci.webhook_listen is None:
        raise SetupError("no events would come in: set ci.gerrit_ssh_host (stream-events "
                         "over SSH), ci.webhook_listen (the webhooks plugin), or both")
    try:
        trigger = Trigger(ci, policy if policy is not None
                          else ProjectMembers(config, ci.trigger_project))
        jenkins = Jenkins.from_settings(ci)
        log.info("Jenkins: %s", jenkins.check())
    except JenkinsUnavailable as error:
        log.warning("Jenkins does not answer now (%s): runs will wait for it", error)
    except (ValueError, JenkinsError) as error:
        raise SetupError(str(error)) from None
    events: queue.Queue[Event] = queue.Queue()
    seen = SeenEvents.for_settings(ci)
    position = Position(ci.state_dir)
    catchup = None
    if ci.gerrit_url is None:
        log.warning("ci.gerrit_url is not set: no catch-up of what happens while no event "
                    "comes in (a restart, a lost stream)")
    else:
        try:
            catchup = CatchUp.from_settings(ci, events, seen)
        except CatchUpError as error:
            raise SetupError(str(error)) from None
    if recorder is None:
        try:
            client = api_client(config)
        except ConfigError as error:
            raise SetupError(str(error)) from None
        if client is None:
            log.warning("runs are not recorded in the API (ci.api_user is not set)")
        recorder = ApiRecorder(client) if client is not None else NoRecorder()
    try:
        stream = GerritEventStream(ci, events, seen) if ci.gerrit_ssh_host else None
        listener = WebhookListener.from_settings(ci, events, seen) \
            if ci.webhook_listen else None
    except (ValueError, WebhookError) as error:
        raise SetupError(str(error)) from None
    dispatcher = Dispatcher(ci, trigger, jenkins, recorder, events, position=position,
                            server=gerrit_server(ci), retry_delays=retry_delays, poll=poll)
    return Service(ci, dispatcher, events, seen, position, stream=stream, listener=listener,
                   catchup=catchup)


def serve(service: Service, timeout: float = STOP_DEADLINE) -> bool:
    """Run ``service`` until SIGTERM or SIGINT; True if it stopped within ``timeout``."""
    stopping = threading.Event()

    def stop(number: int, frame: object) -> None:
        log.info("%s: stopping", signal.Signals(number).name)
        stopping.set()

    previous = {number: signal.signal(number, stop)
                for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.start()
        service.wait(stopping)
    finally:
        ended = service.stop(timeout)
        for number, handler in previous.items():
            signal.signal(number, handler)
    if not ended:
        log.warning("stopped, with threads still waiting (past the %g s deadline)", timeout)
    return ended

"""Events in from Gerrit: ``gerrit stream-events`` over SSH, with paramiko.

Shaped like Zuul's ``GerritWatcher`` (``zuul/driver/gerrit/gerritconnection.py``)
and following the project's wire contract (``gerrit-jenkins-openstack.md``,
section 1.1; section 8, complaints 1, 3 and 4), with what those lack:

- **Trust**: Gerrit's host key is checked against ``ci.known_hosts_file`` (else
  ``~/.ssh/known_hosts``); a host that is not there, or whose key differs, is refused
  and said so, never added (Zuul's ``WarningPolicy`` would take any key). Only the
  private key of ``ci.ssh_key_file`` is offered: no agent, no ``~/.ssh`` keys.
- **Every network step has a deadline** (``ci.ssh_timeout``): the TCP connection, the
  banner, authentication, opening a channel, ``gerrit version`` and the exec of
  ``gerrit stream-events`` (paramiko's ``Channel.exec_command`` waits for the server's
  answer without one, so a guard closes the connection when it is late).
- **A stalled stream is noticed**: SSH keepalives (``ci.ssh_keepalive``) keep NATs
  open, and a watchdog closes the connection when no byte has arrived for
  ``ci.ssh_watchdog_seconds`` (a TCP connection that went silent without closing
  would otherwise be read for ever; section 8, complaint 4).
- **Reconnecting** after any loss or failure waits with exponential backoff, from
  ``ci.reconnect_min_seconds`` doubling up to ``ci.reconnect_max_seconds``, each wait
  jittered down by up to half; the count starts again once a stream has delivered.
- **Each line** goes through :func:`opslab.ci.events.parse_event`: a malformed one is
  logged and skipped, and the next line read as usual; one longer than
  :data:`~opslab.ci.events.MAX_EVENT_BYTES` is dropped unread up to its end.
- **One queue, each event once**: events go on the queue given (the one the webhook
  path feeds too) when :meth:`SeenEvents.first_time` says so, so a replay after a
  reconnect, or the same event by webhook, starts at most one run.
- **What was missed**: stream-events has no replay. :attr:`GerritEventStream.last_seen`
  is the time of the newest event received, and ``on_reconnect(last_seen)`` is called
  each time a stream opens again after one was lost (and when Gerrit says it dropped
  events for this client, ``dropped-output``), for the REST catch-up to ask Gerrit for
  what came in between.
- **A clean stop**: :meth:`GerritEventStream.stop` sends Ctrl-C as Zuul does, closes
  the connection and joins the thread within a deadline.
"""

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import paramiko

from opslab.ci.events import MAX_EVENT_BYTES, Event, Malformed, SeenEvents, parse_event

if TYPE_CHECKING:
    from opslab.config import CiSettings

log = logging.getLogger(__name__)

STREAM_COMMAND = "gerrit stream-events"
VERSION_COMMAND = "gerrit version"
# Exit statuses of stream-events that mean "stopped as asked" (Zuul's reading):
# -1 (none sent) and 130 (Ctrl-C).
_NORMAL_EXITS = (-1, 130)

OnReconnect = Callable[[float | None], None]


class UnknownHostKey(paramiko.SSHException):
    """Gerrit's host is not in the known_hosts file: refused, never added."""


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise UnknownHostKey(f"host {hostname} ({key.get_name()} key "
                             f"{key.fingerprint}) is not in {self.known_hosts}: refused")


class _Unusable(Exception):
    """ci.ssh_key_file or ci.known_hosts_file cannot be read."""


class _Lost(Exception):
    """The stream ended or went silent: reconnect."""


class _Stopping(Exception):
    """stop() was called."""


def backoff_delay(failures: int, minimum: float, maximum: float,
                  rng: random.Random | None = None) -> float:
    """The wait before the next attempt after ``failures`` failures in a row (0: the
    first retry): ``minimum`` doubled that many times, capped at ``maximum``, then
    jittered down by up to half (so between half of it and all of it)."""
    base: float = min(maximum, minimum * float(2 ** min(failures, 60)))
    jitter = rng.random() if rng is not None else random.random()  # noqa: S311 - not a secret
    return base * (0.5 + 0.5 * jitter)


class GerritEventStream:
    """``gerrit stream-events`` read in a thread of its own, for as long as it runs.

    ``events`` is the queue both event paths share, ``seen`` the set of events already
    handled (:meth:`SeenEvents.for_settings`). ``on_reconnect(last_seen)`` is called in
    this object's thread each time a stream opens again after one was lost: keep it
    short (hand the catch-up to another thread); an exception from it is logged.
    """

    def __init__(self, settings: "CiSettings", events: "queue.Queue[Event]",
                 seen: SeenEvents, on_reconnect: OnReconnect | None = None,
                 rng: random.Random | None = None) -> None:
        missing = [f"ci.{key}" for key in ("gerrit_ssh_host", "gerrit_ssh_user",
                                           "ssh_key_file")
                   if getattr(settings, key) is None]
        if missing:
            raise ValueError(f"no events by SSH until {', '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} set")
        self.settings = settings
        self.events = events
        self.seen = seen
        self.on_reconnect = on_reconnect
        self.server_version: str | None = None  # what `gerrit version` last answered
        self.last_error: str | None = None  # why the last connection failed or ended
        self.streams_opened = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._delivered = False
        self._last_seen: float | None = None
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._channel: paramiko.Channel | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="gerrit stream-events")

    @property
    def address(self) -> str:
        s = self.settings
        return f"{s.gerrit_ssh_user}@{s.gerrit_ssh_host}:{s.gerrit_ssh_port}"

    @property
    def last_seen(self) -> float | None:
        """Seconds since the epoch of the newest event received: Gerrit's
        ``eventCreatedOn``, else the time it arrived (early 2.x sends none); None
        before the first."""
        with self._lock:
            return self._last_seen

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop reading: Ctrl-C to Gerrit, the connection closed, the thread joined
        within ``timeout``. True if it ended in time."""
        self._stopping.set()
        self._close(interrupt=True)
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # The thread.

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._delivered = False
            opened = None
            try:
                channel = self._open()
                opened = time.monotonic()
                if self.streams_opened > 0:
                    self._caught_up("reconnected")
                self.streams_opened += 1
                self._read(channel)
            except _Stopping:
                break
            except _Lost as error:
                self._failed(logging.WARNING, str(error))
            except paramiko.BadHostKeyException as error:
                self._failed(logging.ERROR,
                             f"the host key of {error.hostname} ({error.key.get_name()} "
                             f"{error.key.fingerprint}) is not the one in "
                             f"{self._known_hosts()} ({error.expected_key.fingerprint}): "
                             "refused (a man in the middle, or Gerrit's key changed)")
            except (UnknownHostKey, _Unusable) as error:
                self._failed(logging.ERROR, str(error))
            except paramiko.AuthenticationException as error:
                self._failed(logging.ERROR,
                             f"Gerrit refused the key {self.settings.ssh_key_file} for user "
                             f"{self.settings.gerrit_ssh_user}: {error}")
            except (paramiko.SSHException, OSError, EOFError) as error:
                self._failed(logging.WARNING, f"{type(error).__name__}: {error}")
            except Exception as error:  # never let the thread die: reconnect
                log.exception("gerrit stream-events from %s failed", self.address)
                self.last_error = f"{type(error).__name__}: {error}"
            finally:
                self._close(interrupt=False)
            if self._stopping.is_set():
                break
            lasted = opened is not None and (
                time.monotonic() - opened >= self.settings.reconnect_max_seconds)
            if self._delivered or lasted:
                failures = 0
            delay = backoff_delay(failures, self.settings.reconnect_min_seconds,
                                  self.settings.reconnect_max_seconds, self._rng)
            failures += 1
            log.info("reconnecting to %s in %.1f s", self.address, delay)
            self._stopping.wait(delay)

    def _failed(self, level: int, reason: str) -> None:
        self.last_error = reason
        log.log(level, "gerrit stream-events from %s: %s", self.address, reason)

    def _known_hosts(self) -> str:
        return self.settings.known_hosts_file or "~/.ssh/known_hosts"

    def _open(self) -> paramiko.Channel:
        """Connect, authenticate, ask the version, and start stream-events."""
        s = self.settings
        client = paramiko.SSHClient()
        with self._lock:
            if self._stopping.is_set():
                raise _Stopping
            self._client = client
        if s.known_hosts_file is None:
            client.load_system_host_keys()
        else:
            # As system host keys: never written back, whatever happens.
            try:
                client.load_system_host_keys(s.known_hosts_file)
            except OSError as error:
                raise _Unusable(f"cannot read the known_hosts file {s.known_hosts_file}: "
                                f"{error.strerror or error}") from error
        client.set_missing_host_key_policy(_RefuseUnknown(self._known_hosts()))
        key = self._key()
        client.connect(s.gerrit_ssh_host or "", port=s.gerrit_ssh_port,
                       username=s.gerrit_ssh_user, pkey=key,
                       timeout=s.ssh_timeout, banner_timeout=s.ssh_timeout,
                       auth_timeout=s.ssh_timeout, channel_timeout=s.ssh_timeout,
                       allow_agent=False, look_for_keys=False)
        transport = client.get_transport()
        if transport is None:
            raise paramiko.SSHException("no transport after connecting")
        transport.set_keepalive(max(1, round(s.ssh_keepalive)) if s.ssh_keepalive > 0 else 0)
        self.server_version = self._version(client, transport)
        log.info("connected to Gerrit %s at %s", self.server_version or "(version unknown)",
                 self.address)
        with self._deadline(client, f"starting {STREAM_COMMAND}"):
            channel = transport.open_session(timeout=s.ssh_timeout)
            channel.exec_command(STREAM_COMMAND)
        with self._lock:
            if self._stopping.is_set():
                raise _Stopping
            self._channel = channel
        return channel

    def _key(self) -> paramiko.PKey:
        """The private key of ``ci.ssh_key_file``, read at each connection (so a key
        replaced on disk is used at the next one). Given to paramiko as a key, not a
        file name: from a file name paramiko tries each key type in turn after a
        refusal, and reports the last type's parse error instead of the refusal."""
        path = self.settings.ssh_key_file or ""
        try:
            return paramiko.PKey.from_path(path)
        except (OSError, paramiko.SSHException, ValueError) as error:
            raise _Unusable(f"cannot use the private key {path}: {error}") from error

    def _version(self, client: paramiko.SSHClient, transport: paramiko.Transport) -> str | None:
        """What ``gerrit version`` answers (``3.9.1``), or None if it refuses."""
        with self._deadline(client, VERSION_COMMAND):
            channel = transport.open_session(timeout=self.settings.ssh_timeout)
            channel.settimeout(self.settings.ssh_timeout)
            try:
                channel.exec_command(VERSION_COMMAND)
                output = bytearray()
                while len(output) < 4096:
                    data = channel.recv(4096)
                    if not data:
                        break
                    output += data
                status = channel.recv_exit_status()
            finally:
                channel.close()
        text = output.decode("utf-8", "replace").strip()
        if status != 0 or not text:
            log.warning("%s on %s: exit status %s", VERSION_COMMAND, self.address, status)
            return None
        return text.removeprefix("gerrit version ").strip()

    @contextmanager
    def _deadline(self, client: paramiko.SSHClient, what: str) -> Iterator[None]:
        """Close the connection if the steps inside take longer than ``ci.ssh_timeout``
        (paramiko waits for some answers without a timeout of its own)."""
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            client.close()

        timer = threading.Timer(self.settings.ssh_timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except (paramiko.SSHException, OSError, EOFError) as error:
            if fired.is_set():
                raise _Lost(f"{what}: no answer within {self.settings.ssh_timeout} s") \
                    from error
            raise
        finally:
            timer.cancel()
        if fired.is_set():
            raise _Lost(f"{what}: no answer within {self.settings.ssh_timeout} s")

    def _read(self, channel: paramiko.Channel) -> None:
        """Read lines until the stream ends, goes silent, or stop() is called (raising
        _Lost or _Stopping); ``self._delivered`` tells whether anything arrived."""
        watchdog = self.settings.ssh_watchdog_seconds
        channel.settimeout(min(1.0, watchdog / 4))
        buffer = bytearray()
        skipping = False
        last_data = time.monotonic()
        while True:
            if self._stopping.is_set():
                raise _Stopping
            try:
                data = channel.recv(65536)
            except TimeoutError:
                if time.monotonic() - last_data > watchdog:
                    raise _Lost(f"nothing received for {watchdog:g} s "
                                "(ci.ssh_watchdog_seconds): taken for dead") from None
                continue
            if not data:
                if self._stopping.is_set():
                    raise _Stopping
                status = channel.exit_status if channel.exit_status_ready() else None
                raise _Lost("the stream ended" + (
                    f" (exit status {status})" if status not in (None, *_NORMAL_EXITS)
                    else ""))
            last_data = time.monotonic()
            self._delivered = True
            buffer += data
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[:end + 1]
                if skipping:
                    skipping = False
                    continue
                self._line(line)
            if len(buffer) > MAX_EVENT_BYTES:
                log.warning("skipped a line from %s longer than %d bytes", self.address,
                            MAX_EVENT_BYTES)
                buffer.clear()
                skipping = True

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        event = parse_event(line)
        if isinstance(event, Malformed):
            log.warning("skipped from %s: %s", self.address, event)
            return
        when = float(event.created_on) if event.created_on is not None else time.time()
        with self._lock:
            if self._last_seen is None or when > self._last_seen:
                self._last_seen = when
        if event.type == "dropped-output":
            log.warning("Gerrit dropped events for %s (dropped-output)", self.address)
            self._caught_up("Gerrit dropped events")
            return
        if not self.seen.first_time(event.key):
            log.debug("already seen: %s", event.key)
            return
        while not self._stopping.is_set():
            try:
                self.events.put(event, timeout=1.0)
                return
            except queue.Full:
                log.warning("the event queue is full; %s waits", event.key)

    def _caught_up(self, why: str) -> None:
        if self.on_reconnect is None:
            return
        last_seen = self.last_seen
        log.info("%s: catching up since %s", why, last_seen)
        try:
            self.on_reconnect(last_seen)
        except Exception:
            log.exception("on_reconnect(%s) failed", last_seen)

    def _close(self, interrupt: bool) -> None:
        with self._lock:
            client, self._client = self._client, None
            channel, self._channel = self._channel, None
        if channel is not None and interrupt:
            try:
                # As Zuul stops it: Ctrl-C, then the channel closed.
                channel.settimeout(0.5)
                channel.send(b"\x03")
            except Exception:  # noqa: S110 - closing anyway
                pass
        if channel is not None:
            channel.close()
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"GerritEventStream({self.address})"

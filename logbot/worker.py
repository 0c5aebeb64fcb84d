"""The API's requests off the IRC loop: a thread relays the lines, the loop says the replies.

A request may take up to ``logbot.api_timeout``. Made on the IRC loop, a hung API
would keep the bot from answering the server's pings, and a flood of lines would
keep it away for as many timeouts. So lines wait in a short queue for one thread
(in order: the API sees a nick's lines as they were said); a line that finds the
queue full is answered at once; the replies come back to the loop, which alone
writes to IRC.
"""

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# relay(nick, account, line) -> the reply (opslab.logbot.relay.Relay).
Relay = Callable[[str, str | None, str], str]
# Lines that may wait for the API; one more is answered at once.
WAITING = 20


class Worker:
    """One thread that hands lines to ``relay``, and the replies it produced."""

    def __init__(self, relay: Relay, waiting: int = WAITING) -> None:
        self.relay = relay
        self.lines: queue.Queue[tuple[str, str, str | None, str] | None] = queue.Queue(waiting)
        self.replies: queue.Queue[tuple[str, str]] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="logbot-relay", daemon=True)
        self.thread.start()

    def submit(self, channel: str, nick: str, account: str | None, line: str) -> str | None:
        """Queue ``line`` of ``nick`` in ``channel``; None, or the reply to give at once when
        too many lines are waiting."""
        try:
            self.lines.put_nowait((channel, nick, account, line))
        except queue.Full:
            log.warning("a line of %s not logged: %d lines are waiting for the API", nick,
                        self.lines.maxsize)
            return (f"{nick}: not logged: too many lines are waiting for the Server Admin "
                    "Log, try again in a minute")
        return None

    def done(self) -> list[tuple[str, str]]:
        """The (channel, reply) pairs ready since the last call."""
        ready = []
        while True:
            try:
                ready.append(self.replies.get_nowait())
            except queue.Empty:
                return ready

    def stop(self, timeout: float) -> None:
        """Let the thread finish the line under way (at most ``timeout`` seconds); the
        lines still waiting are dropped."""
        while True:
            try:
                self.lines.get_nowait()
            except queue.Empty:
                break
        try:
            self.lines.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)

    def _work(self) -> None:
        while (item := self.lines.get()) is not None:
            channel, nick, account, line = item
            try:
                reply = self.relay(nick, account, line)
            except Exception:
                # The thread must outlive a bug in one line's relay.
                log.exception("relaying a line of %s failed", nick)
                reply = f"{nick}: not logged: the bot failed; operations must look"
            self.replies.put((channel, reply))

"""How often the bot acts on its own: reconnects that back off, replies that never flood."""

import random
import time
from collections.abc import Callable


class Backoff:
    """Waits before reconnecting: from ``low`` seconds, doubling to at most ``high``, each
    jittered down by up to half, so that bots a netsplit dropped together do not come
    back together."""

    def __init__(self, low: float, high: float,
                 jitter: Callable[[], float] = random.random) -> None:
        self.low = low
        self.high = high
        self.jitter = jitter
        self.attempt = 0

    def next(self) -> float:
        """The wait before the next attempt; each call doubles the one after."""
        wait = min(self.high, self.low * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return wait * (1 - self.jitter() / 2)

    def reset(self) -> None:
        """A connection that held: the next failure waits ``low`` again."""
        self.attempt = 0


class ReplyLimit:
    """A token bucket: at most ``burst`` replies at once, then one every ``interval``
    seconds. What the bucket refuses is dropped: a reply late by a minute helps nobody,
    and a queue would flood the channel later instead of now."""

    def __init__(self, burst: int, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = max(burst, 1)
        self.interval = interval
        self.clock = clock
        self.tokens = float(self.burst)
        self.checked = clock()

    def allow(self) -> bool:
        """True, and one token taken, if a reply may go now."""
        now = self.clock()
        if self.interval > 0:
            self.tokens = min(self.burst, self.tokens + (now - self.checked) / self.interval)
        else:
            self.tokens = self.burst
        self.checked = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

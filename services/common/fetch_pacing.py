"""How long a consumer's fetch may wait at the broker: short while events flow, long when idle.

A Kafka broker answers a waiting fetch as soon as data arrives, so there the wait only bounds an
idle consumer's request rate. The local stack's broker (tansu 0.6.0) does not: it looks for data
at the start of the wait, then again after half of what is left (the last 250 ms at once), so an
event waits for the next look. Measured with `bench/bench_hop_latency.py` (one event at a time,
tansu on SeaweedFS): at a 500 ms wait, ack -> consumed took a median 61 ms and a p90 229 ms; at
100 ms, 18 and 44 ms, for ~5 ms of CPU per second more (broker and client) while nothing comes.
Shorter still buys little for its cost (session 10, load ~7): 100 / 50 / 30 ms gave 12 / 10 / 7 ms
median and 41 / 25 / 17 ms p90, for 20 / 29 / 39 ms of CPU per second per waiting consumer (an
empty fetch is ~0.9 ms of broker and client CPU); while votes stream, the consumers between the
gateway's rounds wait that way: 50 ms would cost an estimated ~0.02 ms per vote (three consumers,
+9 ms/s each, at ~1,200 votes/s) to save ~25 ms over the release chain's four hops; not taken.

So a consumer that has just seen records — or whose service has just published, and so likely
awaits an answer — waits `active_wait_ms` for `active_seconds`, then goes back to `idle_wait_ms`:
events that follow one another (a vote, its decision, the release after it) travel with the
short wait, and an idle stack polls at the idle rate as before. The first event after an idle
spell still meets a long wait already in flight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class FetchPacing:
    """The fetch wait to ask for now, from when events were last seen (monotonic seconds)."""

    idle_wait_ms: int
    active_wait_ms: int
    active_seconds: float
    _active_until: float = field(default=-math.inf, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.active_wait_ms <= self.idle_wait_ms:
            raise ValueError(f"the active fetch wait ({self.active_wait_ms} ms) must be between 0 and "
                             f"the idle one ({self.idle_wait_ms} ms)")
        if self.active_seconds < 0:
            raise ValueError(f"active_seconds must not be negative ({self.active_seconds})")

    def note_activity(self, now: float) -> None:
        """Events were consumed or published at `now`: keep fetches short for a while."""
        self._active_until = max(self._active_until, now + self.active_seconds)

    def wait_ms(self, now: float) -> int:
        """The fetch wait for a request built at `now`."""
        return self.active_wait_ms if now < self._active_until else self.idle_wait_ms

"""Per-host politeness for HttpLoader: a concurrency limit and a minimum interval per
host, adaptive throttling, and the numbers per host.

**Why a dispatcher, not a semaphore per host.** The engine gives an async step a fixed
number of slots, and a call that waits for its host holds one. If a slot were also a
request, one slow or limited host would soon hold all of them and every other host would
wait behind it (head-of-line blocking). So a loader with per-host limits asks the engine
for ``concurrency + backlog`` slots and keeps ``concurrency`` — the requests actually in
flight — here: a call first waits in its host's queue (holding an engine slot, not a
request slot), and :class:`HostGate` hands the free request slots to whichever hosts
have room, round-robin, so while one host is at its limit the others keep every request
slot busy. Only when ``backlog`` items all wait for hosts at their limits does the
loader stop taking items: memory stays bounded.

**Why no rate-limiter library.** The gate decides for all hosts at once when a slot
frees, so it must know *without awaiting* when each host next has room: a minimum
interval between request starts is one float per host and answers that directly.
aiolimiter's leaky bucket is built around an awaited ``acquire()`` (a waiter per
request, woken by the limiter itself), which would hold the request slot while it
waits — exactly the blocking the gate exists to avoid — and it allows bursts a polite
crawler should not send. ``per_host_rate=r`` is an interval of ``1/r``.

**Adaptive throttling** (``throttle=True``), per host:

* after each response the interval moves halfway toward ``latency / target`` (Scrapy's
  AutoThrottle rule: about ``target`` requests in flight at the server's pace);
* on 429 or 503 the host is being refused. If refusals are many (over 10 % of the
  responses of the last second), the pace is far above the server's limit, and the
  rate the server still *accepted* is that limit (a rate-limited server admits exactly
  its rate while it refuses the rest): the interval becomes ``1 / (0.95 × that rate)``,
  one step to just under the limit rather than a climb of doublings. An occasional
  refusal means the pace the refused request was sent at was just above the limit: 10 %
  slower than that. Either becomes the host's floor, which eases by 2 % a second so a
  server that allows more later is probed again (a refusal every five seconds or so,
  well under 1 % of the requests);
* ``Retry-After`` on a 429/503 blocks the whole host for that long, not only the request.
"""
from __future__ import annotations

import asyncio
import bisect
import math
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List

from yarl import URL

#: statuses that say "you are going too fast" (throttle and Retry-After act on them)
REFUSING = frozenset({429, 503})
#: how long the accepted rate is measured over when a host refuses (seconds)
RATE_WINDOW = 1.0
#: the share of the server's accepted rate a refused host is brought down to
MARGIN = 0.95
#: refusals up to this share of the accepted responses (last RATE_WINDOW s) mean the pace
#: is just above the limit; more mean far above it, where the accepted rate *is* the limit
NEAR_LIMIT = 0.1
#: the pace after an occasional refusal, as a share of the pace that was refused
STEP_BACK = 0.9
#: the floor learnt from a refusal eases by this factor per second (probing for more)
FLOOR_EASE = 0.98
#: latencies kept per host for percentiles (a ring of the latest)
LATENCY_SAMPLES = 512


def host_of(url: Any) -> str:
    """The politeness key of a URL: scheme-less ``host:port`` (two ports of one machine
    are two servers; http and https of one name share a host)."""
    parsed = URL(str(url))
    host = parsed.host or ""
    port = parsed.explicit_port
    return f"{host}:{port}" if port else host


class HostState:
    """One host: its limits, queue of waiting calls and numbers."""

    __slots__ = ("name", "limit", "active", "interval", "floor", "floor_at", "next_start", "blocked_until",
                 "waiters", "requests", "statuses", "bytes", "errors", "latencies", "accepted", "cached",
                 "robots_dropped", "crawl_delay", "first_seen", "refused")

    def __init__(self, name: str, limit: int, interval: float) -> None:
        self.name = name
        self.limit = limit
        self.active = 0
        self.interval = interval          # seconds between request starts (0: none)
        self.floor = 0.0                  # learnt from a refusal (throttle)
        self.floor_at = 0.0
        self.next_start = 0.0             # loop time the next request may start
        self.blocked_until = 0.0          # Retry-After for the whole host
        self.waiters: Deque[asyncio.Future] = deque()
        self.requests = 0
        self.statuses: Counter = Counter()
        self.bytes = 0
        self.errors = 0
        self.latencies: Deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.accepted: Deque[float] = deque()  # loop times of non-refused responses (last RATE_WINDOW s)
        self.cached = 0
        self.robots_dropped = 0
        self.crawl_delay = 0.0
        self.first_seen: float | None = None  # loop time of the first response
        self.refused: Deque[float] = deque()  # loop times of refusals (last RATE_WINDOW s)

    def summary(self, now: float) -> Dict[str, Any]:
        """The host's numbers for the report (JSON-ready)."""
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(math.ceil(p / 100 * len(lat))) - 1)] * 1000, 2)

        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "bytes": self.bytes,
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99)},
            "delay_s": round(max(self.interval, self.crawl_delay), 4),
            "in_flight": self.active,
            "queued": len(self.waiters),
            "cached": self.cached,
            "robots_dropped": self.robots_dropped,
            "blocked_s": round(max(0.0, self.blocked_until - now), 3),
        }


class HostGate:
    """Request slots shared by all hosts (``total``), at most ``per_host`` of them per
    host, starts at least ``interval`` apart per host; waiting calls queue per host and
    never hold a request slot. One gate per loader per run (its futures belong to the
    run's loop)."""

    def __init__(self, total: int, per_host: int | None, interval: float, *, throttle: bool = False,
                 target: float = 1.0, max_delay: float = 60.0, shards: int = 1) -> None:
        self.total = total
        #: shards sharing each host's limits (a robots.txt Crawl-delay is multiplied by it)
        self.shards = shards
        self.per_host = per_host
        self.interval = interval
        self.throttle = throttle
        self.target = target
        self.max_delay = max_delay
        self.in_flight = 0
        self.hosts: Dict[str, HostState] = {}
        self._ready: Dict[str, HostState] = {}  # hosts with waiters, in round-robin order
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.peak_in_flight = 0

    def host(self, name: str) -> HostState:
        state = self.hosts.get(name)
        if state is None:
            state = self.hosts[name] = HostState(name, self.per_host or self.total, self.interval)
        return state

    # ---- acquire / release --------------------------------------------------------------
    async def acquire(self, host: HostState, retry: bool = False) -> None:
        """Wait for a request slot for ``host`` (FIFO within the host). A ``retry`` goes
        first: its call already waited its turn, and behind the host's queue it would
        run out of its ``timeout`` waiting."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        if not host.waiters and self._has_room(host, loop.time()):
            self._grant(host, loop.time())
            return
        fut = loop.create_future()
        if retry:
            host.waiters.appendleft(fut)
        else:
            host.waiters.append(fut)
        self._ready[host.name] = host
        self._pump()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just as it was cancelled
                self.release(host)
            else:
                try:
                    host.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self, host: HostState) -> None:
        host.active -= 1
        self.in_flight -= 1
        if self._ready:
            self._pump()

    def _has_room(self, host: HostState, now: float) -> bool:
        return (self.in_flight < self.total and host.active < host.limit
                and now >= host.next_start and now >= host.blocked_until)

    def _grant(self, host: HostState, now: float) -> None:
        host.active += 1
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        spacing = max(host.interval, host.crawl_delay)
        if spacing:
            host.next_start = max(now, host.next_start) + spacing if now < host.next_start + spacing else now + spacing

    def _pump(self) -> None:
        """Hand free request slots to waiting hosts that have room, one per host per
        round (round-robin), and set a timer for the earliest host whose time is not up."""
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        wake = math.inf
        progress = True
        while progress and self.in_flight < self.total and self._ready:
            progress = False
            for name in list(self._ready):
                host = self._ready[name]
                while host.waiters and host.waiters[0].done():  # cancelled waiters
                    host.waiters.popleft()
                if not host.waiters:
                    del self._ready[name]
                    continue
                if self.in_flight >= self.total:
                    break
                if host.active >= host.limit:
                    continue
                later = max(host.next_start, host.blocked_until)
                if now < later:
                    wake = min(wake, later)
                    continue
                self._grant(host, now)
                host.waiters.popleft().set_result(None)
                progress = True
                # round-robin: this host goes to the back of the line
                del self._ready[name]
                if host.waiters:
                    self._ready[name] = host
        if wake < math.inf and (self._timer is None or self._timer.when() > wake):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- what the responses say ---------------------------------------------------------
    def observed(self, host: HostState, status: int | None, latency: float, size: int,
                 retry_after: float | None, paced: float | None = None) -> None:
        """Count one attempt's outcome and adapt the host's pace (``throttle``)."""
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        host.requests += 1
        if host.first_seen is None:
            host.first_seen = now - latency
        if status is None:
            host.errors += 1
        else:
            host.statuses[status] += 1
        host.bytes += size
        host.latencies.append(latency)
        refused = status in REFUSING
        if retry_after is not None and refused:
            host.blocked_until = max(host.blocked_until, now + min(retry_after, self.max_delay * 10))
        accepted = host.accepted
        while accepted and accepted[0] < now - RATE_WINDOW:
            accepted.popleft()
        if not self.throttle:
            if status is not None and not refused:
                accepted.append(now)
            return
        if refused:
            self._refused(host, now, host.interval if paced is None else paced)
            return
        if status is None:
            return
        accepted.append(now)
        if host.floor:  # the learnt floor eases with time: probe for more now and then
            host.floor *= FLOOR_EASE ** max(0.0, now - host.floor_at)
            host.floor_at = now
        wanted = latency / self.target
        host.interval = min(self.max_delay, max(host.floor, (host.interval + wanted) / 2))

    def _refused(self, host: HostState, now: float, paced: float) -> None:
        """A 429/503 to a request sent ``paced`` seconds after the one before it."""
        refused = host.refused
        refused.append(now)
        while refused and refused[0] < now - RATE_WINDOW:
            refused.popleft()
        accepted = len(host.accepted)
        slower = 0.0
        if accepted and len(refused) <= accepted * NEAR_LIMIT and paced > 0:
            # a refusal now and then: the pace it was sent at is just above the limit
            # (the pace *then*: the interval may have moved since); 10 % slower is under it
            slower = paced / STEP_BACK
        elif accepted >= 3 and now - host.accepted[0] > 0.05:
            # from the first accepted response of the window on (not from the first
            # request: a slow start would dilute it). Early on it counts the server's
            # initial burst, so it is high, never low: a later refusal corrects it
            # downwards, never leaves the crawl slow
            slower = 1.0 / (MARGIN * (accepted - 1) / (now - host.accepted[0]))
        measured = bool(slower)
        if not measured:
            # too little accepted to measure (the first burst): half the pace the refused
            # request was sent at, for now, and no floor learnt from so little: the next
            # refusals find enough accepted responses to measure the limit
            slower = max(paced * 2, 0.01)
        slower = min(self.max_delay, slower)
        host.interval = max(host.interval, slower)
        if measured:
            host.floor = max(host.floor, slower)
            host.floor_at = now
        host.next_start = max(host.next_start, now + host.interval)

    def report(self) -> Dict[str, Dict[str, Any]]:
        now = self._loop.time() if self._loop is not None else 0.0
        return {name: state.summary(now) for name, state in self.hosts.items()}


__all__ = ["HostGate", "HostState", "host_of", "REFUSING"]

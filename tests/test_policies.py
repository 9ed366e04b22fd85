"""Error policies (raise / ignore / retry / pipein), per-step overrides, dead letters,
timeouts, the run report's accounting, cancellation and shutdown."""
from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import warnings
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launch import kill_group, popen

from rxbot import (BotFrame, Filter, Join, Loop, Node, Pipe, Return, Step, config)


@pytest.fixture(autouse=True)
def fast_backoff():
    config.retry_backoff = 0.0005
    config.retry_max_backoff = 0.002


def fails_on(bad, name="flaky"):
    def step(x):
        if x in bad:
            raise ValueError(f"bad {x}")
        return x
    step.__name__ = step.__qualname__ = name
    return step


def async_fails_on(bad):
    async def astep(x):
        await asyncio.sleep(0)
        if x in bad:
            raise ValueError(f"bad {x}")
        return x
    return astep


# ---------------------------------------------------------------- ignore
@pytest.mark.parametrize("make", [fails_on, lambda bad: Step(async_fails_on(bad), name="flaky")])
def test_ignore_drops_logs_and_counts(make, caplog):
    config.exception_policy = config.Exception_ignore
    out = []
    Pipe(range(10), make({3, 7}), out.append)
    with caplog.at_level(logging.WARNING, logger="rxbot"):
        report = BotFrame.run()
    assert sorted(out) == [0, 1, 2, 4, 5, 6, 8, 9]
    stats = report.find("flaky")
    assert (stats.failed, stats.dropped) == (2, 2)
    assert sorted(e.item for e in report.dead_letters) == [3, 7]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and all("'flaky'" in m for m in logged)


def test_ignore_truncates_huge_items_in_logs(caplog):
    config.exception_policy = "ignore"
    Pipe(["x" * 10_000], fails_on({"x" * 10_000}))
    with caplog.at_level(logging.WARNING, logger="rxbot"):
        BotFrame.run()
    assert len(caplog.records[0].getMessage()) < 500


# ---------------------------------------------------------------- retry
def flaky_until(attempts_needed):
    """Fails each item the first ``attempts_needed - 1`` times (an idempotent step)."""
    seen = Counter()

    def flaky(x):
        seen[x] += 1
        if seen[x] < attempts_needed:
            raise ConnectionError(f"try again {x}")
        return x * 10
    return flaky, seen


def test_retry_recovers_a_flaky_sync_step():
    config.exception_policy = "retry"
    config.retry_attempts = 3
    flaky, seen = flaky_until(3)
    out = []
    Pipe(range(5), flaky, out.append)
    report = BotFrame.run()
    assert sorted(out) == [0, 10, 20, 30, 40]
    assert report.find("flaky").retried == 10 and all(v == 3 for v in seen.values())


def test_retry_recovers_a_flaky_async_step():
    seen = Counter()

    async def aflaky(x):
        seen[x] += 1
        if seen[x] < 2:
            raise ConnectionError("again")
        return x

    out = []
    Pipe(range(20), Step(aflaky, on_error="retry", retries=2), out.append)
    report = BotFrame.run()
    assert sorted(out) == list(range(20)) and report.find("aflaky").retried == 20


def test_retry_exhausted_falls_through_to_raise():
    config.exception_policy = "retry"
    config.retry_attempts = 2
    flaky, seen = flaky_until(10)
    with pytest.raises(ConnectionError):
        Pipe(range(3), flaky)
        BotFrame.run()
    assert max(seen.values()) == 3  # first call + 2 retries


def test_retry_exhausted_can_fall_through_to_ignore():
    config.exception_policy = "retry"
    config.retry_final_policy = "ignore"
    config.retry_attempts = 1
    out = []
    Pipe(range(4), fails_on({2}), out.append)
    report = BotFrame.run()
    assert out == [0, 1, 3]
    assert report.find("flaky").retried == 1 and report.find("flaky").dropped == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    from rxbot.engine.policy import StepRuntime

    config.retry_backoff, config.retry_max_backoff, config.retry_jitter = 0.1, 0.5, 0.1
    rt = StepRuntime("s", "s", None, on_error="retry")
    waits = [rt.backoff(n) for n in (1, 2, 3, 4)]
    assert 0.1 <= waits[0] <= 0.11 and 0.2 <= waits[1] <= 0.22 and 0.4 <= waits[2] <= 0.44
    assert 0.5 <= waits[3] <= 0.55


# ---------------------------------------------------------------- pipein
def test_pipein_sends_the_original_exception_downstream_to_a_filter():
    config.exception_policy = "pipein"
    errors, good = [], []
    Pipe(range(5), fails_on({1, 3}),
         Return(errors.append, route_type=Exception),
         good.append)
    report = BotFrame.run()
    assert good == [0, 2, 4]
    # databot's pipein: the exception object itself, never a wrapper
    assert [type(e) for e in errors] == [ValueError, ValueError]
    assert [e.rxbot_item for e in errors] == [1, 3]
    assert all(e.rxbot_step == "flaky" for e in errors)
    assert errors[0].__notes__ == ["rxbot: raised in step 'flaky' on item 1"]
    # the dead letters still describe the failure with its step and item
    assert [(d.step, d.item, d.exception) for d in report.dead_letters] == [
        ("flaky", 1, errors[0]), ("flaky", 3, errors[1])]


def test_pipein_with_filter_route_type_exception():
    config.exception_policy = "pipein"
    out = []
    Pipe(range(4), fails_on({2}), Filter(route_type=Exception), out.append)
    BotFrame.run()
    assert len(out) == 1 and isinstance(out[0], ValueError) and out[0].rxbot_item == 2


# ---------------------------------------------------------------- per-step overrides
def test_per_step_override_beats_the_global_policy():
    out = []
    Pipe(range(5), Step(fails_on({2}), on_error="ignore"), out.append)  # global is raise
    BotFrame.run()
    assert out == [0, 1, 3, 4]


def test_node_on_error_attribute_is_its_policy():
    class Picky(Node):
        on_error = "ignore"

        def __call__(self, x):
            if x % 2:
                raise ValueError("odd")
            return x

    out = []
    Pipe(range(6), Picky(), out.append)
    BotFrame.run()
    assert out == [0, 2, 4]


def test_dead_letters_sink_list_and_callable():
    config.exception_policy = "ignore"
    letters = []
    config.dead_letters = letters
    Pipe(range(4), fails_on({1, 2}))
    BotFrame.run()
    assert [e.item for e in letters] == [1, 2]
    called = []
    config.dead_letters = called.append
    Pipe(range(4), fails_on({3}))
    BotFrame.run()
    assert [e.item for e in called] == [3]


# ---------------------------------------------------------------- timeouts
def test_timeout_raises_under_raise_and_drops_under_ignore():
    async def slow(x):
        await asyncio.sleep(10 if x == 1 else 0)
        return x

    with pytest.raises(asyncio.TimeoutError):
        Pipe(range(3), Step(slow, timeout=0.05))
        BotFrame.run()
    out = []
    Pipe(range(3), Step(slow, timeout=0.05, on_error="ignore"), out.append)
    report = BotFrame.run()
    assert sorted(out) == [0, 2] and report.find("slow").dropped == 1


def test_timeout_on_a_sync_step_is_rejected_with_advice():
    with pytest.raises(ValueError, match="boost='thread'"):
        Step(lambda x: x, timeout=1)


# ---------------------------------------------------------------- sources and generators
@pytest.mark.parametrize("policy, expected_tail", [("ignore", []), ("pipein", ["OSError"])])
def test_source_iterator_raising_mid_way(policy, expected_tail):
    config.exception_policy = policy

    def source():
        yield 1
        yield 2
        raise OSError("disk gone")

    out = []
    Pipe(Loop(source()), out.append)
    report = BotFrame.run()
    assert out[:2] == [1, 2]
    assert [type(x).__name__ for x in out[2:]] == expected_tail
    assert report.find("Loop(generator)").failed == 1


@pytest.mark.parametrize("policy", ["ignore", "pipein"])
def test_generator_step_raising_half_way(policy):
    config.exception_policy = policy

    def gen(x):
        yield x
        if x == 1:
            raise ValueError("half")
        yield x + 100

    out = []
    Pipe(range(3), gen, out.append)
    BotFrame.run()
    values = [v for v in out if not isinstance(v, Exception)]
    errors = [v for v in out if isinstance(v, ValueError)]
    assert values == [0, 100, 1, 2, 102]
    assert len(errors) == (1 if policy == "pipein" else 0)


@pytest.mark.parametrize("policy", ["raise", "ignore", "retry", "pipein"])
def test_node_init_failure_always_raises(policy):
    """A node that cannot start cannot process anything: the run fails under any policy."""
    config.exception_policy = policy

    class Broken(Node):
        async def init(self):
            raise ConnectionRefusedError("db down")

        def __call__(self, x):
            return x

    with pytest.raises(ConnectionRefusedError):
        Pipe(range(3), Broken())
        BotFrame.run()


# ---------------------------------------------------------------- accounting (property)
def chain_strategy():
    return st.lists(
        st.tuples(st.sampled_from(["sync", "async", "return", "join"]), st.frozensets(st.integers(0, 29), max_size=6)),
        min_size=1, max_size=4)


def make_step(kind, bad):
    """Steps carry (id, hops) tuples so each output can be traced to its source item;
    each step fails on the ids in ``bad``. Piped-in exceptions pass through."""
    def f(t):
        if isinstance(t, Exception):
            return t
        if t[0] in bad:
            raise ValueError("injected")
        return (t[0], t[1] + 1)
    if kind == "sync":
        return f
    if kind == "async":
        async def af(t):
            await asyncio.sleep(0)
            return f(t)
        return Step(af, concurrency=3)
    if kind == "return":  # only even ids go through the branch
        return Return(f, route_func=lambda t: isinstance(t, tuple) and t[0] % 2 == 0)
    return Join(f)  # one-branch Join: every item through f


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=chain_strategy(), policy=st.sampled_from(["raise", "ignore", "pipein", "retry"]))
def test_every_item_is_delivered_dropped_by_rule_in_dead_letters_or_raised(chain, policy):
    BotFrame.clear()
    config.exception_policy = policy
    config.retry_final_policy = "ignore"
    config.retry_attempts = 1
    config.retry_backoff = 0.0001
    steps = [make_step(kind, bad) for kind, bad in chain]
    out = []
    Pipe([(i, 0) for i in range(30)], *steps, out.append)
    try:
        report = BotFrame.run()
    except ValueError:
        assert policy == "raise"
        return

    # the expected fate of each id: it dies at the first step that fails on it
    delivered, dead = [], []
    for i in range(30):
        fails = any(i in bad and (kind != "return" or i % 2 == 0) for kind, bad in chain)
        (dead if fails else delivered).append(i)
    if policy == "raise":
        assert not dead
    got_values = [t[0] for t in out if isinstance(t, tuple)]
    got_errors = [t for t in out if isinstance(t, ValueError)]
    letters = [e.item[0] for e in report.dead_letters]
    assert Counter(got_values) == Counter(delivered)  # none lost, none duplicated
    assert Counter(letters) == Counter(dead)
    totals = report.totals()
    assert totals["failed"] == len(dead)
    if policy == "pipein":
        # the original exception travelled on to the end instead of the item
        assert sorted(e.rxbot_item[0] for e in got_errors) == sorted(dead)
    else:
        assert got_errors == [] and totals["dropped"] == len(dead)


# ---------------------------------------------------------------- cancellation and shutdown
async def test_cancel_with_items_in_flight_closes_everything_without_warnings():
    closed = []

    class Resource(Node):
        async def init(self):
            self.open = True

        async def close(self):
            closed.append(True)

        async def __call__(self, x):
            await asyncio.sleep(0.01)
            return x

    started = asyncio.Event()

    def mark(x):
        started.set()
        return x

    delivered = []
    pipe = Pipe(range(100_000), mark, Step(Resource(), concurrency=1000), delivered.append)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = asyncio.create_task(BotFrame.run_async())
        await started.wait()
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert closed == [True]
    # every item pulled from the source is accounted for: delivered or reported cancelled
    report = pipe.report
    pulled = report.find("Loop(range(0, 100000))").out
    resource = report.find("Resource")
    assert resource.cancelled > 0  # in flight (or queued) when the run was cancelled
    assert pulled == resource.inp == len(delivered) + resource.cancelled
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []


def test_sigterm_stops_the_run_and_closes_nodes(tmp_path):
    marker = tmp_path / "closed.txt"
    ready = tmp_path / "ready.txt"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, pathlib
        from rxbot import Pipe, Node, Step, BotFrame

        class Res(Node):
            async def close(self):
                pathlib.Path({str(marker)!r}).write_text("closed")
            async def __call__(self, x):
                pathlib.Path({str(ready)!r}).write_text("ready")
                await asyncio.sleep(0.01)
                return x

        Pipe(range(10**9), Step(Res(), concurrency=50))
        BotFrame.run()
    """))
    proc = popen([sys.executable, str(script)], stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            if ready.exists():
                break
            import time
            time.sleep(0.05)
        assert ready.exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
    assert proc.returncode == 143, err.decode()
    assert marker.read_text() == "closed"
    assert b"Task was destroyed" not in err and b"Traceback" not in err


def test_nodes_can_redact_items_in_logs_and_errors(caplog):
    """No secrets in logs: a node's describe_item replaces the item's repr."""
    class Secretive(Node):
        def describe_item(self, item):
            return "<request>"

        def __call__(self, item):
            raise PermissionError("denied")

    config.exception_policy = "ignore"
    Pipe([{"token": "SECRET"}], Secretive())
    with caplog.at_level(logging.WARNING, logger="rxbot"):
        report = BotFrame.run()
    assert "SECRET" not in caplog.text and "<request>" in caplog.text
    assert "SECRET" not in str(report.dead_letters[0])
    config.exception_policy = "raise"
    with pytest.raises(PermissionError) as info:
        Pipe([{"token": "SECRET"}], Secretive())
        BotFrame.run()
    assert "SECRET" not in "".join(info.value.__notes__)


def test_failed_run_does_not_flush_nodes():
    flushed = []

    class Batcher(Node):
        async def __call__(self, item):
            return None

        async def flush(self):
            flushed.append(True)

    async def hold(x):
        if x >= 2:
            await asyncio.Event().wait()
        return x

    async def boom(_):
        await asyncio.sleep(0.05)
        raise RuntimeError("elsewhere")

    Pipe(Loop(range(5)), hold, Batcher())
    Pipe(boom)
    with pytest.raises(RuntimeError):
        BotFrame.run()
    assert flushed == []


def test_abandoned_async_generator_is_closed_before_its_node():
    events = []

    class Stream(Node):
        async def close(self):
            events.append("node close")

        async def __call__(self, _):
            try:
                for i in range(1000):
                    await asyncio.sleep(0)
                    yield i
            finally:
                events.append("generator finally")

    def fail_at_3(x):
        if x == 3:
            raise RuntimeError("stop")
        return x

    Pipe(Stream(), fail_at_3)
    with pytest.raises(RuntimeError):
        BotFrame.run()
    assert events == ["generator finally", "node close"]


def test_retried_sync_step_may_return_a_generator():
    attempts = []

    def words(line):
        attempts.append(line)
        if len(attempts) == 1:
            raise ConnectionError("flaky once")
        return (w for w in line.split())

    out = []
    Pipe(["a b c"], Step(words, on_error="retry", retries=3), out.append)
    BotFrame.run()
    assert out == ["a", "b", "c"] and len(attempts) == 2


def test_sync_node_with_flush_may_return_a_generator():
    class Splitter(Node):
        def __call__(self, line):
            return (w for w in line.split())

        async def flush(self):
            return "END"

    out = []
    Pipe(["x y"], Splitter(), out.append)
    BotFrame.run()
    assert out == ["x", "y", "END"]


def test_errors_marked_not_retryable_go_straight_to_the_final_policy():
    calls = []

    class Final(Exception):
        retryable = False

    def once(x):
        calls.append(x)
        raise Final("already retried inside the node")

    config.exception_policy = "retry"
    config.retry_final_policy = "ignore"
    Pipe([1], once)
    report = BotFrame.run()
    assert calls == [1] and report.find("once").retried == 0 and report.find("once").dropped == 1


def test_a_node_whose_init_failed_initialises_again_next_run():
    attempts = []
    closed = []

    class Flaky(Node):
        async def init(self):
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("db not up yet")

        async def close(self):
            closed.append(1)

        def __call__(self, x):
            return x

    node = Flaky()
    with pytest.raises(ConnectionError):
        Pipe([1], node)
        BotFrame.run()
    out = []
    Pipe([2], node, out.append)
    BotFrame.run()
    assert out == [2] and len(attempts) == 2 and closed == [1]


def test_boosted_calls_finish_before_their_node_is_closed():
    import threading
    import time as _time

    events = []
    lock = threading.Lock()

    class Db(Node):
        boost_kind = "thread"
        concurrency = 4

        async def init(self):
            self.conn = "open"

        async def close(self):
            with lock:
                events.append("close")
            self.conn = None

        def __call__(self, x):
            _time.sleep(0.05)
            with lock:
                events.append(self.conn)
            return x

    def stop(x):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        Pipe(range(8), Db(), stop)
        BotFrame.run()
    assert events[-1] == "close" and None not in events


def test_timeout_on_a_sync_node_is_rejected_not_ignored():
    class Sync(Node):
        timeout = 1.0

        def __call__(self, x):
            return x

    with pytest.raises(ValueError, match="timeout needs an async or boosted step"):
        Pipe([1], Sync())
        BotFrame.run()


def test_items_held_by_a_batching_node_are_not_counted_as_filtered():
    class Pairs(Node):
        holds_items = True

        def __init__(self):
            super().__init__()
            self.buf = []

        async def __call__(self, x):
            self.buf.append(x)
            if len(self.buf) == 2:
                out, self.buf = self.buf, []
                return out
            return None

        async def flush(self):
            return self.buf or None

    out = []
    Pipe(range(5), Step(Pairs(), concurrency=1), out.append)
    report = BotFrame.run()
    assert out == [0, 1, 2, 3, 4]
    stats = report.find("Pairs")
    assert (stats.inp, stats.out, stats.filtered) == (5, 5, 0)


# ---------------------------------------------------------------- Insert accounting (property)
def rejecting_insert(tmp: str, bad, batch_size: int):
    """A SQLite Insert (a real database file) whose trigger rejects the ids in ``bad``:
    a batch holding one of them fails and is written row by row by the node."""
    import sqlite3

    from rxbot.db.sqlite import Insert

    path = f"{tmp}/t.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE t (id INTEGER, hops INTEGER); CREATE TABLE bad (id INTEGER);"
            "CREATE TRIGGER reject BEFORE INSERT ON t WHEN NEW.id IN (SELECT id FROM bad) "
            "BEGIN SELECT RAISE(ABORT, 'injected'); END;")
        db.executemany("INSERT INTO bad VALUES (?)", [(i,) for i in bad])
    db.close()
    return path, Insert("INSERT INTO t (id, hops) VALUES (?, ?)", path=path, batch_size=batch_size,
                        flush_interval=None, name="insert")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.frozensets(st.integers(0, 29), max_size=4), bad=st.frozensets(st.integers(0, 29), max_size=12),
       batch_size=st.sampled_from([1, 4, 7, 50]), policy=st.sampled_from(["raise", "ignore", "pipein", "retry"]))
def test_insert_counts_exactly_the_rows_it_rejected_under_every_policy(before, bad, batch_size, policy):
    import sqlite3
    import tempfile

    from rxbot.db.base import InsertError

    BotFrame.clear()
    config.exception_policy = policy
    config.retry_final_policy = "ignore"
    config.retry_attempts = 1
    config.retry_backoff = 0.0001
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path, insert = rejecting_insert(tmp, bad, batch_size)
        # piped-in exceptions go around the Insert, as a user routes them
        Pipe([(i, 0) for i in range(30)], make_step("sync", before), Return(insert, route_type=tuple),
             out.append)
        try:
            report = BotFrame.run()
        except (ValueError, InsertError, sqlite3.IntegrityError):
            assert policy == "raise"
            return
        with sqlite3.connect(path) as db:
            stored = [r[0] for r in db.execute("SELECT id FROM t")]
        db.close()
    dead_before = sorted(before)
    rejected = sorted(set(range(30)) - set(before) & set(bad))
    delivered = sorted(set(range(30)) - set(before) - set(bad))
    if policy == "raise":
        assert not dead_before and not rejected
    assert sorted(stored) == delivered  # what the database holds ...
    assert sorted(t[0] for t in out if isinstance(t, tuple)) == delivered  # ... is what passed on
    ins = report.find("insert")
    assert ins.failed == len(rejected)  # each rejected row counted once, under its own item
    letters = sorted(e.item[0] for e in report.dead_letters if e.step == "insert")
    assert letters == rejected
    if policy == "pipein":
        assert sorted(e.rxbot_item[0] for e in out if isinstance(e, Exception)) == sorted(dead_before + rejected)
        assert ins.dropped == 0
    else:
        assert ins.dropped == len(rejected) and not any(isinstance(e, Exception) for e in out)
    assert report.totals()["failed"] == len(dead_before) + len(rejected)

"""Replay mode (issue 7): a failed run resumes from the nearest completed step.

Subprocess tests run real scripts the way a user does (databot's replayex example, kill -9,
SIGTERM/Ctrl-C, a 1M-item recording with its RSS measured); the others run pipes in this
process with ``config.replay_dir`` pointing into ``tmp_path``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import hmac
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import zoneinfo
from collections import Counter, namedtuple
from pathlib import Path, PurePosixPath

import pytest

from rxbot import (BlockedJoin, BotFrame, Branch, Filter, Fork, Join, Loop, Pipe, Return, Step,
                   StepError, config)
from rxbot import replay
from rxbot.replay import ReplayIntegrityError, atomic_write, clear_cache, pipe_key
from rxbot.replay.codec import (ReplayDecodeError, ReplayEncodeError, ReplayedError, decode_json,
                                encode_json, register_type, unregister_type)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path):
    """Replay mode on, caches under tmp_path/cache (the in-process script name is 'session')."""
    config.replay_mode = True
    config.replay_dir = str(tmp_path / "cache")
    return tmp_path / "cache"


def slot(cache: Path, pipe: str = "P1") -> Path:
    return cache / "session" / pipe


def manifest(cache: Path, pipe: str = "P1") -> dict:
    return json.loads((slot(cache, pipe) / "manifest.json").read_text())


def run(*steps):
    Pipe(*steps)
    return BotFrame.run()


def run_failing(*steps, error=Exception):
    Pipe(*steps)
    with pytest.raises(error) as info:
        BotFrame.run()
    return info.value


def env(**extra) -> dict:
    out = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out.update({k: str(v) for k, v in extra.items()})
    return out


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def python(path: Path, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path)], cwd=path.parent, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


class Failing:
    """A step failing on its n-th call while armed. Its counters are private attributes,
    which are runtime state, not part of the pipe's cache key."""

    def __init__(self, n: int, fn=lambda x: 3 * x) -> None:
        self.n, self.fn, self._calls, self._armed = n, fn, 0, True

    @property
    def calls(self) -> int:
        return self._calls

    def disarm(self) -> None:
        self._armed = False

    def __call__(self, x):
        self._calls += 1
        if self._armed and self._calls == self.n:
            raise RuntimeError(f"call {self._calls} fails")
        return self.fn(x)


# ---------------------------------------------------------------------------------------
# acceptance: databot's replayex.py, run twice as a script
# ---------------------------------------------------------------------------------------
REPLAYEX = """\
    # test copy of examples/replayex.py: shorter sleep, double's calls counted in a file
    import os
    import time

    from rxbot import BotFrame, Loop, Pipe, config

    def double(a):
        with open(os.environ["CALLS"], "a") as fh:
            fh.write("%d\\n" % a)
        time.sleep(0.05)
        return 2 * a

    count = 0
    LIMIT = int(os.environ.get("FAIL_AFTER", "6"))  # 0: never fail

    def triple(a):
        global count
        count += 1
        if LIMIT and count > LIMIT:
            raise Exception("triple fails on call %d" % count)
        return 3 * a

    config.replay_mode = True

    def main():
        Pipe(Loop(range(10)), double, triple, print)
        BotFrame.run()

    main()
"""


def test_replayex_second_run_skips_double_and_completes_the_output(tmp_path):
    job = script(tmp_path / "job" / "replayex.py", REPLAYEX)
    calls = tmp_path / "calls.txt"

    first = python(job, CALLS=calls)
    assert first.returncode == 1
    assert "Exception: triple fails on call 7" in first.stderr
    assert first.stdout.split() == ["0", "6", "12", "18", "24", "30"]
    # double ran to its end so its whole output could be saved
    assert calls.read_text().split() == [str(i) for i in range(10)]
    saved = job.parent / ".rxbot" / "replay" / "replayex" / "P1"  # next to the script
    assert json.loads((saved / "manifest.json").read_text())["resume"] == 3

    second = python(job, CALLS=calls)
    assert second.returncode == 0, second.stderr
    assert calls.read_text().split() == [str(i) for i in range(10)]  # double not called again
    assert "replaying pipe P1 from step 3 (triple) with 4 items" in second.stderr
    assert second.stdout.split() == ["36", "42", "48", "54"]
    assert not (job.parent / ".rxbot").exists()  # a successful run clears its cache

    whole = python(script(tmp_path / "ref" / "replayex.py", REPLAYEX),
                   CALLS=tmp_path / "ref-calls.txt", FAIL_AFTER=0)
    assert whole.returncode == 0, whole.stderr
    assert first.stdout + second.stdout == whole.stdout


def test_the_example_file_itself_resumes(tmp_path):
    job = tmp_path / "replayex.py"
    shutil.copy(EXAMPLES / "replayex.py", job)
    first = python(job, RXBOT_EXAMPLE_DELAY=0.01)
    assert first.returncode == 1
    assert first.stdout.split().count("double") == 10
    assert "replaying" not in first.stderr and "saved pipe P1" in first.stderr
    second = python(job, RXBOT_EXAMPLE_DELAY=0.01)
    assert second.returncode == 0, second.stderr
    assert "double" not in second.stdout
    printed = [line for line in (first.stdout + second.stdout).splitlines() if not line.startswith("double")]
    assert printed == [str(6 * i) for i in range(10)]


# ---------------------------------------------------------------------------------------
# in-process behaviour
# ---------------------------------------------------------------------------------------
def test_resume_feeds_only_unfinished_items_and_raises_the_original_error(cache, caplog):
    doubled, out = [], []

    def double(x):
        doubled.append(x)
        return 2 * x

    triple = Failing(5)
    err = run_failing(Loop(range(8)), double, triple, out.append, error=RuntimeError)
    assert str(err) == "call 5 fails"
    assert doubled == list(range(8))
    assert out == [0, 6, 12, 18]
    m = manifest(cache)
    assert m["resume"] == 3 and m["error"] == "RuntimeError: call 5 fails"
    assert [seg["pending"] for seg in m["taps"]["2"]] == [[[4, 8]]]

    triple.disarm()
    caplog.set_level(logging.INFO, logger="rxbot")
    report = run(Loop(range(8)), double, triple, out.append)
    assert doubled == list(range(8))
    assert out == [3 * 2 * i for i in range(8)]
    assert any("replaying pipe P1 from step 3 (Failing) with 4 items" in r.getMessage() for r in caplog.records)
    assert report.error is None
    assert not cache.exists()


@pytest.mark.parametrize("change", ["function", "loop", "argument"])
def test_changed_pipe_is_not_replayed(cache, caplog, change):
    doubled, out = [], []

    def double(x, k=2):
        doubled.append(x)
        return k * x

    def triple_v2(x):
        return 3 * x + 1

    triple = Failing(3)
    run_failing(Loop(range(6)), double, triple, out.append)
    assert manifest(cache)["resume"] == 3
    triple.disarm()
    doubled.clear()
    out.clear()
    steps = {
        "function": (Loop(range(6)), double, triple_v2),
        "loop": (Loop(range(7)), double, triple),
        "argument": (Loop(range(6)), functools.partial(double, k=5), triple),
    }[change]
    run(*steps, out.append)
    n = 7 if change == "loop" else 6
    assert doubled == list(range(n))  # started from the first step
    last = steps[2]
    k = 5 if change == "argument" else 2
    assert out == [last(k * i) for i in range(n)]
    assert any("changed since the failed run" in r.getMessage() for r in caplog.records)
    assert not cache.exists()


def test_cache_key_is_stable_across_processes_and_ignores_accumulators(tmp_path):
    code = textwrap.dedent("""
        import functools
        from rxbot import Pipe, Loop, Fork, Filter, Step, Timer
        from rxbot.replay import pipe_key
        seen = []
        def step(x, k=3):
            seen.append(x)
            return x * k
        p = Pipe(Loop(["a", "b", "c"]), {"x", "y", "z"}, lambda x: x, functools.partial(step, k=4),
                 Fork(Filter(route_type=str), Step(step, concurrency=2)), Timer(delay=1, max_time=2))
        before = pipe_key(p, 0)
        seen.extend(range(100))
        assert pipe_key(p, 0) == before
        print(before)
    """)
    path = script(tmp_path / "key.py", code)
    keys = {subprocess.run([sys.executable, str(path)], env=env(PYTHONHASHSEED=seed), capture_output=True,
                           text=True, check=True).stdout.strip() for seed in ("1", "2", "3")}
    assert len(keys) == 1 and len(keys.pop()) == 64


async def _slow_double(x):
    await asyncio.sleep(0.001 * (x % 3))
    return 2 * x


def test_nested_routes_before_the_failure_point_are_not_run_again(cache):
    calls = Counter()

    def count(name, fn):
        def step(x):
            calls[name] += 1
            return fn(x)
        step.__name__ = step.__qualname__ = name
        return step

    async def slow_double(x):
        calls["slow_double"] += 1
        return await _slow_double(x)

    def build(last):
        return (
            Loop(range(12)),
            Branch(count("side", lambda x: x), Branch(count("side2", lambda x: x))),
            Return(count("inc", lambda x: x + 1), route_func=lambda x: x % 3 == 0),
            Join(slow_double, Pipe(count("neg", lambda x: -x), Fork(count("fork", lambda x: x)))),
            BlockedJoin(count("ident", lambda x: x), count("square", lambda x: x * x)),
            last,
        )

    out = []
    failing = Failing(9, fn=lambda t: (3 * t[0], t[1]))
    run_failing(*build(failing), out.append, error=RuntimeError)
    before = dict(calls)
    assert before["side"] == before["side2"] == 12 and before["neg"] == 12 and before["square"] == 24
    m = manifest(cache)
    assert m["resume"] == 6
    assert sum(b - a for seg in m["taps"]["5"] for a, b in seg["pending"]) == 24 - 8

    failing.disarm()
    run(*build(failing), out.append)
    assert dict(calls) == before  # none of the routes ran again
    assert failing.calls == 24 + 1  # 9 in the first run (one failed), 16 now

    calls.clear()
    config.replay_mode = False
    reference = []
    run(*build(Step(lambda t: (3 * t[0], t[1]), name="failing")), reference.append)
    assert sorted(out) == sorted(reference) and len(out) == 24


def test_failure_inside_a_route_at_the_failure_point(cache):
    seen, out = Counter(), []

    def double(x):
        seen[x] += 1
        return 2 * x

    boom = Failing(4, fn=lambda x: x + 100)
    steps = lambda: (Loop(range(10)), double, Return(boom, route_func=lambda x: x % 4 == 0), out.append)
    run_failing(*steps(), error=RuntimeError)
    assert out == [100, 2, 104, 6, 108, 10]  # 12 failed inside the route
    assert manifest(cache)["resume"] == 3
    boom.disarm()
    run(*steps())
    assert seen == Counter(range(10))
    expected = [2 * i + 100 if (2 * i) % 4 == 0 else 2 * i for i in range(10)]
    assert out == expected


def test_async_failing_step_settles_items_per_item(cache):
    done = Counter()
    armed = [True]

    async def triple(x):
        await asyncio.sleep(0.002 * (x % 5))
        if armed[0] and x == 13:
            raise ValueError("13 is unlucky")
        done[x] += 1
        return 3 * x

    out = []
    steps = lambda: (Loop(range(30)), Step(triple, concurrency=4), out.append)
    err = run_failing(*steps(), error=ValueError)
    assert "13 is unlucky" in str(err)
    first = set(done)
    pending = manifest(cache)["taps"]["1"][0]["pending"]
    assert {i for a, b in pending for i in range(a, b)} == set(range(30)) - first
    armed[0] = False
    run(*steps())
    assert done == Counter(range(30))  # every item finished exactly once over both runs
    assert sorted(out) == [3 * i for i in range(30)]


def test_sync_step_with_retries_at_the_failure_point(cache):
    attempts, ok, out, armed = Counter(), Counter(), [], [True]
    config.retry_backoff = 0.001

    def flaky(x):
        attempts[x] += 1
        if x == 2 and attempts[x] <= 2:
            raise ConnectionError("transient")  # retried later, then fine
        if armed[0] and x == 5:
            raise ValueError("permanent")  # fails its retries too: step 3 is poisoned
        ok[x] += 1
        return 7 * x

    steps = lambda: (Loop(range(8)), lambda x: x, Step(flaky, retries=2), out.append)
    run_failing(*steps(), error=ValueError)
    assert attempts[2] == 3 and attempts[5] == 3
    pending = manifest(cache)["taps"]["2"][0]["pending"]
    assert pending == [[5, 6]]  # 2 settled after its successful retry; 6 and 7 went through
    armed[0] = False
    run(*steps())
    assert ok == Counter(range(8)) and sorted(out) == [7 * i for i in range(8)]


def test_sync_step_returning_coroutines_at_the_failure_point(cache):
    done, out, armed = Counter(), [], [True]

    async def work(x):
        await asyncio.sleep(0.001 * (x % 3))
        if armed[0] and x == 4:
            raise ValueError("4 fails")
        done[x] += 1
        return x + 1000

    steps = lambda: (Loop(range(8)), lambda x: x, lambda x: work(x), out.append)
    run_failing(*steps(), error=ValueError)
    assert manifest(cache)["taps"]["2"][0]["pending"] == [[4, 5]]
    armed[0] = False
    run(*steps())
    assert done == Counter(range(8)) and sorted(out) == [1000 + i for i in range(8)]


def test_failure_inside_a_blockedjoin_stops_at_once_instead_of_emitting_a_partial_tuple(cache):
    before, out = Counter(), []

    def ident(x):
        before[x] += 1
        return x

    boom = Failing(3, fn=lambda x: -x)
    steps = lambda: (Loop(range(6)), ident, BlockedJoin(lambda x: 10 * x, boom), out.append)
    run_failing(*steps(), error=RuntimeError)
    assert len(out) < 6 and all(None not in t for t in out)
    assert manifest(cache)["resume"] == 3
    boom.disarm()
    run(*steps())
    assert before == Counter(range(6))
    # the whole input of the BlockedJoin is replayed: tuples made before the failure come twice
    assert set(out) == {(10 * i, -i) for i in range(6)} and all(None not in t for t in out)


def test_first_step_failure_or_nothing_complete_starts_fresh(cache):
    def source(_):
        raise OSError("no input")

    run_failing(source, lambda x: x, error=OSError)
    assert not cache.exists()

    def items():
        yield 1
        raise OSError("stream broke")

    run_failing(Loop(items()), lambda x: x, print, error=OSError)
    assert not cache.exists()


def test_interrupted_run_resumes_every_level(cache):
    """A fatal error elsewhere stops the run at once: step 1 was complete, step 2 and 3
    had items in flight. The next run feeds step 2 its unfinished input and step 3 the
    outputs of step 2 it had not finished."""
    slow, slow2, out = [], [], []
    fast = [False]

    async def stage1(x):
        slow.append(x)
        await asyncio.sleep(0 if fast[0] else (0.05 * x if x < 5 else 30))
        return x * 10

    async def stage2(x):
        slow2.append(x)
        await asyncio.sleep(0 if fast[0] else (0.05 if x < 30 else 30))
        return x + 1

    async def other(_):
        await asyncio.sleep(0.8)
        raise KeyError("elsewhere")

    Pipe(Loop(range(6)), stage1, stage2, out.append)
    Pipe(other)
    with pytest.raises(KeyError):
        BotFrame.run()
    assert out == [1, 11, 21]
    m = manifest(cache)
    assert m["resume"] == 2
    pend = lambda k: [p for seg in m["taps"][k] for p in seg["pending"]]
    assert pend("1") == [[5, 6]] and pend("2") == [[3, 5]]

    fast[0] = True
    slow.clear()
    slow2.clear()
    run(Loop(range(6)), stage1, stage2, out.append)
    assert slow == [5] and sorted(slow2) == [30, 40, 50]
    assert sorted(out) == [10 * i + 1 for i in range(6)]


def test_successful_run_in_replay_mode_leaves_nothing(cache):
    out = []
    run(Loop(range(5)), lambda x: x + 1, Filter(route_func=lambda x: x % 2), out.append)
    assert out == [1, 3, 5]
    assert not cache.exists()


def test_clear_cache_removes_only_replay_files(cache):
    run_failing(Loop(range(4)), lambda x: x, Failing(2), print)
    assert (slot(cache) / "manifest.json").exists()
    (cache / "notes.txt").write_text("mine")
    assert clear_cache(cache) == 1
    assert not (cache / "session").exists()
    assert (cache / "notes.txt").read_text() == "mine"
    assert clear_cache(cache / "nowhere") == 0


def test_default_location_and_config_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config.replay_dir = None
    assert replay.replay_root() == tmp_path / ".rxbot" / "replay"  # no script: the cwd
    config.replay_dir = str(tmp_path / "elsewhere")
    assert replay.replay_root() == tmp_path / "elsewhere"
    assert replay.replay_root(tmp_path / "x") == tmp_path / "x"
    assert replay.default_root(tmp_path / "jobs" / "job.py") == tmp_path / "jobs" / ".rxbot" / "replay"


# ---------------------------------------------------------------------------------------
# safe format
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: tuple
    when: datetime.date | None = None


@dataclasses.dataclass
class Counted:
    n: int
    inits = 0

    def __post_init__(self):
        Counted.inits += 1


Pair = namedtuple("Pair", "left right")


class Color(enum.Enum):
    RED = "r"
    BLUE = (0, 0, 255)


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other):
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)


VALUES = [
    None, True, 0, -5, 2 ** 80, 1.5, float("inf"), "text ü \n \u2028", [1, [2]], (1, (2, "a")), (),
    {"a": 1, "b": [1, 2]}, {1: "int key", (2, 3): "tuple key"}, {"$": "looks like a tag"},
    b"\x00\xffbytes", bytearray(b"ba"), {1, 2}, frozenset({"a"}), 3 + 4j, range(2, 9, 3),
    datetime.datetime(2024, 5, 1, 12, 30, 1, 5), datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc),
    datetime.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
    datetime.date(2024, 2, 29), datetime.time(23, 59, 58, 7), datetime.timedelta(days=-1, seconds=5),
    decimal.Decimal("1.10"), fractions.Fraction(1, 3), uuid.UUID(int=7),
    Point(1, (2, "b"), datetime.date(2020, 1, 1)), [Point(0, ())], Pair(1, Pair("a", b"b")),
    Color.RED, Color.BLUE, PurePosixPath("/tmp/x"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_json_codec_round_trips_tagged_types(value):
    line = encode_json(value)
    assert b"\n" not in line
    back = decode_json(line)
    assert back == value and type(back) is type(value)
    if isinstance(value, datetime.datetime):
        assert back.tzinfo == value.tzinfo and back.fold == value.fold


def test_json_codec_exceptions_and_step_errors():
    back = decode_json(encode_json(ValueError("bad", 3)))
    assert type(back) is ValueError and back.args == ("bad", 3)

    class Custom(Exception):
        pass

    back = decode_json(encode_json(StepError("fetch", {"url": "u"}, Custom("down"))))
    assert isinstance(back, StepError) and back.step == "fetch" and back.item == {"url": "u"}
    assert isinstance(back.exception, ReplayedError) and back.exception.message == "down"


def test_json_codec_keeps_where_a_piped_in_exception_failed():
    from rxbot.errors import annotate

    back = decode_json(encode_json(annotate(KeyError("k"), "lookup", {"id": 4})))
    assert type(back) is KeyError and back.args == ("k",)
    assert (back.rxbot_step, back.rxbot_item) == ("lookup", {"id": 4})


def test_dataclasses_are_rebuilt_without_calling_init():
    line = encode_json(Counted(4))
    before = Counted.inits
    assert decode_json(line) == Counted(4)
    assert Counted.inits == before + 1  # only the comparison's Counted(4) ran __init__


def test_registered_types_round_trip():
    register_type(Money, lambda m: (m.cents, m.currency), lambda v: Money(*v), name="test.Money")
    try:
        assert decode_json(encode_json([Money(150, "EUR")])) == [Money(150, "EUR")]
    finally:
        unregister_type(Money)
    with pytest.raises(ReplayDecodeError, match="not registered"):
        decode_json(b'{"$":"reg","n":"test.Money","v":[1,"x"]}')


def test_unencodable_item_error_names_the_type_and_the_opt_in():
    with pytest.raises(ReplayEncodeError) as info:
        encode_json({"k": [Money(1, "EUR")]})
    text = str(info.value)
    assert "test_replay.Money" in text and "config.replay_serializer = 'pickle'" in text
    assert "register_type" in text

    with pytest.raises(ReplayEncodeError, match="defined inside a function"):
        encode_json(_local_dataclass())


def _local_dataclass():
    @dataclasses.dataclass
    class Inner:
        a: int

    return Inner(1)


def test_decoding_never_imports_modules():
    with pytest.raises(ReplayDecodeError, match="not imported"):
        decode_json(b'{"$":"dc","c":"some_module_never_imported_xyz:Thing","v":{}}')
    assert "some_module_never_imported_xyz" not in sys.modules


def test_unencodable_item_fails_the_run_with_a_clear_error(cache):
    err = run_failing(Loop(range(3)), lambda x: Money(x, "EUR"), print, error=ReplayEncodeError)
    assert "step 2" in str(err) and "test_replay.Money" in str(err) and "'pickle'" in str(err)
    assert not (slot(cache) / "manifest.json").exists()


# ---------------------------------------------------------------------------------------
# pickle: opt-in and signed
# ---------------------------------------------------------------------------------------
def _pickle_cache(cache, money=True):
    config.replay_serializer = "pickle"
    made, out = [], []

    def make(x):
        made.append(x)
        return Money(x, "EUR") if money else x

    boom = Failing(2, fn=lambda m: m.cents if money else m)
    run_failing(Loop(range(4)), make, boom, out.append, error=RuntimeError)
    return made, out, boom, make


def test_pickle_cache_replays_arbitrary_objects(cache):
    made, out, boom, make = _pickle_cache(cache)
    key = cache / "session" / "replay.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert manifest(cache)["taps"]["2"][0]["digest"].startswith("hmac-sha256:")
    boom.disarm()
    run(Loop(range(4)), make, boom, out.append)
    assert made == [0, 1, 2, 3] and out == [0, 1, 2, 3]


def test_tampered_pickle_cache_is_refused(cache, tmp_path):
    made, out, boom, make = _pickle_cache(cache)
    data = next(slot(cache).glob("*.pkl"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Evil())
    data.write_bytes(len(payload).to_bytes(8, "big") + payload)  # a valid frame, wrong signature
    boom.disarm()
    with pytest.raises(ReplayIntegrityError, match="failed its HMAC check"):
        run(Loop(range(4)), make, boom, out.append)
    assert not marker.exists()
    assert made == [0, 1, 2, 3]  # nothing ran

    # a replaced key is refused the same way; a missing key too
    (cache / "session" / "replay.key").write_text(os.urandom(32).hex())
    with pytest.raises(ReplayIntegrityError):
        run(Loop(range(4)), make, boom, out.append)
    (cache / "session" / "replay.key").unlink()
    with pytest.raises(ReplayIntegrityError):
        run(Loop(range(4)), make, boom, out.append)
    assert not marker.exists()


def test_pickle_cache_is_not_loaded_without_the_opt_in(cache, tmp_path, caplog):
    made, out, boom, make = _pickle_cache(cache, money=False)
    # replace the data by a payload that acts when unpickled, correctly signed this time
    data = next(slot(cache).glob("*.pkl"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Evil())
    data.write_bytes(len(payload).to_bytes(8, "big") + payload)
    key = bytes.fromhex((cache / "session" / "replay.key").read_text())
    m = manifest(cache)
    m["taps"]["2"][0].update(count=1, pending=[[0, 1]],
                             digest="hmac-sha256:" + hmac.new(key, data.read_bytes(), "sha256").hexdigest())
    (slot(cache) / "manifest.json").write_text(json.dumps(m))

    config.replay_serializer = "json"  # no opt-in: a pickle cache is never opened
    boom.disarm()
    made.clear()
    run(Loop(range(4)), make, boom, out.append)
    assert not marker.exists()
    assert made == [0, 1, 2, 3] and out == [0, 0, 1, 2, 3]
    assert any("saved with pickle" in r.getMessage() for r in caplog.records)


def test_bad_serializer_setting_is_rejected(cache):
    config.replay_serializer = "yaml"
    with pytest.raises(ValueError, match="replay_serializer must be 'json'"):
        run(Loop(range(2)), print)


# ---------------------------------------------------------------------------------------
# durability
# ---------------------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")

    def crash(*_):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


KILLJOB = """\
    import os, signal, sys, time
    from rxbot import BotFrame, Loop, Pipe, config
    config.replay_mode = True
    N = int(os.environ["N"])
    FAIL_AT = int(os.environ.get("FAIL_AT", "-1"))
    SLOW = os.environ.get("SLOW") == "1"
    if os.environ.get("KILL_AT_COMMIT") == "1":  # a real kill -9 in the middle of saving
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)

    def inc(x):
        return x + 1

    def check(x):
        if x == FAIL_AT:
            raise ValueError("bad %d" % x)
        return x

    got = []

    def sink(x):
        got.append(x)
        if SLOW and x % 500 == 0:
            time.sleep(0.01)

    Pipe(Loop(range(N)), inc, check, sink)
    BotFrame.run()
    print(len(got), sum(got))
"""


def _snapshot(folder: Path) -> dict:
    m = json.loads((folder / "manifest.json").read_bytes())
    return {"manifest": (folder / "manifest.json").read_bytes(),
            "data": {seg["file"]: (folder / seg["file"]).read_bytes() for segs in m["taps"].values() for seg in segs}}


def test_kill_9_while_saving_leaves_the_previous_cache_loadable(tmp_path):
    job = script(tmp_path / "killjob.py", KILLJOB)
    folder = tmp_path / ".rxbot" / "replay" / "killjob" / "P1"
    first = python(job, N=1000, FAIL_AT=501)
    assert first.returncode == 1 and "bad 501" in first.stderr
    before = _snapshot(folder)

    killed = python(job, N=1000, FAIL_AT=700, KILL_AT_COMMIT=1)
    assert killed.returncode == -signal.SIGKILL
    assert "replaying pipe P1 from step 3 (check) with 500 items" in killed.stderr
    assert _snapshot(folder) == before

    last = python(job, N=1000)
    assert last.returncode == 0, last.stderr
    assert "with 500 items" in last.stderr
    assert last.stdout.split() == ["500", str(sum(range(501, 1001)))]
    assert not (tmp_path / ".rxbot").exists()


def test_kill_9_while_recording_leaves_the_previous_cache_loadable(tmp_path):
    job = script(tmp_path / "killjob.py", KILLJOB)
    folder = tmp_path / ".rxbot" / "replay" / "killjob" / "P1"
    n = 200_000
    first = python(job, N=n, FAIL_AT=1)  # the first item fails: all n are saved for step 3
    assert first.returncode == 1
    before = _snapshot(folder)
    old_files = set(os.listdir(folder))

    proc = subprocess.Popen([sys.executable, str(job)], cwd=tmp_path, env=env(N=n, SLOW=1),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill it once its new recording is well under way
            new = [f for f in os.listdir(folder) if f not in old_files and f.endswith(".jsonl")]
            if any((folder / f).stat().st_size > 256 * 1024 for f in new):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(folder) == before

    last = python(job, N=n)
    assert last.returncode == 0, last.stderr
    assert last.stdout.split() == [str(n), str(sum(range(1, n + 1)))]


SIGJOB = """\
    import asyncio, os
    from rxbot import BotFrame, Loop, Pipe, config
    config.replay_mode = True

    async def slow_double(x):
        with open(os.environ["CALLS"], "a") as fh:
            fh.write("%d\\n" % x)
        await asyncio.sleep(0.3 * (x + 1))
        return 2 * x

    def out(x):
        print("out", x, flush=True)

    Pipe(Loop(range(6)), slow_double, out)
    BotFrame.run()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_signal_saves_what_is_complete_and_the_next_run_resumes(tmp_path, sig):
    job = script(tmp_path / "sigjob.py", SIGJOB)
    calls = tmp_path / "calls.txt"
    proc = subprocess.Popen([sys.executable, str(job)], cwd=tmp_path, env=env(CALLS=calls),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "out 4":  # items 0-2 done, 3-5 still sleeping
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=30)
    lines += rest.split("\n")
    assert proc.returncode != 0
    assert [x for x in lines if x] == ["out 0", "out 2", "out 4"]
    assert "saved pipe P1" in err

    second = python(job, CALLS=calls)
    assert second.returncode == 0, second.stderr
    assert "replaying pipe P1 from step 2 (slow_double) with 3 items" in second.stderr
    assert second.stdout.split("\n")[:3] == ["out 6", "out 8", "out 10"]
    assert Counter(calls.read_text().split()) == Counter({"0": 1, "1": 1, "2": 1, "3": 2, "4": 2, "5": 2})


# ---------------------------------------------------------------------------------------
# large streams
# ---------------------------------------------------------------------------------------
BIGJOB = """\
    import json, sys
    import psutil
    from rxbot import BotFrame, Loop, Pipe, config

    config.replay_mode = True
    N = 1_000_000

    def inc(x):
        return x + 1

    def last_fails(x):
        if x == N:
            raise ValueError("the last item fails")
        return {"n": x, "t": (x, str(x))}

    def sink(x):
        pass

    def peak_rss():
        # VmHWM: the peak RSS of this address space (ru_maxrss would include the parent's
        # peak from before exec, i.e. pytest's)
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))

    Pipe(Loop(range(1000)), inc, last_fails, sink)  # warm up: code paths, caches, imports
    try:
        BotFrame.run()
    except ValueError:
        pass
    base = psutil.Process().memory_info().rss
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak to the current RSS
    Pipe(Loop(range(N)), inc, last_fails, sink)
    try:
        BotFrame.run()
    except ValueError:
        pass
    print(json.dumps({"base": base, "peak": peak_rss()}))
"""


def test_recording_a_million_items_keeps_memory_flat(tmp_path):
    job = script(tmp_path / "bigjob.py", BIGJOB)
    proc = python(job, timeout=300)
    assert proc.returncode == 0, proc.stderr
    mem = json.loads(proc.stdout)
    growth = mem["peak"] - mem["base"]
    assert growth < 100 * 2 ** 20, f"RSS grew by {growth / 2 ** 20:.1f} MB"
    folder = tmp_path / ".rxbot" / "replay" / "bigjob" / "P1"
    m = json.loads((folder / "manifest.json").read_text())
    (seg,) = m["taps"]["2"]
    assert m["resume"] == 3 and seg["count"] == 1_000_000 and seg["pending"] == [[999_999, 1_000_000]]
    with open(folder / seg["file"], "rb") as fh:
        assert sum(1 for _ in fh) == 1_000_000

"""Boosted steps: thread, process and Dask cluster.

"Runs off the event loop" is asserted through what can only happen if it does: several
blocking calls running at once (a threading counter), and Timer ticks that arrive
while a blocking call is still running. Process tests come before the Dask ones so that
the process pool forks before the test cluster's threads exist.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from rxbot import BotFrame, Branch, Loop, Node, Pipe, Step, Timer, config

ROOT = Path(__file__).resolve().parent.parent


def run(*steps):
    out = []
    Pipe(*steps, out.append)
    BotFrame.run()
    return out


# ------------------------------------------------------------ module-level workers
# (process and cluster boosts pickle the function: it must be importable by name)
def square(x):
    return x * x


def square_and_pid(x):
    return (x * x, os.getpid())


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def pair(x):
    yield x
    yield -x


@Node.boost(type="process")
def cube_in_process(x):
    return (x ** 3, os.getpid())


@Node.boost_type("process")
def negate_in_process(x):
    return (-x, os.getpid())


class Scale(Node):
    """A sync Node: boost sends a copy of it to the worker."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def __call__(self, x):
        return (x * self.factor, os.getpid())


class BlockingProbe:
    """A blocking step that records how many of its calls run at the same time."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.threads = set()

    def __call__(self, x):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(self.seconds)
        finally:
            with self.lock:
                self.running -= 1
        return x * 10


def children():
    """Child processes, less multiprocessing's helpers that live as long as the interpreter
    (the resource tracker and forkserver are started once, on first use)."""
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmd and "forkserver" not in cmd:
            pids.add(p.pid)
    return pids


def wait_until_gone(pids, limit=300):
    """Processes a run started must exit after it (bounded polling, not a time assertion)."""
    for _ in range(limit):
        if not (pids & children()):
            return
        time.sleep(0.02)
    raise AssertionError(f"processes still alive after the run: {sorted(pids & children())}")


# ------------------------------------------------------------------------------ thread
def _blocking_run(step):
    probe = step.fn
    ticks = []
    during = []

    def tick(n):
        ticks.append(n)
        if probe.running:
            during.append(n)

    out = []
    work = Pipe(Loop(range(20)), step, out.append)
    Pipe(Timer(delay=0.02, until=work.finished), tick)
    BotFrame.run()
    return probe, out, ticks, during


def test_thread_boost_runs_blocking_calls_concurrently_while_the_loop_ticks():
    probe, out, ticks, during = _blocking_run(Step(BlockingProbe(0.2), boost="thread", concurrency=4))
    assert sorted(out) == [x * 10 for x in range(20)]
    assert probe.peak == 4  # 4 workers, all busy at once
    assert threading.get_ident() not in probe.threads
    # a tick while a sleep was in progress is impossible if the sleep blocked the loop
    assert len(during) >= 5
    assert ticks == list(range(1, len(ticks) + 1))


def test_node_boost_decorator_with_workers():
    probe = BlockingProbe(0.05)

    @Node.boost(workers=3)
    def blocking(x):
        return probe(x)

    assert Step(blocking).option("boost") == "thread"
    assert Step(blocking).option("concurrency") == 3
    assert sorted(run(Loop(range(9)), blocking)) == [x * 10 for x in range(9)]
    assert probe.peak == 3


def test_bare_node_boost_is_thread():
    main = threading.get_ident()

    @Node.boost
    def where(x):
        return threading.get_ident()

    assert Step(where).option("boost") == "thread"
    assert main not in run(Loop(range(4)), where)


def test_node_subclass_with_boost_kind_runs_in_a_thread():
    class Where(Node):
        boost_kind = "thread"

        def __call__(self, x):
            return threading.get_ident()

    assert threading.get_ident() not in run(Loop(range(3)), Where())


def test_boosted_generator_runs_in_the_worker_and_flattens():
    main = threading.get_ident()
    bodies = []

    def gen(x):
        bodies.append(threading.get_ident())
        yield x
        yield -x

    assert sorted(run(Loop([1, 2]), Step(gen, boost="thread"))) == [-2, -1, 1, 2]
    assert main not in bodies


def test_thread_boost_error_raises_the_original_exception():
    with pytest.raises(ValueError, match="bad item 3"):
        run(Loop(range(6)), Step(fail_on_three, boost="thread"))


def test_async_step_cannot_be_boosted():
    async def fetch(x):
        return x

    Pipe(Loop([1]), Step(fetch, boost="thread"))
    with pytest.raises(TypeError, match="step 'fetch': boost='thread' runs a blocking sync function"):
        BotFrame.run()


def test_boosted_branch_does_not_hold_up_the_main_flow():
    """databot's boosttype example: the main flow goes on while a Branch sleeps."""
    probe = BlockingProbe(0.3)
    main_flow = []

    def record(n):
        main_flow.append((n, probe.running))
        return n

    Pipe(Timer(delay=0.02, max_time=5), Branch(Step(probe, boost="thread")), record)
    BotFrame.run()
    assert [n for n, _ in main_flow] == [1, 2, 3, 4, 5]
    assert any(running for _, running in main_flow[1:])  # ticks passed while sleeps ran


# ----------------------------------------------------------------------------- process
def test_process_boost_results_match_a_local_run():
    local = run(Loop(range(12)), square)
    got = run(Loop(range(12)), Step(square_and_pid, boost="process"))
    assert sorted(v for v, _ in got) == sorted(local)
    assert os.getpid() not in {pid for _, pid in got}


def test_process_boost_decorator_forms():
    assert Step(cube_in_process).option("boost") == "process"
    assert Step(negate_in_process).option("boost") == "process"
    got = run(Loop(range(5)), cube_in_process, lambda r: r[0], negate_in_process)
    assert sorted(v for v, _ in got) == [-64, -27, -8, -1, 0]
    assert os.getpid() not in {pid for _, pid in got}


def test_process_boost_of_a_node_instance():
    got = run(Loop([1, 2, 3]), Step(Scale(7), boost="process"))
    assert sorted(v for v, _ in got) == [7, 14, 21]
    assert os.getpid() not in {pid for _, pid in got}


def test_process_boost_rejects_a_lambda_at_build_time():
    seen = []
    Pipe(Loop([1, 2]), seen.append, Step(lambda x: x, boost="process"))
    with pytest.raises(TypeError, match=r"step '<lambda> line \d+': boost='process' needs a picklable function"):
        BotFrame.run()
    assert seen == []  # raised while building, before any item moved


def test_process_boost_rejects_a_closure_naming_it():
    factor = 3

    def scale_by_factor(x):
        return x * factor

    Pipe(Loop([1]), Step(scale_by_factor, boost="process"))
    with pytest.raises(TypeError, match="step 'scale_by_factor': boost='process' needs a picklable function"):
        BotFrame.run()


def test_process_boost_worker_error_follows_the_policy():
    with pytest.raises(ValueError, match="bad item 3"):
        run(Loop(range(6)), Step(fail_on_three, boost="process"))
    out = []
    Pipe(Loop(range(6)), Step(fail_on_three, boost="process", on_error="ignore"), out.append)
    report = BotFrame.run()
    assert sorted(out) == [0, 1, 2, 4, 5]
    stats = report.find("fail_on_three")
    assert (stats.failed, stats.dropped) == (1, 1)


def test_process_boost_generator_is_listed_in_the_worker():
    assert sorted(run(Loop([1, 2]), Step(pair, boost="process"))) == [-2, -1, 1, 2]


def test_process_pool_is_shut_down_after_the_run():
    before = children()
    run(Loop(range(4)), Step(square, boost="process"))
    wait_until_gone(children() - before)


# ----------------------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def dask_scheduler():
    """A LocalCluster on loopback for this module; tests point config.dask_address at it."""
    distributed = pytest.importorskip("distributed")
    from rxbot.engine.dask_boost import LOCAL_CLUSTER_OPTIONS

    cluster = distributed.LocalCluster(**LOCAL_CLUSTER_OPTIONS)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def test_cluster_results_match_a_local_run(dask_scheduler):
    config.dask_address = dask_scheduler
    local = run(Loop(range(12)), square)
    got = run(Loop(range(12)), Step(square_and_pid, boost="cluster"))
    assert sorted(v for v, _ in got) == sorted(local)
    assert os.getpid() not in {pid for _, pid in got}


def test_cluster_accepts_lambdas_and_generators(dask_scheduler):
    """Dask sends functions with cloudpickle, so unlike processes a lambda is fine."""
    config.dask_address = dask_scheduler
    got = run(Loop(range(4)), Step(lambda x: x + 100, boost="cluster"), Step(pair, boost="cluster"))
    assert sorted(got) == [-103, -102, -101, -100, 100, 101, 102, 103]


def test_cluster_worker_error_raises_the_original_type(dask_scheduler):
    config.dask_address = dask_scheduler
    with pytest.raises(ValueError, match="bad item 3"):
        run(Loop(range(6)), Step(fail_on_three, boost="cluster"))


def test_cluster_worker_error_ignored_is_dropped_and_counted(dask_scheduler):
    config.dask_address = dask_scheduler
    config.exception_policy = "ignore"
    out = []
    Pipe(Loop(range(6)), Step(fail_on_three, boost="cluster"), out.append)
    report = BotFrame.run()
    assert sorted(out) == [0, 1, 2, 4, 5]
    stats = report.find("fail_on_three")
    assert (stats.failed, stats.dropped) == (1, 1)


def test_cluster_run_starts_and_closes_its_own_local_cluster():
    pytest.importorskip("distributed")
    config.dask_address = None
    before = children()
    got = run(Loop(range(6)), Step(square_and_pid, boost="cluster"))
    assert sorted(v for v, _ in got) == [0, 1, 4, 9, 16, 25]
    workers = {pid for _, pid in got}
    assert os.getpid() not in workers
    wait_until_gone(children() - before)  # client and cluster closed by the run
    from distributed import default_client

    with pytest.raises(ValueError):  # the run's client never became the global default
        default_client()


def test_cluster_unreachable_scheduler_names_the_address():
    dask = pytest.importorskip("dask")
    config.dask_address = "tcp://127.0.0.1:9"
    Pipe(Loop(range(3)), Step(square, boost="cluster"))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ConnectionError, match=r"cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
            BotFrame.run()


async def test_cluster_inside_a_running_loop(dask_scheduler):
    config.dask_address = dask_scheduler
    out = []
    Pipe(Loop(range(5)), Step(square, boost="cluster"), out.append)
    await BotFrame.run_async()
    assert sorted(out) == [0, 1, 4, 9, 16]
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


# ----------------------------------------------------------------------------- example
def test_boosttype_example_main_flow_keeps_printing(capsys):
    spec = importlib.util.spec_from_file_location("boosttype_example", ROOT / "examples" / "boosttype.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(delay=0.02, ticks=4, sleep=0.1)
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if ln.isdigit()] == ["1", "2", "3", "4"]
    assert lines.count("i am going to sleep") == 4
    assert lines.count("i am awake") == 4


def test_two_boosted_steps_with_the_same_label_get_their_own_pools():
    import threading

    from rxbot import BotFrame, Pipe, Step

    seen = {"a": set(), "b": set()}

    def tag(key):
        def record(x):
            seen[key].add(threading.get_ident())
            return x
        return record

    Pipe(range(4), Step(tag("a"), boost="thread", concurrency=1, name="same"),
         Step(tag("b"), boost="thread", concurrency=1, name="same"))
    BotFrame.run()
    assert len(seen["a"]) == len(seen["b"]) == 1 and seen["a"] != seen["b"]

"""The plan (rxbot.plan) and explain(): every decision of the optimisation pass, taken
once from the tree and the settings, printed in a user's words, including why a step is
not fused or a fast path does not apply."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from reactivex import operators as ops

from rxbot import BlockedJoin, BotFrame, Branch, Filter, Join, Pipe, Step, Timer, config
from rxbot.plan import (BlockedJoinPlan, Bounded, Fused, RoutePlan, RxStepPlan, Source, Unfused, plan_of)


def inc(x):
    return x + 1


def double(x):
    return x * 2


async def sink(x):
    await asyncio.sleep(0)


async def aslow(x):
    await asyncio.sleep(0)
    return x


def numbers(_):
    yield from range(3)


@pytest.fixture(autouse=True)
def _forget_pipes():
    config.fusion = True  # the plan of the optimisation pass; tests that want it off say so
    yield
    BotFrame.clear()


def kinds(plan):
    return [type(n).__name__ for n in plan.nodes]


def test_a_generator_into_sync_steps_is_sliced_and_the_steps_fused_uncounted():
    plan = plan_of(Pipe((i for i in range(5)), inc, double, print))
    source, fused = plan.nodes
    assert isinstance(source, Source) and source.feed == "sliced"
    assert isinstance(fused, Fused) and fused.terminal and not fused.counting
    assert [str(i) for i in fused.ids] == ["P1[2] inc", "P1[3] double", "P1[4] print"]
    text = Pipe((i for i in range(5)), inc, print).explain()
    assert "source P1[1] Loop(generator) (Loop): sliced" in text
    assert "not counted: policy 'raise' and metrics off" in text


def test_counting_says_why():
    plan = plan_of(Pipe(range(3), Step(inc, on_error="ignore"), print))
    assert plan.nodes[1].counting and plan.nodes[1].counting_reason == "a step's policy is 'ignore'"
    config.metrics = True
    plan = plan_of(Pipe(range(3), inc, print))
    assert plan.nodes[1].counting and plan.nodes[1].counting_reason == "config.metrics = True"


def test_async_steps_say_how_they_are_fed():
    drawn = plan_of(Pipe((i for i in range(3)), sink))
    assert (drawn.nodes[0].feed, drawn.nodes[1].fed) == ("drawn", "drawn")
    through = plan_of(Pipe((i for i in range(3)), inc, Filter(route_func=bool), sink))
    assert kinds(through) == ["Source", "Fused", "Bounded"]
    assert through.nodes[2].fed == "drawn through the fused segment"
    after_async = plan_of(Pipe(range(3), aslow, inc, Step(sink, concurrency=4)))
    last = after_async.nodes[-1]
    assert isinstance(last, Bounded) and last.concurrency == 4 and last.fed == "fed"
    assert "does not come straight from a source" in last.reason


def test_a_fast_path_that_does_not_apply_says_why():
    """A route in the fused steps before an async step: its workers cannot draw through
    them; a route with async steps right after a source: the source is not sliced."""
    plan = plan_of(Pipe((i for i in range(3)), Join(inc, double), sink))
    assert plan.nodes[2].fed == "fed"
    assert "the fused steps before it hold a route" in plan.nodes[2].reason
    plan = plan_of(Pipe((i for i in range(3)), Join(inc, aslow), print))
    assert plan.nodes[0].feed == "pulled"
    assert plan.nodes[0].reason == "pulled one element at a time: the next step is a route with async steps"
    text = Pipe((i for i in range(3)), Join(inc, aslow), print).explain()
    assert "route P1[2] Join: join, share=False, join=True, matches every item: route operator" in text
    assert "not generated code: it holds a step that is async" in text


def test_steps_not_fused_say_why():
    plan = plan_of(Pipe(range(3), Step(inc, boost="thread"), numbers, ops.map(inc), print))
    boosted, generator, rx, fused = plan.nodes[1:]
    assert isinstance(boosted, Bounded) and boosted.boost == "thread"
    assert isinstance(generator, Source) and generator.kind == "generator step"
    assert isinstance(rx, RxStepPlan)
    assert isinstance(fused, Fused)
    config.fusion = False
    plan = plan_of(Pipe(range(3), inc, print))
    assert kinds(plan) == ["Source", "Unfused", "Unfused"]
    assert plan.nodes[1].reason == "fusion is off (config.fusion = False or RXBOT_NO_FUSION=1)"
    assert plan.nodes[0].reason == "pulled one element at a time: fusion is off"


def test_routes_and_blocked_joins_name_their_executor():
    plan = plan_of(Pipe(range(3), Branch(inc, print), BlockedJoin(inc, double), print))
    (fused,) = plan.nodes[1:]
    assert [r.strategy for r in fused.routes] == ["generated code"]
    assert [(b.strategy, b.match) for b in fused.blocked_joins] == [("generated code", "every item")]
    counted = plan_of(Pipe(range(3), BlockedJoin(Step(inc, on_error="ignore"), double), print))
    assert counted.nodes[1].blocked_joins[0].strategy == "inline function"
    evaluated = plan_of(Pipe(range(3), BlockedJoin(inc, aslow), print))
    assert isinstance(evaluated.nodes[1], BlockedJoinPlan) and evaluated.nodes[1].strategy == "evaluated per item"
    per_item = plan_of(Pipe(range(3), BlockedJoin(inc, Step(aslow, retries=2)), print))
    assert per_item.nodes[1].strategy == "a subscription per item"
    operator = plan_of(Pipe(range(3), Branch(sink, route_type=int), print))
    route = operator.nodes[1]
    assert isinstance(route, RoutePlan) and (route.strategy, route.match) == ("route operator", "isinstance")
    assert isinstance(route.branches[0][0], Bounded) and route.branches[0][0].fed == "queued"
    config.fusion = False
    assert plan_of(Pipe(range(3), Branch(sink), print)).nodes[1].strategy == "publish + merge"
    assert plan_of(Pipe(range(3), BlockedJoin(inc, double), print)).nodes[1].strategy == "fork_join per item"


def test_a_timer_ticks():
    plan = plan_of(Pipe(Timer(delay=1, max_time=2), sink))
    assert plan.nodes[0].kind == "Timer" and plan.nodes[0].feed == "ticks"
    assert plan.nodes[1].fed == "queued"


def test_a_plan_is_built_once_per_pipe_until_the_settings_change():
    pipe = Pipe(range(3), inc, print)
    first = plan_of(pipe)
    assert plan_of(pipe) is first
    config.fusion = False
    assert plan_of(pipe) is not first and kinds(plan_of(pipe)) == ["Source", "Unfused", "Unfused"]


@pytest.mark.parametrize("fusion", [True, False])
def test_the_plan_names_the_steps_the_run_reports(fusion):
    """The plan and the compiler take the same decisions: every step id of the plan is a
    step of the run's report, and every step of the report is in the plan."""
    config.fusion = fusion
    out = []
    pipe = Pipe(range(6), inc, Branch(double, out.append), Join(inc, Step(aslow)), Filter(route_func=bool),
                BlockedJoin(inc, double), out.append)
    ids = plan_of(pipe).ids()
    report = BotFrame.run()
    assert set(report.steps) == set(ids)


def test_botframe_explain_numbers_the_pending_pipes():
    Pipe(range(3), print)
    Pipe(Timer(delay=1, max_time=1), print)
    text = BotFrame.explain()
    assert text.splitlines()[0] == "P1 (Pipe): fusion on, policy 'raise'"
    assert "P2 (Pipe): fusion on, policy 'raise'" in text.splitlines()
    assert "source P2[1] Timer(1s, max_time=1) (Timer): ticks" in text


def test_rxbot_explain_prints_a_scripts_plan_without_running_it(tmp_path):
    script = tmp_path / "crawl.py"
    ran = tmp_path / "ran"
    script.write_text(
        "import asyncio\nfrom rxbot import Pipe, BotFrame\n"
        "async def fetch(x):\n    await asyncio.sleep(0)\n"
        f"def mark(x):\n    open({str(ran)!r}, 'w').close()\n    return x\n"
        "Pipe((i for i in range(5)), mark, fetch)\nBotFrame.run()\n")
    env = {k: v for k, v in os.environ.items() if k != "RXBOT_NO_FUSION"}  # the default build
    proc = subprocess.run([sys.executable, "-m", "rxbot", "explain", str(script)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "async P1[3] fetch (concurrency 32): drawn through the fused segment" in proc.stdout
    assert not ran.exists()


# ---- delivery after a kill or a lost worker (issue 25.1) ------------------------------------------
def test_explain_names_the_exactly_once_and_at_least_once_sinks(tmp_path):
    """An Insert commits its rows with the checkpoint: exactly once; print, a function,
    the end of a branch: at least once (the open epoch's items go through again)."""
    from rxbot.db.sqlite import Insert

    got = []
    pipe = Pipe(list(range(3)), inc, Branch(print), lambda x: {"n": x},
                Branch(got.append), Insert("INSERT INTO t (n) VALUES ({n})", str(tmp_path / "x.db")))
    last = pipe.explain().splitlines()[-1]
    assert last == ("  P1 after a kill (resume) or a lost worker (shards): exactly once: P1[6] Insert: INSERT INTO t (n) "
                    "VALUES ({n}); at least once: P1[3] Branch/1[1] print, P1[5] Branch/1[1] list.append")


def test_explain_says_when_a_pipe_cannot_checkpoint_and_all_its_sinks_are_at_least_once():
    text = Pipe(Timer(delay=1, max_time=1), inc, print).explain()
    assert text.splitlines()[-1] == (
        "  P1 after a kill (resume) or a lost worker (shards): at least once: P1[3] print (no checkpoint: P1[1] "
        "Timer(1s, max_time=1): cannot resume this pipe: a Timer ticks with the clock: its items cannot be "
        "replayed in order)")


def test_botframe_explain_gives_each_pipe_its_own_delivery_line():
    Pipe(range(3), print)
    Pipe(range(3), inc, double)
    lines = BotFrame.explain().splitlines()
    assert [line for line in lines if "after a kill" in line] == [
        "  P1 after a kill (resume) or a lost worker (shards): at least once: P1[2] print",
        "  P2 after a kill (resume) or a lost worker (shards): at least once: P2[3] double"]
    assert lines.index("P2 (Pipe): fusion on, policy 'raise'") > lines.index(
        "  P1 after a kill (resume) or a lost worker (shards): at least once: P1[2] print")


# ---------------------------------------------------------------- the plan, materialised
def _blocks(text):
    """The generated-code blocks of an explain(source=True) text, dedented."""
    out, block, indent = [], None, 0
    for line in text.splitlines():
        if line.strip() == "generated code:":
            block, indent = [], len(line) - len(line.lstrip()) + 2
            out.append(block)
        elif block is not None and line.startswith(" " * indent):
            block.append(line[indent:])
        else:
            block = None
    return ["\n".join(b) for b in out]


def test_explain_source_shows_the_code_the_run_compiles_for_each_fused_segment():
    import linecache

    out = []
    pipe = Pipe(range(6), inc, Filter(route_func=bool), Step(aslow), double, Branch(inc, out.append), out.append)
    text = pipe.explain(source=True)
    assert "generated code:" not in pipe.explain()
    blocks = _blocks(text)
    assert len(blocks) == 2  # inc + Filter, then double + Branch + out.append
    assert blocks[0].startswith("def make(") and "def many(it, gate):" in blocks[0]
    BotFrame.run()
    doubled = [double(inc(x)) for x in range(6) if inc(x)]
    assert sorted(out) == sorted(doubled + [inc(y) for y in doubled])
    compiled = {"".join(lines).rstrip("\n") for name, (_, _, lines, _) in list(linecache.cache.items())
                if name.startswith("<rxbot fused")}
    assert all(block in compiled for block in blocks)


def test_rxbot_explain_source_prints_the_generated_code(tmp_path):
    script = tmp_path / "chain.py"
    script.write_text("from rxbot import Pipe, BotFrame\nPipe(range(3), abs, print)\nBotFrame.run()\n")
    env = {k: v for k, v in os.environ.items() if k != "RXBOT_NO_FUSION"}  # the default build
    proc = subprocess.run([sys.executable, "-m", "rxbot", "explain", "--source", str(script)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    (block,) = _blocks(proc.stdout)
    assert "y = f0(x)" in block and "def entry(x):" in block


def test_a_run_with_rebuilding_hooks_builds_the_per_step_plan():
    """With hooks that put an operator between any two top-level steps (replay's
    recorders), the run builds the pipe's per-step plan: each top-level step alone, so
    a recorder after step 2 sees step 2's output even though steps 2-3 would fuse."""
    from reactivex import operators as rx_ops

    from rxbot.engine.hooks import RunHooks

    seen = []

    class Record(RunHooks):
        def recorder(self, pipe, step):
            if step != 2:
                return None
            return rx_ops.do_action(on_next=seen.append)

    pipe = Pipe(range(3), inc, double, print)
    plan = plan_of(pipe, 1, per_step=True)
    assert plan.spans == ((0, 0), (1, 1), (2, 2), (3, 3))
    assert kinds(plan) == ["Source", "Fused", "Fused", "Fused"]
    assert plan_of(pipe).spans == ((0, 0), (1, 3))  # without hooks: one segment
    from rxbot.engine.runner import run_pipes

    asyncio.run(run_pipes([pipe], hooks=Record()))
    assert seen == [1, 2, 3]


def test_the_sharded_runs_splitter_reads_the_plan():
    """rxbot.cluster.plan takes each pipe's source and the steps it checks from the
    pipe's plan: the ids it names are the plan's (and the report's)."""
    pytest.importorskip("cloudpickle")
    from rxbot.cluster.plan import ShardingError, _leaves
    from rxbot.cluster.plan import plan as shard_plan

    pipe = Pipe(range(4), Branch(Step(aslow, boost="process")), print)
    lowered = plan_of(pipe)
    assert [w for w, _ in _leaves([lowered])] == ["P1[1] Loop(range(0, 4))", "P1[2] Branch/1[1] aslow",
                                                  "P1[2] Branch", "P1[3] print"]
    with pytest.raises(ShardingError, match=r"step 'P1\[2\] Branch/1\[1\] aslow': boost='process'"):
        shard_plan([pipe])
    ok = shard_plan([Pipe(range(4), inc, print)])
    assert ok.sources[0].where == str(plan_of(ok.pipes[0]).steps[0][0]) == "P1[1] Loop(range(0, 4))"


@pytest.mark.parametrize("fusion", [True, False])
def test_route_operators_and_blockedjoins_are_built_as_their_pipes_plan_says_nothing_decided_again(
        fusion, monkeypatch):
    """Routes whose branches become operators (async steps in them), nested in each
    other and in a BlockedJoin that subscribes its branches per item: the compiler
    builds every one of them from the run's plan (its strategy and the cuts of each
    branch) and never lowers a route itself; the run's result is a plain loop's."""
    import rxbot.engine.compiler as compiler

    config.fusion = fusion

    def lowered_again(step, where, terminal=False):
        raise AssertionError(f"the compiler lowered {where} itself")

    def cut_again(steps, per_step=False):
        raise AssertionError(f"the compiler cut {steps} itself")

    monkeypatch.setattr(compiler, "lower_route", lowered_again)
    monkeypatch.setattr(compiler, "cut", cut_again)
    out = []
    pipe = Pipe(range(6),
                Branch(inc, Step(aslow), Join(double, Step(aslow)), out.append, share=True),
                BlockedJoin(Step(aslow, retries=1), Join(inc, Step(aslow))),
                out.append)
    plan = plan_of(pipe)
    routes = [n for n in plan.nodes if isinstance(n, (RoutePlan, BlockedJoinPlan))]
    assert [type(n) for n in routes] == [RoutePlan, BlockedJoinPlan]
    branch, blocked = routes
    assert blocked.strategy == ("a subscription per item" if fusion else "fork_join per item")
    assert branch.strategy == ("route operator" if fusion else "publish + merge")
    assert len(blocked.spans) == len(blocked.branches) == 2
    nested = [n for n in branch.branches[0] if isinstance(n, RoutePlan)]
    assert len(nested) == 1 and nested[0].spans  # the Join inside the Branch is planned too
    BotFrame.run()
    expected = []
    for x in range(6):
        y = inc(x)
        expected += [2 * y, y]  # Join(double, aslow) of the Branch, then its side end
    for x in range(6):
        expected.append((x, [x + 1, x]))  # BlockedJoin: aslow, then Join(inc, aslow)'s two outputs
    assert sorted(map(repr, out)) == sorted(map(repr, expected))


@pytest.mark.parametrize("setting", ["replay_mode", "resume"])
def test_explain_shows_the_plan_a_run_with_hooks_builds_and_the_run_takes_no_fast_path_it_does_not_show(
        setting, tmp_path, monkeypatch):
    """Replay mode and a resumed run put an operator between each two top-level steps:
    explain() shows that plan (each step alone, the source pulled, the async step fed)
    and says why, and the run indeed neither slices its source into fused code nor
    lets the async step's workers draw from it. (Before, explain() showed the plan of a
    run without hooks: 'sliced', 'drawn', a trace 'checked inline'.)"""
    import rxbot.engine.operators._pull_source as pull_source
    from rxbot.engine.operators._pull_source import _drawer

    if setting == "replay_mode":
        config.replay_mode = True
        config.replay_dir = str(tmp_path / "cache")
    else:
        config.resume = True
        config.durable_dir = str(tmp_path / "durable")
    taken = []
    pulled = pull_source._pull

    async def watched(it, emit, gate, stats, every, many=None, sliced=None):
        taken.append((getattr(emit, "__rxbot_many__", None) is not None, _drawer(emit)[0] is not None))
        await pulled(it, emit, gate, stats, every, many, sliced)

    monkeypatch.setattr(pull_source, "_pull", watched)
    out = []

    async def keep(x):
        await asyncio.sleep(0)
        out.append(x)

    Pipe(range(40), inc, double)
    Pipe(range(40), Step(keep))
    text = BotFrame.explain()
    why = "the run's hooks (replay mode, a resumed run, a redrive) put an operator between each two of its steps"
    assert text.count(f"pulled one element at a time: {why}") == 2
    assert f"upstream pushes into its queue, paused by its gate while the slots are full: {why}" in text
    assert "fused (generated code, 1 step" in text and "fused (generated code, 2 steps" not in text
    assert "in slices of up to" not in text and "take the source's next elements themselves" not in text
    BotFrame.run()
    if setting == "replay_mode":  # the Loop iterates, through the valve after it: no slice, no draw
        assert taken == [(False, False), (False, False)]
    else:  # resume's checkpointing feed replaces the Loop and pushes each element itself
        assert taken == []
    assert sorted(out) == list(range(40))

"""Generated code a person can debug (issue 24 item 6): each fused segment's source is
registered in linecache under its own file name (attrs' pattern), so a traceback through
it shows the generated line; and the code of a long chain grows linearly with its steps
(measured by the size of the generated source, not by time)."""
from __future__ import annotations

import linecache
import traceback

import pytest

from rxbot import BotFrame, Pipe, config
from rxbot.engine import fuse
from rxbot.engine.fuse import FN, source_of
from rxbot.plan import MAX_SEGMENT, plan_of


def inc(x):
    return x + 1


def boom(x):
    if x == 3:
        raise ValueError("boom at 3")
    return x


@pytest.fixture(autouse=True)
def _fused():
    config.fusion = True  # what the optimisation pass generates; RXBOT_NO_FUSION=1 turns it off


def generated_files():
    return {name for name in linecache.cache if name.startswith("<rxbot fused")}


def test_a_traceback_through_fused_code_shows_the_generated_line():
    Pipe(range(5), inc, boom, print)
    with pytest.raises(ValueError, match="boom at 3") as info:
        BotFrame.run()
    frames = [f for f in traceback.extract_tb(info.value.__traceback__) if f.filename.startswith("<rxbot fused")]
    assert frames, "the failure passed through no generated code"
    # boom is the segment's second position; the first step's result is in ``y``
    assert frames[-1].line == "x = f1(y)"
    assert "x = f1(y)" in "".join(traceback.format_exception(info.value))


def test_every_compiled_segment_is_in_linecache_under_its_own_name():
    fuse._factory.cache_clear()  # compiled again, even if another test compiled these shapes
    before = generated_files()
    Pipe(range(3), inc, lambda x: [x, x], inc, print)
    Pipe(range(3), inc, inc, inc, inc, inc, inc, inc, lambda x: None, print)
    BotFrame.run()
    new = generated_files() - before
    assert len(new) == 2
    for name in new:
        size, mtime, lines, _ = linecache.cache[name]
        assert mtime is None and lines[0].startswith("def make(") and size == sum(map(len, lines))
        assert linecache.checkcache(name) is None and name in linecache.cache  # never dropped


def chain_source_lines(n: int) -> int:
    """Lines of generated code for a pipe of ``n`` sync steps, as the plan cuts it."""
    fused = [node for node in plan_of(Pipe(range(3), *([inc] * n))).nodes if hasattr(node, "counting")]
    BotFrame.clear()
    return sum(len(source_of([(FN,)] * len(f.ids), f.terminal, f.counting).splitlines()) for f in fused)


def test_generated_code_grows_linearly_with_the_steps():
    """Today 100 steps give a few thousand lines (73,019 before: every continuation
    repeated the whole tail), and twice the steps give twice the code."""
    small, large = chain_source_lines(50), chain_source_lines(100)
    assert large <= 2.1 * small
    assert large < 8_000
    one_segment = len(source_of([(FN,)] * MAX_SEGMENT, False, False).splitlines())
    assert one_segment < 90 * MAX_SEGMENT
    assert len(source_of([(FN,)] * 2 * MAX_SEGMENT, False, False).splitlines()) <= 2.1 * one_segment


def test_a_long_chain_is_cut_into_segments_of_bounded_size():
    plan = plan_of(Pipe(range(3), *([inc] * 40)))
    sizes = [len(n.ids) for n in plan.nodes if hasattr(n, "counting")]
    assert sizes == [MAX_SEGMENT, MAX_SEGMENT, 40 - 2 * MAX_SEGMENT]
    out = []
    Pipe(range(3), *([inc] * 40), out.append)
    BotFrame.run()
    assert out == [40, 41, 42]


def test_a_long_chain_runs_the_same_on_both_builds(both_builds):
    out = []
    Pipe(range(5), *([inc] * 35), lambda x: [x, -x], *([inc] * 3), out.append)
    BotFrame.run()
    assert out == [y + 3 for x in range(5) for y in (x + 35, -(x + 35))]

"""Clear failures (issue 16 point 7): an error inside a raw Rx operator names the step;
deeply nested routes build, and beyond the supported depth fail naming the depth."""
from __future__ import annotations

import pytest
from reactivex import operators as ops

from rxbot import BotFrame, Join, Pipe, Return, Step, config
from rxbot.engine.lifecycle import MAX_DEPTH
from rxbot.errors import PipelineError
from rxbot.tree.node import OneItem
from rxbot.rx import op


def run(*steps):
    out = []
    Pipe(*steps, out.append)
    BotFrame.run()
    return out


def test_an_error_inside_a_raw_rx_operator_names_the_step_and_the_last_item():
    with pytest.raises(ZeroDivisionError) as info:
        run(range(3), ops.map(lambda x: 1 / (x - 1)))
    exc = info.value
    assert exc.rxbot_step.startswith("rx.map(") and exc.rxbot_item == 1
    assert any(exc.rxbot_step in note and "1 (the last item in)" in note for note in exc.__notes__)


def test_a_user_operator_error_is_named_by_its_op_name():
    def explode(source):
        return source.pipe(ops.map(lambda x: {}[x]))

    with pytest.raises(KeyError) as info:
        run(range(2), op(explode, name="lookup"))
    assert info.value.rxbot_step == "lookup"


def test_an_upstream_step_error_keeps_its_own_step_through_an_rx_operator():
    def bad(x):
        raise ValueError(x)

    with pytest.raises(ValueError) as info:
        run(range(2), Step(bad, name="bad"), ops.map(lambda x: x))
    assert info.value.rxbot_step == "bad"


def test_under_ignore_the_rx_error_still_ends_the_run_but_is_named():
    """Rx cannot resume an operator after on_error (documented in rxbot.rx)."""
    config.exception_policy = "ignore"
    with pytest.raises(ZeroDivisionError) as info:
        run(range(3), ops.map(lambda x: 1 / (x - 1)))
    assert info.value.rxbot_step.startswith("rx.map(")


def nested(depth, inner):
    r = Return(inner)
    for i in range(depth - 1):
        r = Join(r, lambda x: x) if i % 3 == 0 else Return(r)
    return r


@pytest.mark.parametrize("depth", [110, 400])
def test_deeply_nested_routes_build_and_run(depth):
    out = run(range(3), nested(depth, lambda x: x + 1))
    joins = len(range(0, depth - 1, 3))  # each Join(r, identity) adds the input itself
    assert sorted(out) == sorted(y for x in range(3) for y in [x + 1] + [x] * joins)


def test_routes_nested_beyond_the_limit_fail_naming_the_depth():
    depth = MAX_DEPTH + 5
    with pytest.raises(PipelineError, match=f"nested {depth} deep; rxbot builds at most {MAX_DEPTH}"):
        run(range(3), nested(depth, lambda x: x + 1))


def test_one_item_passes_a_list_on_unflattened():
    assert run(range(2), lambda x: OneItem([x, x])) == [[0, 0], [1, 1]]

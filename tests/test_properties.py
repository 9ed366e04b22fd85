"""Property: for any pipe of pure steps, rxbot's output equals the same functions
applied by a plain loop — same order for sync chains, same multiset otherwise."""
from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from rxbot import BotFrame, Pipe, Return, Step, Filter

# an op is (kind, is_async, param)
ops = st.one_of(
    st.tuples(st.just("map"), st.booleans(), st.integers(-3, 3)),
    st.tuples(st.just("drop"), st.booleans(), st.integers(2, 4)),
    st.tuples(st.just("flat"), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("gen"), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("return"), st.just(False), st.integers(2, 3)),
    st.tuples(st.just("filter"), st.just(False), st.integers(2, 3)),
)


def reference(kind, param):
    """The plain-Python meaning of an op: item -> list of output items."""
    if kind == "map":
        return lambda x: [x * 2 + param]
    if kind == "drop":
        return lambda x: [] if x % param == 0 else [x]
    if kind in ("flat", "gen"):
        return lambda x: [x + i for i in range(param)]
    if kind == "return":
        return lambda x: [-x] if x % param == 0 else [x]
    if kind == "filter":
        return lambda x: [x] if x % param else []
    raise AssertionError(kind)


def as_step(kind, is_async, param):
    if kind == "map":
        def f(x):
            return x * 2 + param
    elif kind == "drop":
        def f(x):
            return None if x % param == 0 else x
    elif kind == "flat":
        def f(x):
            return [x + i for i in range(param)]
    elif kind == "gen":
        if is_async:
            async def agen(x):
                for i in range(param):
                    await asyncio.sleep(0)
                    yield x + i
            return Step(agen, concurrency=3)

        def f(x):
            return (x + i for i in range(param))
    elif kind == "return":
        return Return(lambda x: -x, route_func=lambda x: x % param == 0)
    elif kind == "filter":
        return Filter(route_type=int, route_func=lambda x: x % param)
    if not is_async:
        return f

    async def af(x):
        await asyncio.sleep(0)
        return f(x)

    return Step(af, concurrency=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.lists(st.integers(-50, 50), max_size=30), chain=st.lists(ops, min_size=1, max_size=5))
def test_pipe_equals_plain_loop(source, chain):
    expected = list(source)
    for kind, _, param in chain:
        fn = reference(kind, param)
        expected = [y for x in expected for y in fn(x)]

    out = []
    BotFrame.clear()
    Pipe(list(source), *[as_step(*op) for op in chain], out.append)
    BotFrame.run()

    if any(is_async for _, is_async, _ in chain):
        assert Counter(out) == Counter(expected)
    else:
        assert out == expected

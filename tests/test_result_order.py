"""DESIGN §2's return-value rules hold per result, whatever a step returned before,
and a fan-out keeps the order of a plain nested loop (sync steps, so order is defined).

The fused build guards each call by the type its step returned last (one identity
test instead of a set lookup); these tests change the type from item to item so that
a guard which let a list, a generator or a None through as one value would fail them.
"""
from __future__ import annotations

from typing import Any, Callable, List

from rxbot import BlockedJoin, BotFrame, Pipe


class Point:
    """A user's item class: one value (learned as such at run time)."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    def __repr__(self) -> str:
        return f"Point({self.x})"


def shifting(x: int) -> Any:
    """A different kind of result by item: value, list, None, str, generator, object."""
    return [x, [x, x + 100], None, str(x), (x + k for k in (200, 300)), Point(x), float(x)][x % 7]


def plain(steps: List[Callable[[Any], Any]], items: List[Any]) -> List[Any]:
    """The same rules applied by a plain nested loop."""
    for f in steps:
        out: List[Any] = []
        for x in items:
            r = f(x)
            if r is None:
                continue
            if isinstance(r, (str, bytes, tuple, dict, int, float, Point)):
                out.append(r)
            else:
                out.extend(r)
        items = out
    return items


def tag(v: Any) -> Any:
    return ("seen", v)


def run(*steps: Any, source: Any = None) -> List[Any]:
    out: List[Any] = []
    BotFrame.clear()
    Pipe(list(range(30)) if source is None else source, *steps, out.append)
    BotFrame.run()
    return out


def test_a_step_whose_result_type_changes_item_by_item_keeps_every_rule(both_builds):
    expected = plain([shifting, tag], list(range(30)))
    assert run(shifting, tag) == expected
    # spot checks of the rules themselves, so the reference cannot drift with them
    assert ("seen", 1) in expected and ("seen", 101) in expected  # the list was spread
    assert ("seen", 2) not in expected  # None dropped the item
    assert ("seen", "3") in expected and ("seen", 204) in expected and ("seen", Point(5)) in expected


def test_the_last_step_of_a_pipe_spreads_what_it_returns_after_values(both_builds):
    out: List[Any] = []
    BotFrame.clear()
    # the first results are single values (learned), then a list and a generator come:
    # both are still iterated (a generator's side effects run)
    gen_ran: List[int] = []

    def sink(x: int) -> Any:
        out.append(x)
        if x % 7 == 4:
            return (gen_ran.append(x) for _ in range(2))
        return [x] if x % 7 == 1 else x

    Pipe(list(range(14)), sink)
    BotFrame.run()
    assert out == list(range(14))
    assert gen_ran == [4, 4, 11, 11]


def test_a_blocked_join_branch_whose_result_type_changes_keeps_every_rule(both_builds):
    out = run(BlockedJoin(Pipe(shifting), Pipe(lambda x: x)))
    expected = []
    for x in range(30):
        r = plain([shifting], [x])
        expected.append((None if not r else r[0] if len(r) == 1 else r, x))
    # (unfused, a BlockedJoin is an async boundary: tuples may come out of order)
    assert sorted(out, key=lambda t: t[1]) == expected


def test_a_lazy_result_among_a_lists_elements_keeps_nested_loop_order(both_builds):
    def fan(x: int) -> List[int]:
        return [x * 10, x * 10 + 1, x * 10 + 2]

    def maybe_lazy(z: int) -> Any:
        return (z + k for k in (100, 200)) if z % 10 == 1 else z

    # the generator of element 1 comes before element 2, as in a for loop
    assert run(fan, maybe_lazy, source=[0, 1]) == plain([fan, maybe_lazy], [0, 1]) \
        == [0, 101, 201, 2, 10, 111, 211, 12]


def test_nested_fan_outs_around_a_lazy_result_keep_nested_loop_order(both_builds):
    def outer(_: int) -> Any:
        return (i for i in range(2))  # lazy: expanded by the fused segment's lane

    def fan_set(y: int) -> Any:
        return {y * 10, y * 10 + 1, y * 10 + 2}  # eager but not a list (small ints: ordered)

    def maybe_lazy(z: int) -> Any:
        return (z + k for k in (100, 200)) if z % 10 == 1 else z

    steps = [outer, fan_set, maybe_lazy]
    assert run(*steps, source=[0]) == plain(steps, [0]) == [0, 101, 201, 2, 10, 111, 211, 12]

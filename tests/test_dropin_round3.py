"""Drop-in, round 3 (issue 27): what a ported databot script leans on around the pipe.

* Branch / Fork: the main pipe's next step sees an item before a branch's sync steps
  change it, as with databot's queues (the route hands the item to the main stream
  first), on the fused build and on the unfused graph alike;
* byte-like returns: a returned ``bytearray`` is one item (like ``bytes``), and an
  object with only ``__getitem__`` is one item, as databot's ``Iterable`` test had it.
"""
from __future__ import annotations

import asyncio

import pytest

from rxbot import BotFrame, Branch, Fork, Pipe, Return


def _append(tag):
    def mutate(d):
        d["s"].append(tag)
        return d  # goes on in the branch (and is dropped at its end: a side flow)

    mutate.__name__ = f"append_{tag}"
    return mutate


def _seen(into):
    def look(d):
        into.append(list(d["s"]))
        return d

    return look


def test_the_step_after_a_branch_sees_the_item_before_the_branch_changes_it(both_builds):
    # issue 27's probe: databot prints [] (rxbot printed ['br'])
    seen = []
    items = [{"s": []} for _ in range(300)]  # a list source: the chunked path too
    Pipe(items, Branch(_append("br")), _seen(seen))
    BotFrame.run()
    assert seen == [[]] * 300
    assert all(d["s"] == ["br"] for d in items)  # the branch did run, after


def test_the_step_after_a_fork_sees_the_item_before_any_branch_changes_it(both_builds):
    seen = []
    item = {"s": []}
    Pipe([item], Fork(_append("f1"), _append("f2")), _seen(seen))
    BotFrame.run()
    assert seen == [[]]
    assert item["s"] == ["f1", "f2"]


def test_a_branch_with_an_async_step_also_hands_the_item_to_the_main_stream_first(both_builds):
    # a branch that is not all-sync is not generated into the fused code: the route operator
    async def later(d):
        await asyncio.sleep(0)
        return d

    seen = []
    Pipe([{"s": []}, {"s": []}], Branch(_append("br"), later), _seen(seen))
    BotFrame.run()
    assert seen == [[], []]


def test_a_joining_branch_passes_the_item_on_before_its_own_outputs(both_builds):
    # databot: the item went into the main queue first, the branch's result came later
    out = []
    Pipe([{"s": []}, 7], Branch(lambda d: d["s"].append("br") or "from branch", route_type=dict, join=True),
         out.append)
    BotFrame.run()
    assert out == [{"s": ["br"]}, "from branch", 7]
    assert out[0]["s"] == ["br"]  # the same object, changed by the branch after the next step saw it


def test_nested_branches_and_a_filter_after_them_keep_the_order(both_builds):
    seen, dropped = [], []

    def keep_even(d):
        if d["n"] % 2:
            dropped.append(d["n"])
            return None
        return d

    items = [{"n": n, "s": []} for n in range(10)]
    Pipe(items, Branch(_append("outer"), Branch(_append("inner"))), keep_even, _seen(seen))
    BotFrame.run()
    assert seen == [[]] * 5 and dropped == [1, 3, 5, 7, 9]
    assert all(d["s"] == ["outer", "inner"] for d in items)


def test_a_return_sends_matched_items_only_through_its_branch(both_builds):
    out = []
    Pipe([{"s": []}, 5], Return(lambda d: d["s"].append("br") or d, route_type=dict), out.append)
    BotFrame.run()
    assert out == [{"s": ["br"]}, 5]


class Record:
    """A record class with only ``__getitem__`` (no ``__iter__``): databot's Iterable test
    made it one item; indexing it from 0 would fail (its keys are names)."""

    def __init__(self, **fields) -> None:
        self.fields = fields

    def __getitem__(self, key):
        return self.fields[key]


def test_an_object_with_only_getitem_is_one_item(both_builds):
    out = []

    async def later(x):
        await asyncio.sleep(0)
        return Record(n=x)

    Pipe(range(3), lambda x: Record(n=x), lambda r: out.append(r["n"]))
    Pipe(range(2), later, lambda r: out.append(("async", r["n"])))
    BotFrame.run()
    assert sorted(out, key=str) == sorted([0, 1, 2, ("async", 0), ("async", 1)], key=str)


def test_a_returned_bytearray_is_one_item_as_bytes_is(both_builds):
    # a documented difference (docs/migration.md): databot split both into ints
    out = []
    Pipe([b"ab"], bytearray, out.append)
    BotFrame.run()
    assert out == [bytearray(b"ab")] and type(out[0]) is bytearray


def _differences() -> dict:
    """docs/migration.md's table of behaviour that differs: first cell -> the other three."""
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "migration.md").read_text()
    section = page[page.index("## Behaviour that differs"):]
    section = section[:section.index("\n### ")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| |")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    return {c[0]: c[1:] for c in cells}


def test_the_migration_table_names_each_remaining_difference_with_its_reason():
    table = _differences()
    assert all(len(rest) == 3 and all(rest) for rest in table.values()), table  # databot, rxbot, why
    for name in ("`bytes`, `bytearray` or `memoryview` returned by a step", "a `route_func` that raises",
                 "a `route_func` that is not callable",
                 "a shared item a `Branch`'s or `Fork`'s steps change"):
        assert name in table, name
    # what now matches databot is not listed as a difference
    assert not any("__getitem__" in name for name in table)

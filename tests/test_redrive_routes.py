"""Re-driving dead letters of steps inside routes (issue 29.3): an item that failed
inside a branch resumes from that step within its branch and then goes on as that
branch's output would (onto the line after a joining route, nowhere after a side flow).

Every case: a run where some steps fail on known items, the fix, a redrive, then the
union of what the sinks got in both runs must equal a clean run's, item for item
(so each failed item reaches every sink exactly once), and a second redrive runs
nothing. A BlockedJoin branch's letter, whose way on reaches the tuple, is refused.

The matrix (``test_a_letter_anywhere_...``): 30 places (first, middle and last step of
a branch, the main line after the route, a Join's second branch, six nesting depths and
kinds, a side flow inside a BlockedJoin branch) under each of ignore/retry/pipein on the
fused build, and each place once on the unfused build with the policy taking turns
(120 cases; it was every place x policy x build, 180). That is enough because what a
redrive does with a letter (where it resumes, where its branch's output goes) is decided
above the engine, by the place alone; the build and the policy only change how the steps
run, which the fused-build column checks for every policy and the unfused column at
every place, a third of them per policy; the property test draws random route shapes
under ignore and pipein on top. Each case also costs less: the clean run's records are
computed once per shape and build (no step fails in it, so the policy does not matter),
and the steps' source hashes (a dead letter's pipe key) are read once per process
(rxbot.replay.keying), which was ~40% of a case. The file went from 7.6-30 s wall
(192 tests; 6.8-7.5 s user CPU on 3.11) to 5-9 s wall (143 tests, the report, ledger
and command-line tests added; 4.0-4.6 s user CPU), measured interleaved on the same
(loaded) machine; on 3.13 wall 8-29 s before, 13-16 s after under that load, ~6 s quiet."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Set

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxbot import BlockedJoin, BotFrame, Branch, Filter, Fork, Join, Pipe, Return, Route, config
from rxbot.durable.deadletters import LetterStore, store_path
from rxbot.durable.redrive import RedriveRefused

N = 24


def source_of(item: Any) -> int:
    """The source number an item came from (items are 'n.step.step...' strings)."""
    return int(str(item).split(".")[0])


@dataclass
class World:
    """The steps of one scenario: tags that extend the item's string, sinks that record
    it, and the set of (step, source number) pairs that fail right now."""

    broken: Dict[str, Set[int]] = field(default_factory=dict)
    records: List[Any] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)

    def tag(self, name: str) -> Callable[[Any], Any]:
        def step(x: Any) -> Any:
            if isinstance(x, BaseException):  # pipein: an earlier failure travelling on
                return x
            self.calls[name] += 1
            if source_of(x) in self.broken.get(name, ()):
                raise ValueError(f"{name} cannot take {x}")
            return f"{x}.{name}"

        step.__name__ = step.__qualname__ = name
        return step

    def sink(self, name: str) -> Callable[[Any], Any]:
        def step(x: Any) -> Any:
            if not isinstance(x, BaseException):
                self.records.append((name, x))
            return x

        step.__name__ = step.__qualname__ = f"sink_{name}"
        return step


def even(x: Any) -> bool:
    return not isinstance(x, BaseException) and source_of(x) % 2 == 0


def not_div3(x: Any) -> bool:
    return not isinstance(x, BaseException) and source_of(x) % 3 != 0


# -- the shapes: each builds one pipe from a World -------------------------------------------------------
def branch_shape(w: World) -> None:
    Pipe(range(N), str, w.tag("a"), Branch(w.tag("b1"), w.tag("b2"), w.tag("b3"), w.sink("side"), route_func=even),
         w.tag("m"), w.sink("main"))


def fork_shape(w: World) -> None:
    Pipe(range(N), str, w.tag("a"), Fork(Pipe(w.tag("f1"), w.tag("f2"), w.tag("f3"), w.sink("fork1")),
                                         Pipe(w.tag("g1"), w.sink("fork2"))),
         w.tag("m"), w.sink("main"))


def join_shape(w: World) -> None:
    Pipe(range(N), str, w.tag("a"), Join(Pipe(w.tag("j1"), w.tag("j2"), w.tag("j3")), w.tag("k1")),
         w.tag("m"), w.sink("main"))


def return_shape(w: World) -> None:
    Pipe(range(N), str, w.tag("a"), Return(w.tag("r1"), w.tag("r2"), w.tag("r3"), route_func=even),
         w.tag("m"), w.sink("main"))


def route_shape(w: World) -> None:  # share=True, join=True: the item goes on both ways
    Pipe(range(N), str, w.tag("a"), Route(w.tag("x1"), w.tag("x2"), w.tag("x3"), route_func=not_div3,
                                          share=True, join=True),
         w.tag("m"), w.sink("main"))


def nested_shape(w: World) -> None:
    Pipe(range(N), str,
         Fork(Pipe(w.tag("n1"), Join(Pipe(w.tag("n2"), w.tag("n3")), w.tag("n4")), w.tag("n5"), w.sink("fork"))),
         Return(Pipe(w.tag("n6"), Branch(w.tag("n7"), w.tag("n8"), w.sink("deep"), route_func=not_div3),
                     w.tag("n9")), route_func=even),
         w.tag("m"), w.sink("main"))


def flat(t: tuple) -> str:
    """A BlockedJoin's tuple as an item string: 'n.bj[left|right]'."""
    n = source_of(next(p for p in t if p is not None and not isinstance(p, BaseException)))
    return f"{n}.bj[{'|'.join(map(str, t))}]"


def blocked_shape(w: World) -> None:
    Pipe(range(N), str, BlockedJoin(Pipe(w.tag("q1"), Branch(w.tag("q2"), w.tag("q3"), w.sink("bjside"))),
                                    w.tag("q4")),
         flat, w.tag("m"), w.sink("main"))


SHAPES = {"branch": branch_shape, "fork": fork_shape, "join": join_shape, "return": return_shape,
          "route": route_shape, "nested": nested_shape, "blockedjoin": blocked_shape}

#: (shape, failing step, where it is): first step of a branch, a middle one, the last,
#: the main line after the route, nested places
CASES = [
    ("branch", "b1", "first of the side"), ("branch", "b2", "middle of the side"), ("branch", "m", "after"),
    ("fork", "f1", "first of branch 1"), ("fork", "f2", "middle of branch 1"), ("fork", "g1", "first of branch 2"),
    ("fork", "m", "after"),
    ("join", "j1", "first of branch 1"), ("join", "j2", "middle of branch 1"), ("join", "j3", "last of branch 1"),
    ("join", "k1", "branch 2"), ("join", "m", "after"),
    ("return", "r1", "first"), ("return", "r2", "middle"), ("return", "m", "after"),
    ("route", "x1", "first"), ("route", "x2", "middle"), ("route", "m", "after"),
    ("nested", "n1", "fork's first"), ("nested", "n2", "a join in a fork"), ("nested", "n3", "middle, join in fork"),
    ("nested", "n4", "join's branch 2 in a fork"), ("nested", "n5", "fork after its join"),
    ("nested", "n7", "a branch in a return"), ("nested", "n8", "middle, branch in return"),
    ("nested", "n9", "return after its branch"), ("nested", "m", "after both"),
    ("blockedjoin", "q2", "a side flow inside a BlockedJoin branch"), ("blockedjoin", "q3", "its middle"),
    ("blockedjoin", "m", "after"),
]

FAILING = {3, 4, 8, 10, 15, 22}


def use(policy: str, tmp_path: Any) -> None:
    config.durable_dir = str(tmp_path / uuid.uuid4().hex[:8])
    config.exception_policy = policy
    config.retry_backoff = 0.0
    config.retry_jitter = 0.0
    config.retry_attempts = 2
    config.retry_final_policy = "ignore"


def clean_records(shape: Callable[[World], None]) -> Counter:
    w = World()
    shape(w)
    BotFrame.run()
    return Counter(w.records)


def open_letters() -> List[Any]:
    store = LetterStore(store_path())
    try:
        return store.letters()
    finally:
        store.close()


def fail_fix_redrive(shape: Callable[[World], None], broken: Dict[str, Set[int]]) -> Any:
    """Run ``shape`` with ``broken``, fix it, redrive: what both runs' sinks got must be
    a clean run's, item for item; the open letters are then none and a second redrive
    runs nothing. Returns the broken run's open letters and the redrive's report."""
    clean = clean_records(shape)
    first = World(broken={k: set(v) for k, v in broken.items()})
    shape(first)
    report = BotFrame.run()
    letters = open_letters()
    assert len(letters) == len(report.dead_letters)
    fixed = World()
    shape(fixed)
    report = BotFrame.run(redrive=True)
    assert Counter(first.records) + Counter(fixed.records) == clean
    assert open_letters() == []
    again = World()
    shape(again)
    assert BotFrame.run(redrive=True).redrive == {} and not again.calls
    return letters, report


def letters_by_status(status: str | None) -> List[Any]:
    store = LetterStore(store_path())
    try:
        return store.letters(status=status)
    finally:
        store.close()


POLICIES = ["ignore", "retry", "pipein"]
#: every place under every policy on the fused build (the default), and every place on
#: the unfused build with the policy taking turns (each policy at a third of the places)
MATRIX = ([(True, policy, case) for case in CASES for policy in POLICIES]
          + [(False, POLICIES[k % 3], case) for k, case in enumerate(CASES)])


def clean_of(shape: str) -> Counter:
    """A clean run's records of ``shape`` on the current build, run once per shape and
    build (no step fails, so the policy does not matter)."""
    key = (shape, bool(config.fusion))
    if key not in CLEAN:
        CLEAN[key] = clean_records(SHAPES[shape])
    return CLEAN[key]


CLEAN: Dict[Any, Counter] = {}


@pytest.mark.parametrize("fusion,policy,case", MATRIX,
                         ids=[f"{'fused' if f else 'unfused'}-{c[0]}-{c[1]}-{p}" for f, p, c in MATRIX])
def test_a_letter_anywhere_is_redriven_to_where_its_branch_goes(fusion, policy, case, tmp_path):
    shape, step, _ = case
    config.fusion = fusion
    use(policy, tmp_path)
    build = SHAPES[shape]
    clean = clean_of(shape)
    first = World(broken={step: set(FAILING)})
    build(first)
    report = BotFrame.run()
    letters = open_letters()
    assert len(letters) == len(report.dead_letters) > 0
    assert all(l.step.endswith(f"] {step}") for l in letters)
    redriven = {source_of(letter.decoded()) for letter in letters}
    fixed = World()
    build(fixed)
    report = BotFrame.run(redrive=True)
    assert Counter(first.records) + Counter(fixed.records) == clean  # each failed item once, at every sink
    assert fixed.calls[step] == len(letters)  # exactly the letters ran through the failing step
    assert {source_of(item) for _, item in fixed.records} <= redriven
    (name,) = report.redrive
    assert name == letters[0].step
    assert report.redrive[name] == {"redriven": len(letters), "failed_again": 0, "passed": len(letters),
                                    "skipped": 0}
    assert open_letters() == [] and len(letters_by_status("done")) == len(letters)
    again = World()
    build(again)
    report = BotFrame.run(redrive=True)
    assert again.records == [] and not again.calls and report.redrive == {}


def test_letters_from_many_places_in_one_redrive(tmp_path, both_builds):
    use("ignore", tmp_path)
    broken = {"n1": {3}, "n3": {4, 10}, "n4": {8}, "n5": {15}, "n7": {22, 4}, "n9": {10}, "m": {1, 2}}
    letters, report = fail_fix_redrive(nested_shape, broken)
    steps = {l.step for l in letters}
    assert len(steps) == len(broken)  # a letter at every one of the seven places
    assert set(report.redrive) == steps


def test_an_item_failing_again_inside_a_route_keeps_its_step_and_attempt(tmp_path):
    """Attempts are counted per nested step id; an item that now passes its branch step
    but fails on the main line after the Join gets a letter of that step, by its
    original id (the redrive's own pipe is mapped back)."""
    use("ignore", tmp_path)
    clean = clean_records(join_shape)
    first = World(broken={"j2": {2, 4, 6}})
    join_shape(first)
    BotFrame.run()
    second = World(broken={"j2": {2}, "m": {4}})
    join_shape(second)
    report = BotFrame.run(redrive=True)
    assert report.redrive == {"P1[4] Join/1[2] j2": {"redriven": 3, "failed_again": 1, "passed": 2, "skipped": 0}}
    now = {(l.step, l.attempt, source_of(l.decoded())) for l in open_letters()}
    assert now == {("P1[4] Join/1[2] j2", 2, 2), ("P1[5] m", 1, 4)}
    retried = letters_by_status("retried")
    assert [source_of(l.decoded()) for l in retried] == [2]
    assert [l.parent for l in open_letters() if l.attempt == 2] == [retried[0].id]
    third = World()
    join_shape(third)
    report = BotFrame.run(redrive=True)
    assert set(report.redrive) == {"P1[4] Join/1[2] j2", "P1[5] m"}
    assert Counter(first.records) + Counter(second.records) + Counter(third.records) == clean
    assert open_letters() == []


@pytest.mark.parametrize("step", ["q1", "q4"])
def test_a_letter_whose_way_on_reaches_a_blocked_joins_tuple_is_refused(step, tmp_path):
    use("ignore", tmp_path)
    first = World(broken={step: {5}})
    blocked_shape(first)
    BotFrame.run()
    (hole,) = [item for name, item in first.records if name == "main" and source_of(item) == 5]
    assert "None" in hole  # the tuple of item 5 went on already, with a hole for the failed branch
    fixed = World()
    blocked_shape(fixed)
    with pytest.raises(RedriveRefused) as refused:
        BotFrame.run(redrive=True)
    message = str(refused.value)
    branch = "1[1] q1" if step == "q1" else "2[1] q4"
    assert message.startswith(f"P1[3] BlockedJoin/{branch}: its dead letters failed inside the BlockedJoin "
                              "P1[3] BlockedJoin")
    assert "with None in the place of this branch" in message and "second tuple" in message
    assert not fixed.calls and fixed.records == []  # nothing ran
    assert len(open_letters()) == 1  # still open


@pytest.mark.parametrize("change", ["renamed", "removed route", "route renamed"])
def test_a_step_inside_a_route_that_changed_refuses(change, tmp_path):
    use("ignore", tmp_path)
    first = World(broken={"j2": {3}})
    join_shape(first)
    BotFrame.run()
    w = World()
    if change == "renamed":
        Pipe(range(N), str, w.tag("a"), Join(Pipe(w.tag("j1"), w.tag("j2b"), w.tag("j3")), w.tag("k1")),
             w.tag("m"), w.sink("main"))
    elif change == "removed route":
        Pipe(range(N), str, w.tag("a"), w.tag("j1"), w.tag("m"), w.sink("main"))
    else:
        Pipe(range(N), str, w.tag("a"), Join(Pipe(w.tag("j1"), w.tag("j2"), w.tag("j3")), w.tag("k1"), name="J"),
             w.tag("m"), w.sink("main"))
    with pytest.raises(RedriveRefused, match=r"^P1\[4\] Join/1\[2\] j2: this step is not in the pipe any more "
                                             r"\(removed or renamed\).* The pipe's steps now: P1\[1\] Loop"):
        BotFrame.run(redrive=True)
    assert not w.calls
    assert len(open_letters()) == 1


def test_a_redrive_inside_a_route_reaches_a_real_sqlite_table_once(tmp_path):
    """The sink is a real SQLite Insert after a Join; the failing step is inside the Join."""
    from rxbot.db.sqlite import Insert

    use("ignore", tmp_path)
    db = tmp_path / "rows.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE rows (n INTEGER NOT NULL, path TEXT)")  # no key: doubles would show
    con.commit()
    con.close()
    broken = {"j2": set(FAILING)}

    def build() -> None:
        w = World(broken=broken)
        Pipe(range(N), str, Join(Pipe(w.tag("j1"), w.tag("j2")), w.tag("k1")),
             lambda x: {"n": source_of(x), "path": x},
             Insert("INSERT INTO rows (n, path) VALUES ({n}, {path})", path=str(db)))

    build()
    BotFrame.run()
    broken["j2"] = set()
    build()
    BotFrame.run(redrive=True)
    build()
    BotFrame.run(redrive=True)
    con = sqlite3.connect(db)
    rows = sorted(con.execute("SELECT n, path FROM rows"))
    con.close()
    assert rows == sorted([(n, f"{n}.j1.j2") for n in range(N)] + [(n, f"{n}.k1") for n in range(N)])


# -- property: random route shapes, random failing items ------------------------------------------------
@st.composite
def trees(draw: Any, depth: int = 0) -> List[Any]:
    """A random line of steps: ('tag',), ('filter', pred) and routes holding lines."""
    line: List[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["tag", "tag", "filter"] + (["branch", "fork", "join", "return", "route"]
                                                                   if depth < 3 else [])))
        if kind in ("tag", "filter"):
            line.append((kind, draw(st.sampled_from(["all", "even", "not3"]))))
        else:
            count = draw(st.integers(1, 2)) if kind in ("fork", "join") else 1
            line.append((kind, draw(st.sampled_from(["all", "even", "not3"])), draw(st.booleans()),
                         [draw(trees(depth + 1)) for _ in range(count)]))
    return line


PREDICATES = {"all": None, "even": even, "not3": not_div3}


def build_tree(w: World, line: List[Any], names: List[str], sink: bool) -> List[Any]:
    steps: List[Any] = []
    for spec in line:
        if spec[0] == "tag":
            names.append(f"t{len(names)}")
            steps.append(w.tag(names[-1]))
        elif spec[0] == "filter":
            steps.append(Filter(route_func=PREDICATES[spec[1]]) if spec[1] != "all" else Filter())
        else:
            kind, pred, flag, lines = spec
            func = PREDICATES[pred]
            joins = kind in ("join", "return") or (kind == "route" and flag)
            subs = [Pipe(*build_tree(w, sub, names, sink=not joins), name=None) for sub in lines]
            options: Dict[str, Any] = {"route_func": func} if func else {}
            if kind == "branch":
                steps.append(Branch(*subs, **options))
            elif kind == "fork":
                steps.append(Fork(*subs, **options))
            elif kind == "join":
                steps.append(Join(*subs, **options))
            elif kind == "return":
                steps.append(Return(*subs, **options))
            else:
                steps.append(Route(*subs, share=flag, join=flag, **options))
    if sink:
        names.append(f"s{len(names)}")
        steps.append(w.sink(names[-1]))
    return steps


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=trees(), data=st.data(), policy=st.sampled_from(["ignore", "pipein"]))
def test_property_redrive_completes_a_clean_run_exactly(line, data, policy, tmp_path_factory):
    BotFrame.clear()
    use(policy, tmp_path_factory.mktemp("rd"))
    names: List[str] = []
    probe = World()
    build_tree(probe, line, names, sink=True)
    BotFrame.clear()
    tags = [n for n in names if n.startswith("t")]
    if not tags:
        return
    chosen = data.draw(st.lists(st.sampled_from(tags), min_size=1, max_size=3, unique=True))
    broken = {name: set(data.draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=6))) for name in chosen}

    def shape(w: World) -> None:
        Pipe(range(N), str, *build_tree(w, line, [], sink=True))

    fail_fix_redrive(shape, broken)


def test_a_route_letter_of_the_second_pipe_keeps_its_pipe(tmp_path):
    """Each pipe re-drives alone; a letter of P2's Return is stored, re-failed and
    marked under P2's ids and key, P1 does not run."""
    use("ignore", tmp_path)
    ones, twos = World(), World(broken={"r2": {4, 6}})
    Pipe(range(N), str, ones.tag("p1"), ones.sink("one"))
    return_shape(twos)
    BotFrame.run()
    assert {l.step for l in open_letters()} == {"P2[4] Return(even)/1[2] r2"}
    ones, twos = World(), World(broken={"r2": {6}})
    Pipe(range(N), str, ones.tag("p1"), ones.sink("one"))
    return_shape(twos)
    report = BotFrame.run(redrive=True)
    assert report.redrive == {"P2[4] Return(even)/1[2] r2": {"redriven": 2, "failed_again": 1, "passed": 1, "skipped": 0}}
    assert not ones.calls
    assert twos.records == [("main", "4.a.r1.r2.r3.m")]  # 4 now passes; 6 fails again
    assert [(l.step, l.attempt, l.run_key.endswith("/P2")) for l in open_letters()] == [
        ("P2[4] Return(even)/1[2] r2", 2, True)]
    assert list(report.steps) == ["P2[4] Return(even)/1[0] dead letters", "P2[4] Return(even)/1[2] r2",
                                  "P2[4] Return(even)/1[3] r3", "P2[5] m", "P2[6] sink_main"]
    assert "P2[4] Return(even)/1[2] r2: in=2 out=1 dropped=1 failed=1" in str(report)


def test_a_main_line_letter_of_the_second_pipe_reports_under_p2(tmp_path):
    """A letter on P2's main line re-drives P2 alone; its round's report, ledger and
    new letters say P2 (not P1, the number of the one pipe the round runs), and the
    pipe itself is left as it was (a later normal run numbers it by its place again)."""
    use("ignore", tmp_path)
    config.metrics = True
    ones, twos = World(), World(broken={"m": {4, 6}})
    Pipe(range(N), str, ones.tag("p1"), ones.sink("one"))
    return_shape(twos)
    BotFrame.run()
    ones, twos = World(), World(broken={"m": {6}})
    Pipe(range(N), str, ones.tag("p1"), ones.sink("one"))
    return_shape(twos)
    report = BotFrame.run(redrive=True)
    assert not ones.calls and twos.records == [("main", "4.a.r1.r2.r3.m")]
    assert set(report.steps) == {"P2 replayed", "P2[5] m", "P2[6] sink_main"}
    assert report.ledger["P2[5] m"].balanced and report.ledger["P2[5] m"].dead_lettered == 1
    assert [(l.step, l.attempt) for l in open_letters()] == [("P2[5] m", 2)]
    assert len(BotFrame.last_run[0]) == 2 and not any(hasattr(p, "step_root") for p in BotFrame.last_run[0])


def test_a_redrive_inside_a_fork_reaches_a_real_mariadb_table_at_the_sides_end_once(tmp_path, mysql_params):
    """The sink is a MariaDB Insert at the end of a Fork's branch (a side flow); the
    failing step is the branch's middle one. The table then holds each row once."""
    import pymysql

    from rxbot.db.mysql import Insert

    use("retry", tmp_path)
    table = f"redrive_fork_{uuid.uuid4().hex[:10]}"
    con = pymysql.connect(host=mysql_params["host"], port=mysql_params["port"], user=mysql_params["user"],
                          password=mysql_params["password"], database=mysql_params["db"], autocommit=True)
    try:
        with con.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (n INT NOT NULL, path VARCHAR(100))")  # no key: doubles show
        broken = {"f2": set(FAILING)}

        def build() -> World:
            w = World(broken=broken)
            Pipe(range(N), str, Fork(Pipe(w.tag("f1"), w.tag("f2"), lambda x: {"n": source_of(x), "path": x},
                                          Insert(f"INSERT INTO {table} (n, path) VALUES ({{n}}, {{path}})",
                                                 **mysql_params))),
                 w.tag("m"), w.sink("main"))
            return w

        first = build()
        BotFrame.run()
        assert len(open_letters()) == len(FAILING)
        broken["f2"] = set()
        fixed = build()
        BotFrame.run(redrive=True)
        assert dict(fixed.calls) == {"f2": len(FAILING)}  # from the failing step on, nothing before it
        assert fixed.records == []  # the main line had them all already
        assert len(first.records) == N
        build()
        assert BotFrame.run(redrive=True).redrive == {}
        with con.cursor() as cur:
            cur.execute(f"SELECT n, path FROM {table}")
            rows = sorted(cur.fetchall())
        assert rows == [(n, f"{n}.f1.f2") for n in range(N)]
    finally:
        with con.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        con.close()


# -- the round's report names the steps by their original ids ------------------------------------------
#: (shape, failing step, the steps the redrive round runs, by their original ids): the
#: stand-in source of the stored items first (``[0] dead letters`` in the failing step's place)
REPORTED = [
    (join_shape, "j2", ["P1[4] Join/1[0] dead letters", "P1[4] Join/1[2] j2", "P1[4] Join/1[3] j3", "P1[5] m",
                        "P1[6] sink_main"]),
    (branch_shape, "b2", ["P1[4] Branch(even)/1[0] dead letters", "P1[4] Branch(even)/1[2] b2",
                          "P1[4] Branch(even)/1[3] b3", "P1[4] Branch(even)/1[4] sink_side"]),
    # a nested route: the Fork's branch goes on through a Join, whose branches' steps are
    # named under the original ids too
    (nested_shape, "n1", ["P1[3] Fork/1[0] dead letters", "P1[3] Fork/1[1] n1", "P1[3] Fork/1[2] Join",
                          "P1[3] Fork/1[2] Join/1[1] n2", "P1[3] Fork/1[2] Join/1[2] n3",
                          "P1[3] Fork/1[2] Join/2[1] n4", "P1[3] Fork/1[3] n5", "P1[3] Fork/1[4] sink_fork"]),
    (nested_shape, "n8", ["P1[4] Return(even)/1[2] Branch(not_div3)/1[0] dead letters",
                          "P1[4] Return(even)/1[2] Branch(not_div3)/1[2] n8",
                          "P1[4] Return(even)/1[2] Branch(not_div3)/1[3] sink_deep"]),
]


@pytest.mark.parametrize("shape,step,expected", REPORTED, ids=[f"{s.__name__}-{st}" for s, st, _ in REPORTED])
def test_the_redrive_rounds_report_and_ledger_use_the_original_step_ids(shape, step, expected, tmp_path,
                                                                          both_builds):
    """report.steps, the text report, to_json(), the ledger and BotFrame.debug() (the
    live listing) of a round that starts inside a route name its steps as the first run
    did (``P1[4] Join/1[2] j2``), never by the resumption pipe's own numbering
    (``P1[2] j2``); every counted line balances."""
    use("ignore", tmp_path)
    config.metrics = True  # every sync step counted: each line of the ledger is checked
    letters, report = fail_fix_redrive(shape, {step: {2, 4, 6, 8}})
    failed = {letter.step for letter in letters}
    assert failed == {expected[1]}
    assert list(report.steps) == expected
    shown = [line.strip().split(": ")[0] for line in str(report).splitlines() if line.startswith("  P")]
    assert shown == expected
    data = report.to_json()
    data = json.loads(data) if isinstance(data, str) else data
    assert [entry["step"] for entry in data["steps"]] == expected
    first = next(entry for entry in data["steps"] if entry["step"] == expected[1])
    assert first["inp"] == first["out"] == len(letters)
    assert first["label"] == step and first["position"] == list(StepId_of(report, expected[1]).positions)
    ledger = {entry["step"]: entry["ledger"] for entry in data["steps"]}
    counted = {sid: line for sid, line in ledger.items() if line is not None}
    assert set(counted) >= set(expected) - {e for e in expected if e.endswith((" Join", "] Join"))}
    assert all(line["balanced"] and line["step"] == sid for sid, line in counted.items())
    assert set(report.ledger) == set(expected)
    listed = [line.strip().split(": ")[0] for line in BotFrame.debug().splitlines()[1:]]
    assert listed == expected


def StepId_of(report: Any, text: str) -> Any:
    """The report's own key (a StepId) for ``text``."""
    return next(key for key in report.steps if key == text)


def test_a_broken_count_in_a_redrive_round_names_the_step_by_its_original_id(tmp_path, monkeypatch):
    """A test double of the async step operator that forgets to count one output of a
    step inside a Join branch after the failing one: the round fails with LedgerError
    naming ``P1[4] Join/1[3] leaky``, the id the user knows."""
    from rxbot import Step
    from rxbot.engine.ledger import LedgerError
    from rxbot.engine.operators import _bounded_map

    class LosesOne(_bounded_map._BoundedMap):
        lost = False

        def _emit(self, value: Any) -> None:
            if self.rt.label.endswith("leaky") and not LosesOne.lost:
                LosesOne.lost = True
                self.downstream(value)  # passed on, never counted
                return
            super()._emit(value)

    async def leaky(x: Any) -> Any:
        return x

    def build(w: World) -> None:
        Pipe(range(N), str, w.tag("a"), Join(Pipe(w.tag("j1"), w.tag("j2"), Step(leaky)), w.tag("k1")),
             w.tag("m"), w.sink("main"))

    use("ignore", tmp_path)
    build(World(broken={"j2": {2, 4, 6}}))
    BotFrame.run()
    monkeypatch.setattr(_bounded_map, "_BoundedMap", LosesOne)
    build(World())
    with pytest.raises(LedgerError) as caught:
        BotFrame.run(redrive=True)
    message = str(caught.value)
    assert "step P1[4] Join/1[3] leaky: in 3 + fan-out 0 = 3, but out 2" in message
    assert "P1[3] leaky" not in message and "P1[4] leaky" not in message


# -- the command line: a failing step inside a Join branch, the script fixed, redriven -----------------
SCRIPT = """\
from rxbot import BotFrame, Join, Pipe, config
from rxbot.db.sqlite import Insert

config.exception_policy = "ignore"
CALLS = {calls!r}
BAD = {{3, 8, 15}}


def noted(name, x):
    with open(CALLS, "a") as f:
        f.write(f"{{name}} {{x}}\\n")


def fetch(x):
    noted("fetch", x)
    return str(x)


def clean(s):
    noted("clean", s)
    return s + ".clean"


def parse(s):
    noted("parse", s)
{parse_body}
    return s + ".parse"


def other(s):
    noted("other", s)
    return s + ".other"


def row(s):
    n, kind = s.split(".")[0], s.split(".")[-1]
    return {{"n": int(n), "kind": kind}}


Pipe(range(20), fetch, Join(Pipe(clean, parse), other), row,
     Insert("INSERT INTO rows (n, kind) VALUES ({{n}}, {{kind}})", path={db!r}))
BotFrame.run()
"""


def test_rxbot_redrive_on_the_command_line_from_a_join_branch(tmp_path):
    """``rxbot run``: parse (step 2 of the Join's first branch) fails on 3 items under
    ignore; the script is rewritten with parse fixed; ``rxbot redrive`` runs exactly
    those 3 items through parse and on (nothing before it: no fetch, no clean, no other),
    the SQLite table then holds each row once, and a second redrive runs nothing.
    ``rxbot deadletters`` lists the letters by parse's full id."""
    script, calls, db = tmp_path / "job.py", tmp_path / "calls.txt", tmp_path / "rows.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE rows (n INTEGER NOT NULL, kind TEXT)")  # no key: a double would show
    con.commit()
    con.close()
    broken = "    if int(s.split('.')[0]) in BAD:\n        raise ValueError(f'cannot parse {s}')"
    script.write_text(SCRIPT.format(calls=str(calls), db=str(db), parse_body=broken))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))

    def rxbot(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "rxbot", *args], env=env, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    def calls_since(mark: int) -> Counter:
        lines = calls.read_text().splitlines()[mark:]
        return Counter(tuple(line.split(" ", 1)) for line in lines)

    def rows() -> List[tuple]:
        con = sqlite3.connect(db)
        try:
            return sorted(con.execute("SELECT n, kind FROM rows"))
        finally:
            con.close()

    rxbot("run", str(script))
    assert rows() == sorted([(n, "parse") for n in range(20) if n not in {3, 8, 15}]
                            + [(n, "other") for n in range(20)])
    listed = rxbot("deadletters", str(script))
    assert "3  P1[3] Join/1[2] parse  ValueError" in listed
    mark = len(calls.read_text().splitlines())
    script.write_text(SCRIPT.format(calls=str(calls), db=str(db), parse_body="    pass"))
    rxbot("redrive", str(script), "--report-file", str(tmp_path / "report.json"))
    assert calls_since(mark) == Counter({("parse", "3.clean"): 1, ("parse", "8.clean"): 1,
                                         ("parse", "15.clean"): 1})
    report = json.loads((tmp_path / "report.json").read_text())
    # the round's report names the steps as the pipe does (not the resumption's P1[2] parse)
    assert [(entry["step"].split(":")[0], entry["inp"]) for entry in report["steps"]] == [
        ("P1[3] Join/1[0] dead letters", 1), ("P1[3] Join/1[2] parse", 3), ("P1[4] row", 3), ("P1[5] Insert", 3)]
    assert rows() == sorted([(n, "parse") for n in range(20)] + [(n, "other") for n in range(20)])
    assert "no open dead letters" in rxbot("deadletters", str(script))
    mark = len(calls.read_text().splitlines())
    rxbot("redrive", str(script))
    assert calls_since(mark) == Counter()
    assert len(rows()) == 40

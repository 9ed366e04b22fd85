"""Re-driving dead letters of steps inside routes (issue 29.3): an item that failed
inside a branch resumes from that step within its branch and then goes on as that
branch's output would (onto the line after a joining route, nowhere after a side flow).

Every case: a run where some steps fail on known items, the fix, a redrive, then the
union of what the sinks got in both runs must equal a clean run's, item for item
(so each failed item reaches every sink exactly once), and a second redrive runs
nothing. A BlockedJoin branch's letter, whose way on reaches the tuple, is refused."""
from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from dataclasses import dataclass, field
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


@pytest.mark.parametrize("policy", ["ignore", "retry", "pipein"])
@pytest.mark.parametrize("shape,step,where", CASES, ids=[f"{s}-{st}" for s, st, _ in CASES])
def test_a_letter_anywhere_is_redriven_to_where_its_branch_goes(shape, step, where, policy, tmp_path, both_builds):
    use(policy, tmp_path)
    build = SHAPES[shape]
    clean = clean_records(build)
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

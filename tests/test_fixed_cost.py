"""What the per-run fixed cost's shortcuts must keep: the same decisions and the same
errors as the general code they skip (a step's arity and async-ness read from its code
object, its label read once, the tree walked fewer times). No timing here: the measured
effect is in the commit messages."""
from __future__ import annotations

import functools
import inspect
import sys

import pytest

from rxbot import BotFrame, Node, Pipe, Step, config
from rxbot.tree.node import is_async_callable
from rxbot.tree.step import takes_one_item


def _binds_one(fn) -> bool:
    """What the arity check decided before its shortcut: inspect binds one item."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(object())
    except TypeError:
        return False
    return True


def _functions():
    def one(x): return x
    def two(a, b): return a
    def defaulted(a, b=1, *, k=2): return a
    def required_keyword(a, *, k): return a
    def star(*args): return args
    def star_keyword(*args, k): return args
    def keywords(**kw): return kw
    def nothing(): return 0
    def positional_only(a, /): return a
    def positional_only_two(a, b, /, c=3): return a
    def all_defaults(a=1, b=2): return a
    async def coro(x): return x
    async def agen(x): yield x
    def gen(x): yield x

    def defaults_by_hand(a, b): return a
    defaults_by_hand.__defaults__ = (1, 2, 3)  # more defaults than parameters

    def kwdefaults_by_hand(a, *, k): return a
    kwdefaults_by_hand.__kwdefaults__ = {"k": 1}

    @functools.wraps(two)
    def wraps_two(*args): return two(*args)  # inspect follows __wrapped__: two's signature

    def signed(*args): return args
    signed.__signature__ = inspect.signature(two)

    return [one, two, defaulted, required_keyword, star, star_keyword, keywords, nothing, positional_only,
            positional_only_two, all_defaults, coro, agen, gen, defaults_by_hand, kwdefaults_by_hand,
            wraps_two, signed, lambda x: x, lambda: 0, lambda x, y=1: x]


@pytest.mark.parametrize("fn", _functions(), ids=lambda f: f.__name__)
def test_the_arity_shortcut_accepts_only_what_inspect_accepts(fn):
    # the shortcut may say "not known here" (False) for anything; when it accepts, so did
    # inspect; for a plain function without attributes it decides exactly as inspect did
    if takes_one_item(fn):
        assert _binds_one(fn)
    if not fn.__dict__ and len(fn.__defaults__ or ()) <= fn.__code__.co_argcount:
        assert takes_one_item(fn) == _binds_one(fn)
    if _binds_one(fn):
        Step(fn)
    else:
        with pytest.raises(TypeError, match="must accept one positional argument"):
            Step(fn)


def test_a_wrong_arity_is_still_refused_with_the_same_words():
    def two(a, b):
        return a

    with pytest.raises(TypeError) as info:
        Pipe(range(3), two)
    assert str(info.value) == ("step 'two' must accept one positional argument (the item); "
                               "its signature is two(a, b)")

    @functools.wraps(two)
    def wrapper(*args):  # looks like it takes one; inspect reads the wrapped signature
        return two(*args)

    with pytest.raises(TypeError, match=r"step 'two' must accept one positional argument"):
        Pipe(range(3), wrapper)
    BotFrame.clear()


@pytest.mark.parametrize("fn", _functions(), ids=lambda f: f.__name__)
def test_the_async_shortcut_decides_as_inspect(fn):
    expected = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    assert is_async_callable(fn) == expected
    assert is_async_callable(functools.partial(fn)) == expected


def test_a_function_with_attributes_is_decided_as_inspect_decides_it():
    """The code-flag shortcut skips a function with attributes: Python 3.12's
    ``inspect.markcoroutinefunction`` marks a plain function as a coroutine function
    there, and a step made of one must be async. On 3.11 (no marking) inspect says it
    is not, and so must the step."""
    def returns_awaitable(x):
        return x

    returns_awaitable.note = "an attribute"
    mark = getattr(inspect, "markcoroutinefunction", None)
    marked = mark(returns_awaitable) if mark is not None else returns_awaitable
    assert is_async_callable(marked) == Step(marked).is_async == inspect.iscoroutinefunction(marked)
    assert is_async_callable(marked) is (mark is not None)


def test_a_step_label_is_the_function_s_name_and_its_own_name_wins():
    def parse(x):
        return x

    step = Step(parse)
    assert step.label() == "parse"
    assert Step(parse, name="Parser").label() == "Parser"
    assert Step(step, name="outer").label() == "outer"
    lam = Step(lambda x: x)
    assert lam.label().startswith("<lambda> line ")
    assert Step(functools.partial(parse)).label() == "partial(parse)"


def test_a_node_step_label_follows_the_node():
    class Shout(Node):
        def __call__(self, x):
            return x

    node = Shout()
    step = Step(node)
    assert step.label() == "Shout"
    node.name = "loud"  # a Node's label may describe its state: asked each time
    assert step.label() == "loud"


# ---------------------------------------------------------------- the tree walked fewer times
def _nested_pipe():
    from rxbot import BlockedJoin, Branch, Filter, Fork, Join, Return

    def f(x): return x
    def g(x): return x
    def h(x): return x

    pipe = Pipe(range(3), f, Fork(Branch(f, Return(g, Filter(int))), Join(h, BlockedJoin(f, Fork(g, Branch(h))))),
                Filter(int), Branch(Branch(Branch(g))), h)
    BotFrame.clear()
    return pipe


def test_the_id_less_traversals_see_what_the_walk_sees():
    from rxbot.engine.lifecycle import route_depth
    from rxbot.tree.walk import StepId, elements, walk

    pipe = _nested_pipe()
    walked = list(walk(pipe.steps, StepId.root("P1", 1)))
    assert [step for _, step in walked] == [step for _, step in elements(pipe.steps)]
    assert [sid.depth for sid, _ in walked] == [depth for depth, _ in elements(pipe.steps)]
    assert route_depth(pipe.steps) == max(sid.depth for sid, _ in walked) == 5
    for sid, _ in walked:  # an id made from its parent spells what its data spells
        rebuilt = StepId(sid.pipe, sid.positions, sid.labels, sid.pipe_index)
        assert (str(sid), sid.positions, sid.labels, sid.pipe_index) == \
            (str(rebuilt), rebuilt.positions, rebuilt.labels, rebuilt.pipe_index)


def test_the_report_notes_the_same_routes_whichever_way_a_pipe_is_cut():
    from rxbot.engine.compiler import note_routes
    from rxbot.tree.flow import BlockedJoin, Route
    from rxbot.tree.walk import StepId, walk

    class Report:
        def __init__(self):
            self.routes = set()

    pipe = _nested_pipe()
    root = StepId.root("P1", 1)
    expected = {(sid, s.share, s.join) for sid, s in walk(pipe.steps, root)
                if isinstance(s, Route) and s.kind != "filter" and not isinstance(s, BlockedJoin)}
    whole, by_step, branch = Report(), Report(), Report()
    note_routes(whole, pipe.steps, root)
    for k in range(len(pipe.steps)):
        note_routes(by_step, pipe.steps, root, range(k + 1, k + 2))
    note_routes(branch, pipe.steps, root.step(3, "Fork").branch(1))  # a branch: noted with its pipe
    assert whole.routes == by_step.routes == expected
    assert len(expected) == 9 and branch.routes == set()


# ---------------------------------------------------------------- the running script, found once
def test_the_running_script_is_found_again_when_main_or_the_folder_changes(tmp_path, monkeypatch):
    import types

    from rxbot.durable.deadletters import enabled
    from rxbot.replay.store import _main_file

    def main_named(name):
        module = types.ModuleType("__main__")
        module.__file__ = name
        monkeypatch.setitem(sys.modules, "__main__", module)

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    main_named(str(tmp_path / "one" / "job.py"))
    assert _main_file() == (tmp_path / "one" / "job.py").resolve()
    assert _main_file() == (tmp_path / "one" / "job.py").resolve()  # asked twice, same answer
    main_named(str(tmp_path / "two" / "job.py"))
    assert _main_file() == (tmp_path / "two" / "job.py").resolve()
    main_named("job.py")  # relative: resolved from the working directory
    monkeypatch.chdir(tmp_path / "one")
    assert _main_file() == (tmp_path / "one" / "job.py").resolve()
    monkeypatch.chdir(tmp_path / "two")
    assert _main_file() == (tmp_path / "two" / "job.py").resolve()
    monkeypatch.setattr(config, "durable_dir", None)
    assert enabled()
    main_named(str(tmp_path / "lib" / "site-packages" / "tool" / "cli.py"))  # a tool's launcher
    assert _main_file() is None and not enabled()


# ---------------------------------------------------------------- the plan's questions, asked directly
@pytest.mark.parametrize("fn", _functions(), ids=lambda f: f.__name__)
def test_a_generator_step_is_told_as_inspect_tells_it(fn):
    from rxbot.plan import is_generator_function

    assert is_generator_function(fn) == inspect.isgeneratorfunction(fn)
    assert is_generator_function(functools.partial(fn)) == inspect.isgeneratorfunction(fn)


def test_a_step_s_policy_is_what_its_options_say(monkeypatch):
    from rxbot import Filter
    from rxbot.plan import options_of, policy_of
    from rxbot.tree.step import Const

    class Quiet(Node):
        on_error = "ignore"

        def __call__(self, x):
            return x

    def f(x):
        return x

    monkeypatch.setattr(config, "exception_policy", "pipein")
    for step in (Step(f), Step(f, on_error="retry"), Step(Quiet()), Step(Quiet(), on_error="raise"), Quiet(),
                 Const(3), Filter(int)):
        assert policy_of(step) == config.policy(options_of(step).get("on_error"))
    assert [policy_of(s) for s in (Step(f), Step(Quiet()), Const(3))] == ["pipein", "ignore", "pipein"]

"""The plan: a pipe lowered once into what the engine will build, and why.

Between the step tree (:mod:`rxbot.tree.flow`, :mod:`rxbot.tree.step`, :mod:`rxbot.tree.node`) and both
the engine and rendering. Every decision the optimisation pass makes is taken here, in
one place, from the tree and the settings read once: which steps fuse into generated
code (and whether they count their items), how each source hands its elements on
(sliced into fused code, drawn by an async step's workers, pulled one at a time, a
Timer's ticks), how each async step is fed, which executor each route and BlockedJoin
gets. :func:`plan_of` lowers a pipe into a frozen :class:`PipePlan` (cached on the pipe
until the settings change); the compiler (:mod:`rxbot.engine.compiler`) asks the same
questions through the functions here, render reads them, and :func:`explain` prints a
plan in a user's words, including why a step is not fused or a fast path does not
apply (``Pipe.explain()``, ``BotFrame.explain()``, ``rxbot explain SCRIPT``).

Nothing here imports the engine.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

from .config import config
from .tree.flow import BlockedJoin, Route
from .tree.node import Loop, Node, Timer, is_async_callable
from .tree.step import Const, RxOp, Step
from .tree.walk import StepId, root_of, walk


# ---------------------------------------------------------------- what a step is
def node_of(step: Any) -> Node | None:
    """The Node behind a tree element (a Node, or a Step wrapping one), else None."""
    node = step.fn if isinstance(step, Step) else step
    return node if isinstance(node, Node) else None


def callable_of(step: Any) -> Any:
    """What a Step or a bare Node calls per item."""
    return step.fn if isinstance(step, Step) else step


def overrides_flush(node: Node) -> bool:
    return type(node).flush is not Node.flush


def is_generator_function(fn: Any) -> bool:
    if type(fn) is types.FunctionType:  # the common step: what inspect would read, read here
        return bool(fn.__code__.co_flags & inspect.CO_GENERATOR)
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.isgeneratorfunction(fn)


def runs_inline(step: Any) -> bool:
    """True for steps that run inline, on the pushing call stack (sync steps, constants,
    Filter), so the optimisation pass may fuse them with their neighbours.

    A generator function does not: its output is pulled lazily like a Loop's, so a step
    yielding a million items keeps memory bounded."""
    if isinstance(step, Const):
        return True
    if isinstance(step, Step):
        if step.is_async or step.option("boost") or is_generator_function(step.fn):
            return False
        if isinstance(step.fn, Node):
            return not isinstance(step.fn, (Loop, Timer))
        return True
    if isinstance(step, Node):
        return not isinstance(step, (Loop, Timer)) and not step.boost_kind and not is_async_callable(step)
    if isinstance(step, Route) and step.kind == "filter":
        return True
    return False


def options_of(step: Any) -> dict:
    """The per-step options a StepRuntime takes, for a Step or a bare Node."""
    if isinstance(step, Step):
        node = step.fn if isinstance(step.fn, Node) else None
        return dict(on_error=step.option("on_error"), retries=step.option("retries"),
                    timeout=step.option("timeout"), concurrency=step.option("concurrency"),
                    describe=node.describe_item if node is not None else None)
    if isinstance(step, Node):
        return dict(on_error=step.on_error, retries=step.retries, timeout=step.timeout,
                    concurrency=step.concurrency, describe=step.describe_item)
    return {}


def matcher(route: Route) -> Callable[[Any], bool]:
    """``item -> bool``: does the item match the route (type, then ``route_func``)?"""
    rtype, rfunc = route.route_type, route.route_func
    if rfunc is None:
        if rtype is object:
            return lambda x: True
        return lambda x: isinstance(x, rtype)
    if rtype is object:
        return lambda x: bool(rfunc(x))
    return lambda x: isinstance(x, rtype) and bool(rfunc(x))




# ---------------------------------------------------------------- the decisions
def counts_sync(policies: Iterable[str]) -> bool:
    """Do sync steps run inline with these policies count their items? Counting costs
    about a third of their time, so only when asked (``config.metrics``), when something
    watches the counters (progress, a stats hook), or when a policy other than raise
    makes the accounting matter."""
    if config.metrics is not None:
        return bool(config.metrics)
    return config.counting() or any(p != "raise" for p in policies)


def policy_of(step: Any) -> str:
    """The exception policy a step runs under (its own, else the run's)."""
    if isinstance(step, Step):  # (what options_of says, without building its dict)
        return config.policy(step.option("on_error"))
    return config.policy(step.on_error if isinstance(step, Node) else None)


def plain_sync(step: Any) -> bool:
    """A step the inline route evaluator runs exactly like the graph would: it runs
    inline, has no end-of-input flush and no retries (a backoff needs the loop)."""
    if not runs_inline(step):
        return False
    node = node_of(step)
    if node is not None and overrides_flush(node):
        return False
    options = options_of(step)
    return not options.get("retries") and config.policy(options.get("on_error")) != "retry"


def inlinable_route(step: Any) -> bool:
    """The optimisation pass's extension: a route (Branch/Return/Fork/Join/BlockedJoin,
    nested too) whose every step is plain sync runs inline."""
    if not isinstance(step, Route) or step.kind == "filter" or not config.fusion:
        return False
    return all(plain_sync(s) or inlinable_route(s) for branch in step.branches for s in branch)


def plain_async(step: Any) -> bool:
    """An ``async def`` step (or async generator) with no option the operator graph
    would have to apply: no boost, own concurrency, timeout or retries. The inline
    evaluator awaits what it returns, bounded by its BlockedJoin's concurrency."""
    if not isinstance(step, Step) or isinstance(step.fn, Node) or not step.is_async:
        return False
    if step.option("boost") is not None or step.option("timeout") is not None:
        return False
    if step.option("concurrency") is not None and inspect.isasyncgenfunction(step.fn):
        return False  # a semaphore cannot hold across an async generator's items
    return not step.option("retries") and config.policy(step.option("on_error")) != "retry"


def evaluable_route(step: Any) -> bool:
    """A route the inline evaluator can run per item, awaiting its async steps: every
    step plain sync or plain async (see :func:`plain_async`), nested routes too."""
    if not isinstance(step, Route) or step.kind == "filter":
        return False
    return all(plain_sync(s) or plain_async(s) or evaluable_route(s) for branch in step.branches for s in branch)


#: routes nested deeper than this inside one generated segment stay operators: each
#: level is a ``while`` block, and Python allows 20 nested blocks in one function
MAX_FUSED_DEPTH = 8


def generated_depth(step: Any) -> int:
    """How deep routes nest in the code generated for ``step`` (a BlockedJoin is one
    call there, whatever it holds)."""
    if not isinstance(step, Route) or isinstance(step, BlockedJoin) or step.kind == "filter":
        return 0
    return 1 + max((generated_depth(s) for branch in step.branches for s in branch), default=0)


def fusable(step: Any) -> bool:
    """Does the optimisation pass put ``step`` into a generated segment?

    Sync steps and Filter, and all-sync routes (Branch, Return, Fork, Join with any
    routes nested in them, up to :data:`MAX_FUSED_DEPTH`) generated into the same code;
    an all-sync BlockedJoin is one inline function there (~3 µs an item instead of
    ~350 µs for a fresh subscription of its branches per item)."""
    if not config.fusion:
        return False
    if runs_inline(step):
        return True
    return inlinable_route(step) and generated_depth(step) <= MAX_FUSED_DEPTH


#: a generated segment holds at most this many positions (steps, and the steps of the
#: routes generated into it): each position's continuation repeats the code after it,
#: so a segment's code grows with the square of its length; cut into segments of at
#: most this many, a long chain's code grows linearly (one call between segments)
MAX_SEGMENT = 16


def positions(step: Any) -> int:
    """How many positions ``step`` takes in generated code (a route: itself and the
    steps of its branches; a BlockedJoin is one call)."""
    if not isinstance(step, Route) or isinstance(step, BlockedJoin) or step.kind == "filter":
        return 1
    return 1 + sum(positions(s) for branch in step.branches for s in branch)


def spans(steps: Sequence[Any]) -> List[Tuple[int, int]]:
    """``steps`` cut into ``(first, last)`` index spans, in flow order: each a run of
    fusable steps (one generated segment, at most :data:`MAX_SEGMENT` positions unless
    one step alone takes more), or one other step."""
    out: List[Tuple[int, int]] = []
    i = 0
    while i < len(steps):
        j = i
        if fusable(steps[i]):
            taken = positions(steps[i])
            while j + 1 < len(steps) and fusable(steps[j + 1]) and taken + positions(steps[j + 1]) <= MAX_SEGMENT:
                j += 1
                taken += positions(steps[j])
        out.append((i, j))
        i = j + 1
    return out


def not_fused_because(step: Any) -> str:
    """Why the optimisation pass leaves ``step`` out of generated code (a user's words)."""
    if not config.fusion:
        return "fusion is off (config.fusion = False or RXBOT_NO_FUSION=1)"
    if isinstance(step, RxOp):
        return "a reactivex operator runs as itself"
    if isinstance(step, Route):
        if not inlinable_route(step):
            if isinstance(step, BlockedJoin) and evaluable_route(step):
                return "it holds async steps (evaluated per item, its async steps awaited together)"
            return "it holds a step that is async, boosted, a generator, retried or flushed at the end"
        return f"routes nest deeper than {MAX_FUSED_DEPTH} levels"
    node = node_of(step)
    if isinstance(node, Loop):
        return "a Loop is a source"
    if isinstance(node, Timer):
        return "a Timer is a source"
    if isinstance(step, Step):
        if step.option("boost"):
            return f"boosted ({step.option('boost')}): it runs in an executor"
        if step.is_async:
            return "async: it runs in bounded slots"
        if is_generator_function(step.fn):
            return "a generator function: its items are pulled lazily (bounded memory)"
    if isinstance(step, Node):
        if step.boost_kind:
            return f"boosted ({step.boost_kind}): it runs in an executor"
        if is_async_callable(step):
            return "an async node: it runs in bounded slots"
    return "it does not run inline"


def match_mode(route: Route) -> str:
    """How a Filter or route tests an item: 'every item', 'isinstance' or 'route_func'."""
    if route.route_func is None:
        return "every item" if route.route_type is object else "isinstance"
    return "route_func"


def _nested_route(route: Route) -> bool:
    return any(isinstance(s, Route) and s.kind != "filter" for branch in route.branches for s in branch)


#: the BlockedJoin strategies that subscribe its branches' operators per item
PER_ITEM = ("a subscription per item", "fork_join per item")


def blocked_join_strategy(step: BlockedJoin) -> Tuple[str, str]:
    """Which executor runs a BlockedJoin, and why (see :class:`BlockedJoinPlan`)."""
    if not config.fusion:
        return "fork_join per item", "fusion is off: the honest graph subscribes its branches per item"
    if fusable(step):
        counting = counts_sync(policy_of(s) for branch in step.branches for s in branch)
        if not counting and not _nested_route(step):
            return "generated code", "plain sync steps, not counted: its tuple is built from locals"
        why = "its steps count their items" if counting else "a route is nested in it"
        return "inline function", f"{why}: one function call per item inside the generated code"
    if evaluable_route(step):
        return "evaluated per item", "plain sync and async steps: the async ones awaited together per item"
    return "a subscription per item", ("a step is boosted, retried, timed out or otherwise needs the operator "
                                       "graph: each item subscribes its branches afresh")


# ---------------------------------------------------------------- item traces
# (rxbot.observe.trace follows the items; what the expression may be and where it is checked is
# decided here, once, from its text)
class TraceExpressionError(ValueError):
    """The trace expression does not compile, or names something other than ``item``
    (raised before the run; also :mod:`rxbot.observe.trace`'s)."""


def compile_expression(expr: Any, origin: str = "config.trace") -> str:
    """Check ``expr`` before the run: it must be one Python expression over ``item``
    (builtins allowed). Returns the expression; raises :class:`TraceExpressionError`
    with a one-line message naming ``origin`` (``--trace`` or ``config.trace``)."""
    if not isinstance(expr, str) or not expr.strip():
        raise TraceExpressionError(f"{origin}: expected a Python expression over `item` as text, "
                                   f"e.g. \"'product/13' in str(item)\"; got {expr!r}")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise TraceExpressionError(f"{origin}: {expr!r} is not a Python expression over `item` "
                                   f"({exc.msg} at column {exc.offset})") from None
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for node in ast.walk(tree):  # names a comprehension binds are its own
        if isinstance(node, ast.comprehension):
            bound |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Lambda):
            bound |= {a.arg for a in node.args.args}
    unknown = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
                     - bound - {"item"} - set(dir(builtins)))
    if unknown:
        raise TraceExpressionError(f"{origin}: {expr!r} uses {', '.join(unknown)}; the expression sees "
                                   f"only `item` (each source item) and Python's builtins")
    return ast.unparse(tree)  # one line, no comment: it is compiled into the source's loop


#: names the generated code of a fused segment binds (rxbot.engine.fuse): an inlined
#: expression must not read one of them as a builtin
_GENERATED = frozenset({"x", "y", "m", "e", "n", "it", "gate", "emit", "spread", "fail", "VALUES", "ci", "co", "cn",
                        "held", "hold", "after", "trace", "entry", "many", "cycle", "stop", "hitting", "thit", "toff",
                        "tfail", "ONE", "NOTYPE", "NOTHING", "ENDED", "make", "fns", "consts"})
#: what an inlined expression may not contain: each binds names of its own (or suspends)
_OWN_SCOPE = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr, ast.Await,
              ast.Yield, ast.YieldFrom)


class _Renamed(ast.NodeTransformer):
    """``item`` read as ``x``, the generated loop's variable."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name("x", node.ctx), node) if node.id == "item" else node


def inline_check(expr: str) -> Tuple[Optional[str], str]:
    """``expr`` (checked by :func:`compile_expression`) as the fused code's check on its
    loop variable ``x`` — the text compiled into a fused segment's chunk entry — or
    None when it cannot be inlined; and how or why not, in a user's words (what
    ``explain()`` says). An expression with a lambda, a comprehension or ``:=`` binds names of its
    own, which could clash with the generated code's: it goes through the wrapper."""
    tree = ast.parse(expr, mode="eval")
    own = sorted({type(node).__name__ for node in ast.walk(tree) if isinstance(node, _OWN_SCOPE)})
    if own:
        return None, f"the expression has {', '.join(own)} (names of its own)"
    clash = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & (_GENERATED - {"x"}))
    if clash:
        return None, f"the expression reads {', '.join(clash)}, a name the fused code binds"
    return ast.unparse(_Renamed().visit(tree)), "checked inline where each element enters the fused steps' loop"



# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Settings:
    """The settings a plan was lowered under (read once, in :func:`plan_of`)."""

    fusion: bool
    metrics: bool | None
    watched: bool  # progress or a stats hook reads the counters live
    policy: str  # the run's exception policy
    yield_every: int
    trace: str | None = None  # config.trace: an item trace's expression (rxbot.observe.trace)

    @classmethod
    def now(cls) -> "Settings":
        return cls(bool(config.fusion), config.metrics, config.counting(), config.policy(), int(config.yield_every),
                   config.trace)


@dataclass(frozen=True)
class Fused:
    """Consecutive inline steps as one generated operator."""

    ids: Tuple[StepId, ...]
    counting: bool
    counting_reason: str
    terminal: bool  # it ends its pipe or a side flow: its results go nowhere
    routes: Tuple["RoutePlan", ...] = ()  # all-sync routes generated into it
    blocked_joins: Tuple["BlockedJoinPlan", ...] = ()
    #: the tree's steps it runs (what the compiler generates its code from)
    steps: Tuple[Any, ...] = field(default=(), compare=False, repr=False)
    #: an item trace's expression over ``x``, checked inline where each element of the
    #: pipe's source enters its chunk entry (a traced source slices into it; see
    #: rxbot.observe.trace), else None
    check: str | None = None

    @property
    def pullable(self) -> bool:
        """Can an async step right after it draw its works through it? Not through a
        route (its branches cannot return one output)."""
        return not self.terminal and not self.routes


@dataclass(frozen=True)
class Source:
    """A step that produces a sequence per input: a Loop, a generator step, a Timer."""

    id: StepId
    kind: str  # 'Loop', 'generator step', 'Timer'
    feed: str  # 'sliced', 'drawn', 'drawn through the fused segment', 'pulled', 'ticks'
    reason: str
    #: the tree's step (a sharded run splits a Loop's items, see rxbot.cluster.plan)
    step: Any = field(default=None, compare=False, repr=False)
    #: how an item trace checks its elements (a pipe's Loop under ``config.trace``), else ""
    trace: str = ""


@dataclass(frozen=True)
class Bounded:
    """An async (or boosted) step with bounded slots."""

    id: StepId
    concurrency: int
    boost: str | None
    timeout: float | None
    retries: int | None
    fed: str  # 'drawn', 'drawn through the fused segment', 'fed', 'queued'
    reason: str


@dataclass(frozen=True)
class Unfused:
    """A sync step on the honest graph (``map`` + ``flatten``, or ``filter``)."""

    id: StepId
    reason: str


@dataclass(frozen=True)
class RoutePlan:
    """A Branch/Return/Fork/Join (inside generated code, or an operator of its own)."""

    id: StepId
    kind: str
    share: bool
    join: bool
    match: str
    strategy: str  # 'generated code', 'route operator', 'publish + merge'
    reason: str
    branches: Tuple[Tuple["Lowered", ...], ...] = ()
    #: per branch, the ``(first, last)`` step indexes each of its operators holds (an
    #: operator route's; the compiler builds its branches so)
    spans: Tuple[Tuple[Tuple[int, int], ...], ...] = ()


@dataclass(frozen=True)
class BlockedJoinPlan:
    """A BlockedJoin: every branch per item, one tuple out."""

    id: StepId
    match: str
    strategy: str  # 'generated code', 'inline function', 'evaluated per item', 'a subscription per item', 'fork_join per item'
    reason: str
    steps: Tuple[StepId, ...] = ()  # the steps of its branches (nested routes' too)
    #: subscribed per item: its branches lowered, and per branch the ``(first, last)``
    #: step indexes each of their operators holds (what the compiler builds)
    branches: Tuple[Tuple["Lowered", ...], ...] = ()
    spans: Tuple[Tuple[Tuple[int, int], ...], ...] = ()

    @property
    def subscribed(self) -> bool:
        """Does every item subscribe its branches' operators afresh?"""
        return self.strategy in PER_ITEM


@dataclass(frozen=True)
class RxStepPlan:
    id: StepId


Lowered = Union[Fused, Source, Bounded, Unfused, RoutePlan, BlockedJoinPlan, RxStepPlan]


@dataclass(frozen=True)
class PipePlan:
    """One pipe, lowered: its nodes in flow order."""

    root: StepId
    label: str
    nodes: Tuple[Lowered, ...]
    settings: Settings
    #: the ``(first, last)`` top-level step indexes each node of ``nodes`` holds: what the
    #: compiler builds as one operator (a fused run, or one step)
    spans: Tuple[Tuple[int, int], ...] = ()
    #: every step of the pipe with its id, nested ones too, in pre-order (a route before
    #: the steps of its branches)
    steps: Tuple[Tuple[StepId, Any], ...] = field(default=(), compare=False, repr=False)
    #: each top-level step lowered alone (a run whose hooks put an operator between any
    #: two, see rxbot.engine.hooks.build_pipe): sync steps are not fused across them
    per_step: bool = False

    def ids(self) -> List[StepId]:
        """Every step id of the plan, in flow order (branches inside their routes)."""
        out: List[StepId] = []
        _collect(self.nodes, out)
        return out


def _collect(nodes: Sequence[Lowered], out: List[StepId]) -> None:
    for n in nodes:
        if isinstance(n, Fused):
            out.extend(n.ids)
        else:
            out.append(n.id)
            if isinstance(n, BlockedJoinPlan):
                out.extend(n.steps)
            if isinstance(n, RoutePlan):
                for branch in n.branches:
                    _collect(branch, out)


def _counting_reason(policies: Sequence[str]) -> Tuple[bool, str]:
    counting = counts_sync(policies)
    if config.metrics is not None:
        return counting, f"config.metrics = {config.metrics}"
    if config.counting():
        return True, "progress or a stats hook reads the counts"
    if counting:
        return True, f"a step's policy is {next(p for p in policies if p != 'raise')!r}"
    return False, "policy 'raise' and metrics off: the report shows '-' for these steps"


def _inner(route: Route, where: StepId) -> Tuple[StepId, ...]:
    """The ids of every step inside ``route``'s branches, nested ones too, in pre-order."""
    out: List[StepId] = []
    for b, branch in enumerate(route.branches):
        place = where.branch(b + 1)
        for k, s in enumerate(branch):
            sid = place.step(k + 1, s.label())
            out.append(sid)
            if isinstance(s, Route):
                out.extend(_inner(s, sid))
    return tuple(out)


#: why a run lowered ``per_step`` takes none of the fast paths between two top-level steps
_BETWEEN_STEPS = ("the run's hooks (replay mode, a resumed run, a redrive) put an operator between each two "
                  "of its steps")


class _Lowering:
    def __init__(self, per_step: bool = False) -> None:
        self.fusion = bool(config.fusion)
        self.trace = config.trace
        #: each top-level step lowered alone: a run's hooks put an operator between any two
        self.per_step = per_step

    def sequence(self, steps: Sequence[Any], path: StepId, terminal: bool,
                 cuts: Sequence[Tuple[int, int]] | None = None) -> Tuple[Lowered, ...]:
        nodes: List[Lowered] = []
        if cuts is None:
            cuts = cut(steps)
        for first, last in cuts:
            ends = terminal and last == len(steps) - 1
            if fusable(steps[first]):
                nodes.append(self.fused(steps, first, last, path, ends))
            else:
                nodes.append(self.single(steps[first], path.step(first + 1, steps[first].label()), ends))
        return self.feeds(nodes)

    def fused(self, steps: Sequence[Any], first: int, last: int, path: StepId, terminal: bool) -> Fused:
        ids: List[StepId] = []
        routes: List[RoutePlan] = []
        blocked: List[BlockedJoinPlan] = []
        policies: List[str] = []

        def visit(step: Any, where: StepId) -> None:
            ids.append(where)
            if isinstance(step, BlockedJoin):
                strategy, reason = blocked_join_strategy(step)
                blocked.append(BlockedJoinPlan(where, match_mode(step), strategy, reason, _inner(step, where)))
                ids.extend(blocked[-1].steps)
                return
            if isinstance(step, Route) and step.kind != "filter":
                routes.append(RoutePlan(where, step.kind, step.share, step.join, match_mode(step),
                                        "generated code", "every step in it is plain sync"))
                for b, branch in enumerate(step.branches):
                    place = where.branch(b + 1)
                    for k, s in enumerate(branch):
                        visit(s, place.step(k + 1, s.label()))
                return
            policies.append(policy_of(step))

        for k in range(first, last + 1):
            visit(steps[k], path.step(k + 1, steps[k].label()))
        counting, why = _counting_reason(policies)
        return Fused(tuple(ids), counting, why, terminal, tuple(routes), tuple(blocked), tuple(steps[first:last + 1]))

    def branches(self, route: Route, where: StepId,
                 terminal: bool) -> Tuple[Tuple[Tuple[Lowered, ...], ...], Tuple[Tuple[Tuple[int, int], ...], ...]]:
        """An operator route's branches lowered, and how each is cut into operators."""
        spans = tuple(tuple(cut(branch)) for branch in route.branches)
        return tuple(self.sequence(branch, where.branch(b + 1), terminal, cuts=spans[b])
                     for b, branch in enumerate(route.branches)), spans

    def single(self, step: Any, where: StepId, terminal: bool) -> Lowered:
        if isinstance(step, RxOp):
            return RxStepPlan(where)
        if isinstance(step, BlockedJoin):
            strategy, reason = blocked_join_strategy(step)
            branches, spans = self.branches(step, where, False) if strategy in PER_ITEM else ((), ())
            return BlockedJoinPlan(where, match_mode(step), strategy, reason, _inner(step, where), branches, spans)
        if isinstance(step, Route) and step.kind != "filter":
            if not self.fusion:
                strategy, reason = "publish + merge", "fusion is off: the honest graph"
            else:
                strategy, reason = "route operator", not_fused_because(step)
            branches, spans = self.branches(step, where, not step.join)
            return RoutePlan(where, step.kind, step.share, step.join, match_mode(step), strategy, reason, branches,
                             spans)
        if runs_inline(step):
            return Unfused(where, not_fused_because(step))
        node = node_of(step)
        if isinstance(node, Timer):
            how = "a sleeping task" if self.fusion else "a gated reactivex.timer (fusion is off)"
            return Source(where, "Timer", "ticks", f"ticks from {how}; a full step downstream delays the next tick",
                          step)
        boost = step.option("boost") if isinstance(step, Step) else step.boost_kind
        if isinstance(node, Loop) or (not boost and is_generator_function(callable_of(step))):
            return Source(where, "Loop" if isinstance(node, Loop) else "generator step", "pulled", "", step)
        options = options_of(step)
        return Bounded(where, int(options.get("concurrency") or config.default_concurrency), boost,
                       options.get("timeout"), options.get("retries"), "queued", "")

    def feeds(self, nodes: List[Lowered]) -> Tuple[Lowered, ...]:
        """How each source hands its elements on and how each async step is fed: decided
        from its neighbours."""
        out = list(nodes)
        for k, n in enumerate(out):
            after = out[k + 1] if k + 1 < len(out) else None
            before = out[k - 1] if k else None
            if isinstance(n, Source) and n.kind != "Timer":
                feed, reason = self.source_feed(after)
                check, how = self.traced(n, after)
                out[k] = Source(n.id, n.kind, feed, reason, n.step, how)
                if check is not None and isinstance(after, Fused):
                    out[k + 1] = dataclasses.replace(after, check=check)
            elif isinstance(n, Bounded):
                fed, reason = self.async_feed(before, out[k - 2] if k >= 2 else None)
                out[k] = Bounded(n.id, n.concurrency, n.boost, n.timeout, n.retries, fed, reason)
        return tuple(out)

    def traced(self, source: Source, after: Lowered | None) -> Tuple[str | None, str]:
        """How ``config.trace`` checks the elements of ``source``: inline in the fused
        steps it slices into — the check's text over ``x``, which the compiler hands to
        the source's tracer (rxbot.engine.compiler ``Builder.follow``) — or through a
        generator wrapping it (None); and the words ``explain()`` says. Only a pipe's
        first step, a Loop, is traced."""
        if self.trace is None or source.kind != "Loop" or len(source.id.positions) != 1 or source.id.top != 1:
            return None, ""
        try:
            expr = compile_expression(self.trace)
        except TraceExpressionError as exc:
            return None, f"trace: {exc}"
        wrapped = f"trace {expr!r}: checked by a generator wrapping the source (one generator step per element): "
        if not isinstance(after, Fused):
            return None, wrapped + "the source does not slice into fused steps"
        if self.per_step:
            return None, wrapped + _BETWEEN_STEPS
        check, why = inline_check(expr)
        return check, (f"trace {expr!r}: {why}" if check is not None else wrapped + why)

    def source_feed(self, after: Lowered | None) -> Tuple[str, str]:
        if self.per_step and after is not None:
            return "pulled", f"pulled one element at a time: {_BETWEEN_STEPS}"
        if isinstance(after, Fused):
            return "sliced", (f"handed to the fused steps after it in slices of up to {config.yield_every} "
                              f"(itertools.islice), one call per slice")
        if isinstance(after, Bounded):
            return "drawn", "while the async step after it is full, its workers take the next elements themselves"
        if after is None:
            return "pulled", "pulled one element at a time: nothing follows it"
        if not self.fusion:
            return "pulled", "pulled one element at a time: fusion is off"
        what = {RoutePlan: "a route with async steps", BlockedJoinPlan: "a BlockedJoin with async steps",
                RxStepPlan: "a reactivex operator", Source: "another source"}.get(type(after), "not fused code")
        return "pulled", f"pulled one element at a time: the next step is {what}"

    def async_feed(self, before: Lowered | None, source: Lowered | None) -> Tuple[str, str]:
        if self.per_step and before is not None:
            return "fed", f"upstream pushes into its queue, paused by its gate while the slots are full: {_BETWEEN_STEPS}"
        if isinstance(before, Source) and before.kind != "Timer":
            return "drawn", "its workers take the source's next elements themselves while its slots are full"
        if isinstance(before, Fused) and isinstance(source, Source) and source.kind != "Timer":
            if before.pullable:
                return ("drawn through the fused segment", "its workers run the source's next elements through "
                        "the fused steps before it while its slots are full")
            return "fed", ("the fused steps before it hold a route: the source pushes one element per freed slot "
                           "(Boundary.feed), its outputs queued")
        if isinstance(before, Source):
            return "queued", "a Timer's ticks are queued in its slots (a full step delays the next tick)"
        if before is None:
            return "queued", "it starts its branch: items are queued in its slots"
        return "fed", ("its input does not come straight from a source: upstream pushes into its queue, paused "
                       "by its gate while the slots are full")


def cut(steps: Sequence[Any], per_step: bool = False) -> List[Tuple[int, int]]:
    """The ``(first, last)`` spans the compiler builds ``steps`` as: runs of fusable
    steps (see :func:`spans`), or each step alone when fusion is off or ``per_step``."""
    if config.fusion and not per_step:
        return spans(steps)
    return [(k, k) for k in range(len(steps))]


def lower(steps: Sequence[Any], root: StepId, label: str = "Pipe", per_step: bool = False) -> PipePlan:
    """The plan of ``steps`` held at ``root`` under the current settings (``per_step``:
    each top-level step lowered alone)."""
    cuts = cut(steps, per_step)
    nodes = _Lowering(per_step).sequence(steps, root, terminal=True, cuts=cuts)
    return PipePlan(root, label, nodes, Settings.now(), tuple(cuts), tuple(walk(steps, root)), per_step)


def lower_route(step: Route, where: StepId, terminal: bool = False) -> Lowered:
    """The plan of one route operator (or BlockedJoin) at ``where`` under the current
    settings: for a build that has no pipe plan around it."""
    return _Lowering().single(step, where, terminal)


def plan_of(pipe: Any, index: int = 1, per_step: bool = False) -> PipePlan:
    """The plan of ``pipe`` (its ``index``-th place in a run: ``P1``, ``P2`` ...), built
    once and cached on the pipe until the settings or its steps change."""
    key = (Settings.now(), index, tuple(map(id, pipe.steps)), per_step, getattr(pipe, "step_root", None))
    cached = pipe.__dict__.get("_rxbot_plan")
    if cached is not None and cached[0] == key:
        plan: PipePlan = cached[1]
        return plan
    plan = lower(pipe.steps, root_of(pipe, index), pipe.label(), per_step)
    pipe.__dict__["_rxbot_plan"] = (key, plan)
    return plan


# ---------------------------------------------------------------- explain
def explain(plans: Sequence[PipePlan], source: Callable[[Fused], str] | None = None) -> str:
    """The plans in a user's words: what runs fused and whether it counts, how each
    source hands its elements on, how each async step is fed, which executor each route
    and BlockedJoin gets, and why a step is not fused or a fast path does not apply.
    ``source``: the generated code of a fused segment (the engine's
    ``compiler.segment_source``), shown under it."""
    lines: List[str] = []
    for plan in plans:
        s = plan.settings
        lines.append(f"{plan.root} ({plan.label}): fusion {'on' if s.fusion else 'off'}, policy {s.policy!r}")
        _describe(plan.nodes, "  ", lines, source)
    return "\n".join(lines)


def _name(sid: StepId) -> str:
    return str(sid)


def _describe(nodes: Sequence[Lowered], ind: str, lines: List[str],
              source: Callable[[Fused], str] | None = None) -> None:
    for n in nodes:
        if isinstance(n, Fused):
            where = "ends its flow" if n.terminal else "emits downstream"
            lines.append(f"{ind}fused (generated code, {len(n.ids)} step{'s' * (len(n.ids) != 1)}, {where}); "
                         f"{'counted' if n.counting else 'not counted'}: {n.counting_reason}")
            for sid in n.ids:
                lines.append(f"{ind}  {_name(sid)}")
            for r in n.routes:
                lines.append(f"{ind}  route {_name(r.id)}: {r.kind}, share={r.share}, join={r.join}, "
                             f"matches {r.match}: generated code")
            for b in n.blocked_joins:
                lines.append(f"{ind}  BlockedJoin {_name(b.id)}: {b.strategy} ({b.reason})")
            if source is not None:
                lines.append(f"{ind}  generated code:")
                lines.extend(f"{ind}    {line}" for line in source(n).splitlines())
        elif isinstance(n, Source):
            lines.append(f"{ind}source {_name(n.id)} ({n.kind}): {n.feed} — {n.reason}")
            if n.trace:
                lines.append(f"{ind}  {n.trace}")
        elif isinstance(n, Bounded):
            opts = [f"concurrency {n.concurrency}"]
            opts += [f"{k} {v}" for k, v in (("boost", n.boost), ("timeout", n.timeout), ("retries", n.retries)) if v]
            lines.append(f"{ind}async {_name(n.id)} ({', '.join(opts)}): {n.fed} — {n.reason}")
        elif isinstance(n, Unfused):
            lines.append(f"{ind}step {_name(n.id)}: not fused — {n.reason}")
        elif isinstance(n, RoutePlan):
            lines.append(f"{ind}route {_name(n.id)}: {n.kind}, share={n.share}, join={n.join}, matches {n.match}: "
                         f"{n.strategy} — not generated code: {n.reason}")
            for number, branch in enumerate(n.branches, start=1):
                lines.append(f"{ind}  branch {number}:")
                _describe(branch, ind + "    ", lines, source)
        elif isinstance(n, BlockedJoinPlan):
            lines.append(f"{ind}BlockedJoin {_name(n.id)}: {n.strategy} — {n.reason}")
        elif isinstance(n, RxStepPlan):
            lines.append(f"{ind}reactivex operator {_name(n.id)}: runs as itself (not fused)")


__all__ = ["runs_inline", "node_of", "callable_of", "overrides_flush", "is_generator_function", "options_of",
           "matcher", "counts_sync", "policy_of", "plain_sync", "inlinable_route", "plain_async", "evaluable_route",
           "MAX_FUSED_DEPTH", "generated_depth", "fusable", "MAX_SEGMENT", "positions", "spans", "cut", "not_fused_because", "match_mode",
           "blocked_join_strategy", "PER_ITEM", "lower_route", "Settings", "Fused", "Source", "Bounded", "Unfused", "RoutePlan",
           "BlockedJoinPlan", "RxStepPlan", "Lowered", "PipePlan", "lower", "plan_of", "explain",
           "TraceExpressionError", "compile_expression", "inline_check"]

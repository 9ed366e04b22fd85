"""Item traces: ``rxbot run --trace EXPR`` (or ``config.trace``) follows the source items
for which ``EXPR`` (a Python expression over ``item``) is true, and everything derived
from them, through every step: the values (bounded, redacted previews), the route taken,
the rule that dropped one (a Filter, a step returning None), retries, the error with the
user's frame, and where each ended (the end of the pipe, held by an Insert,
dead-lettered, dropped, cut off by a stop).

How it stays free when no trace is asked: nothing here is built, and the engine's
builds are what they always are. With a trace, the run is the same fused build; the
tracer only watches it:

* where a pipe's source (a Loop) hands its elements to fused steps in slices (the
  common case: ``explain()`` says "checked inline"), ``EXPR`` is compiled into the
  fused segment's chunk entry (:func:`inline_check`, rxbot.engine.fuse's part
  ``'traced'``), right where each element enters its loop: an element that does not
  match costs the expression's own bytecodes and one jump, nothing else;
* elsewhere (the source feeds an async step, a route operator, the unfused graph; an
  element the source pushes one at a time while it waits at its gate; an expression
  with a lambda, a comprehension or ``:=``) the source's iterator is wrapped in a
  generator with ``EXPR`` compiled into it (:func:`_compiled`): one generator step and
  the expression per element. Both read the one iterator, so each element is checked
  once, by whichever takes it;
* a matching item turns Python's trace function on (:func:`sys.settrace`) while it is
  pushed through the synchronous steps (the fused code calls the user's functions, so
  their calls are seen), and off once that push returns (inline) or when the source is
  asked for its next element (the wrapper); only calls whose argument *is* a traced
  value (by identity) are recorded;
* each async step's calls (:class:`rxbot.engine.slots.Slots`) are wrapped, once per
  step, with a look-up of the work in the traced values: a traced call is watched to
  its result, which is pushed on with the trace function on again;
* dead letters are matched to the traced values they carry (``RunContext.letter_hooks``).

The values are kept (so their identity stays theirs) for the run's length only;
a small int or an interned string shares its identity with equal values, so such a
value may pick up a hop of an equal untraced one: trace objects, URLs, records.
"""
from __future__ import annotations

import logging
import os
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from functools import partial
from types import CodeType, FrameType, TracebackType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..tree.flow import Route
from ..tree.node import Loop, Node
from ..plan import TraceExpressionError, compile_expression, inline_check  # the plan decides where the check goes
from ..preview import preview
from ..redact import redact
from ..tree.step import Const, Step
from ..tree.walk import StepId, walk

log = logging.getLogger("rxbot")

#: characters of a traced value shown
VALUE_LIMIT = 160
#: traced source items kept (each with its hops); more matches are counted, not followed
MAX_TRACES = 50
#: hops kept per traced item
MAX_HOPS = 200
#: values followed at once (what the traced items became); more are not followed
MAX_VALUES = 10_000


def _compiled(expr: str) -> Dict[str, Any]:
    """``expr`` compiled into ``traced_source(items, hit, next_one, failed)`` (its text
    inlined, so it costs what the expression costs): a generator yielding every element,
    calling ``hit(item)`` before a matching one and ``next_one()`` after it; an element
    the expression fails on is not traced (``failed(item, exc)``).

    Measured (benchmarks/bench_trace.py, callgrind): the generator's step per element is
    most of the cost with a cheap expression; reading a list or range in chunks through a
    comprehension instead (one Python frame per chunk, not per element) cost more, not
    less (the comprehension's own loop, and each element fetched twice)."""
    code = (
        "def traced_source(items, hit, next_one, failed):\n"
        "    try:\n"
        "        for item in items:\n"
        "            try:\n"
        f"                if not ({expr}):\n"
        "                    yield item\n"
        "                    continue\n"
        "            except Exception as exc:\n"
        "                failed(item, exc)\n"
        "                yield item\n"
        "                continue\n"
        "            hit(item)\n"
        "            yield item\n"
        "            next_one()\n"
        "    finally:\n"
        "        next_one()\n"
    )
    namespace: Dict[str, Any] = {}
    exec(compile(code, "<rxbot --trace>", "exec"), namespace)
    return namespace



@dataclass(frozen=True)
class TracedSource:
    """How a traced pipe source's elements are checked (see the module docstring):
    ``check``, the expression over ``x`` that a fused segment's traced chunk entry
    compiles inline (None: it cannot be inlined), with ``hooks = (hit, off, failed)``;
    ``wrap(iterator)``, the generator every other way of taking an element goes through."""

    check: Optional[str]
    hooks: Tuple[Callable[[Any], None], Callable[[], None], Callable[[Any, Exception], bool]]
    wrap: Callable[[Iterator[Any]], Iterator[Any]]


# ---- what a trace holds ---------------------------------------------------------------------------
@dataclass
class Trace:
    """One traced source item: its hops in order and where its items ended."""

    number: int
    source: str
    item: Any  # the preview text, or the value itself until shown (see :func:`shown`)
    hops: List[Dict[str, Any]] = field(default_factory=list)
    ends: List[str] = field(default_factory=list)

    def add(self, step: Any, event: str, detail: Any = "") -> None:
        """A hop; ``detail`` is text, or a :class:`Value` previewed when first shown."""
        if len(self.hops) < MAX_HOPS:
            self.hops.append({"step": str(step), "event": event, "detail": detail})
        elif len(self.hops) == MAX_HOPS:
            self.hops.append({"step": "", "event": "...", "detail": f"more than {MAX_HOPS} hops: the rest not kept"})

    def end(self, text: str) -> None:
        self.ends.append(text)

    def as_dict(self) -> Dict[str, Any]:
        self.item = shown(self.item)
        for hop in self.hops:
            hop["detail"] = shown(hop["detail"])
        return {"number": self.number, "source": self.source, "item": self.item,
                "hops": [dict(hop) for hop in self.hops], "ended": list(self.ends)}


class Value:
    """A traced value whose preview is made when the trace is first shown, not while the
    item is pushed (a preview costs microseconds: redaction's rules): only for values
    that cannot change meanwhile (numbers, text, bytes); others are shown at once."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


#: types whose values cannot change after the hop (their preview may wait)
_FIXED = frozenset({int, float, complex, bool, str, bytes, type(None)})


def value_of(value: Any) -> Any:
    """What a hop keeps of ``value``: a :class:`Value` to preview later, or the preview."""
    return Value(value) if type(value) in _FIXED else preview(value, VALUE_LIMIT)


def shown(detail: Any) -> str:
    return preview(detail.value, VALUE_LIMIT) if isinstance(detail, Value) else str(detail)


def trace_lines(traces: Sequence[Dict[str, Any]], expr: str = "") -> List[str]:
    """The traces as text (what ``rxbot run --trace`` prints after the report)."""
    if not traces:
        return [f"trace {expr!r}: no source item matched" if expr else "trace: no source item matched"]
    lines = []
    for t in traces:
        if not t["number"]:  # the note that more items matched than were followed
            lines += [f"trace: {end}" for end in t["ended"]]
            continue
        lines.append(f"trace #{t['number']}: {t['item']} from {t['source']}")
        for hop in t["hops"]:
            lines.append(f"  {hop['step']}: {hop['event']}" + (f" {hop['detail']}" if hop["detail"] else ""))
        for end in t["ended"]:
            lines.append(f"  ended: {end}")
    return lines


def report_traces(report: Any, last: Optional[int] = None) -> Optional[List[Dict[str, Any]]]:
    """The traces of ``report`` as plain dicts (mid-run too: the live Trace objects are
    shown), the ``last`` ones only if given; None when the run had no trace."""
    traces = getattr(report, "traces", None)
    if traces is None:
        return None
    chosen = list(traces) if last is None else list(traces)[-last:]
    return [t.as_dict() if isinstance(t, Trace) else t for t in chosen]


def report_trace_lines(report: Any, last: Optional[int] = None) -> List[str]:
    """:func:`trace_lines` of ``report``'s traces, redacted; [] when it had no trace."""
    traces = report_traces(report, last)
    if traces is None:
        return []
    return [redact(line) for line in trace_lines(traces, getattr(report, "trace_expression", ""))]


# ---- the step tree, as the tracer sees it ----------------------------------------------------------
@dataclass
class _Place:
    """A step the trace function can see (its code runs as a Python frame)."""

    sid: StepId
    step: Any
    kind: str  # "step", "holder" (a node keeping items for a batch), "rule" (a route's route_func)
    arg: str  # the name of the item argument in the frame


def _code_of(fn: Any) -> Tuple[Optional[CodeType], int]:
    """The code object a call of ``fn`` runs and the position of the item argument."""
    if isinstance(fn, partial):
        return None, 0
    code = getattr(fn, "__code__", None)
    if code is not None:
        return code, 0
    func = getattr(fn, "__func__", None)  # a bound method
    if func is not None and getattr(func, "__code__", None) is not None:
        return func.__code__, 1
    call = getattr(type(fn), "__call__", None)
    code = getattr(call, "__code__", None)
    return (code, 1) if code is not None else (None, 0)


def _is_async(code: CodeType) -> bool:
    import inspect

    return bool(code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_GENERATOR))


class _Tree:
    """The pipes' steps: which code is which step, and what follows each step."""

    def __init__(self, pipes: Sequence[Any]) -> None:
        self.places: Dict[CodeType, List[_Place]] = {}
        self.following: Dict[StepId, Optional[Tuple[StepId, Any]]] = {}
        self.parent: Dict[StepId, Tuple[StepId, Any]] = {}  # a branch's step -> its route
        self.steps: Dict[StepId, Any] = {}
        for index, pipe in enumerate(pipes, start=1):
            root = StepId.root(f"P{index}", index)
            self._sequence(pipe.steps, root)
            for sid, step in walk(pipe.steps, root):
                self.steps[sid] = step
                self._place(sid, step)
                if isinstance(step, Route):
                    for b, branch in enumerate(step.branches):
                        self._sequence(branch, sid.branch(b + 1))
                        for k in range(len(branch)):
                            self.parent[sid.branch(b + 1).step(k + 1, branch[k].label())] = (sid, step)

    def _sequence(self, steps: Sequence[Any], where: StepId) -> None:
        ids = [where.step(k + 1, s.label()) for k, s in enumerate(steps)]
        for k, sid in enumerate(ids):
            self.following[sid] = (ids[k + 1], steps[k + 1]) if k + 1 < len(ids) else None

    def _add(self, code: Optional[CodeType], arg: int, place_of: Callable[[str], _Place]) -> None:
        if code is None or _is_async(code) or arg >= code.co_argcount:
            return
        self.places.setdefault(code, []).append(place_of(code.co_varnames[arg]))

    def _place(self, sid: StepId, step: Any) -> None:
        if isinstance(step, Route):
            if step.route_func is not None:
                code, arg = _code_of(step.route_func)
                self._add(code, arg, lambda name: _Place(sid, step, "rule", name))
            return
        if isinstance(step, (Const, Loop)):
            return
        fn = step.fn if isinstance(step, Step) else step
        kind = "holder" if isinstance(fn, Node) and fn.holds_items else "step"
        code, arg = _code_of(fn)
        self._add(code, arg, lambda name: _Place(sid, step, kind, name))

    def is_sink(self, sid: StepId) -> bool:
        """Is ``sid`` the last step of a pipe, or of a branch that does not join (so what
        it returns is consumed, as the report counts it)?"""
        if self.following.get(sid) is not None:
            return False
        route = self.parent.get(sid)
        return route is None or not route[1].join

    def pick(self, places: List[_Place], after: Optional[StepId]) -> _Place:
        """The place a call of a code used by several steps stands for: the step after
        the one that produced the value, else the first."""
        if len(places) > 1 and after is not None:
            nxt = self.following.get(after)
            for place in places:
                if nxt is not None and place.sid == nxt[0]:
                    return place
        return places[0]

    def describe_next(self, sid: Optional[StepId], value: Any, stopped: bool) -> str:
        """Where a value step ``sid`` sent on (and no later step was seen taking) went."""
        if sid is None:
            return "not seen after the source"
        nxt = self.following.get(sid)
        if nxt is None:
            if len(sid.positions) == 1:
                return f"reached the end of the pipe after {sid}"
            route = self.parent.get(sid)
            if route is not None and not route[1].join:
                return f"reached the end of the branch after {sid} (it does not join)"
            if route is not None:  # a joining route: its outputs go on after it
                return self.describe_next(route[0], value, stopped)
            return f"left the branch after {sid}"
        nid, nstep = nxt
        if isinstance(nstep, Route) and nstep.kind != "filter" and (
                nstep.share or nstep.route_func is not None or isinstance(value, nstep.route_type)):
            # not seen in its branches (a rule said no), or shared: it went on past the route
            return self.describe_next(nid, value, stopped)
        if isinstance(nstep, Route) and nstep.kind == "filter":
            if not isinstance(value, nstep.route_type):
                return f"dropped by Filter {nid} (not a {_type_name(nstep.route_type)})"
            return f"dropped by Filter {nid} (its rule)"
        if isinstance(nstep, Route) and nstep.route_func is None and not isinstance(value, nstep.route_type):
            return f"went past {nid} (not a {_type_name(nstep.route_type)}) and was not seen further"
        if stopped:
            return f"cut off by the stop before {nid}"
        code, _ = _code_of(nstep.fn if isinstance(nstep, Step) else nstep)
        if code is None:
            if len(nid.positions) == 1 and self.following.get(nid) is None:
                return f"reached the end of the pipe: given to {nid}"
            return f"passed to {nid} (not a Python function: not followed further)"
        return f"not seen at {nid}"


def _type_name(types: Any) -> str:
    if isinstance(types, tuple):
        return " or ".join(t.__name__ for t in types)
    return str(types.__name__)


# ---- the tracer --------------------------------------------------------------------------------------
class _Owned:
    """A traced value: the trace it belongs to, the step that gave it (None: the source),
    and whether a later step was seen taking it."""

    __slots__ = ("value", "trace", "sid", "taken")

    def __init__(self, value: Any, trace: Trace, sid: Optional[StepId]) -> None:
        self.value = value
        self.trace = trace
        self.sid = sid
        self.taken = False


class Tracer:
    """The trace of one run (see the module docstring). ``expr`` was checked with
    :func:`compile_expression`."""

    def __init__(self, expr: str, pipes: Sequence[Any]) -> None:
        self.expr = expr
        self.tree = _Tree(pipes)
        self.compiled = _compiled(expr)
        self.traces: List[Trace] = []
        self.matched = 0
        self.expr_failures = 0
        self.owned: Dict[int, _Owned] = {}
        self.full = False  # MAX_VALUES reached
        self.ctx: Any = None
        self.thread = threading.get_ident()
        self._depth = 0
        self._saved: Any = None

    # -- the engine's side (rxbot.engine.hooks.RunHooks.tracer) -------------------------------------
    def attach(self, ctx: Any) -> None:
        self.ctx = ctx
        ctx.report.traces = []  # the live list the watch view reads; the dicts at the end
        ctx.letter_hooks.append(self._letter)

    def source(self, where: StepId, check: str | None = None) -> "TracedSource":
        """What the pipe's source at ``where`` hands its elements through (see
        :class:`TracedSource`); ``check``: the expression the pipe's plan put inline into
        the fused steps the source slices into (:func:`rxbot.plan.inline_check`), else
        None (every element goes through the wrapping generator)."""
        hit, failed = self._hooks(where)
        return TracedSource(check, (hit, self._off, failed),
                            partial(self.compiled["traced_source"], hit=hit, next_one=self._off, failed=failed))

    def _hooks(self, where: StepId) -> Tuple[Callable[[Any], None], Callable[[Any, Exception], bool]]:
        """``hit(item)`` (a source item matched: follow it and turn the trace function
        on) and ``failed(item, exc)`` (the expression raised on it: not traced; returns
        False, what the inline check takes as its result)."""
        label = str(where)

        def hit(item: Any) -> None:
            self.matched += 1
            if len(self.traces) >= MAX_TRACES:
                return
            trace = Trace(len(self.traces) + 1, label, value_of(item))
            self.traces.append(trace)
            self.ctx.report.traces.append(trace)
            self._own(item, trace, where)
            trace.add(where, "emitted", trace.item)
            self._on()

        def failed(item: Any, exc: Exception) -> bool:
            if not self.expr_failures:
                log.warning("rxbot: the trace expression %r raised %s on %s; such items are not traced",
                            self.expr, type(exc).__name__, preview(item, 80))
            self.expr_failures += 1
            return False

        return hit, failed

    def slots(self, runner: Any, finish: Any, fail: Any, stats_of: Callable[[Any], Any], rt: Any
              ) -> Tuple[Any, Any, Any]:
        """An async step's calls, watched for traced works (one dict look-up per call)."""
        if finish is None or fail is None:
            return runner, finish, fail
        owned = self.owned

        def traced_runner(work: Any) -> Any:
            entry = owned.get(id(work))
            if entry is None or entry.value is not work:
                return runner(work)
            sid = self._step_of(stats_of(work))
            entry.taken = True
            entry.trace.add(sid, "in", value_of(work))
            return self._watched(runner, work, entry.trace, sid)

        def traced_finish(work: Any, value: Any) -> Any:
            entry = owned.get(id(work))
            if entry is None or entry.value is not work:
                return finish(work, value)
            sid = self._step_of(stats_of(work))
            self._gave(entry.trace, sid, value)
            self._on()
            try:
                return finish(work, value)
            finally:
                self._off()

        def traced_fail(work: Any, exc: Exception) -> None:
            entry = owned.get(id(work))
            if entry is None or entry.value is not work:
                fail(work, exc)
                return
            sid = self._step_of(stats_of(work))
            self._failed(entry.trace, sid, exc)
            self._on()
            try:
                fail(work, exc)
            finally:
                self._off()

        return traced_runner, traced_finish, traced_fail

    def finished(self, ctx: Any, error: Optional[BaseException]) -> None:
        """The run is over: settle what each traced value did last; the report gets the traces."""
        self._off(force=True)
        stopped = error is not None
        for entry in self.owned.values():
            if not entry.taken:
                entry.trace.end(self.tree.describe_next(entry.sid, entry.value, stopped))
        for trace in self.traces:
            if not trace.ends:
                trace.end("the run stopped before it went further" if stopped else "not seen after its last hop")
        ctx.report.traces = [t.as_dict() for t in self.traces]
        ctx.report.trace_expression = self.expr
        if self.matched > len(self.traces):
            ctx.report.traces.append({"number": 0, "source": "", "item": "", "hops": [],
                                      "ended": [f"{self.matched - len(self.traces)} more items matched; "
                                                f"the first {MAX_TRACES} were followed"]})
        self.owned.clear()

    # -- recording -----------------------------------------------------------------------------------
    def _own(self, value: Any, trace: Trace, sid: Optional[StepId]) -> None:
        if len(self.owned) >= MAX_VALUES:  # a traced item that fans out enormously
            if not self.full:
                self.full = True
                trace.add(sid or "", "...", f"more than {MAX_VALUES} traced values: the rest not followed")
            return
        self.owned[id(value)] = _Owned(value, trace, sid)

    def _step_of(self, stats: Any) -> StepId:
        name = stats.name  # StepStats is named by its step's id
        return name if isinstance(name, StepId) else StepId.of(str(name))

    def _gave(self, trace: Trace, sid: StepId, value: Any) -> None:
        """Step ``sid`` returned ``value`` for a traced item: its outputs are traced too."""
        if value is None:
            return
        MANY, ONE_AS_IS, SINGLE, kind_of = _result_kinds()
        if type(value) in SINGLE:
            outputs = [value]
        else:
            kind = kind_of(value)
            if kind == ONE_AS_IS:
                outputs = [value.item]
            elif kind == MANY and isinstance(value, (list, tuple, set, frozenset)):
                outputs = list(value)
                trace.add(sid, "out", f"{len(outputs)} items: {preview(value, VALUE_LIMIT)}")
                for v in outputs:
                    self._own(v, trace, sid)
                return
            elif kind == MANY:
                trace.add(sid, "out", f"{type(value).__name__} (its items are not followed)")
                trace.end(f"spread by {sid} from a {type(value).__name__} (not followed)")
                return
            else:
                outputs = [value]
        trace.add(sid, "out", value_of(outputs[0]))
        self._own(outputs[0], trace, sid)

    def _failed(self, trace: Trace, sid: StepId, exc: BaseException, tb: Optional[TracebackType] = None) -> None:
        where = user_frame(tb or exc.__traceback__)
        trace.add(sid, "failed", f"{type(exc).__name__}: {redact(str(exc))[:300]}{where}")
        policy = self._policy(sid)
        if policy == "raise":
            trace.end(f"failed in {sid}: the run stopped (policy raise)")
        elif policy == "retry":
            trace.add(sid, "retries", "spent (policy retry)")

    def _policy(self, sid: StepId) -> str:
        rt = self.ctx.runtimes.get(sid) if self.ctx is not None else None
        return getattr(rt, "policy", "raise")

    def _letter(self, letter: Any) -> None:
        entry = self.owned.get(id(letter.item))
        if entry is None or entry.value is not letter.item:
            return
        entry.taken = True
        step = getattr(letter, "path", None) or letter.step
        entry.trace.add(step, "dead-lettered", f"{type(letter.exception).__name__}")
        entry.trace.end(f"dead-lettered at {step}")

    async def _watched(self, runner: Any, work: Any, trace: Trace, sid: StepId) -> Any:
        """A traced async call: its attempts (under retries) and a None result."""
        attempts = [0]
        if isinstance(runner, partial) and runner.args:  # retries: rt.call_with_retry(fn, item)
            fn = runner.args[0]

            def counted(x: Any) -> Any:
                attempts[0] += 1
                if attempts[0] > 1:
                    trace.add(sid, "retry", f"attempt {attempts[0]}")
                return fn(x)

            result = runner.func(counted, work)
        else:
            result = runner(work)
        if hasattr(result, "__await__"):
            result = await result
        if result is None:
            node = self.tree.steps.get(sid)
            node = node.fn if isinstance(node, Step) else node
            holds = isinstance(node, Node) and node.holds_items
            trace.add(sid, "held" if holds else "returned None", "")
            trace.end(f"into {sid} (held for its batch, written with it)" if holds
                      else f"filtered: {sid} returned None")
        return result

    # -- the trace function ----------------------------------------------------------------------------
    def _on(self) -> None:
        if threading.get_ident() != self.thread:
            return
        if self._depth == 0:
            self._saved = sys.gettrace()
            sys.settrace(self._call)
        self._depth += 1

    def _off(self, force: bool = False) -> None:
        if self._depth == 0 or threading.get_ident() != self.thread:  # the common case first: off already
            return
        self._depth = 0 if force else self._depth - 1
        if self._depth == 0:
            sys.settrace(self._saved)
            self._saved = None

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call":
            return None
        places = self.tree.places.get(frame.f_code)
        if places is None:
            return None
        place = places[0]
        value = frame.f_locals.get(place.arg)
        entry = self.owned.get(id(value))
        if entry is None or entry.value is not value:
            return None
        place = self.tree.pick(places, entry.sid)
        trace = entry.trace
        if place.kind != "rule":
            route = self.tree.parent.get(place.sid)
            if route is not None and place.sid.positions[-1] == 1 and entry.sid != place.sid:
                trace.add(route[0], "route", f"into branch {place.sid.positions[-2]}")
                if not route[1].share:  # a shared item goes on past the route too
                    entry.taken = True
            else:
                entry.taken = True
            trace.add(place.sid, "in", value_of(value))
        return _FrameWatch(self, place, trace, value)


_KINDS: Optional[Tuple[Any, Any, Any, Callable[[Any], Any]]] = None


def _result_kinds() -> Tuple[Any, Any, Any, Callable[[Any], Any]]:
    """The engine's result kinds (rxbot.engine.results), imported on the first traced
    result, not per result (an import statement per step result was a third of a
    followed item's cost)."""
    global _KINDS
    if _KINDS is None:
        from ..engine.results import MANY, ONE_AS_IS, SINGLE, kind_of

        _KINDS = (MANY, ONE_AS_IS, SINGLE, kind_of)
    return _KINDS


class _FrameWatch:
    """The local trace function of one traced step call: its result or its error."""

    __slots__ = ("tracer", "place", "trace", "value", "raised", "tb")

    def __init__(self, tracer: Tracer, place: _Place, trace: Trace, value: Any) -> None:
        self.tracer = tracer
        self.place = place
        self.trace = trace
        self.value = value
        self.raised: Optional[BaseException] = None
        self.tb: Optional[TracebackType] = None  # the exception's own is set only as it leaves

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "exception":
            self.raised, self.tb = arg[1], arg[2]
        elif event == "line":
            self.raised = None
        elif event == "return":
            self._returned(arg)
        return self

    def _returned(self, value: Any) -> None:
        tracer, place, trace, sid = self.tracer, self.place, self.trace, self.place.sid
        if self.raised is not None and value is None:
            tracer._failed(trace, sid, self.raised, self.tb)
            if place.kind == "rule":
                tracer.owned.pop(id(self.value), None)
            return
        if place.kind == "rule":
            route = place.step
            entry = tracer.owned.get(id(self.value))
            if entry is not None and entry.value is self.value:
                entry.sid = sid  # it got this far: what follows the route is next
            if route.kind == "filter":
                if not value:
                    if entry is not None:
                        entry.taken = True
                    trace.add(sid, "dropped", "by this Filter's rule (route_func returned a false value)")
                    trace.end(f"dropped by Filter {sid}")
                else:
                    trace.add(sid, "passed", "this Filter's rule")
            else:
                trace.add(sid, "route", f"{'matched: into its branches' if value else 'not matched: went past'}")
            return
        if value is None:
            if place.kind == "holder":
                trace.add(sid, "held", "kept for its batch")
                trace.end(f"into {sid} (held for its batch, written with it)")
            elif tracer.tree.is_sink(sid):  # what a pipe's last step returns goes nowhere
                trace.add(sid, "consumed", "")
                trace.end(f"reached the end of the pipe: consumed by {sid}")
            else:
                trace.add(sid, "filtered", "the step returned None")
                trace.end(f"filtered: {sid} returned None")
            return
        if place.kind == "holder":
            trace.add(sid, "written", value_of(value))
        tracer._gave(trace, sid, value)


#: where the frames of the standard library, installed packages and rxbot itself live:
#: the user's frame is the deepest one that is none of those
_LIBRARY = tuple({os.path.dirname(os.path.abspath(__file__)) + os.sep}
                 | {os.path.abspath(p) + os.sep for k, p in sysconfig.get_paths().items()
                    if k in ("stdlib", "platstdlib", "purelib", "platlib")})


def user_frame(tb: Optional[TracebackType]) -> str:
    """`` (at file:line in function)`` for the deepest frame of the user's own code in
    ``tb`` (not rxbot, the standard library or an installed package), else ``""``."""
    found = ""
    while tb is not None:
        code = tb.tb_frame.f_code
        path = os.path.abspath(code.co_filename)
        if not path.startswith(_LIBRARY) and not code.co_filename.startswith("<"):
            found = f" (at {code.co_filename}:{tb.tb_lineno} in {code.co_name})"
        tb = tb.tb_next
    return found


def tracer_for(pipes: Sequence[Any], expr: Any, origin: str = "config.trace") -> Tracer:
    return Tracer(compile_expression(expr, origin), pipes)


__all__ = ["Tracer", "Trace", "TracedSource", "TraceExpressionError", "compile_expression", "inline_check", "trace_lines", "user_frame", "tracer_for",
           "report_traces", "report_trace_lines"]

"""The façade: ``Pipe`` and the routes build a plain tree of step objects.

That tree is the single source of truth: :mod:`rxbot.engine` compiles it into a
reactivex pipeline, :mod:`rxbot.draw.render` draws it, :mod:`rxbot.replay` keys its cache by
it. Nothing here runs anything.
"""
from __future__ import annotations

import collections.abc
import inspect
from typing import Any, Callable, List, Sequence, Union

import reactivex

from .. import registry
from ..display import Displayable
from .node import Loop, Node, Timer
from .rx_source import from_observable
from .step import Const, RxOp, Step, callable_label, is_rx_operator

TreeStep = Union[Step, Const, RxOp, Node, "Route"]


def to_step(obj: Any, where: str) -> TreeStep:
    """Turn whatever a user put in a Pipe into a tree element (DESIGN §2 'A step')."""
    if isinstance(obj, (Step, Const, RxOp, Node, Route)):
        return obj
    if isinstance(obj, Pipe):
        raise TypeError(f"{where}: a Pipe here must be inlined by its owner")  # handled in _to_steps
    if isinstance(obj, reactivex.Observable):  # an Observable is a source
        return from_observable(obj)
    if is_rx_operator(obj):
        return RxOp(obj)
    if isinstance(obj, type) and issubclass(obj, (Node, Route, Pipe)):
        raise TypeError(
            f"{where}: got the class {obj.__name__}; pass an instance (e.g. {obj.__name__}(...))"
        )
    if callable(obj):  # functions, bound methods, partials, and classes used as converters (str, int)
        return Step(obj)
    if isinstance(obj, (str, bytes, bytearray, dict, int, float, complex, bool, tuple)) or obj is None:
        if obj is None:
            raise TypeError(f"{where}: None is not a step (a constant None would drop every item)")
        return Const(obj)
    if isinstance(obj, (collections.abc.Iterable, collections.abc.Iterator)) and not isinstance(
        obj, collections.abc.AsyncIterable
    ):
        return Loop(obj)
    if isinstance(obj, collections.abc.Coroutine):
        obj.close()
        raise TypeError(f"{where}: got a coroutine object; pass the async function itself, not its call")
    # any other plain value is a constant replacing every item
    return Const(obj)


def _to_steps(objs: Sequence[Any], owner: str) -> List[TreeStep]:
    """Normalise steps; a Pipe given as a step is a sub-flow: it is taken out of the
    run registry and its steps are spliced in (so ``Fork(Pipe(a, b), Pipe(c))`` gives
    two multi-step branches)."""
    out: List[TreeStep] = []
    for i, o in enumerate(objs):
        if isinstance(o, Pipe):
            o._adopt()
            out.extend(o.steps)
        else:
            out.append(to_step(o, f"{owner} step {i + 1}"))
    return out


class Route:
    """``Route(*steps, route_type=object, route_func=None, share=True, join=False)``.

    An item *matches* when ``isinstance(item, route_type)`` and ``route_func(item)`` is
    truthy (``route_func`` is evaluated only for items of ``route_type``). Matched items
    enter the sub-flow(s); with ``share=True`` every item also continues on the main pipe,
    with ``share=False`` only unmatched ones do. With ``join=True`` sub-flow output flows
    back into the main pipe at this point, otherwise it is discarded.
    """

    kind = "route"
    #: True when each positional argument is its own parallel sub-flow (Fork family)
    parallel = False
    #: a route whose whole meaning is its sub-flow rejects an empty one at build time:
    #: ``Join()`` would swallow every matched item without a counter saying why
    needs_steps = False

    def __init__(
        self,
        *steps: Any,
        route_type: Union[type, tuple] = object,
        route_func: Callable[[Any], Any] | None = None,
        share: bool = True,
        join: bool = False,
        name: str | None = None,
    ) -> None:
        cls = type(self).__name__
        if self.needs_steps and not steps:
            raise TypeError(f"{cls}: needs at least one step (an empty {cls}() would send matched "
                            f"items into a sub-flow that does nothing)")
        if isinstance(route_type, list):  # databot accepted a list of classes
            route_type = tuple(route_type)
        if not (isinstance(route_type, type) or (
            isinstance(route_type, tuple) and route_type and all(isinstance(t, type) for t in route_type)
        )):
            got = callable_label(route_type) if callable(route_type) else repr(route_type)
            name = getattr(route_type, "__name__", "")
            shown = "lambda x: ..." if name == "<lambda>" or not name.isidentifier() else name
            tip = f"; a test of the item goes in route_func=: {cls}(route_func={shown})" if callable(route_type) else ""
            raise TypeError(f"{cls}: argument 'route_type' must be a class or a tuple of classes; got {got}{tip}")
        if route_func is not None and not callable(route_func):
            raise TypeError(f"{cls}: argument 'route_func' must be callable; got {route_func!r}")
        if inspect.iscoroutinefunction(route_func) or inspect.iscoroutinefunction(
                getattr(route_func, "__call__", None)):
            raise TypeError(
                f"{cls}: argument 'route_func' must be a plain (sync) predicate; an async one "
                f"would match every item. Compute the flag in an async step before the route")
        for arg, val in (("share", share), ("join", join)):
            if not isinstance(val, bool):
                raise TypeError(f"{cls}: argument '{arg}' must be True or False; got {val!r}")
        self.route_type = route_type
        self.route_func = route_func
        self.share = share
        self.join = join
        self.name = name
        if self.parallel:
            self.branches: List[List[TreeStep]] = [
                _to_steps([s], f"{cls} branch {i + 1}") for i, s in enumerate(steps)
            ]
        else:
            self.branches = [_to_steps(steps, cls)] if steps else []

    def label(self) -> str:
        if self.name:
            return self.name
        parts = []
        if self.route_type is not object:
            rt = self.route_type
            parts.append(
                "|".join(t.__name__ for t in rt) if isinstance(rt, tuple) else rt.__name__
            )
        if self.route_func is not None:
            parts.append(callable_label(self.route_func))
        return f"{type(self).__name__}({', '.join(parts)})" if parts else type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.label()} share={self.share} join={self.join} branches={len(self.branches)}>"


class Branch(Route):
    """Side flow: matched items also go through ``steps``; their results are discarded."""

    kind = "branch"
    needs_steps = True

    def __init__(self, *steps: Any, route_type=object, route_func=None, share: bool = True,
                 join: bool = False, name: str | None = None) -> None:
        super().__init__(*steps, route_type=route_type, route_func=route_func, share=share, join=join, name=name)


class Return(Route):
    """Matched items go through ``steps`` and their results come back; unmatched pass on."""

    kind = "return"
    needs_steps = True

    def __init__(self, *steps: Any, route_type=object, route_func=None, share: bool = False,
                 join: bool = True, name: str | None = None) -> None:
        super().__init__(*steps, route_type=route_type, route_func=route_func, share=share, join=join, name=name)


class Filter(Route):
    """Matched items pass, the rest are dropped (by the user's rule, so not an error)."""

    kind = "filter"

    def __init__(self, route_type=object, route_func=None, name: str | None = None) -> None:
        super().__init__(route_type=route_type, route_func=route_func, share=False, join=True, name=name)


class Fork(Route):
    """Each argument is its own parallel sub-flow and receives every matched item."""

    kind = "fork"
    needs_steps = True
    parallel = True

    def __init__(self, *steps: Any, route_type=object, route_func=None, share: bool = True,
                 join: bool = False, name: str | None = None) -> None:
        super().__init__(*steps, route_type=route_type, route_func=route_func, share=share, join=join, name=name)


class Join(Route):
    """A Fork whose branch outputs are merged into the main pipe (share=False, join=True)."""

    kind = "join"
    needs_steps = True
    parallel = True

    def __init__(self, *steps: Any, route_type=object, route_func=None, share: bool = False,
                 join: bool = True, name: str | None = None) -> None:
        super().__init__(*steps, route_type=route_type, route_func=route_func, share=share, join=join, name=name)


class BlockedJoin(Route):
    """For each matched input, run every branch on it and emit one tuple of their results
    in argument order, correlated by input occurrence, not by arrival order.

    Per branch the tuple holds: its single output; ``None`` if it emitted nothing (it
    dropped the item); a list if it emitted several (it fanned out).
    """

    kind = "blockedjoin"
    parallel = True
    needs_steps = True

    def __init__(self, *steps: Any, route_type=object, route_func=None, share: bool = False,
                 join: bool = True, name: str | None = None) -> None:
        super().__init__(*steps, route_type=route_type, route_func=route_func, share=share, join=join, name=name)


class Pipe(Displayable):
    """A chain of steps fed by one trigger item (``0``). Built pipes are registered with
    :class:`~rxbot.botframe.BotFrame` and run together by ``BotFrame.run()``. In a
    notebook a Pipe shows its graph (with its last run's counts)."""

    def __init__(self, *steps: Any, name: str | None = None) -> None:
        if not steps:
            raise TypeError("Pipe: needs at least one step")
        self.steps: List[TreeStep] = _to_steps(steps, "Pipe")
        self.name = name
        self._finished = False
        self._running = False  # one run of this object at a time (BotFrame.run_async)
        self.report: Any = None  # the RunReport of its last run
        registry.register(self)

    def _adopt(self) -> None:
        """This Pipe became a sub-flow of another step: it no longer runs on its own."""
        registry.unregister(self)

    def finished(self) -> bool:
        """True once this pipe has run to its end (use as ``Timer(until=p.finished)``)."""
        return self._finished

    async def run_async(self):
        """Run just this pipe inside the current event loop; returns its run report."""
        return await registry.service("run_async")(pipes=[self])

    def run(self, **options: Any):
        """Run just this pipe to completion (blocking); ``options`` are
        ``BotFrame.run``'s (``stats``, ``interval``, ``cluster``, ``shards``, ``watch``)."""
        return registry.service("run")(pipes=[self], **options)

    def render(self, path: str, format: str | None = None, **kwargs: Any):
        """Draw this pipe (see ``BotFrame.render``); it is not run."""
        return registry.service("render")([self], path, format=format, **kwargs)

    def explain(self, source: bool = False) -> str:
        """How this pipe would run, in words (see ``BotFrame.explain``); it is not run.
        ``source=True``: with each fused segment's generated code."""
        text: str = registry.service("explain")([self], source)
        return text

    def label(self) -> str:
        return self.name or "Pipe"

    def __repr__(self) -> str:
        return f"Pipe({', '.join(s.label() for s in self.steps)})"


# databot's short aliases
P = Pipe
B = Branch
T = Timer
F = Fork
J = Join
Fi = Filter

__all__ = [
    "Pipe", "Loop", "Timer", "Route", "Branch", "Return", "Filter", "Fork", "Join",
    "BlockedJoin", "P", "B", "T", "F", "J", "Fi", "to_step",
]

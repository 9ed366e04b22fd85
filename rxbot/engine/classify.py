"""What kind of operator a tree element becomes — questions the compiler, render and
replay all ask, answered in one place."""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from ..flow import Route
from ..node import Loop, Node, Timer, is_async_callable
from ..step import Const, Step


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


__all__ = ["runs_inline", "node_of", "callable_of", "overrides_flush", "is_generator_function",
           "options_of", "matcher"]

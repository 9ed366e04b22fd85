"""What replay needs to know about a top-level step: whether pushing an item into it
returns only once the item is handled, whether it may retry, whether it ever ends, and
where its BlockedJoins are."""
from __future__ import annotations

from typing import Any, List, Sequence

from ..config import config
from ..flow import BlockedJoin, Route
from ..node import Loop, Node, Timer
from ..step import Step


def _retrying(step: Any) -> bool:
    if isinstance(step, Step):
        policy, retries = step.option("on_error"), step.option("retries")
    elif isinstance(step, Node):
        policy, retries = step.on_error, step.retries
    else:
        return False
    return bool(retries) or config.policy(policy) == "retry"


def _sync_route(route: Route) -> bool:
    """A route whose every nested step runs inline (so pushing an item into it returns
    only once the route has handled it)."""
    from ..engine.classify import runs_inline

    if isinstance(route, BlockedJoin) or route.route_func_async:
        return False
    for branch in route.branches:
        for step in branch:
            if isinstance(step, Route) and step.kind != "filter":
                if not _sync_route(step):
                    return False
            elif not runs_inline(step) or _retrying(step):
                return False
    return True


def _blocked_prefixes(steps: Sequence[Any], path: str, out: List[str]) -> List[str]:
    """The paths of the BlockedJoins in ``steps``, named the way the compiler names them."""
    for i, step in enumerate(steps):
        if isinstance(step, Route):
            where = f"{path}[{i + 1}] {step.label()}"
            if isinstance(step, BlockedJoin):
                out.append(where + "/")
            for b, branch in enumerate(step.branches):
                _blocked_prefixes(branch, f"{where}/{b + 1}", out)
    return out


def _infinite(step: Any) -> bool:
    import itertools

    node = step.fn if isinstance(step, Step) else step
    if isinstance(node, Timer):
        return node.max_time is None and node.until is None
    if isinstance(node, Loop):
        return isinstance(node.iterable, (itertools.count, itertools.cycle))
    return False

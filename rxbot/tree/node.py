"""Nodes: steps that carry state or resources (Loop, Timer, HttpLoader, Query, ...).

A Node is a callable step with lifecycle hooks. The engine calls ``init()`` once before
the first item and ``close()`` once after the last, however many pipes share the node
(refcounted, like databot), so a connection pool or a file is opened once per run.
"""
from __future__ import annotations

import inspect
import types
from typing import Any, Callable, Iterable, List, Mapping


BOOST_TYPES = ("thread", "process", "cluster")


class Node:
    """Base class for stateful steps.

    Subclasses override ``__call__(item)`` (sync or ``async def``) and optionally
    ``init``/``close`` (resources) and ``flush`` (emit what is still buffered when the
    input ends, e.g. a partial batch).  Class attributes give per-node defaults for the
    same options :class:`rxbot.Step` accepts.
    """

    concurrency: int | None = None
    on_error: str | None = None
    retries: int | None = None
    timeout: float | None = None
    #: True for nodes that return None while they *hold* an item to emit later (from a
    #: later call or ``flush()``, e.g. a batching Insert): the run report then does not
    #: count those Nones as items filtered out
    holds_items: bool = False
    #: 'thread' / 'process' / 'cluster' to run ``__call__`` off the event loop
    #: (named so it does not clash with the ``Node.boost`` decorator)
    boost_kind: str | None = None
    name: str | None = None

    # lifecycle state as class defaults, so a subclass that forgets super().__init__()
    # still works
    _refs = 0
    _inited = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = _DotDict(kwargs)  # databot nodes read self.kwargs.host
        # _refs/_inited start as the class defaults: an idle node holds no lifecycle
        # state of its own (10,000 pipes are built before any runs; issue 26, item 11)
        self.init_param()

    def init_param(self) -> None:
        """databot's construction hook: runs at the end of ``Node.__init__``."""

    # ---- lifecycle (refcounted: one init/close per run however often the node is used)
    async def init(self) -> None:
        """Open resources. Runs once per run, before the first item."""

    async def close(self) -> None:
        """Release resources. Runs once per run, after the last item or on failure."""

    def settled_at_close(self) -> tuple:
        """For a node that ``holds_items``: what its last ``close()`` did with the items a
        stopped run left in it, as ``(finished, rejected, reclaimed)``: how many it
        finished without passing them on (e.g. rows committed at close), the
        ``(item, exception)`` pairs it could not finish, and how many of those items
        belonged to calls the engine had counted as cancelled. The run report counts
        them (``closed``, ``failed`` and dead letters), so nothing held is left uncounted."""
        return 0, [], 0

    async def flush(self) -> Any:
        """Called when this node's input has ended; the return value goes downstream
        under the usual return-value rules (None emits nothing)."""
        return None

    async def node_init(self) -> None:
        self._refs += 1
        if self._inited:
            return
        try:
            await self.init()
        except BaseException:
            self._refs -= 1  # not up: a later run must try init() again
            raise
        self._inited = True

    async def node_close(self) -> None:
        self._refs -= 1
        if self._refs > 0 or not self._inited:
            return
        self._inited = False
        await self.close()

    def __call__(self, item: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(item)")

    # ---- presentation
    def describe_item(self, item: Any) -> str:
        """How an item this node failed on may be shown in logs and error messages.
        Override to redact secrets (HttpLoader shows only method and masked URL)."""
        from ..errors import short_repr

        return short_repr(item)

    def label(self) -> str:
        """The name shown in rendered graphs and error messages."""
        return self.name or type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.label()}>"

    # ---- databot's boost decorator
    @staticmethod
    def boost(fn: Callable | None = None, *, type: str = "thread", workers: int | None = None):
        """Mark a blocking function to run off the event loop (databot's ``@Node.boost``).

        Usable bare (``@Node.boost``) or with arguments (``@Node.boost(type='process')``).
        """
        if type not in BOOST_TYPES:
            raise ValueError(f"Node.boost: type must be one of {BOOST_TYPES}; got {type!r}")

        def mark(f: Callable) -> Callable:
            f.__rxbot_boost__ = type  # type: ignore[attr-defined]
            if workers is not None:
                f.__rxbot_concurrency__ = workers  # type: ignore[attr-defined]
            return f

        return mark(fn) if fn is not None else mark

    # databot's names for the boost types: @Node.boost_type(Node.boost_by_process)
    boost_by_thread = "thread"
    boost_by_process = "process"
    boost_by_cluster = "cluster"

    @staticmethod
    def boost_type(type: str, workers: int | None = None):
        """``@Node.boost_type('process')`` — the explicit form of :meth:`boost`."""
        return Node.boost(type=type, workers=workers)


class Loop(Node):
    """Emit every element of ``iterable`` for each input item.

    The engine pulls from the iterable only when downstream has room, so a Loop over a
    huge generator keeps memory bounded. Note that a generator can be consumed only once.
    """

    def __init__(self, iterable: Iterable[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(iterable, (str, bytes)) or not _is_iterable(iterable):
            raise TypeError(
                f"Loop: argument 'iterable' must be a non-string iterable; got {type(iterable).__name__}"
            )
        self.iterable = iterable

    def label(self) -> str:
        if self.name:
            return self.name
        it = self.iterable
        if isinstance(it, range):
            return f"Loop({it!r})"
        if isinstance(it, (list, tuple, set, dict)):
            return f"Loop({type(it).__name__}[{len(it)}])"
        return f"Loop({type(it).__name__})"


class Timer(Node):
    """Emit 1, 2, 3, ... every ``delay`` seconds, as databot did: tick 1 at once, then a
    sleep of ``delay`` before each next tick; stop after ``max_time`` ticks or once
    ``until()`` — asked once after each tick — is true, so one tick always comes out."""

    def __init__(
        self,
        delay: float = 1,
        max_time: int | None = None,
        until: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise TypeError(f"Timer: argument 'delay' must be a number of seconds; got {delay!r}")
        if delay < 0:
            raise ValueError(f"Timer: argument 'delay' must be >= 0; got {delay!r}")
        if max_time is not None and (isinstance(max_time, bool) or not isinstance(max_time, int) or max_time < 1):
            # databot read 0 as "no limit" (a falsy test); here that is spelled None
            raise ValueError(f"Timer: argument 'max_time' must be an int >= 1 (the number of ticks) "
                             f"or None for no limit; got {max_time!r}")
        if until is not None and not callable(until):
            raise TypeError(f"Timer: argument 'until' must be callable (e.g. pipe.finished); got {until!r}")
        self.delay = float(delay)
        self.max_time = max_time
        self.until = until

    def label(self) -> str:
        if self.name:
            return self.name
        d = f"{self.delay:g}s"
        extra = f", max_time={self.max_time}" if self.max_time is not None else ""
        return f"Timer({d}{extra})"


class _NotRunning(list):
    """The buffer a node keeps per run, before a run has opened it: always empty, and
    adding to it is refused with a clear error (the node was called outside a run).
    A class attribute, so an idle node holds no buffers of its own (issue 26, item 11)."""

    def append(self, entry: Any) -> None:
        raise RuntimeError("rxbot: a node was called outside a run (init() has not been called); "
                           "put it in a Pipe and run it")

    def extend(self, entries: Any) -> None:
        self.append(None)


#: shared by every node class that buffers per run: see :class:`_NotRunning`
NOT_RUNNING: List[Any] = _NotRunning()

_UNSET = object()


def keep_settings(node: Any, settings: Mapping[str, Any]) -> None:
    """Set each of ``settings`` on ``node``, except those equal to the class's default
    (same type, equal value): those are read from the class, shared by every instance.

    Why: CPython keeps an instance's attributes in a compact table shared by its class
    only up to 29 names; from the 30th on each instance gets a dict of its own (~1.6 KiB).
    A node with many options (HttpLoader has 30) then costs more than the rest of its
    pipe; with its defaults on the class an idle one holds only what the user changed
    (issue 26, item 11: 10,000 pipes)."""
    cls = type(node)
    for key, value in settings.items():
        default = getattr(cls, key, _UNSET)
        if value is default or (type(value) is type(default) and value == default):
            node.__dict__.pop(key, None)
        else:
            setattr(node, key, value)


class _DotDict(dict):
    """A dict whose keys read as attributes (missing ones read as None), like databot's."""

    def __getattr__(self, key: str) -> Any:
        return self.get(key)


def _is_iterable(obj: Any) -> bool:
    try:
        iter(obj)
    except TypeError:
        return False
    return True


#: the code flags of an ``async def`` function and of an async generator function
_ASYNC_CODE = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def is_async_callable(fn: Any) -> bool:
    """True for ``async def`` functions, async generators and objects whose ``__call__`` is one."""
    if type(fn) is types.FunctionType and not fn.__dict__:
        # a plain function (the common step): its code flags say it, where the general
        # test below costs four inspect calls, paid per step of every Pipe built. Not
        # one with attributes: 3.12's inspect.markcoroutinefunction marks one there
        return bool(fn.__code__.co_flags & _ASYNC_CODE)
    target = fn
    while hasattr(target, "func") and hasattr(target, "args"):  # functools.partial
        target = target.func
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        return True
    call = getattr(target, "__call__", None)
    return call is not None and (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))


class OneItem:
    """Return ``OneItem(x)`` from a step to pass ``x`` on as exactly one item, whatever
    its type: a list stays one list item instead of being flattened (e.g. a writer node
    that passes its input on unchanged)."""

    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


#: item types a step can return as they are: never flattened (see the return-value rules)
PLAIN_ITEM_TYPES = (str, bytes, bytearray, int, float, complex, bool, tuple, dict)


def pass_on(item: Any) -> Any:
    """``item`` as a step result that the return-value rules pass on as one item."""
    return item if type(item) in PLAIN_ITEM_TYPES else OneItem(item)


__all__ = ["Node", "Loop", "Timer", "BOOST_TYPES", "is_async_callable", "OneItem", "pass_on"]

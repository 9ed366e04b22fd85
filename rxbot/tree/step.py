"""Leaf elements of the step tree: callables (with per-step options), constants and raw
Rx operators. Routes live in :mod:`rxbot.tree.flow`; stateful steps in :mod:`rxbot.tree.node`."""
from __future__ import annotations

import builtins
import functools
import inspect
import types
from typing import Any, Callable

from ..config import policy_name
from ..errors import short_repr
from .node import BOOST_TYPES, Node, is_async_callable


def callable_label(fn: Any) -> str:
    """A name a user recognises: ``double``, ``Parser.parse``, ``<lambda> line 12``."""
    if isinstance(fn, functools.partial):
        return f"partial({callable_label(fn.func)})"
    if isinstance(fn, Node):
        return fn.label()
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__name__
    if name.endswith("<lambda>"):
        code = getattr(fn, "__code__", None)
        return f"<lambda> line {code.co_firstlineno}" if code else "<lambda>"
    # drop the enclosing function's '<locals>' noise but keep Class.method
    return name.split("<locals>.")[-1]


#: builtins (``print``) whose text signature took one item: inspect parses that text
#: with the tokenizer, ~2.5 ms a call, which made 10,000 ``Pipe(..., print)`` take 25 s
_BUILTINS_CHECKED: set = set()


def takes_one_item(fn: Any) -> bool:
    """True when ``fn`` is a plain Python function that ``inspect.signature(fn).bind(item)``
    would accept: read from its code object and defaults, without building a Signature
    (~7 µs, paid by every function of every Pipe built; a pipe built per job paid it on
    every run). False means "not known here", never "rejected": the caller then asks
    inspect, which also words the error.

    Only a function whose ``__dict__`` is empty: ``__wrapped__`` (functools.wraps) and
    ``__signature__``, which inspect follows, live there."""
    if type(fn) is not types.FunctionType or fn.__dict__:
        return False
    code = fn.__code__
    positional = code.co_argcount  # positional-only ones included
    defaults = fn.__defaults__ or ()
    if len(defaults) > positional:
        return False  # __defaults__ set by hand: leave it to inspect
    if positional == 0 and not code.co_flags & inspect.CO_VARARGS:
        return False  # nothing takes the item
    if positional - len(defaults) > 1:
        return False  # a second parameter without a default
    kwdefaults = fn.__kwdefaults__ or {}
    keyword_only = code.co_varnames[positional:positional + code.co_kwonlyargcount]
    return all(name in kwdefaults for name in keyword_only)


def _check_arity(fn: Callable, label: str) -> None:
    """Reject at build time a callable that cannot take exactly one item."""
    if takes_one_item(fn):
        return
    builtin = isinstance(fn, types.BuiltinFunctionType) and getattr(fn, "__self__", None) is builtins
    if builtin and fn in _BUILTINS_CHECKED:
        return
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins such as print have no signature; trust them
        return
    try:
        sig.bind(object())
    except TypeError:
        raise TypeError(
            f"step {label!r} must accept one positional argument (the item); its signature is {label}{sig}"
        ) from None
    if builtin:
        _BUILTINS_CHECKED.add(fn)


class Step:
    """A callable step plus its options: ``Step(fn, concurrency=32, on_error=None,
    retries=None, timeout=None, boost=None, name=None)``.

    Plain callables in a Pipe become ``Step(fn)``; wrap explicitly to set options.
    ``fn`` may also be a Node, whose own defaults the options then override.
    """

    __slots__ = ("fn", "concurrency", "on_error", "retries", "timeout", "boost", "name", "is_async", "_fn_label")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        concurrency: int | None = None,
        on_error: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        boost: str | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(fn, Step):  # re-wrapping merges options, the outer wins
            inner = fn
            fn = inner.fn
            concurrency = concurrency if concurrency is not None else inner.concurrency
            on_error = on_error if on_error is not None else inner.on_error
            retries = retries if retries is not None else inner.retries
            timeout = timeout if timeout is not None else inner.timeout
            boost = boost if boost is not None else inner.boost
            name = name if name is not None else inner.name
        if not callable(fn):
            raise TypeError(f"Step: argument 'fn' must be callable; got {type(fn).__name__} {fn!r:.60}")
        # a function's label, read once where the step is made: the plan, the compiler,
        # the report and the ledger each ask for it, several times a run. A Node's label
        # is asked each time (it may describe its state, e.g. a Loop's list length)
        self._fn_label = None if isinstance(fn, Node) else callable_label(fn)
        label = name or self._fn_label or callable_label(fn)
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1):
            raise ValueError(f"Step {label!r}: argument 'concurrency' must be an int >= 1; got {concurrency!r}")
        if on_error is not None:
            on_error = policy_name(on_error, f"Step {label!r}: argument 'on_error'")
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ValueError(f"Step {label!r}: argument 'retries' must be an int >= 0; got {retries!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"Step {label!r}: argument 'timeout' must be a positive number of seconds; got {timeout!r}")
        if boost is not None and boost not in BOOST_TYPES:
            raise ValueError(f"Step {label!r}: argument 'boost' must be one of {BOOST_TYPES}; got {boost!r}")
        if not isinstance(fn, Node):
            _check_arity(fn, label)
        self.fn = fn
        self.concurrency = concurrency
        self.on_error = on_error
        self.retries = retries
        self.timeout = timeout
        self.boost = boost if boost is not None else getattr(fn, "__rxbot_boost__", None)
        self.name = name
        self.is_async = is_async_callable(fn)
        if timeout is not None and not self.is_async and not self.boost and not isinstance(fn, Node):
            raise ValueError(
                f"Step {label!r}: argument 'timeout' needs an async step or a boosted one "
                f"(a sync call cannot be interrupted); add boost='thread' to time it out"
            )

    def option(self, key: str) -> Any:
        """The option as set on this Step, else on the Node, else None."""
        value = getattr(self, key)
        if value is None and isinstance(self.fn, Node):
            value = getattr(self.fn, "boost_kind" if key == "boost" else key, None)
        if value is None and key == "concurrency":
            value = getattr(self.fn, "__rxbot_concurrency__", None)
        return value

    def label(self) -> str:
        return self.name or self._fn_label or callable_label(self.fn)

    def __repr__(self) -> str:
        return f"Step({self.label()})"


class Const:
    """A non-callable value used as a step: every input item is replaced by it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def label(self) -> str:
        # redacted before it is cut: a URL constant must not show its password or token
        # in a graph, a report or a replay manifest
        text = short_repr(self.value, 10_000)
        if len(text) <= 30:
            return text
        if isinstance(self.value, (str, bytes)) and text[-1] in "'\"":
            return text[:27] + "..." + text[-1]  # keep the closing quote: 'http://...'
        return text[:27] + "..."

    def __repr__(self) -> str:
        return f"Const({self.label()})"


class RxOp:
    """A raw reactivex operator (``Observable -> Observable``) used as a step. Its output
    is not passed through the flatten rules."""

    __slots__ = ("op", "name")

    def __init__(self, op: Callable[[Any], Any], name: str | None = None) -> None:
        if not callable(op):
            raise TypeError(f"RxOp: argument 'op' must be an operator (Observable -> Observable); got {op!r}")
        self.op = op
        self.name = name

    def label(self) -> str:
        if self.name:
            return self.name
        # reactivex operators are curried closures: the implementing function
        # (``buffer_with_count_``) and its arguments sit in the closure cells.
        cells = [c.cell_contents for c in (getattr(self.op, "__closure__", None) or ())]
        impl = next((c for c in cells if inspect.isfunction(c)), None)
        if impl is not None and impl.__module__.startswith("reactivex"):
            args = next((c for c in cells if isinstance(c, tuple)), ())
            shown = ", ".join(_short(a) for a in args if a is not None)
            return f"rx.{impl.__name__.rstrip('_')}({shown})"
        return f"rx.{callable_label(self.op)}"

    def __repr__(self) -> str:
        return f"RxOp({self.label()})"


def _short(value: Any) -> str:
    if not callable(value):
        return short_repr(value, 20)
    text = callable_label(value)
    return text if len(text) <= 20 else text[:17] + "..."


def is_rx_operator(obj: Any) -> bool:
    """reactivex's own operators are closures defined inside the ``reactivex`` package."""
    return callable(obj) and not isinstance(obj, (type, Node)) and (
        getattr(obj, "__module__", "") or ""
    ).startswith("reactivex")


__all__ = ["Step", "Const", "RxOp", "callable_label", "is_rx_operator"]

"""The cache key: a hash of a pipe's structure, so a changed pipe never replays the
output its old version saved."""
from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import re
from typing import Any

from ..flow import Route
from ..node import Loop, Node, Timer
from ..step import Const, RxOp, Step
from .layout import FORMAT

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _scrub(text: str) -> str:
    """Object addresses change from run to run; they must not change the key."""
    return _ADDRESS.sub("", text)


def _canon(value: Any, depth: int = 0) -> str:
    """A repr that is the same in every process (sets sorted, addresses removed)."""
    if depth > 20:
        return "..."
    t = type(value)
    if t in (set, frozenset):
        return f"{t.__name__}({sorted(_canon(v, depth + 1) for v in value)})"
    if t in (list, tuple):
        return f"{t.__name__}[{', '.join(_canon(v, depth + 1) for v in value)}]"
    if t is dict:
        return "{" + ", ".join(f"{_canon(k, depth + 1)}: {_canon(v, depth + 1)}" for k, v in value.items()) + "}"
    if inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, functools.partial):
        h = hashlib.sha256()
        _callable(value, h, depth + 1)
        return f"<callable {h.hexdigest()[:16]}>"
    try:
        return _scrub(repr(value))
    except Exception:
        return f"<{type(value).__qualname__}>"


_VALUES = (int, float, complex, str, bytes, bool, type(None), range)


def _arg(value: Any, depth: int = 0) -> str:
    """How a function's closure cells, defaults and bound ``self`` enter the key: values
    (numbers, strings, tuples of them) and functions by content, any other object by its
    type only, so a captured accumulator (a list the step appends to) does not change
    the key as it fills up."""
    t = type(value)
    if t in _VALUES:
        return repr(value)
    if depth < 10 and t in (tuple, frozenset):
        parts = [_arg(v, depth + 1) for v in value]
        return f"{t.__name__}({sorted(parts) if t is frozenset else parts})"
    if inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, functools.partial):
        return _canon(value, depth + 1)
    if isinstance(value, type):
        return f"class {_ref(value)}"
    if isinstance(value, enum.Enum):
        return f"{_ref(t)}.{value.name}"
    return f"<{_ref(t)}>"


def _source_hash(obj: Any) -> str:
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        if code is None:
            return "?"
        text = f"{code.co_code.hex()}|{_canon(code.co_consts)}|{code.co_names}"
    return hashlib.sha256(text.encode()).hexdigest()


def _ref(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _callable(fn: Any, h: Any, depth: int = 0) -> None:
    if depth > 10:
        h.update(b"<deep>")
        return
    if isinstance(fn, functools.partial):
        h.update(b"partial(")
        _callable(fn.func, h, depth + 1)
        h.update(f"{_arg(tuple(fn.args))}{sorted((k, _arg(v)) for k, v in fn.keywords.items())})".encode())
    elif isinstance(fn, Node):
        _node(fn, h)
    elif inspect.ismethod(fn):
        h.update(f"method({_arg(fn.__self__)} ".encode())
        _callable(fn.__func__, h, depth + 1)
        h.update(b")")
    elif inspect.isfunction(fn):
        cells = [c.cell_contents for c in (fn.__closure__ or ()) if _cell_filled(c)]
        kw = sorted((k, _arg(v)) for k, v in (fn.__kwdefaults__ or {}).items())
        h.update(f"fn({_ref(fn)} src={_source_hash(fn)} defaults={_arg(fn.__defaults__ or ())} "
                 f"kw={kw} closure={[_arg(c, depth + 1) for c in cells]})".encode())
    elif isinstance(fn, type):
        h.update(f"class({_ref(fn)})".encode())
    elif inspect.isbuiltin(fn) or inspect.isroutine(fn):
        h.update(f"builtin({_ref(fn)})".encode())
    else:  # an instance with __call__
        cls = type(fn)
        # public attributes configure the object; _private ones are its runtime state
        state = sorted((k, _arg(v)) for k, v in (getattr(fn, "__dict__", None) or {}).items()
                       if not k.startswith("_"))
        h.update(f"callable({_ref(cls)} src={_source_hash(cls)} state={state})".encode())


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _node(node: Node, h: Any) -> None:
    cls = type(node)
    h.update(f"node({_ref(cls)} src={_source_hash(cls)} label={_scrub(node.label())} "
             f"args={_canon(getattr(node, 'args', ()))} kwargs={_canon(getattr(node, 'kwargs', {}))} "
             f"opts={[getattr(node, k, None) for k in ('concurrency', 'on_error', 'retries', 'timeout', 'boost_kind')]}".encode())
    if isinstance(node, Loop):
        it = node.iterable
        if isinstance(it, range):
            h.update(repr(it).encode())
        elif isinstance(it, (list, tuple, set, frozenset, dict)):
            if isinstance(it, (set, frozenset)):
                h.update(_canon(it).encode())
            else:
                h.update(f"{type(it).__name__}[{len(it)}]".encode())
                for v in (it.items() if isinstance(it, dict) else it):
                    h.update(_canon(v).encode())
                    h.update(b",")
        else:
            h.update(f"iter({type(it).__qualname__} {getattr(getattr(it, 'gi_code', None), 'co_qualname', '')})".encode())
    elif isinstance(node, Timer):
        h.update(f"timer({node.delay}, {node.max_time})".encode())
        if node.until is not None:
            _callable(node.until, h)
    h.update(b")")


def _describe(step: Any, h: Any) -> None:
    if isinstance(step, Step):
        h.update(f"Step({[step.option(k) for k in ('concurrency', 'on_error', 'retries', 'timeout', 'boost')]} "
                 f"name={step.name!r} ".encode())
        _callable(step.fn, h)
        h.update(b")")
    elif isinstance(step, Const):
        h.update(f"Const({_canon(step.value)})".encode())
    elif isinstance(step, RxOp):
        h.update(f"RxOp({_scrub(step.label())} ".encode())
        _callable(step.op, h)
        h.update(b")")
    elif isinstance(step, Route):
        rt = step.route_type
        types = [_ref(t) for t in (rt if isinstance(rt, tuple) else (rt,))]
        h.update(f"Route({type(step).__qualname__} {step.kind} {types} share={step.share} join={step.join} "
                 f"name={step.name!r} func=".encode())
        if step.route_func is not None:
            _callable(step.route_func, h)
        for branch in step.branches:
            h.update(b"[")
            for s in branch:
                _describe(s, h)
            h.update(b"]")
        h.update(b")")
    elif isinstance(step, Node):
        _node(step, h)
    else:
        h.update(f"?{_ref(type(step))}".encode())


def pipe_key(pipe: Any, index: int) -> str:
    """Hash of everything that decides what a pipe computes: its steps' kinds, the
    qualified names and source of its functions, their arguments, nested routes, and
    the pipe's position in the run. A changed pipe gets a different key."""
    h = hashlib.sha256(f"rxbot-replay/{FORMAT}/pipe {index}/".encode())
    for step in pipe.steps:
        _describe(step, h)
        h.update(b"|")
    return h.hexdigest()

"""What a step computes, as a hash: the cache saved after step K is replayed only while the
hashes of steps 1..K are the ones it was saved with.

A step's hash covers its kind, the qualified name and source code of its function or
node class, its arguments (partial arguments, defaults, closure values, node constructor
arguments, constants, Loop contents, Timer settings, step options), route types,
functions and nested branches. Objects captured by a function that are not plain values
(a list it appends to, a client) count by type only, so filling an accumulator does not
change the hash; object addresses are removed and sets sorted, so it is the same in
every process.
"""
from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import re
import tokenize
from typing import Any, Dict, Tuple

from ..tree.flow import Route
from ..tree.node import Loop, Node, Timer
from ..tree.step import Const, RxOp, Step

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_VALUES = (int, float, complex, str, bytes, bool, type(None), range)
_OPTIONS = ("concurrency", "on_error", "retries", "timeout", "boost")


def _ref(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _is_function(value: Any) -> bool:
    return inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, functools.partial)


def _value(value: Any, depth: int = 0) -> str:
    """A repr that is the same in every process (sets sorted, addresses removed)."""
    t = type(value)
    if depth > 20:
        return "..."
    if t in (set, frozenset):
        return f"{t.__name__}{sorted(_value(v, depth + 1) for v in value)}"
    if t in (list, tuple):
        return f"{t.__name__}[{', '.join(_value(v, depth + 1) for v in value)}]"
    if t is dict:
        return "{" + ", ".join(f"{_value(k, depth + 1)}: {_value(v, depth + 1)}" for k, v in value.items()) + "}"
    if _is_function(value):
        return _callable(value, depth + 1)
    try:
        return _ADDRESS.sub("", repr(value))
    except Exception:
        return f"<{type(value).__qualname__}>"


def _captured(value: Any, depth: int = 0) -> str:
    """A closure cell, default or bound ``self``: values by content, functions by their
    hash, anything else by its type only (its state is the run's, not the code's)."""
    t = type(value)
    if t in _VALUES:
        return repr(value)
    if depth < 10 and t in (tuple, frozenset):
        parts = [_captured(v, depth + 1) for v in value]
        return f"{t.__name__}{sorted(parts) if t is frozenset else parts}"
    if _is_function(value):
        return _callable(value, depth + 1)
    if isinstance(value, type):
        return f"class {_ref(value)}"
    if isinstance(value, enum.Enum):
        return f"{_ref(t)}.{value.name}"
    return f"<{_ref(t)}>"


#: hashes of source already read, by the identity of the code object (a function's) or
#: the class: every run that writes a dead letter hashes its pipe's steps, and reading a
#: source (``inspect.getsource``: a class's parses its whole module) cost ~2 ms a step,
#: most of a short run. Kept per object, not per text: the code a process runs does not
#: change while it lives (an edited file is new code only once it is imported again,
#: which makes new code objects and classes). Bounded: cleared past ``_SOURCES_MAX``.
_SOURCES: Dict[int, Tuple[Any, str]] = {}
_SOURCES_MAX = 4096


def _source(obj: Any) -> str:
    key = getattr(obj, "__code__", None) if inspect.isfunction(obj) else obj
    known = _SOURCES.get(id(key))
    if known is not None and known[0] is key:
        return known[1]
    digest = _read_source(obj)
    if len(_SOURCES) >= _SOURCES_MAX:
        _SOURCES.clear()
    _SOURCES[id(key)] = (key, digest)
    return digest


def _read_source(obj: Any) -> str:
    try:
        text = inspect.getsource(obj)
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        # (3.13's inspect raises TokenError for a function whose "file" is not Python
        # source, e.g. code compiled with a made-up filename that linecache resolves)
        code = getattr(obj, "__code__", None)
        text = "?" if code is None else f"{code.co_code.hex()}|{_value(code.co_consts)}|{code.co_names}"
    return hashlib.sha256(text.encode()).hexdigest()


def _callable(fn: Any, depth: int = 0) -> str:
    if depth > 10:
        return "<deep>"
    if isinstance(fn, functools.partial):
        return (f"partial({_callable(fn.func, depth + 1)} {_captured(tuple(fn.args))} "
                f"{sorted((k, _captured(v)) for k, v in fn.keywords.items())})")
    if isinstance(fn, Node):
        return _node(fn)
    if inspect.ismethod(fn):
        return f"method({_captured(fn.__self__)} {_callable(fn.__func__, depth + 1)})"
    if inspect.isfunction(fn):
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(_captured(cell.cell_contents, depth + 1))
            except ValueError:  # an empty cell
                pass
        kw = sorted((k, _captured(v)) for k, v in (fn.__kwdefaults__ or {}).items())
        return f"fn({_ref(fn)} {_source(fn)} {_captured(fn.__defaults__ or ())} {kw} {cells})"
    if isinstance(fn, type) or inspect.isroutine(fn):
        return f"ref({_ref(fn)})"
    # an instance with __call__: public attributes configure it, _private ones are its state
    state = sorted((k, _captured(v)) for k, v in (getattr(fn, "__dict__", None) or {}).items()
                   if not k.startswith("_"))
    return f"callable({_ref(type(fn))} {_source(type(fn))} {state})"


def _node(node: Node) -> str:
    cls = type(node)
    text = (f"node({_ref(cls)} {_source(cls)} {_ADDRESS.sub('', node.label())} "
            f"{_value(getattr(node, 'args', ()))} {_value(getattr(node, 'kwargs', {}))} "
            f"{[getattr(node, k, None) for k in ('concurrency', 'on_error', 'retries', 'timeout', 'boost_kind')]}")
    if isinstance(node, Loop):
        it = node.iterable
        if isinstance(it, (range, set, frozenset)):
            shown = _value(it)
        elif isinstance(it, (list, tuple, dict)):  # element by element: it may be long
            h = hashlib.sha256(type(it).__name__.encode())
            for v in (it.items() if isinstance(it, dict) else it):
                h.update(_value(v).encode() + b"\0")
            shown = h.hexdigest()
        else:
            shown = f"iter({type(it).__qualname__} {getattr(getattr(it, 'gi_code', None), 'co_qualname', '')})"
        text += f" loop={shown}"
    elif isinstance(node, Timer):
        text += f" timer({node.delay}, {node.max_time}, {node.until and _callable(node.until)})"
    return text + ")"


def describe(step: Any) -> str:
    """The text a step's hash is made of."""
    if isinstance(step, Step):
        return f"Step({[step.option(k) for k in _OPTIONS]} {step.name!r} {_callable(step.fn)})"
    if isinstance(step, Const):
        return f"Const({_value(step.value)})"
    if isinstance(step, RxOp):
        return f"RxOp({_ADDRESS.sub('', step.label())} {_callable(step.op)})"
    if isinstance(step, Route):
        rt = step.route_type
        types = [_ref(t) for t in (rt if isinstance(rt, tuple) else (rt,))]
        func = _callable(step.route_func) if step.route_func is not None else None
        branches = [[describe(s) for s in branch] for branch in step.branches]
        return (f"Route({type(step).__qualname__} {step.kind} {types} {step.share} {step.join} "
                f"{step.name!r} {func} {branches})")
    if isinstance(step, Node):
        return _node(step)
    return f"?{_ref(type(step))}"


def step_hash(step: Any) -> str:
    """Hash of what ``step`` computes (see the module docstring)."""
    return hashlib.sha256(describe(step).encode()).hexdigest()[:32]


__all__ = ["step_hash", "describe"]

"""Safe serialisation of stream items for the replay cache: JSON lines by default.

Loading a JSON cache can never run code, whoever wrote the file. Values JSON cannot
express are small tagged objects ``{"$": tag, "v": ...}`` (tuples, bytes, sets, dates,
Decimal, UUID, Enum members, dataclasses, namedtuples, paths, exceptions, types registered
with :func:`register_type`, ...). Classes are looked up only among modules already
imported — a cache never triggers an import — and dataclasses are rebuilt field by field
without calling ``__init__``, so a replayed item is the recorded one. Pickle is opt-in
(``config.replay_serializer = 'pickle'``); :mod:`rxbot.replay` signs those files.
"""
from __future__ import annotations

import base64
import builtins
import dataclasses
import datetime
import decimal
import enum
import fractions
import json
import pathlib
import pickle
import struct
import sys
import uuid
import zoneinfo
from typing import IO, Any, Callable, Dict, Iterator, Protocol, Tuple, Type

from ..errors import StepError

OPT_IN = ("config.replay_serializer = 'pickle' (the cache is then signed with an HMAC key "
          "kept beside it and refused if the signature does not match)")


class ReplayEncodeError(TypeError):
    """An item cannot be stored in the replay cache with the configured serializer."""


class ReplayDecodeError(ValueError):
    """A cached item cannot be turned back into a value (e.g. its class is not imported)."""


class ReplayedError(Exception):
    """Stands in for a recorded exception whose class is not built in (only those are
    rebuilt): keeps the original type name and text."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


# ---- registered types ------------------------------------------------------------------------
_by_type: Dict[type, Tuple[str, Callable[[Any], Any]]] = {}
_by_name: Dict[str, Tuple[type, Callable[[Any], Any]]] = {}


def register_type(cls: type, encode: Callable[[Any], Any], decode: Callable[[Any], Any],
                  name: str | None = None) -> None:
    """Teach the JSON format a type: ``encode(obj)`` returns something the format can
    store and ``decode(value)`` rebuilds the object. ``name`` identifies the type in cache
    files (default ``module:QualName``); keep it stable. Only the exact class matches."""
    if not isinstance(cls, type):
        raise TypeError(f"register_type: argument 'cls' must be a class; got {cls!r}")
    for arg, fn in (("encode", encode), ("decode", decode)):
        if not callable(fn):
            raise TypeError(f"register_type({cls.__name__}): argument {arg!r} must be callable; got {fn!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"register_type({cls.__name__}): argument 'name' must be a non-empty str; got {name!r}")
    key = name or f"{cls.__module__}:{cls.__qualname__}"
    if _by_name.get(key, (cls,))[0] is not cls:
        raise ValueError(f"register_type: the name {key!r} is already used by {_by_name[key][0]!r}")
    _by_type[cls] = (key, encode)
    _by_name[key] = (cls, decode)


def unregister_type(cls: type) -> None:
    """Forget a type registered with :func:`register_type` (mainly for tests)."""
    entry = _by_type.pop(cls, None)
    if entry is not None:
        _by_name.pop(entry[0], None)


# ---- encoding --------------------------------------------------------------------------------
def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _class_ref(t: type, what: str) -> str:
    if "<locals>" in t.__qualname__:
        raise ReplayEncodeError(f"cannot store a {what} of class {_type_name(t)} in the replay cache: it is "
                                f"defined inside a function, so a later run cannot find it; define it at "
                                f"module level")
    return f"{t.__module__}:{t.__qualname__}"


def _clock(x: Any) -> Any:
    """A datetime or time: its ISO text, or ``[text, zone, fold]`` with a ZoneInfo."""
    tz = x.tzinfo
    if tz is None or isinstance(tz, datetime.timezone):
        return x.isoformat()
    if isinstance(tz, zoneinfo.ZoneInfo):
        return [x.replace(tzinfo=None).isoformat(), tz.key, x.fold]
    raise ReplayEncodeError(f"cannot store a {type(x).__name__} with tzinfo {type(tz).__name__} in the replay "
                            f"cache; use datetime.timezone or zoneinfo.ZoneInfo, or opt in to pickle: {OPT_IN}")


def _unclock(cls: Any) -> Callable[[Any], Any]:
    def decode(v: Any) -> Any:
        if isinstance(v, str):
            return cls.fromisoformat(v)
        return cls.fromisoformat(v[0]).replace(tzinfo=zoneinfo.ZoneInfo(v[1]), fold=v[2])

    return decode


def _b64(x: bytes) -> str:
    return base64.b64encode(x).decode("ascii")


def _unb64(v: str) -> bytes:
    return base64.b64decode(v.encode("ascii"), validate=True)


#: type -> (tag, value -> JSON, JSON -> value)
_SIMPLE: Dict[type, Tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {
    bytes: ("bytes", _b64, _unb64),
    bytearray: ("bytearray", _b64, lambda v: bytearray(_unb64(v))),
    complex: ("complex", lambda x: [x.real, x.imag], lambda v: complex(*v)),
    datetime.datetime: ("datetime", _clock, _unclock(datetime.datetime)),
    datetime.date: ("date", datetime.date.isoformat, datetime.date.fromisoformat),
    datetime.time: ("time", _clock, _unclock(datetime.time)),
    datetime.timedelta: ("timedelta", lambda x: [x.days, x.seconds, x.microseconds],
                         lambda v: datetime.timedelta(*v)),
    decimal.Decimal: ("decimal", str, decimal.Decimal),
    fractions.Fraction: ("fraction", str, fractions.Fraction),
    uuid.UUID: ("uuid", str, uuid.UUID),
    range: ("range", lambda x: [x.start, x.stop, x.step], lambda v: range(*v)),
}


def _enc(x: Any) -> Any:
    t = type(x)
    if t is str or t is int or t is float or t is bool or x is None:
        return x
    if t is list:
        return [_enc(v) for v in x]
    if t is dict:
        if "$" not in x and all(type(k) is str for k in x):
            return {k: _enc(v) for k, v in x.items()}
        return {"$": "dict", "v": [[_enc(k), _enc(v)] for k, v in x.items()]}
    if t is tuple or t is set or t is frozenset:
        return {"$": t.__name__, "v": [_enc(v) for v in x]}
    if t in _SIMPLE:
        tag, encode, _ = _SIMPLE[t]
        return {"$": tag, "v": encode(x)}
    if t in _by_type:
        name, encode = _by_type[t]
        return {"$": "reg", "n": name, "v": _enc(encode(x))}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"$": "dc", "c": _class_ref(t, "dataclass"),
                "v": {f.name: _enc(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, tuple) and hasattr(t, "_fields") and hasattr(t, "_make"):
        return {"$": "nt", "c": _class_ref(t, "namedtuple"), "v": [_enc(v) for v in x]}
    if isinstance(x, enum.Enum):
        return {"$": "enum", "c": _class_ref(t, "Enum member"), "v": _enc(x.value)}
    if isinstance(x, pathlib.PurePath) and getattr(pathlib, t.__name__, None) is t:
        return {"$": "path", "c": t.__name__, "v": str(x)}
    if isinstance(x, BaseException):
        return _enc_exception(x)
    raise ReplayEncodeError(
        f"cannot store an item of type {_type_name(t)} in the replay cache (JSON format). It stores None, "
        f"bool, int, float, str, list, dict, tuple, set, bytes, datetime/date/time/timedelta, Decimal, "
        f"Fraction, UUID, Enum members, dataclasses, namedtuples, paths, exceptions and types registered "
        f"with rxbot.replay.register_type(cls, encode, decode). Register {t.__name__}, make it a "
        f"dataclass, or opt in to pickle: {OPT_IN}")


def _enc_exception(x: BaseException) -> Dict[str, Any]:
    if type(x) is StepError:  # the pipein policy's items
        try:
            item = _enc(x.item)
        except ReplayEncodeError:
            item = {"$": "repr", "v": repr(x.item)[:1000]}
        return {"$": "steperror", "step": x.step, "item": item, "exc": _enc_exception(x.exception)}
    out: Dict[str, Any] = {"$": "exc", "c": f"{type(x).__module__}:{type(x).__qualname__}", "m": str(x)}
    if type(x).__module__ == "builtins":
        try:
            out["a"] = [_enc(a) for a in x.args]
        except ReplayEncodeError:
            pass
    step = getattr(x, "rxbot_step", None)  # a pipein item: where it failed
    if isinstance(step, str):
        out["s"] = step
        try:
            out["i"] = _enc(getattr(x, "rxbot_item", None))
        except ReplayEncodeError:
            pass
    return out


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def encode_json(item: Any) -> bytes:
    """One item as one line of ASCII JSON (no newline inside, none at the end)."""
    if type(item) is int:  # the most common item, and its repr is its JSON
        return repr(item).encode("ascii")
    try:
        return _encode(_enc(item)).encode("ascii")
    except RecursionError:
        raise ReplayEncodeError(f"cannot store an item of type {_type_name(type(item))} in the replay cache: "
                                f"it is nested too deeply or contains itself") from None


# ---- decoding --------------------------------------------------------------------------------
def _find_class(ref: Any, check: Callable[[type], bool], what: str) -> Type[Any]:
    if not isinstance(ref, str) or ":" not in ref:
        raise ReplayDecodeError(f"bad class reference {ref!r} in the replay cache")
    module_name, _, qualname = ref.partition(":")
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        raise ReplayDecodeError(f"the replay cache holds a {what} of class {qualname} from module "
                                f"{module_name!r}, which is not imported; import it before the run (a cache "
                                f"never imports modules)")
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type) or not check(obj):
        raise ReplayDecodeError(f"the replay cache refers to {ref!r}, which is not a {what} class")
    return obj


def _blank(cls: Type[object]) -> Any:
    """An instance made without ``__init__`` (its fields are set from the cache)."""
    return cls.__new__(cls)


def _dec_dataclass(v: Dict[str, Any]) -> Any:
    cls = _find_class(v["c"], dataclasses.is_dataclass, "dataclass")
    names = {f.name for f in dataclasses.fields(cls)}
    obj = _blank(cls)
    for name, value in v["v"].items():
        if name not in names:
            raise ReplayDecodeError(f"dataclass {v['c']} has no field {name!r} any more")
        object.__setattr__(obj, name, _dec(value))
    return obj


def _dec_registered(v: Dict[str, Any]) -> Any:
    if v["n"] not in _by_name:
        raise ReplayDecodeError(f"the replay cache holds an item of registered type {v['n']!r}, which is not "
                                f"registered in this run; call rxbot.replay.register_type before the run")
    return _by_name[v["n"]][1](_dec(v["v"]))


def _dec_exception(v: Dict[str, Any]) -> BaseException:
    exc = _dec_exception_object(v)
    if "s" in v:  # a pipein item: the step and item it failed in, as they were recorded
        # the same ad-hoc attributes as errors.annotate (an exception has no declared slot)
        setattr(exc, "rxbot_step", v["s"])
        setattr(exc, "rxbot_item", _dec(v["i"]) if "i" in v else None)
    return exc


def _dec_exception_object(v: Dict[str, Any]) -> BaseException:
    module_name, _, qualname = v["c"].partition(":")
    cls = getattr(builtins, qualname, None) if module_name == "builtins" else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(*([_dec(a) for a in v["a"]] if "a" in v else [v["m"]]))
        except Exception:
            pass
    return ReplayedError(qualname or v["c"], v["m"])


def _dec_steperror(v: Dict[str, Any]) -> StepError:
    item = v["item"]
    item = f"<not stored: {item['v']}>" if isinstance(item, dict) and item.get("$") == "repr" else _dec(item)
    return StepError(v["step"], item, _dec_exception(v["exc"]))


def _simple(decode: Callable[[Any], Any]) -> Callable[[Dict[str, Any]], Any]:
    """The decoder of a ``_SIMPLE`` tag: its value is stored as is under ``v``."""
    return lambda v: decode(v["v"])


_DECODERS: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    **{tag: _simple(decode) for tag, _, decode in _SIMPLE.values()},
    "dict": lambda v: {_dec(k): _dec(x) for k, x in v["v"]},
    "tuple": lambda v: tuple(_dec(x) for x in v["v"]),
    "set": lambda v: {_dec(x) for x in v["v"]},
    "frozenset": lambda v: frozenset(_dec(x) for x in v["v"]),
    "reg": _dec_registered,
    "dc": _dec_dataclass,
    "nt": lambda v: _find_class(v["c"], lambda c: issubclass(c, tuple) and hasattr(c, "_make"),
                                "namedtuple")._make(_dec(x) for x in v["v"]),
    "enum": lambda v: _find_class(v["c"], lambda c: issubclass(c, enum.Enum), "Enum")(_dec(v["v"])),
    "path": lambda v: _find_class("pathlib:" + v["c"], lambda c: issubclass(c, pathlib.PurePath),
                                  "path")(v["v"]),
    "exc": _dec_exception,
    "steperror": _dec_steperror,
}


def _dec(v: Any) -> Any:
    t = type(v)
    if t is list:
        return [_dec(x) for x in v]
    if t is not dict:
        return v
    tag = v.get("$")
    if tag is None:
        return {k: _dec(x) for k, x in v.items()}
    if tag not in _DECODERS:
        raise ReplayDecodeError(f"unknown tag {tag!r} in the replay cache (written by a newer rxbot?)")
    try:
        return _DECODERS[tag](v)
    except ReplayDecodeError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ReplayDecodeError(f"malformed {tag!r} value in the replay cache: {exc}") from None


def decode_json(payload: bytes) -> Any:
    return _dec(json.loads(payload))


# ---- codecs: item <-> record bytes, and how records are framed in a file ----------------------
class Codec(Protocol):
    """What the replay session needs of a serializer (the classes below are used as
    they are, never instantiated: every member is a class attribute or staticmethod)."""

    name: str  # the ``config.replay_serializer`` value, also written in manifests
    suffix: str  # the data file's extension

    def dumps(self, item: Any, /) -> bytes: ...

    def loads(self, payload: bytes, /) -> Any: ...

    def frame(self, payload: bytes, /) -> bytes: ...

    def records(self, fh: IO[bytes], /) -> Iterator[bytes]: ...


class JsonCodec:
    """JSON lines: one ASCII line per item (readable with any text tool)."""

    name, suffix = "json", "jsonl"
    dumps = staticmethod(encode_json)
    loads = staticmethod(decode_json)

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return payload + b"\n"

    @staticmethod
    def records(fh: IO[bytes]) -> Iterator[bytes]:
        for line in fh:
            if not line.endswith(b"\n"):
                raise ReplayDecodeError("the replay cache file ends in the middle of a record")
            yield line[:-1]


_LEN = struct.Struct(">Q")


class PickleCodec:
    """Length-prefixed pickles; opt-in only, and read only after the file's HMAC matched."""

    name, suffix = "pickle", "pkl"
    loads = staticmethod(pickle.loads)

    @staticmethod
    def dumps(item: Any) -> bytes:
        try:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ReplayEncodeError(f"cannot pickle an item of type {_type_name(type(item))} for the replay "
                                    f"cache: {exc}") from None

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return _LEN.pack(len(payload)) + payload

    @staticmethod
    def records(fh: IO[bytes]) -> Iterator[bytes]:
        while True:
            head = fh.read(_LEN.size)
            if not head:
                return
            payload = fh.read(_LEN.unpack(head)[0]) if len(head) == _LEN.size else b""
            if len(head) < _LEN.size or len(payload) < _LEN.unpack(head)[0]:
                raise ReplayDecodeError("the replay cache file ends in the middle of a record")
            yield payload


CODECS: Dict[str, Codec] = {"json": JsonCodec, "pickle": PickleCodec}


def codec(name: str) -> Codec:
    """The codec for a ``config.replay_serializer`` value."""
    if name not in ("json", "pickle"):
        raise ValueError(f"config.replay_serializer must be 'json' (default, safe) or 'pickle' (opt-in, "
                         f"HMAC-signed); got {name!r}")
    return CODECS[name]


__all__ = [
    "register_type", "unregister_type", "ReplayEncodeError", "ReplayDecodeError", "ReplayedError",
    "encode_json", "decode_json", "Codec", "JsonCodec", "PickleCodec", "codec", "CODECS",
]

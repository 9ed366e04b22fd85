"""Safe serialisation of stream items for the replay cache (:mod:`rxbot.replay`).

The default format is JSON lines: loading a cache can never run code, whoever wrote
the file. Values JSON cannot express are written as small tagged objects
``{"$": tag, ...}`` (tuples, bytes, sets, datetimes, Decimal, UUID, Enum members,
dataclasses, namedtuples, exceptions and types registered with :func:`register_type`).
Classes are looked up only among modules the program has already imported — a cache
never triggers an import — and dataclasses are rebuilt field by field without calling
``__init__``, so a replayed item is the recorded one, not a re-derived one.

Pickle is opt-in (``config.replay_serializer = 'pickle'``) for items nothing else can
express; :mod:`rxbot.replay` then signs every file with an HMAC key and refuses to
unpickle a file whose signature does not match.
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
from typing import Any, BinaryIO, Callable, Dict, Iterator, Tuple

from ..errors import StepError

OPT_IN = ("config.replay_serializer = 'pickle' (the cache is then signed with an HMAC key "
          "kept beside it and refused if the signature does not match)")


class ReplayEncodeError(TypeError):
    """An item cannot be stored in the replay cache with the configured serializer."""


class ReplayDecodeError(ValueError):
    """A cached item cannot be turned back into a value (e.g. its class is not imported)."""


class ReplayedError(Exception):
    """Stands in for a recorded exception whose class rxbot does not rebuild (only
    built-in exception classes are rebuilt): keeps the original type name and text."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


# ---- registered types -----------------------------------------------------------------
_by_type: Dict[type, Tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {}
_by_name: Dict[str, Tuple[type, Callable[[Any], Any], Callable[[Any], Any]]] = {}


def register_type(cls: type, encode: Callable[[Any], Any], decode: Callable[[Any], Any],
                  name: str | None = None) -> None:
    """Teach the JSON replay format a type: ``encode(obj)`` returns something the format
    can store (JSON values, tuples, datetimes, other registered types, ...) and
    ``decode(value)`` rebuilds the object. ``name`` identifies the type in cache files
    (default ``module:QualName``); keep it stable across versions of your script.

    Only the exact class is matched, not subclasses (register those separately).
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type: argument 'cls' must be a class; got {cls!r}")
    for arg, fn in (("encode", encode), ("decode", decode)):
        if not callable(fn):
            raise TypeError(f"register_type({cls.__name__}): argument {arg!r} must be callable; got {fn!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"register_type({cls.__name__}): argument 'name' must be a non-empty str; got {name!r}")
    key = name or f"{cls.__module__}:{cls.__qualname__}"
    old = _by_name.get(key)
    if old is not None and old[0] is not cls:
        raise ValueError(f"register_type: the name {key!r} is already used by {old[0]!r}")
    _by_type[cls] = (key, encode, decode)
    _by_name[key] = (cls, encode, decode)


def unregister_type(cls: type) -> None:
    """Forget a type registered with :func:`register_type` (mainly for tests)."""
    entry = _by_type.pop(cls, None)
    if entry is not None:
        _by_name.pop(entry[0], None)


# ---- encoding ---------------------------------------------------------------------------
def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _class_ref(t: type, what: str) -> str:
    if "<locals>" in t.__qualname__:
        raise ReplayEncodeError(
            f"cannot store a {what} of class {_type_name(t)} in the replay cache: it is defined "
            f"inside a function, so a later run cannot find it; define it at module level"
        )
    return f"{t.__module__}:{t.__qualname__}"


def _tz_fields(value: Any) -> dict:
    tz = value.tzinfo
    if tz is None or isinstance(tz, datetime.timezone):
        return {}
    key = getattr(tz, "key", None)  # zoneinfo.ZoneInfo
    if isinstance(key, str) and type(tz).__module__ == "zoneinfo":
        return {"tz": key}
    raise ReplayEncodeError(
        f"cannot store a {type(value).__name__} with tzinfo {type(tz).__name__} in the replay "
        f"cache; use datetime.timezone or zoneinfo.ZoneInfo, or opt in to pickle: {OPT_IN}"
    )


def _enc_datetime(x: datetime.datetime) -> dict:
    extra = _tz_fields(x)
    if extra:
        return {"$": "datetime", "v": x.replace(tzinfo=None).isoformat(), "fold": x.fold, **extra}
    return {"$": "datetime", "v": x.isoformat()}


def _enc_time(x: datetime.time) -> dict:
    extra = _tz_fields(x)
    if extra:
        return {"$": "time", "v": x.replace(tzinfo=None).isoformat(), "fold": x.fold, **extra}
    return {"$": "time", "v": x.isoformat()}


_SIMPLE: Dict[type, Callable[[Any], Any]] = {
    bytes: lambda x: {"$": "bytes", "v": base64.b64encode(x).decode("ascii")},
    bytearray: lambda x: {"$": "bytearray", "v": base64.b64encode(bytes(x)).decode("ascii")},
    complex: lambda x: {"$": "complex", "v": [x.real, x.imag]},
    datetime.datetime: _enc_datetime,
    datetime.date: lambda x: {"$": "date", "v": x.isoformat()},
    datetime.time: _enc_time,
    datetime.timedelta: lambda x: {"$": "timedelta", "v": [x.days, x.seconds, x.microseconds]},
    decimal.Decimal: lambda x: {"$": "decimal", "v": str(x)},
    fractions.Fraction: lambda x: {"$": "fraction", "v": str(x)},
    uuid.UUID: lambda x: {"$": "uuid", "v": str(x)},
    range: lambda x: {"$": "range", "v": [x.start, x.stop, x.step]},
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
    if t is tuple:
        return {"$": "tuple", "v": [_enc(v) for v in x]}
    if t is set or t is frozenset:
        return {"$": t.__name__, "v": [_enc(v) for v in x]}
    simple = _SIMPLE.get(t)
    if simple is not None:
        return simple(x)
    reg = _by_type.get(t)
    if reg is not None:
        name, encode, _ = reg
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
        f"cannot store an item of type {_type_name(t)} in the replay cache (JSON format). It "
        f"stores None, bool, int, float, str, list, dict, tuple, set, bytes, datetime/date/time/"
        f"timedelta, Decimal, Fraction, UUID, Enum members, dataclasses, namedtuples, paths, "
        f"exceptions and types registered with rxbot.replay.register_type(cls, encode, decode). "
        f"Register {t.__name__}, make it a dataclass, or opt in to pickle: {OPT_IN}"
    )


def _enc_exception(x: BaseException) -> dict:
    if type(x) is StepError:
        try:
            item = _enc(x.item)
        except ReplayEncodeError:
            item = {"$": "repr", "v": repr(x.item)[:1000]}
        return {"$": "steperror", "step": x.step, "item": item, "exc": _enc_exception(x.exception)}
    out: dict = {"$": "exc", "c": f"{type(x).__module__}:{type(x).__qualname__}", "m": str(x)}
    if type(x).__module__ == "builtins":
        try:
            out["a"] = [_enc(a) for a in x.args]
        except ReplayEncodeError:
            pass
    return out


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
_encode = _ENCODER.encode


def encode_json(item: Any) -> bytes:
    """One item as one line of ASCII JSON (no newline inside, none at the end)."""
    if type(item) is int:  # the most common item, and its repr is its JSON
        return repr(item).encode("ascii")
    try:
        return _encode(_enc(item)).encode("ascii")
    except RecursionError:
        raise ReplayEncodeError(
            f"cannot store an item of type {_type_name(type(item))} in the replay cache: it is "
            f"nested too deeply or contains itself"
        ) from None


# ---- decoding ---------------------------------------------------------------------------
def _find_class(ref: Any, check: Callable[[type], bool], what: str) -> type:
    if not isinstance(ref, str) or ":" not in ref:
        raise ReplayDecodeError(f"bad class reference {ref!r} in the replay cache")
    module_name, _, qualname = ref.partition(":")
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        raise ReplayDecodeError(
            f"the replay cache holds a {what} of class {qualname} from module {module_name!r}, "
            f"which is not imported; import it before the run (a cache never imports modules)"
        )
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type) or not check(obj):
        raise ReplayDecodeError(f"the replay cache refers to {ref!r}, which is not a {what} class")
    return obj


def _dec_dataclass(v: dict) -> Any:
    cls = _find_class(v["c"], dataclasses.is_dataclass, "dataclass")
    names = {f.name for f in dataclasses.fields(cls)}
    obj = cls.__new__(cls)
    for name, value in v["v"].items():
        if name not in names:
            raise ReplayDecodeError(f"dataclass {v['c']} has no field {name!r} any more")
        object.__setattr__(obj, name, _dec(value))
    return obj


def _dec_datetime(v: dict) -> datetime.datetime:
    value = datetime.datetime.fromisoformat(v["v"])
    if "tz" in v:
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(v["tz"]), fold=v.get("fold", 0))
    return value


def _dec_time(v: dict) -> datetime.time:
    value = datetime.time.fromisoformat(v["v"])
    if "tz" in v:
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(v["tz"]), fold=v.get("fold", 0))
    return value


def _dec_registered(v: dict) -> Any:
    entry = _by_name.get(v["n"])
    if entry is None:
        raise ReplayDecodeError(
            f"the replay cache holds an item of registered type {v['n']!r}, which is not "
            f"registered in this run; call rxbot.replay.register_type before the run"
        )
    return entry[2](_dec(v["v"]))


def _dec_exception(v: dict) -> BaseException:
    ref = v["c"]
    module_name, _, qualname = ref.partition(":")
    if module_name == "builtins":
        cls = getattr(builtins, qualname, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            args = [_dec(a) for a in v["a"]] if "a" in v else [v["m"]]
            try:
                return cls(*args)
            except Exception:
                pass
    return ReplayedError(qualname or ref, v["m"])


def _dec_steperror(v: dict) -> Any:
    item = v["item"]
    item = ("<not stored: " + item["v"] + ">") if isinstance(item, dict) and item.get("$") == "repr" else _dec(item)
    return StepError(v["step"], item, _dec_exception(v["exc"]))


def _b64(v: dict) -> bytes:
    return base64.b64decode(v["v"].encode("ascii"), validate=True)


_DECODERS: Dict[str, Callable[[dict], Any]] = {
    "dict": lambda v: {_dec(k): _dec(x) for k, x in v["v"]},
    "tuple": lambda v: tuple(_dec(x) for x in v["v"]),
    "set": lambda v: {_dec(x) for x in v["v"]},
    "frozenset": lambda v: frozenset(_dec(x) for x in v["v"]),
    "bytes": _b64,
    "bytearray": lambda v: bytearray(_b64(v)),
    "complex": lambda v: complex(v["v"][0], v["v"][1]),
    "datetime": _dec_datetime,
    "date": lambda v: datetime.date.fromisoformat(v["v"]),
    "time": _dec_time,
    "timedelta": lambda v: datetime.timedelta(days=v["v"][0], seconds=v["v"][1], microseconds=v["v"][2]),
    "decimal": lambda v: decimal.Decimal(v["v"]),
    "fraction": lambda v: fractions.Fraction(v["v"]),
    "uuid": lambda v: uuid.UUID(v["v"]),
    "range": lambda v: range(*v["v"]),
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
    if t is dict:
        tag = v.get("$")
        if tag is None:
            return {k: _dec(x) for k, x in v.items()}
        decoder = _DECODERS.get(tag)
        if decoder is None:
            raise ReplayDecodeError(f"unknown tag {tag!r} in the replay cache (written by a newer rxbot?)")
        try:
            return decoder(v)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            if isinstance(exc, ReplayDecodeError):
                raise
            raise ReplayDecodeError(f"malformed {tag!r} value in the replay cache: {exc}") from None
    return v


def decode_json(payload: bytes) -> Any:
    return _dec(json.loads(payload))


# ---- codecs: item <-> record bytes, and the framing of records in a file -------------------
class JsonCodec:
    """JSON lines: one ASCII line per item (readable with any text tool)."""

    name = "json"
    suffix = "jsonl"
    dumps = staticmethod(encode_json)
    loads = staticmethod(decode_json)

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return payload + b"\n"

    @staticmethod
    def records(fh: BinaryIO) -> Iterator[bytes]:
        for line in fh:
            if not line.endswith(b"\n"):
                raise ReplayDecodeError("the replay cache file ends in the middle of a record")
            yield line[:-1]


_LEN = struct.Struct(">Q")


class PickleCodec:
    """Length-prefixed pickles. Opt-in only; rxbot.replay verifies the file's HMAC
    before :meth:`loads` is ever called on a record of it."""

    name = "pickle"
    suffix = "pkl"

    @staticmethod
    def dumps(item: Any) -> bytes:
        try:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ReplayEncodeError(
                f"cannot pickle an item of type {_type_name(type(item))} for the replay cache: {exc}"
            ) from None

    @staticmethod
    def loads(payload: bytes) -> Any:
        return pickle.loads(payload)

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return _LEN.pack(len(payload)) + payload

    @staticmethod
    def records(fh: BinaryIO) -> Iterator[bytes]:
        while True:
            head = fh.read(_LEN.size)
            if not head:
                return
            if len(head) < _LEN.size:
                raise ReplayDecodeError("the replay cache file ends in the middle of a record")
            (n,) = _LEN.unpack(head)
            payload = fh.read(n)
            if len(payload) < n:
                raise ReplayDecodeError("the replay cache file ends in the middle of a record")
            yield payload


CODECS = {"json": JsonCodec, "pickle": PickleCodec}


def codec(name: str) -> Any:
    """The codec for a ``config.replay_serializer`` value."""
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"config.replay_serializer must be 'json' (default, safe) or 'pickle' (opt-in, "
            f"HMAC-signed); got {name!r}"
        ) from None


__all__ = [
    "register_type", "unregister_type", "ReplayEncodeError", "ReplayDecodeError", "ReplayedError",
    "encode_json", "decode_json", "JsonCodec", "PickleCodec", "codec", "CODECS",
]

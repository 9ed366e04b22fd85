"""Safe serialisation of stream items for the replay cache: msgpack, with bounded decoding.

A cache file is a sequence of msgpack objects, one per item. ``None``, ``bool``, ``int``
(64-bit), ``float``, ``str``, ``bytes``, ``list`` and ``dict`` (any keys) are msgpack's
own types (a ``bytearray`` or ``memoryview`` is stored as ``bytes``, and comes back so);
everything else the cache stores is an *extension type* (see ``Ext``): big
ints of any size (as bytes, never through ``str``, so no int/str conversion limit),
tuples, sets, frozensets, datetimes (naive, ``datetime.timezone`` or
``zoneinfo.ZoneInfo``), dates, times, timedeltas, Decimals and Fractions (as their parts,
never as text to parse), complex numbers, UUIDs, ranges, Enum members, dataclasses,
namedtuples, paths, exceptions and types registered with :func:`register_type`.

Loading a cache can never run code, whoever wrote the file: classes are looked up only
among modules already imported (a cache never triggers an import), dataclasses are
rebuilt field by field without calling ``__init__``, and only built-in exception classes
are instantiated. Decoding is **bounded**: an item's encoded size (``MAX_RECORD``), the
number of elements of a container (``MAX_ITEMS``), the nesting (msgpack's own stack for
lists and dicts, ``MAX_DEPTH`` for the extension types inside each other) and the size
of every number (``MAX_INT_BYTES``, ``MAX_FRACTION_BYTES``, ``MAX_DECIMAL_DIGITS``,
``MAX_DECIMAL_EXPONENT``) — so hostile bytes cost time and memory in proportion to their
length, and any of them give a :class:`ReplayDecodeError`, never another exception. The
encoder refuses what the decoder would refuse (a :class:`ReplayEncodeError`), so a cache
rxbot wrote can always be read back.

Pickle is opt-in (``config.replay_serializer = 'pickle'``); :mod:`rxbot.replay` signs
those files.
"""
from __future__ import annotations

import builtins
import dataclasses
import datetime
import decimal
import enum
import fractions
import pathlib
import pickle
import re
import struct
import sys
import threading
import uuid
import zoneinfo
from typing import IO, Any, Callable, Dict, Iterator, List, Protocol, Tuple, Type

import msgpack

from ..errors import StepError
from ..redact import redact

OPT_IN = ("config.replay_serializer = 'pickle' (the cache is then signed with an HMAC key "
          "kept beside it and refused if the signature does not match)")

#: the largest encoded item (bytes)
MAX_RECORD = 64 << 20
#: the most elements of one list, dict, tuple or set
MAX_ITEMS = 1 << 24
#: how deeply extension types (tuples, sets, dataclasses, ...) may nest in each other;
#: lists and dicts nest up to msgpack's own limits (512 levels written, 1024 read)
MAX_DEPTH = 100
#: the largest int outside 64 bits (bytes of two's complement: about 2.5 million digits)
MAX_INT_BYTES = 1 << 20
#: the largest numerator or denominator of a Fraction (bytes: about 19,700 digits), so
#: normalising a hostile one costs milliseconds
MAX_FRACTION_BYTES = 8 << 10
#: the most digits of a Decimal, and the largest magnitude of its exponent
MAX_DECIMAL_DIGITS = 100_000
MAX_DECIMAL_EXPONENT = 1_000_000


class ReplayEncodeError(TypeError):
    """An item cannot be stored in the replay cache with the configured serializer."""


class ReplayDecodeError(ValueError):
    """A cached item cannot be turned back into a value (a damaged or hostile file, a
    class that is not imported, a number beyond the limits, ...)."""


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
    """Teach the safe format a type: ``encode(obj)`` returns something the format can
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


class Ext:
    """msgpack extension type codes (stable: they are what the files hold)."""

    BIGINT, TUPLE, SET, FROZENSET = 1, 2, 3, 4  # 5: not used (msgpack packs a bytearray as bytes)
    DATETIME, DATE, TIME, TIMEDELTA = 6, 7, 8, 9
    DECIMAL, FRACTION, COMPLEX, UUID, RANGE = 10, 11, 12, 13, 14
    ENUM, DATACLASS, NAMEDTUPLE, PATH, REGISTERED, EXCEPTION, STEPERROR = 15, 16, 17, 18, 19, 20, 21


_COMPLEX = struct.Struct(">dd")


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(code, data)`` without its argument checks (ours are right):
    a third of the cost of a tagged value."""
    return tuple.__new__(msgpack.ExtType, (code, data))


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _class_ref(t: type, what: str) -> str:
    if "<locals>" in t.__qualname__:
        raise ReplayEncodeError(f"cannot store a {what} of class {_type_name(t)} in the replay cache: it is "
                                f"defined inside a function, so a later run cannot find it; define it at "
                                f"module level")
    return f"{t.__module__}:{t.__qualname__}"


def _unsupported(t: type) -> ReplayEncodeError:
    return ReplayEncodeError(
        f"cannot store an item of type {_type_name(t)} in the replay cache (msgpack format). It stores None, "
        f"bool, int, float, str, bytes, list, dict, tuple, set, datetime/date/time/timedelta, Decimal, "
        f"Fraction, complex, UUID, range, Enum members, dataclasses, namedtuples, paths, exceptions and "
        f"types registered with rxbot.replay.register_type(cls, encode, decode). Register {t.__name__}, "
        f"make it a dataclass, or opt in to pickle: {OPT_IN}")


# ---- encoding --------------------------------------------------------------------------------
class _Encoder:
    """Packs items (:meth:`function`). Extension types holding values of their own are packed
    with a packer one level deeper (a packer is not re-entrant), up to ``MAX_DEPTH``."""

    def __init__(self) -> None:
        self.depth = 0
        self.packers: List[msgpack.Packer] = []

    def _packer(self, depth: int) -> msgpack.Packer:
        while len(self.packers) <= depth:
            # strict_types: tuples, subclasses of dict/list/str/int and bools-as-ints are
            # not silently turned into msgpack's own types; they come to ``default``
            self.packers.append(msgpack.Packer(default=self.default, use_bin_type=True, strict_types=True,
                                               datetime=False, autoreset=True))
        return self.packers[depth]

    def function(self) -> Callable[[Any], bytes]:
        """Packing as one function — msgpack's C packer, then a length test — since it is
        called for every item a recorder sees."""
        pack = self._packer(0).pack

        def dumps(item: Any) -> bytes:
            try:
                out: bytes = pack(item)
            except Exception as exc:
                self.depth = 0
                raise _refusal(item, exc) from None
            if len(out) > MAX_ITEMS:
                _check_size(item, out)
            return out

        return dumps

    def nested(self, value: Any) -> bytes:
        """``value`` packed on its own, one level deeper."""
        if self.depth >= MAX_DEPTH:
            raise ReplayEncodeError(f"cannot store an item in the replay cache: its tuples, sets and other "
                                    f"tagged values nest more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            out: bytes = self._packer(self.depth).pack(value)
            return out
        finally:
            self.depth -= 1

    def default(self, x: Any) -> msgpack.ExtType:
        t = type(x)
        if t is int:  # outside 64 bits (msgpack packs the others itself)
            size = (x.bit_length() + 8) // 8
            if size > MAX_INT_BYTES:
                raise ReplayEncodeError(f"cannot store an int of {x.bit_length():,} bits in the replay cache "
                                        f"(at most {MAX_INT_BYTES * 8 - 1:,})")
            return _ext(Ext.BIGINT, x.to_bytes(size, "big", signed=True))
        if t is tuple:
            return _ext(Ext.TUPLE, self.nested(list(x)))
        if t is set or t is frozenset:
            return _ext(Ext.SET if t is set else Ext.FROZENSET, self.nested(list(x)))
        simple = _SIMPLE.get(t)
        if simple is not None:
            code, encode = simple
            return _ext(code, encode(self, x))
        registered = _by_type.get(t)
        if registered is not None:
            return _ext(Ext.REGISTERED, self.nested([registered[0], registered[1](x)]))
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            fields = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
            return _ext(Ext.DATACLASS, self.nested([_class_ref(t, "dataclass"), fields]))
        if isinstance(x, tuple) and hasattr(t, "_fields") and hasattr(t, "_make"):
            return _ext(Ext.NAMEDTUPLE, self.nested([_class_ref(t, "namedtuple"), list(x)]))
        if isinstance(x, enum.Enum):
            return _ext(Ext.ENUM, self.nested([_class_ref(t, "Enum member"), x.value]))
        if isinstance(x, pathlib.PurePath) and getattr(pathlib, t.__name__, None) is t:
            return _ext(Ext.PATH, self.nested([t.__name__, str(x)]))
        if isinstance(x, BaseException):
            return self._exception(x)
        raise _unsupported(t)

    def _tuple_or_none(self, values: List[Any]) -> msgpack.ExtType | None:
        """``values`` as a stored tuple, or None when one of them cannot be stored."""
        try:
            return _ext(Ext.TUPLE, self.nested(values))
        except ReplayEncodeError:
            return None

    def _exception(self, x: BaseException) -> msgpack.ExtType:
        if type(x) is StepError:  # the pipein policy's items
            item = self._tuple_or_none([x.item])  # a 1-tuple: None is an item too
            body = [x.step, item if item is not None else redact(repr(x.item)[:1000]), self._exception(x.exception)]
            return _ext(Ext.STEPERROR, self.nested(body))
        ref = f"{type(x).__module__}:{type(x).__qualname__}"
        # an error's text is what leaves the process (to disk) here, not an item that must
        # replay exactly: its message and string arguments are redacted, as in every report
        args = (self._tuple_or_none([redact(a) if isinstance(a, str) else a for a in x.args])
                if type(x).__module__ == "builtins" else None)
        step = getattr(x, "rxbot_step", None)  # a pipein item: where it failed
        if isinstance(step, str):
            item = self._tuple_or_none([getattr(x, "rxbot_item", None)])
        else:
            step = item = None
        return _ext(Ext.EXCEPTION, self.nested([ref, redact(x), args, step, item]))


def _refusal(item: Any, exc: Exception) -> ReplayEncodeError:
    """What packing ``item`` raised, as the codec's own error."""
    if isinstance(exc, ReplayEncodeError):
        return exc
    what = f"cannot store an item of type {_type_name(type(item))} in the replay cache"
    if isinstance(exc, RecursionError):
        return ReplayEncodeError(f"{what}: it is nested too deeply or contains itself")
    # msgpack's own refusals ("recursion limit exceeded", ...), a registered encoder that failed, ...
    return ReplayEncodeError(f"{what}: {type(exc).__name__}: {exc}")


def _check_size(item: Any, out: bytes) -> None:
    if len(out) > MAX_RECORD:
        raise ReplayEncodeError(f"cannot store an item of type {_type_name(type(item))} in the replay "
                                f"cache: it takes {len(out):,} bytes, more than {MAX_RECORD:,}")
    _check_lengths(item)  # only a record this long can hold more elements than a reader takes


def _check_lengths(item: Any) -> None:
    """Refuse a container with more elements than a reader accepts (the rare path: only
    items encoded in more than ``MAX_ITEMS`` bytes can hold one)."""
    stack, seen = [item], 0
    while stack:
        x = stack.pop()
        seen += 1
        if seen > 4 * MAX_ITEMS:
            return
        if isinstance(x, (list, tuple, set, frozenset, dict)):
            if len(x) > MAX_ITEMS:
                raise ReplayEncodeError(f"cannot store an item in the replay cache: a {type(x).__name__} of "
                                        f"{len(x):,} elements (at most {MAX_ITEMS:,})")
            stack.extend(x.values() if isinstance(x, dict) else x)


_DATETIME = struct.Struct(">HBBBBBIB")  # year, month, day, hour, minute, second, microsecond, fold
_DATE = struct.Struct(">HBB")
_TIME = struct.Struct(">BBBIB")  # hour, minute, second, microsecond, fold
_TIMEDELTA = struct.Struct(">iII")  # days, seconds, microseconds
_OFFSET = struct.Struct(">ii")  # a fixed offset: seconds, microseconds
#: a Decimal's text as str() writes it; the exponent's length is what keeps a hostile
#: '1e100000000' from ever being parsed
_DECIMAL_TEXT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:E[+-]?(\d{1,7}))?|-?(?:Infinity|s?NaN\d*)", re.ASCII)


def _tz(x: Any) -> bytes:
    """A datetime's or time's zone: nothing, ``O`` + a fixed offset, or ``Z`` + a zone key."""
    tz = x.tzinfo
    if tz is None:
        return b""
    if isinstance(tz, datetime.timezone):
        offset = tz.utcoffset(None)
        return b"O" + _OFFSET.pack(offset.days * 86400 + offset.seconds, offset.microseconds)
    if isinstance(tz, zoneinfo.ZoneInfo):
        return b"Z" + tz.key.encode("utf-8")
    raise ReplayEncodeError(f"cannot store a {type(x).__name__} with tzinfo {type(tz).__name__} in the replay "
                            f"cache; use datetime.timezone or zoneinfo.ZoneInfo, or opt in to pickle: {OPT_IN}")


def _enc_decimal(enc: _Encoder, x: decimal.Decimal) -> bytes:
    text = str(x)
    match = _DECIMAL_TEXT.fullmatch(text)
    if len(text) > MAX_DECIMAL_DIGITS or match is None \
            or (match.group(1) is not None and int(match.group(1)) > MAX_DECIMAL_EXPONENT):
        raise ReplayEncodeError(f"cannot store the Decimal {text:.60} in the replay cache (at most "
                                f"{MAX_DECIMAL_DIGITS:,} characters, exponent within ±{MAX_DECIMAL_EXPONENT:,})")
    return text.encode("ascii")


def _enc_fraction(enc: _Encoder, x: fractions.Fraction) -> bytes:
    if max(abs(x.numerator), x.denominator).bit_length() >= MAX_FRACTION_BYTES * 8:
        raise ReplayEncodeError(f"cannot store a Fraction whose parts have more than {MAX_FRACTION_BYTES * 8 - 1:,} "
                                f"bits in the replay cache")
    return enc.nested([x.numerator, x.denominator])


#: type -> (ext code, encoder of its payload)
_SIMPLE: Dict[type, Tuple[int, Callable[[_Encoder, Any], bytes]]] = {
    datetime.datetime: (Ext.DATETIME, lambda e, x: _DATETIME.pack(
        x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond, x.fold) + _tz(x)),
    datetime.date: (Ext.DATE, lambda e, x: _DATE.pack(x.year, x.month, x.day)),
    datetime.time: (Ext.TIME, lambda e, x: _TIME.pack(x.hour, x.minute, x.second, x.microsecond, x.fold) + _tz(x)),
    datetime.timedelta: (Ext.TIMEDELTA, lambda e, x: _TIMEDELTA.pack(x.days, x.seconds, x.microseconds)),
    decimal.Decimal: (Ext.DECIMAL, _enc_decimal),
    fractions.Fraction: (Ext.FRACTION, _enc_fraction),
    complex: (Ext.COMPLEX, lambda e, x: _COMPLEX.pack(x.real, x.imag)),
    uuid.UUID: (Ext.UUID, lambda e, x: x.bytes),
    range: (Ext.RANGE, lambda e, x: e.nested([x.start, x.stop, x.step])),
}


# ---- decoding --------------------------------------------------------------------------------
def _find_class(ref: Any, check: Callable[[type], bool], what: str) -> Type[Any]:
    if not isinstance(ref, str) or ":" not in ref or len(ref) > 1000:
        raise ReplayDecodeError(f"bad class reference {ref!r:.200} in the replay cache")
    module_name, _, qualname = ref.partition(":")
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        raise ReplayDecodeError(f"the replay cache holds a {what} of class {qualname} from module "
                                f"{module_name!r}, which is not imported; import it before the run (a cache "
                                f"never imports modules)")
    for part in qualname.split("."):
        obj = None if part.startswith("__") else getattr(obj, part, None)
    if not isinstance(obj, type) or not check(obj):
        raise ReplayDecodeError(f"the replay cache refers to {ref!r}, which is not a {what} class")
    return obj


def _fields(value: Any, n: int, what: str) -> List[Any]:
    if type(value) is not list or len(value) != n:
        raise ReplayDecodeError(f"malformed {what} in the replay cache")
    return value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise ReplayDecodeError(f"malformed number in the replay cache: {type(value).__name__}")
    return value


def _str(value: Any, limit: int = 1 << 16) -> str:
    if type(value) is not str or len(value) > limit:
        raise ReplayDecodeError("malformed text in the replay cache")
    return value


class _Decoder:
    """The ``ext_hook`` of one read: decodes extension types, counting how deeply they
    nest (each level is one more ``unpackb`` of its payload)."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0

    def nested(self, data: bytes) -> Any:
        if self.depth >= MAX_DEPTH:
            raise ReplayDecodeError(f"the replay cache holds values nested more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            n = len(data)
            return msgpack.unpackb(data, ext_hook=self.hook, raw=False, strict_map_key=False, timestamp=0,
                                   max_str_len=n, max_bin_len=n, max_array_len=min(n, MAX_ITEMS),
                                   max_map_len=min(n, MAX_ITEMS), max_ext_len=n)
        finally:
            self.depth -= 1

    def hook(self, code: int, data: bytes) -> Any:
        decode = _DECODERS.get(code)
        if decode is None:
            raise ReplayDecodeError(f"unknown type code {code} in the replay cache (written by another rxbot?)")
        return decode(self, data)


def _dec_bigint(d: _Decoder, data: bytes) -> int:
    if len(data) > MAX_INT_BYTES:
        raise ReplayDecodeError(f"an int of {len(data):,} bytes in the replay cache (at most {MAX_INT_BYTES:,})")
    return int.from_bytes(data, "big", signed=True)


def _dec_tz(data: bytes) -> Any:
    if not data:
        return None
    if data[:1] == b"O" and len(data) == 1 + _OFFSET.size:
        seconds, micros = _OFFSET.unpack_from(data, 1)
        return datetime.timezone(datetime.timedelta(seconds=seconds, microseconds=micros))
    if data[:1] == b"Z" and len(data) < 256:
        return zoneinfo.ZoneInfo(data[1:].decode("utf-8"))
    raise ReplayDecodeError("malformed time zone in the replay cache")


def _dec_datetime(d: _Decoder, data: bytes) -> datetime.datetime:
    year, month, day, hour, minute, second, micros, fold = _DATETIME.unpack_from(data)
    return datetime.datetime(year, month, day, hour, minute, second, micros, tzinfo=_dec_tz(data[_DATETIME.size:]),
                             fold=fold)


def _dec_time(d: _Decoder, data: bytes) -> datetime.time:
    hour, minute, second, micros, fold = _TIME.unpack_from(data)
    return datetime.time(hour, minute, second, micros, tzinfo=_dec_tz(data[_TIME.size:]), fold=fold)


def _dec_exact(layout: struct.Struct, make: Callable[..., Any]) -> Callable[[_Decoder, bytes], Any]:
    def decode(d: _Decoder, data: bytes) -> Any:
        return make(*layout.unpack(data))

    return decode


def _dec_decimal(d: _Decoder, data: bytes) -> decimal.Decimal:
    # checked as text before anything parses it: a hostile '1e100000000' never gets further
    match = _DECIMAL_TEXT.fullmatch(data.decode("ascii")) if len(data) <= MAX_DECIMAL_DIGITS else None
    if match is None or (match.group(1) is not None and int(match.group(1)) > MAX_DECIMAL_EXPONENT):
        raise ReplayDecodeError(f"a malformed Decimal, or one beyond the limits, in the replay cache: {data[:60]!r}")
    return decimal.Decimal(match.group(0))


def _dec_fraction(d: _Decoder, data: bytes) -> fractions.Fraction:
    num, den = map(_int, _fields(d.nested(data), 2, "Fraction"))
    if max(abs(num), abs(den)).bit_length() >= MAX_FRACTION_BYTES * 8 or den <= 0:
        raise ReplayDecodeError("a Fraction beyond the limits (or with a denominator <= 0) in the replay cache")
    return fractions.Fraction(num, den)


def _dec_complex(d: _Decoder, data: bytes) -> complex:
    if len(data) != _COMPLEX.size:
        raise ReplayDecodeError("malformed complex in the replay cache")
    return complex(*_COMPLEX.unpack(data))


def _dec_collection(kind: Callable[[List[Any]], Any]) -> Callable[[_Decoder, bytes], Any]:
    def decode(d: _Decoder, data: bytes) -> Any:
        value = d.nested(data)
        if type(value) is not list:
            raise ReplayDecodeError(f"malformed {kind.__name__} in the replay cache")
        return kind(value)

    return decode


def _dec_dataclass(d: _Decoder, data: bytes) -> Any:
    ref, values = _fields(d.nested(data), 2, "dataclass")
    cls = _find_class(ref, dataclasses.is_dataclass, "dataclass")
    if type(values) is not dict:
        raise ReplayDecodeError("malformed dataclass in the replay cache")
    names = {f.name for f in dataclasses.fields(cls)}
    make: Any = cls.__new__
    obj = make(cls)  # without __init__: its fields are set from the cache
    for name, value in values.items():
        if name not in names:
            raise ReplayDecodeError(f"dataclass {ref} has no field {name!r:.100} any more")
        object.__setattr__(obj, name, value)
    return obj


def _dec_namedtuple(d: _Decoder, data: bytes) -> Any:
    ref, values = _fields(d.nested(data), 2, "namedtuple")
    cls = _find_class(ref, lambda c: issubclass(c, tuple) and hasattr(c, "_make"), "namedtuple")
    return cls._make(_fields(values, len(cls._fields), "namedtuple"))


def _dec_enum(d: _Decoder, data: bytes) -> Any:
    ref, value = _fields(d.nested(data), 2, "Enum member")
    return _find_class(ref, lambda c: issubclass(c, enum.Enum), "Enum")(value)


def _dec_path(d: _Decoder, data: bytes) -> Any:
    name, text = _fields(d.nested(data), 2, "path")
    return _find_class("pathlib:" + _str(name, 100), lambda c: issubclass(c, pathlib.PurePath), "path")(_str(text))


def _dec_registered(d: _Decoder, data: bytes) -> Any:
    name, value = _fields(d.nested(data), 2, "registered value")
    if type(name) is not str or name not in _by_name:
        raise ReplayDecodeError(f"the replay cache holds an item of registered type {name!r:.200}, which is not "
                                f"registered in this run; call rxbot.replay.register_type before the run")
    try:
        return _by_name[name][1](value)
    except Exception as exc:
        raise ReplayDecodeError(f"the decoder registered for {name!r} failed: {type(exc).__name__}: {exc}") from None


def _dec_exception(d: _Decoder, data: bytes) -> BaseException:
    ref, message, args, step, item = _fields(d.nested(data), 5, "exception")
    module_name, _, qualname = _str(ref, 1000).partition(":")
    message = _str(message, MAX_RECORD)
    cls = getattr(builtins, qualname, None) if module_name == "builtins" else None
    exc: BaseException | None = None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            exc = cls(*(args if type(args) is tuple else (message,)))
        except Exception:
            exc = None
    if exc is None:
        exc = ReplayedError(qualname or ref, message)
    if type(step) is str:  # a pipein item: the step and item it failed in, as they were recorded
        # the same ad-hoc attributes as errors.annotate (an exception has no declared slot)
        setattr(exc, "rxbot_step", step)
        setattr(exc, "rxbot_item", item[0] if type(item) is tuple and len(item) == 1 else None)
    return exc


def _dec_steperror(d: _Decoder, data: bytes) -> StepError:
    step, item, exc = _fields(d.nested(data), 3, "step error")
    if type(step) is not str or not isinstance(exc, BaseException):
        raise ReplayDecodeError("malformed step error in the replay cache")
    if type(item) is tuple and len(item) == 1:
        item = item[0]
    else:  # it could not be stored: its repr
        item = f"<not stored: {_str(item, 1000)}>"
    return StepError(step, item, exc)


_DECODERS: Dict[int, Callable[[_Decoder, bytes], Any]] = {
    Ext.BIGINT: _dec_bigint,
    Ext.TUPLE: _dec_collection(tuple),
    Ext.SET: _dec_collection(set),
    Ext.FROZENSET: _dec_collection(frozenset),
    Ext.DATETIME: _dec_datetime,
    Ext.DATE: _dec_exact(_DATE, datetime.date),
    Ext.TIME: _dec_time,
    Ext.TIMEDELTA: _dec_exact(_TIMEDELTA, datetime.timedelta),
    Ext.DECIMAL: _dec_decimal,
    Ext.FRACTION: _dec_fraction,
    Ext.COMPLEX: _dec_complex,
    Ext.UUID: lambda d, data: uuid.UUID(bytes=data),
    Ext.RANGE: lambda d, data: range(*map(_int, _fields(d.nested(data), 3, "range"))),
    Ext.ENUM: _dec_enum,
    Ext.DATACLASS: _dec_dataclass,
    Ext.NAMEDTUPLE: _dec_namedtuple,
    Ext.PATH: _dec_path,
    Ext.REGISTERED: _dec_registered,
    Ext.EXCEPTION: _dec_exception,
    Ext.STEPERROR: _dec_steperror,
}


def _refused(exc: BaseException) -> ReplayDecodeError:
    """Whatever a damaged or hostile record raised, as the codec's own error."""
    if isinstance(exc, ReplayDecodeError):
        return exc
    return ReplayDecodeError(f"unreadable record in the replay cache ({type(exc).__name__}: {str(exc)[:200]})")


# ---- the public functions ----------------------------------------------------------------------
_local = threading.local()


def encode(item: Any) -> bytes:
    """One item as one msgpack record (:class:`ReplayEncodeError` if it cannot be stored)."""
    dumps = getattr(_local, "dumps", None)
    if dumps is None:
        dumps = _local.dumps = _Encoder().function()
    return dumps(item)


def decode(payload: bytes) -> Any:
    """One record back into its item; any bytes give the item or a :class:`ReplayDecodeError`."""
    items = list(_unpack(_unpacker(None), payload))
    if len(items) != 1:
        raise ReplayDecodeError(f"a replay cache record holds {len(items)} values, not 1")
    return items[0]


def _unpacker(fh: Any) -> msgpack.Unpacker:
    return msgpack.Unpacker(fh, read_size=1 << 16, max_buffer_size=MAX_RECORD, ext_hook=_Decoder().hook,
                            raw=False, strict_map_key=False, timestamp=0, max_str_len=MAX_RECORD,
                            max_bin_len=MAX_RECORD, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS,
                            max_ext_len=MAX_RECORD)


def _unpack(unpacker: msgpack.Unpacker, payload: bytes) -> Iterator[Any]:
    try:
        unpacker.feed(payload)
        yield from unpacker
        if unpacker.tell() != len(payload):
            raise ReplayDecodeError("a replay cache record ends in the middle of a value")
    except Exception as exc:
        raise _refused(exc) from None


def read_items(fh: IO[bytes]) -> Iterator[Any]:
    """Every item of a cache file, decoded one at a time as they are pulled (the reader
    holds at most one item's bytes, up to ``MAX_RECORD``, beyond its 64 KiB buffer)."""
    unpacker = _unpacker(fh)
    try:
        yield from unpacker
        try:
            rest = unpacker.read_bytes(1)
        except ValueError:  # "an object is incomplete"
            rest = b"?"
    except Exception as exc:
        raise _refused(exc) from None
    if rest:  # bytes left that are not a whole record
        raise ReplayDecodeError("the replay cache file ends in the middle of a record")


# ---- codecs: item <-> record bytes, and how a file of them is read ----------------------------
class Codec(Protocol):
    """What the replay session needs of a serializer (the classes below are used as
    they are, never instantiated: every member is a class attribute or staticmethod)."""

    name: str  # written in manifests
    suffix: str  # the data file's extension
    safe: bool  # loading can never run code (else: only after the file's signature matched)

    def encoder(self) -> Callable[[Any], bytes]:
        """A function writing one item as one record (for one recording: not shared)."""
        ...

    def items(self, fh: IO[bytes], /) -> Iterator[Any]:
        """The items of a file of records, decoded as they are pulled."""
        ...


class MsgpackCodec:
    """msgpack records (the default): safe and bounded to load."""

    name, suffix, safe = "msgpack", "msgpack", True
    items = staticmethod(read_items)

    @staticmethod
    def encoder() -> Callable[[Any], bytes]:
        return _Encoder().function()


_LEN = struct.Struct(">Q")


class PickleCodec:
    """Length-prefixed pickles; opt-in only, and read only after the file's HMAC matched."""

    name, suffix, safe = "pickle", "pkl", False

    @staticmethod
    def dumps(item: Any) -> bytes:
        try:
            payload = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ReplayEncodeError(f"cannot pickle an item of type {_type_name(type(item))} for the replay "
                                    f"cache: {exc}") from None
        return _LEN.pack(len(payload)) + payload

    @staticmethod
    def encoder() -> Callable[[Any], bytes]:
        return PickleCodec.dumps

    @staticmethod
    def items(fh: IO[bytes]) -> Iterator[Any]:
        while True:
            head = fh.read(_LEN.size)
            if not head:
                return
            payload = fh.read(_LEN.unpack(head)[0]) if len(head) == _LEN.size else b""
            if len(head) < _LEN.size or len(payload) < _LEN.unpack(head)[0]:
                raise ReplayDecodeError("the replay cache file ends in the middle of a record")
            yield pickle.loads(payload)


CODECS: Dict[str, Codec] = {"msgpack": MsgpackCodec, "pickle": PickleCodec}
#: ``config.replay_serializer`` values: 'json' is the former name of the safe format
SETTINGS: Dict[str, Codec] = {"msgpack": MsgpackCodec, "json": MsgpackCodec, "pickle": PickleCodec}


def codec(name: str) -> Codec:
    """The codec for a ``config.replay_serializer`` value."""
    if name not in SETTINGS:
        raise ValueError(f"config.replay_serializer must be 'msgpack' (default, safe; 'json' is its former "
                         f"name) or 'pickle' (opt-in, HMAC-signed); got {name!r}")
    return SETTINGS[name]


__all__ = [
    "register_type", "unregister_type", "ReplayEncodeError", "ReplayDecodeError", "ReplayedError",
    "encode", "decode", "read_items", "Codec", "MsgpackCodec", "PickleCodec", "codec", "CODECS", "Ext",
    "MAX_RECORD", "MAX_ITEMS", "MAX_DEPTH", "MAX_INT_BYTES", "MAX_FRACTION_BYTES", "MAX_DECIMAL_DIGITS",
    "MAX_DECIMAL_EXPONENT",
]

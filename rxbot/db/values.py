"""Exact values for the database drivers: convert a Python value to the form its database
stores without loss, or refuse it with an error naming the step, the placeholder and the
type. Never ``str()`` by accident.

Why a layer of our own: PyMySQL escapes a type it does not know with ``str()`` (a user
object became ``'<__main__.Thing object at 0x…>'``, an Enum ``'Color.RED'``, a complex
``'(1+2j)'``), drops a datetime's time zone, sends a float NaN as the bare word ``nan``;
sqlite3 stores a NaN as NULL and (Python 3.12+) warns about its own date adapters. Each
database has one :class:`ValueAdapter` (``rxbot.db.mysql_values.MySQLValues``,
``rxbot.db.sqlite_values.SQLiteValues``) sharing this module's registry and dispatch:

* the conversion is looked up by the value's *exact* type in a dict (one lookup per value
  on the hot path; a subclass is resolved once, then cached);
* user adapters (:func:`register_adapter`) come first and apply to subclasses too
  (register ``enum.Enum`` to cover every Enum); what they return goes through the
  database's built-in rules, so it is checked like any other value;
* an ``Enum`` member is refused unless its class (or ``Enum``) is registered: storing
  ``.value`` or ``.name`` is the user's choice, not ours;
* a subclass of a supported type (``numpy.float64`` is a float, a ``str`` subclass) is
  stored as its base value; numpy scalars are converted when exactly representable.
"""
from __future__ import annotations

import datetime
import decimal
import enum
import json
import sys
from collections.abc import Mapping
from typing import Any, Callable, Dict, Optional, Tuple, Union

from .params import ParameterError

DATABASES = ("mysql", "sqlite")


class UnsupportedValueError(ParameterError):
    """A value a database cannot store exactly: names the step, the placeholder, the type
    and why. ``step``, ``placeholder``, ``type_name``, ``database`` and ``reason`` hold the
    parts. A ``ParameterError``: the item is at fault, not the database."""

    def __init__(self, step: str, placeholder: str, value_type: type, database: str, reason: str) -> None:
        self.step = step
        self.placeholder = placeholder
        self.type_name = _type_name(value_type)
        self.database = database
        self.reason = reason
        super().__init__(f"{step}: cannot bind {placeholder}: a value of type {self.type_name} "
                         f"{reason}")


class Refused(Exception):
    """Raised by a conversion: the value has no exact form; ``args[0]`` says why (it is
    completed into an :class:`UnsupportedValueError` by the adapter, which knows the step
    and the placeholder)."""


def _type_name(t: type) -> str:
    module = getattr(t, "__module__", "")
    name = getattr(t, "__qualname__", getattr(t, "__name__", repr(t)))
    return name if module in ("builtins", "") else f"{module}.{name}"


# ----------------------------------------------------------------------- user registry
class _Registry:
    """User adapters: ``{database or None: {type: fn}}``; ``version`` changes with every
    registration, so adapters drop what they cached."""

    def __init__(self) -> None:
        self.by_db: Dict[Optional[str], Dict[type, Callable[[Any], Any]]] = {None: {}, "mysql": {}, "sqlite": {}}
        self.version = 0

    def find(self, database: str, t: type) -> Optional[Callable[[Any], Any]]:
        own, every = self.by_db[database], self.by_db[None]
        if not own and not every:
            return None
        for base in t.__mro__:  # the nearest class wins; this database's rule before a general one
            fn = own.get(base) or every.get(base)
            if fn is not None:
                return fn
        return None


_registry = _Registry()


def register_adapter(cls: type, fn: Callable[[Any], Any], *, database: Optional[str] = None) -> None:
    """Store values of ``cls`` (and its subclasses) as ``fn(value)``.

    ``fn`` returns something the database stores as is (str, int, float, bytes, Decimal,
    date/datetime, ... or a dict for a JSON column); that result is checked by the same
    rules as any value, so a wrong return is refused, never ``str()``-ed. ``database``:
    ``"mysql"`` or ``"sqlite"`` for one of them, None (default) for both. A later
    registration for the same class and database replaces the earlier one.

    >>> import enum
    >>> from rxbot.db import register_adapter, unregister_adapter
    >>> class Color(enum.Enum):
    ...     RED = "red"
    >>> register_adapter(Color, lambda c: c.value)
    >>> unregister_adapter(Color)
    True
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_adapter: argument 'cls' must be a class; got {cls!r}")
    if not callable(fn):
        raise TypeError(f"register_adapter: argument 'fn' must be callable (value -> stored value); got {fn!r}")
    if database is not None and database not in DATABASES:
        raise ValueError(f"register_adapter: argument 'database' must be one of {DATABASES} or None; "
                         f"got {database!r}")
    _registry.by_db[database][cls] = fn
    _registry.version += 1


def unregister_adapter(cls: type, *, database: Optional[str] = None) -> bool:
    """Remove a registration made with :func:`register_adapter`; True if there was one."""
    if database is not None and database not in DATABASES:
        raise ValueError(f"unregister_adapter: argument 'database' must be one of {DATABASES} or None; "
                         f"got {database!r}")
    found = _registry.by_db[database].pop(cls, None) is not None
    _registry.version += 1
    return found


# ----------------------------------------------------------------------- shared rules
def check_text(value: str, encoding: str = "utf-8") -> str:
    """``value`` if the connection's encoding carries every character (no lone
    surrogates: aiomysql would send ``\\udcXX`` as a raw byte), else :class:`Refused`."""
    if value.isascii():  # O(1) in CPython: the flag is in the string header
        return value
    try:
        value.encode(encoding)
    except UnicodeEncodeError as exc:
        bad = value[exc.start:exc.end]
        what = "a lone surrogate" if any(0xD800 <= ord(c) <= 0xDFFF for c in bad) else "a character"
        raise Refused(f"holds {what} ({bad!r} at index {exc.start}) that {encoding} cannot encode") from None
    return value


def json_text(value: Any, check_str: Callable[[str], str]) -> str:
    """A mapping as its JSON text, exactly: keys must be str (JSON would turn 1 into "1"),
    leaves str/int/float (finite)/bool/None, containers dict/list/tuple (a tuple becomes
    a JSON array). Anything else is refused rather than rendered by ``json``."""
    _json_check(value, check_str, 0)
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


_JSON_MAX_DEPTH = 100


def _json_check(value: Any, check_str: Callable[[str], str], depth: int) -> None:
    t = type(value)
    if t is str:
        check_str(value)
    elif t is int or t is bool or value is None:
        return
    elif t is float:
        if value - value != 0.0:
            raise Refused(f"holds the float {value!r} in its JSON, which JSON cannot represent")
    elif t is dict or t is list or t is tuple or isinstance(value, Mapping):
        if depth >= _JSON_MAX_DEPTH:
            raise Refused(f"is nested more than {_JSON_MAX_DEPTH} levels deep for JSON")
        if t is list or t is tuple:
            for v in value:
                _json_check(v, check_str, depth + 1)
        else:
            for k, v in value.items():
                if type(k) is not str:
                    raise Refused(f"has the key {k!r} ({_type_name(type(k))}) in its JSON; JSON keys "
                                  "are strings, so it would not read back as written")
                check_str(k)
                _json_check(v, check_str, depth + 1)
    else:
        raise Refused(f"holds a {_type_name(t)} in its JSON ({_preview(value)}); JSON stores only str, "
                      "int, float, bool, None, dict, list (register an adapter for it)")


def _preview(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{_type_name(type(value))}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _numpy_generic() -> Optional[type]:
    np = sys.modules.get("numpy")  # a numpy scalar can only exist once numpy is imported
    return getattr(np, "generic", None) if np is not None else None


# ----------------------------------------------------------------------- the adapter
Converter = Optional[Callable[[Any], Any]]  # None: pass the value as it is
_MISSING = object()
_CACHE_LIMIT = 512  # resolved subclasses kept per adapter (dynamic classes must not leak)


class ValueAdapter:
    """Converts the values of one execution for one database connection.

    Subclasses fill :meth:`builtin_rules` (exact type -> converter, ``None`` meaning "as
    is") and may override :meth:`resolve_subclass` / ``refusal`` texts. An instance
    belongs to a node (and, for MySQL, knows its connection's time zone and encoding)."""

    database = ""
    #: shown in messages: "MySQL", "SQLite"
    title = ""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._builtin: Dict[type, Converter] = self.builtin_rules()
        self._table: Dict[type, Converter] = {}
        self._version = -1
        self._sync()

    # -- what a subclass supplies ---------------------------------------------------------
    def builtin_rules(self) -> Dict[type, Converter]:  # pragma: no cover - abstract
        raise NotImplementedError

    def numpy_value(self, value: Any) -> Any:
        """A numpy scalar as a Python value when the conversion is exact, else Refused."""
        np = sys.modules["numpy"]
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            if value.dtype.itemsize > 8:  # long double: float() would round it
                as_float = float(value)
                if np.longdouble(as_float) != value and value == value:
                    raise Refused("does not fit a 64-bit float exactly; convert it yourself")
                return as_float
            return float(value)  # float16/32/64 widen to a Python float exactly
        if isinstance(value, (np.str_, np.bytes_)):
            return value.item()
        raise Refused(f"(numpy {value.dtype}) has no exact {self.title} form; convert it "
                      "with .item() or register an adapter")

    # -- dispatch ---------------------------------------------------------------------------
    #: the range of ints (and whether plain ASCII str) passed without a call: the
    #: database-wide rule for them, inlined in :meth:`row` (None: no inline fast path)
    int_range: Optional[Tuple[int, int]] = None

    def _sync(self) -> None:
        self._table = dict(self._builtin)
        self._version = _registry.version
        for t in list(self._table):  # a registration for a built-in type overrides the rule
            fn = _registry.find(self.database, t)
            if fn is not None:
                self._table[t] = self._through(fn)
        # the inline checks stand for the built-in str and int rules: not when a user
        # adapter replaces either
        inline = (self.int_range is not None and self._table.get(str) is self._builtin.get(str)
                  and self._table.get(int) is self._builtin.get(int))
        self._low, self._high = self.int_range if inline and self.int_range else (1, 0)
        self._inline_str = inline

    def _through(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """A user adapter, its result checked by the built-in rules (not by user rules
        again: no loops)."""

        def convert(value: Any) -> Any:
            try:
                out = fn(value)
            except Refused:
                raise
            except Exception as exc:
                raise Refused(f"could not be converted: its adapter {getattr(fn, '__name__', fn)!r} raised "
                              f"{type(exc).__name__}: {exc}") from exc
            return self._builtin_convert(out, via=True)

        return convert

    def _builtin_convert(self, value: Any, via: bool = False) -> Any:
        t = type(value)
        conv = self._builtin.get(t, _MISSING)
        if conv is _MISSING:
            conv = self._resolve_builtin(t, value, via)
        return value if conv is None else conv(value)  # type: ignore[operator]

    def converter(self, t: type, value: Any) -> Converter:
        """The conversion for values of exact type ``t`` (resolved once, then cached)."""
        if self._version != _registry.version:
            self._sync()
        conv = self._table.get(t, _MISSING)
        if conv is not _MISSING:
            return conv  # type: ignore[return-value]
        fn = _registry.find(self.database, t)
        if fn is not None:
            conv = self._through(fn)
        else:
            conv = self._resolve_builtin(t, value, False)
        if len(self._table) > len(self._builtin) + _CACHE_LIMIT:
            self._sync()
        self._table[t] = conv  # type: ignore[assignment]
        return conv  # type: ignore[return-value]

    def _resolve_builtin(self, t: type, value: Any, via: bool) -> Converter:
        """The rule for a type with no rule of its own: refused Enum, numpy scalars, a
        subclass of a supported type stored as its base value, a Mapping as JSON."""
        how = "returned by its adapter, " if via else ""
        if issubclass(t, enum.Enum):
            def refuse_enum(v: Any, how: str = how) -> Any:
                raise Refused(f"({how}an Enum member) is refused: store its .value or .name by "
                              f"registering it, e.g. rxbot.db.register_adapter({t.__name__}, "
                              "lambda m: m.value)")
            return refuse_enum
        generic = _numpy_generic()
        if generic is not None and issubclass(t, generic):
            return lambda v: self._builtin_convert(self.numpy_value(v), via=True)
        for base in t.__mro__[1:]:
            conv = self._builtin.get(base, _MISSING)
            if conv is not _MISSING and base is not object:
                return self._as_base(base, conv)  # type: ignore[arg-type]
        if issubclass(t, Mapping) and dict in self._builtin:
            dict_rule = self._builtin[dict]
            return lambda v: dict_rule(dict(v)) if dict_rule is not None else dict(v)
        hint = self.hint(t)

        def refuse(v: Any) -> Any:
            raise Refused(f"{hint}" if hint else f"has no exact {self.title} form ({how}{_preview(v)}); "
                          f"convert it in a step before, or register one with rxbot.db.register_adapter("
                          f"{t.__name__}, fn)")
        return refuse

    def _as_base(self, base: type, conv: Converter) -> Callable[[Any], Any]:
        """A subclass's value as an exact instance of ``base`` (its own ``__str__`` or
        ``__repr__`` is never called)."""
        copy = _BASE_COPY.get(base)
        if copy is None:
            def refuse(v: Any) -> Any:
                raise Refused(f"is a subclass of {_type_name(base)} that rxbot cannot copy exactly; "
                              "register an adapter for it")
            return refuse
        if conv is None:
            return copy
        return lambda v: conv(copy(v))  # type: ignore[misc]

    def hint(self, t: type) -> str:
        """A refusal text for well-known types (``""``: the generic one)."""
        import fractions

        if t is complex:
            return f"has no {self.title} column type that stores it; store .real and .imag in two columns"
        if t is fractions.Fraction:
            return ("is not a finite decimal in general; convert it yourself to Decimal or float "
                    "(choosing the precision), or register an adapter")
        return ""

    # -- one execution ----------------------------------------------------------------------
    def row(self, values: Union[dict, tuple], names: Optional[Tuple[str, ...]] = None) -> Union[dict, tuple]:
        """The values of one execution, converted; raises :class:`UnsupportedValueError`
        naming the placeholder: ``names[i]`` for the ``i``-th value of a statement with
        named placeholders bound by position, else ``placeholder i+1 (positional)``.

        A tuple whose values all pass as they are (plain ASCII str, ints in range, None,
        bool, bytes, ...: nearly every row) is returned itself, looked at once with no
        copy; otherwise it is converted into a new tuple."""
        if type(values) is dict:
            keys = tuple(values)
            return dict(zip(keys, self.row(tuple(values.values()), keys)))  # type: ignore[arg-type]
        if self._version != _registry.version:
            self._sync()
        table = self._table
        low, high, inline_str = self._low, self._high, self._inline_str
        for value in values:  # the common case: nothing to convert
            t = type(value)
            if t is str:  # inline: the two most common types need no call
                if inline_str and value.isascii():
                    continue
            elif t is int:
                if low <= value <= high:
                    continue
            elif table.get(t, _MISSING) is None:
                continue
            break
        else:
            return values if type(values) is tuple else tuple(values)
        key: Any = None
        value = None
        try:
            out = list(values)
            for key, value in enumerate(out):
                t = type(value)
                if t is str:
                    if inline_str and value.isascii():
                        continue
                elif t is int:
                    if low <= value <= high:
                        continue
                conv = table.get(t, _MISSING)
                if conv is None:
                    continue
                if conv is _MISSING:
                    conv = self.converter(type(value), value)
                    if conv is None:
                        continue
                out[key] = conv(value)  # type: ignore[operator]
            return tuple(out)
        except Refused as refused:
            where = names[key] if names is not None and isinstance(key, int) else key
            raise UnsupportedValueError(self.owner, placeholder_name(where), type(value), self.database,
                                        refused.args[0]) from refused.__cause__

    def one(self, value: Any) -> Any:
        """A single value (an element of an ``IN`` list, a JSON leaf): converted or Refused."""
        conv = self._table.get(type(value), _MISSING)
        if conv is _MISSING:
            conv = self.converter(type(value), value)
        return value if conv is None else conv(value)  # type: ignore[operator]


def placeholder_name(key: Any) -> str:
    """``{name}`` for a named placeholder, ``placeholder 2 (positional)`` for the second
    ``%s``/``?``."""
    if isinstance(key, str):
        return "{" + key + "}"
    if isinstance(key, int):
        return f"placeholder {key + 1} (positional)"
    return "a placeholder"


def _copy_str(v: str) -> str:
    return str.__str__(v)  # an exact str of the same characters, whatever __str__ says


def _copy_bytes(v: bytes) -> bytes:
    return bytes(memoryview(v))


def _no_nanoseconds(v: Any) -> None:
    """A subclass with finer resolution (pandas' Timestamp/Timedelta) must not lose it."""
    if getattr(v, "nanosecond", 0):
        raise Refused(f"has nanoseconds ({v}), which the database's microsecond types would drop; "
                      "round it first")


def _copy_timedelta(v: datetime.timedelta) -> datetime.timedelta:
    _no_nanoseconds(v)
    return datetime.timedelta(v.days, v.seconds, v.microseconds)


def _copy_datetime(v: datetime.datetime) -> datetime.datetime:
    _no_nanoseconds(v)
    return datetime.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond,
                             v.tzinfo, fold=v.fold)


def _copy_time(v: datetime.time) -> datetime.time:
    return datetime.time(v.hour, v.minute, v.second, v.microsecond, v.tzinfo, fold=v.fold)


#: base type -> exact copy of a subclass instance (no user __str__/__repr__/__float__)
_BASE_COPY: Dict[type, Callable[[Any], Any]] = {
    str: _copy_str,
    int: int.__index__,  # a plain int copy for subclasses (bool has its own rule)
    float: float.__float__,
    bytes: _copy_bytes,
    bytearray: bytearray,
    decimal.Decimal: lambda v: decimal.Decimal(v.as_tuple()),
    datetime.datetime: _copy_datetime,
    datetime.date: lambda v: datetime.date(v.year, v.month, v.day),
    datetime.time: _copy_time,
    datetime.timedelta: _copy_timedelta,
    dict: dict,
    list: list,
    tuple: tuple,
}


def timedelta_parts(delta: datetime.timedelta) -> Tuple[str, int, int, int, int]:
    """``(sign, hours, minutes, seconds, microseconds)`` of a duration's magnitude."""
    size = abs(delta)
    minutes, seconds = divmod(size.days * 86400 + size.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return ("-" if delta < datetime.timedelta(0) else ""), hours, minutes, seconds, size.microseconds


__all__ = ["ValueAdapter", "UnsupportedValueError", "Refused", "register_adapter", "unregister_adapter",
           "check_text", "json_text", "placeholder_name", "DATABASES"]

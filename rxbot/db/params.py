"""SQL placeholders -> driver-bound parameters, shared by the MySQL and SQLite nodes.

databot built SQL text with ``sql.format(**item)`` or ``sql % item``, so any quote in a
value could rewrite the statement. rxbot keeps the databot spellings but parses them once,
at construction, into a statement with driver placeholders; values travel separately and
the driver escapes or binds them. Nothing from an item is ever formatted into SQL text.

Accepted spellings (outside string literals and comments):

* ``{name}`` — databot's form; ``'{name}'`` / ``"{name}"`` (a whole literal that is just a
  placeholder) too: the quotes go, because the bound value is already a string;
* ``%(name)s`` and ``%s`` — the DB-API ``pyformat``/``format`` styles (``'%s'`` as a whole
  literal likewise);
* ``:name`` and ``?`` — the SQLite/DB-API ``named``/``qmark`` styles.

Escapes follow the convention the statement already uses: with ``%`` placeholders ``%%``
is a literal ``%`` (as in pymysql), with ``{}`` placeholders ``{{``/``}}`` are literal braces
(as in ``str.format``); otherwise ``%`` and braces are plain characters. A placeholder inside
a longer string literal (``'%{name}%'``) cannot be bound and is rejected with advice.
"""
from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Tuple, Union

from ..errors import short_repr

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACE_FULL = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")
_PYFORMAT_FULL = re.compile(r"%(?:\(([A-Za-z_][A-Za-z0-9_]*)\))?s\Z")
_BRACE_INSIDE = re.compile(r"(?<!\{)\{[A-Za-z_][A-Za-z0-9_]*\}")
_BRACE_ESCAPED = re.compile(r"\{\{[A-Za-z_][A-Za-z0-9_]*\}\}")
#: ``%s`` is a placeholder only when no identifier character follows (``10%sqrt(9)`` is
#: a modulo); ``%(name)s`` always is
_PYFORMAT_ANY = re.compile(r"%(?:\([A-Za-z_][A-Za-z0-9_]*\)s|s(?![A-Za-z0-9_$]))")
_PERCENT_TOKEN = re.compile(r"%%|%\([A-Za-z_][A-Za-z0-9_]*\)s|%s")
_PYFORMAT_NAMED = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s")
_BRACE_FIELD = re.compile(r"\{([^{}]*)\}")

#: target placeholder styles: MySQL drivers (pymysql/aiomysql) and sqlite3
PYFORMAT, SQLITE = "pyformat", "sqlite"
#: lexical dialects (comment rules)
MYSQL, SQLITE_DIALECT = "mysql", "sqlite"


class ParameterError(LookupError):
    """An input item cannot supply the values a statement's placeholders need."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Param:
    """One placeholder: ``name`` for a named one, None for a positional one."""

    name: str | None
    spelling: str  # as written, for messages


Part = Union[str, Param]


class Statement:
    """A parsed SQL statement: text parts and placeholders, renderable for a driver.

    ``names`` lists the named placeholders (each once, in order of first use);
    ``positional`` counts the positional ones. A statement uses one kind or the other.
    """

    def __init__(self, sql: str, parts: Sequence[Part], owner: str) -> None:
        self.sql = sql
        self.parts = list(parts)
        self.owner = owner
        params = [p for p in self.parts if isinstance(p, Param)]
        named = [p for p in params if p.name is not None]
        positional = [p for p in params if p.name is None]
        if named and positional:
            raise ValueError(
                f"{owner}: argument 'sql' mixes named ({named[0].spelling}) and positional "
                f"({positional[0].spelling}) placeholders; use one kind: {sql!r}"
            )
        self.names: Tuple[str, ...] = tuple(dict.fromkeys(p.name for p in named))  # type: ignore[misc]
        #: the named placeholders in order of appearance, repeats included: the order of
        #: the values when the statement is rendered ``positional`` (see :meth:`render`)
        self.order: Tuple[str, ...] = tuple(p.name for p in named)  # type: ignore[misc]
        self.positional = len(positional)
        #: a dict item's values in :attr:`order`, as a tuple (KeyError for a missing
        #: key): operator.itemgetter, one C call; a lone name gives a scalar, so wrapped
        self.take: Callable[[Any], tuple] | None = None
        if len(self.order) > 1:
            self.take = operator.itemgetter(*self.order)
        elif self.order:
            only = self.order[0]
            self.take = lambda item: (item[only],)

    @classmethod
    def parse(cls, sql: str, owner: str = "SQL", backslash_escapes: bool = True,
              dialect: str | None = None) -> "Statement":
        """Parse ``sql``; ``owner`` (e.g. the node's label) prefixes every error message.

        ``backslash_escapes``: whether ``\\'`` escapes a quote inside a literal (MySQL:
        yes; SQLite: no, a backslash is an ordinary character there).
        ``dialect``: ``"mysql"`` or ``"sqlite"``, whose comment rules apply (default: MySQL
        with backslash escapes, SQLite without). They differ where it matters for
        security: text the server executes must never be taken for a comment.
        """
        if not isinstance(sql, str) or not sql.strip():
            raise TypeError(f"{owner}: argument 'sql' must be a non-empty SQL string; got {sql!r:.80}")
        if dialect is None:
            dialect = MYSQL if backslash_escapes else SQLITE_DIALECT
        if dialect not in (MYSQL, SQLITE_DIALECT):
            raise ValueError(f"{owner}: unknown SQL dialect {dialect!r}; expected 'mysql' or 'sqlite'")
        return cls(sql, _Parser(sql, owner, backslash_escapes, dialect).parse(), owner)

    # -- rendering ------------------------------------------------------------------------
    def render(self, style: str, positional: bool = False) -> str:
        """The statement text for a driver: ``pyformat`` (``%s``/``%(n)s``, every literal
        ``%`` doubled because values are always passed) or ``sqlite`` (``?``/``:n``).

        ``positional``: named placeholders too are rendered positionally (``%s``/``?``),
        to be bound from a tuple of the values in :attr:`order`. The database nodes do
        that: a tuple is built faster than a dict, sqlite3 binds it without a name
        lookup per value, and aiomysql formats it without one."""
        out: List[str] = []
        for part in self.parts:
            if isinstance(part, Param):
                if style == PYFORMAT:
                    out.append("%s" if part.name is None or positional else f"%({part.name})s")
                else:
                    out.append("?" if part.name is None or positional else f":{part.name}")
            else:
                out.append(part.replace("%", "%%") if style == PYFORMAT else part)
        return "".join(out)

    @property
    def has_params(self) -> bool:
        return bool(self.names or self.positional)

    # -- values -----------------------------------------------------------------------------
    def values(self, item: Any) -> Union[dict, tuple]:
        """The values for one execution, taken from ``item``.

        Named placeholders read a mapping's keys or an object's attributes; positional
        ones take a tuple/list element-wise, or a single scalar for a single placeholder.
        A statement without placeholders ignores the item (e.g. the trigger ``0``).
        """
        names = self.names
        if names:
            if type(item) is dict:  # the common case, without the Mapping ABC check
                try:
                    return {n: item[n] for n in names}
                except KeyError:
                    pass  # the message names the missing placeholder
            return self._named(item)
        if self.positional:
            return self._positional(item)
        return ()

    def _named(self, item: Any) -> dict:
        if isinstance(item, Mapping):
            missing = [n for n in self.names if n not in item]
            if missing:
                keys = ", ".join(map(str, list(item)[:20])) or "none"
                raise ParameterError(
                    f"{self.owner}: no value for placeholder {{{missing[0]}}} in item "
                    f"{short_repr(item)} (its keys: {keys})"
                )
            return {n: item[n] for n in self.names}
        if isinstance(item, (str, bytes, int, float, tuple, list)) or item is None:
            raise ParameterError(
                f"{self.owner}: named placeholders {self._spell_names()} need a dict or an "
                f"object with those attributes; got {type(item).__name__} {short_repr(item)}"
            )
        values = {}
        for n in self.names:
            try:
                values[n] = getattr(item, n)
            except AttributeError:
                raise ParameterError(
                    f"{self.owner}: no value for placeholder {{{n}}}: item "
                    f"{type(item).__name__} {short_repr(item)} has no attribute {n!r}"
                ) from None
        return values

    def _positional(self, item: Any) -> tuple:
        if isinstance(item, (tuple, list)):
            if len(item) != self.positional:
                raise ParameterError(
                    f"{self.owner}: the statement has {self.positional} positional placeholder(s) "
                    f"but the item supplies {len(item)} value(s): {short_repr(item)}"
                )
            return tuple(item)
        if isinstance(item, Mapping):
            raise ParameterError(
                f"{self.owner}: positional placeholders (%s or ?) take a tuple/list or a scalar, "
                f"not a mapping {short_repr(item)}; use named placeholders ({{name}}) for dict items"
            )
        if self.positional != 1:
            raise ParameterError(
                f"{self.owner}: the statement has {self.positional} positional placeholders; the "
                f"item must be a tuple/list of that length, got {type(item).__name__} {short_repr(item)}"
            )
        return (item,)

    def _spell_names(self) -> str:
        return ", ".join("{" + n + "}" for n in self.names)

    def __repr__(self) -> str:
        return f"Statement({self.sql!r})"


class _Parser:
    """A small SQL lexer: string literals, quoted identifiers and comments are copied
    (placeholders are never looked for inside them, except a literal that is *only* a
    placeholder); everything else is scanned for the placeholder spellings.

    Comments follow the server's rules, because taking executable text for a comment
    would leave a placeholder in it unbound (or, worse, make a value's quote end a
    "literal" the server never saw): MySQL starts a ``--`` comment only when whitespace,
    a control character or the end follows, treats ``#`` as a comment and *executes*
    the body of ``/*! ... */`` (and MariaDB's ``/*M! ... */``); SQLite takes any ``--``
    as a comment, has no ``#`` comments and no executable comments.
    """

    def __init__(self, sql: str, owner: str, backslash_escapes: bool = True, dialect: str = MYSQL) -> None:
        self.sql = sql
        self.owner = owner
        self.backslash = backslash_escapes
        self.mysql = dialect == MYSQL

    def _line_comment_at(self, i: int) -> bool:
        sql = self.sql
        if sql.startswith("--", i):
            if not self.mysql:
                return True
            return i + 2 >= len(sql) or sql[i + 2] <= " " or sql[i + 2] == "\x7f"
        return sql[i] == "#" and self.mysql

    def _executable_comment_at(self, i: int) -> int:
        """Length of an executable-comment opener at ``i`` (MySQL only), else 0."""
        if not self.mysql:
            return 0
        for opener in ("/*!", "/*M!"):
            if self.sql.startswith(opener, i):
                return len(opener)
        return 0

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.owner}: argument 'sql': {message}: {self.sql!r}")

    def segments(self) -> List[Tuple[str, str]]:
        """Split into ('code' | 'literal' | 'ident' | 'comment', text) pieces."""
        sql, n = self.sql, len(self.sql)
        out: List[Tuple[str, str]] = []
        i = start = 0
        while i < n:
            c = sql[i]
            if c in "'\"`":
                if start < i:
                    out.append(("code", sql[start:i]))
                j = self._quote_end(i)
                out.append(("ident" if c == "`" else "literal", sql[i:j]))
                i = start = j
            elif c in "-#" and self._line_comment_at(i):
                if start < i:
                    out.append(("code", sql[start:i]))
                j = sql.find("\n", i)
                j = n if j < 0 else j
                out.append(("comment", sql[i:j]))
                i = start = j
            elif c == "/" and self._executable_comment_at(i):
                # the server runs the body: lex it as code (its closing */ stays code too)
                i += self._executable_comment_at(i)
            elif c == "/" and sql.startswith("/*", i):
                if start < i:
                    out.append(("code", sql[start:i]))
                j = sql.find("*/", i + 2)
                if j < 0:
                    raise self.fail("unterminated /* comment")
                out.append(("comment", sql[i:j + 2]))
                i = start = j + 2
            else:
                i += 1
        if start < n:
            out.append(("code", sql[start:]))
        return out

    def _quote_end(self, i: int) -> int:
        sql, q = self.sql, self.sql[i]
        j = i + 1
        while j < len(sql):
            c = sql[j]
            if c == "\\" and q != "`" and self.backslash:
                j += 2
                continue
            if c == q:
                if j + 1 < len(sql) and sql[j + 1] == q:  # doubled quote inside the literal
                    j += 2
                    continue
                return j + 1
            j += 1
        raise self.fail(f"unterminated {q} quote starting at character {i}")

    def parse(self) -> List[Part]:
        segs = self.segments()
        # which escape conventions does the statement use?  %-placeholders make %% a
        # literal %, as in pymysql; {name} anywhere (or an escaped {{name}}) makes {{ }}
        # literal braces, as in str.format.
        percent = braces = False
        for kind, text in segs:
            if kind == "code":
                percent = percent or bool(_PYFORMAT_ANY.search(text))
            elif kind == "literal":
                percent = percent or bool(_PYFORMAT_FULL.match(text[1:-1]))
            if kind in ("code", "literal"):
                braces = braces or bool(_BRACE_INSIDE.search(text) or _BRACE_ESCAPED.search(text))
        parts: List[Part] = []
        for kind, text in segs:
            if kind == "code":
                parts.extend(self._code(text, percent, braces))
            elif kind == "literal":
                parts.extend(self._literal(text, percent, braces))
            elif kind == "ident":
                inner = text[1:-1]
                if _BRACE_FULL.match(inner) or _PYFORMAT_FULL.match(inner):
                    raise self.fail(f"{text} is a placeholder in a quoted identifier; table and "
                                    "column names cannot be bound as parameters")
                parts.append(text)
            else:
                parts.append(text)
        return _merge(parts)

    def _literal(self, text: str, percent: bool, braces: bool) -> List[Part]:
        inner = text[1:-1]
        m = _BRACE_FULL.match(inner)
        if m:
            return [Param(m.group(1), text)]
        m = _PYFORMAT_FULL.match(inner)
        if m:
            return [Param(m.group(1), text)]
        if _BRACE_INSIDE.search(inner) or self._percent_inside(inner, percent):
            raise self.fail(
                f"placeholder inside the string literal {text}; a bound value cannot be part of "
                "a literal: bind the whole value instead (e.g. LIKE {pattern} with the item "
                "supplying '%abc%'), or write {{ }} for literal braces"
            )
        if braces:
            inner = inner.replace("{{", "{").replace("}}", "}")
        if percent:
            inner = inner.replace("%%", "%")
        return [text[0] + inner + text[-1]]

    @staticmethod
    def _percent_inside(inner: str, percent: bool) -> bool:
        """Whether a longer literal holds a %-placeholder it cannot bind: ``%(name)s``
        always; ``%s`` when the statement uses %-placeholders (then ``%%`` is the escape
        for a literal ``%``) or the literal itself uses the ``%%`` escape. Elsewhere
        ``%s`` is plain text, as in ``DATE_FORMAT(d, '%H:%i:%s')``."""
        tokens = _PERCENT_TOKEN.findall(inner)
        if any(t.startswith("%(") for t in tokens):
            return True
        return "%s" in tokens and (percent or "%%" in tokens)

    def _code(self, text: str, percent: bool, braces: bool) -> List[Part]:
        parts: List[Part] = []
        buf: List[str] = []
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == "%":
                if text.startswith("%%", i) and percent:
                    buf.append("%")
                    i += 2
                    continue
                if text.startswith("%s", i) and not (i + 2 < n and (text[i + 2].isalnum()
                                                                    or text[i + 2] in "_$")):
                    parts.append("".join(buf)); buf = []
                    parts.append(Param(None, "%s"))
                    i += 2
                    continue
                m = _PYFORMAT_NAMED.match(text, i)
                if m:
                    parts.append("".join(buf)); buf = []
                    parts.append(Param(m.group(1), m.group(0)))
                    i = m.end()
                    continue
                if text.startswith("%(", i):
                    raise self.fail(f"malformed placeholder {text[i:i + 12]!r}... (expected %(name)s)")
            elif c == "{":
                if text.startswith("{{", i) and braces:
                    buf.append("{")
                    i += 2
                    continue
                m = _BRACE_FIELD.match(text, i)
                if m:
                    field = m.group(1)
                    if _IDENT.fullmatch(field):
                        parts.append("".join(buf)); buf = []
                        parts.append(Param(field, m.group(0)))
                        i = m.end()
                        continue
                    if field == "" or field.isdigit() or re.fullmatch(r"[A-Za-z_]\w*[!:].*", field):
                        raise self.fail(
                            f"unsupported placeholder {m.group(0)}; use {{name}} with a dict/object "
                            "item, or %s with a tuple/scalar item (no format specs: values are bound, "
                            "not formatted)"
                        )
            elif c == "}" and braces and text.startswith("}}", i):
                buf.append("}")
                i += 2
                continue
            elif c == "?":
                parts.append("".join(buf)); buf = []
                parts.append(Param(None, "?"))
                i += 1
                continue
            elif c == ":" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_:")):
                m = _IDENT.match(text, i + 1)
                if m:
                    parts.append("".join(buf)); buf = []
                    parts.append(Param(m.group(0), ":" + m.group(0)))
                    i = m.end()
                    continue
            buf.append(c)
            i += 1
        parts.append("".join(buf))
        return parts


def _merge(parts: List[Part]) -> List[Part]:
    """Join adjacent text pieces and drop empty ones."""
    out: List[Part] = []
    for p in parts:
        if isinstance(p, str):
            if not p:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += p
                continue
        out.append(p)
    return out


__all__ = ["Statement", "Param", "ParameterError", "PYFORMAT", "SQLITE", "MYSQL", "SQLITE_DIALECT"]

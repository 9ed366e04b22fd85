"""HttpLoader: databot's HTTP node on aiohttp.

An item (a URL, a request dict or an :class:`HttpRequest`) goes in, an
:class:`HttpResponse` with the whole body already read comes out, so later steps never
depend on an open connection. One ``ClientSession`` serves the node for a whole run
(opened in ``init()``, closed in ``close()``; the engine refcounts both).

Every response is passed on whatever its status, as databot (and aiohttp) did: scripts
branch on ``r.status``. Transient failures are retried here first, where HTTP knowledge
lives: connection errors, timeouts and the statuses 429, 502, 503, 504, with exponential
backoff (honouring ``Retry-After``); then the last response is passed on, or the last
error raised as :class:`HttpError` (a timeout as :class:`HttpTimeoutError`, which is an
``asyncio.TimeoutError`` too) naming the method and the URL, and the step's exception
policy (``raise``/``ignore``/``pipein``) takes over. ``raise_for_status=True`` makes a
final 4xx/5xx an :class:`HttpError` too.
"""
from __future__ import annotations

import asyncio
import email.utils
import json as _json
import logging
import os
import re
import ssl as _ssl
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..backoff import backoff
from ..config import config, policy_name
from ..tree.node import Node, keep_settings
from ..preview import preview
from ..redact import redact

#: characters of a URL shown in messages about an item (redacted first)
URL_SHOWN = 300
from .cache import DEFAULT_CACHE_MAX_SIZE, HttpCache, cache_key, canonical_body, full_url
from .encoding import decode, sniff_encoding, text_encoding
from .hosts import REFUSING, HostGate, HostState, host_of
from .robots import RobotsRules

#: the former name of :func:`rxbot.redact.redact` (one redaction for all of rxbot)
safe_url = redact

log = logging.getLogger("rxbot")

#: keys a request dict may carry (``payload`` is databot's name for ``data``)
REQUEST_KEYS = ("url", "method", "headers", "params", "data", "payload", "json", "cookies")

#: methods whose repetition has no extra effect (RFC 9110 §9.2.2): retried on any
#: transient failure. Others (POST, PATCH) only when the server surely did nothing.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

#: HttpLoader's default ``max_size``: bytes of decoded body read per response
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

#: the headers every HttpLoader sends unless ``config.http_headers`` says otherwise, like
#: databot's (a browser's User-Agent and Accept-Language, ``zh-CN`` first): sites that
#: serve other pages to non-browser agents serve a ported crawler what databot got.
#: A loader's ``headers=`` win over these one by one; ``config.http_headers = {}`` sends
#: aiohttp's own instead.
DEFAULT_HEADERS: Mapping[str, str] = MappingProxyType({
    "User-Agent": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/142.0.0.0 Safari/537.36"),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
})
#: statuses that say "try again later" (rate limited, a gateway or the server briefly down)
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _name(obj: Any) -> str:
    return type(obj).__name__


class HttpRequest:
    """A request to send: ``HttpRequest(url, headers=None, payload=None, method='GET')``.

    ``payload`` is the body (bytes, str, or a dict sent as a form), as in databot;
    ``json`` sends a JSON body instead; ``params`` are query parameters. Item access
    (``req['url']``) works as it did in databot; the object is still one item (never
    split into its fields when a step returns it).
    """

    __slots__ = ("url", "headers", "payload", "method", "params", "json", "cookies")
    __iter__ = None  # item access must not make it look like a sequence to the engine

    def __init__(self, url: Any = None, headers: Mapping[str, str] | None = None,
                 payload: Any = None, method: str = "GET", params: Any = None,
                 json: Any = None, cookies: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers
        self.payload = payload
        self.method = method
        self.params = params
        self.json = json
        self.cookies = cookies

    def __getitem__(self, key: str) -> Any:
        if key not in self.__slots__:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.__slots__:
            raise KeyError(f"HttpRequest has no field {key!r}; fields: {', '.join(self.__slots__)}")
        setattr(self, key, value)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, HttpRequest):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        # headers and body are left out on purpose: they may carry credentials
        return f"HttpRequest({str(self.method).upper()} {redact(self.url)})"


class HttpResponse:
    """A finished response with its body in memory.

    ``.status``, ``.reason``, ``.headers`` (case-insensitive, read-only), ``.url`` (final
    URL after redirects, a str), ``.method``, ``.content`` (bytes), ``.encoding``;
    ``.text`` and ``.json`` decode the body on access (``.json`` is a property, as in
    databot: ``r.json['bpi']``).

    ``.encoding`` is decided as a browser decides it (:mod:`rxbot.http.encoding`): a
    byte-order mark, the Content-Type charset, the page's own ``<meta charset>`` or XML
    declaration, then detection, then UTF-8. It is worked out on first use, so a step
    that never reads ``.text`` pays nothing; assigning it decodes with another encoding.
    """

    __slots__ = ("status", "reason", "headers", "url", "method", "content", "_encoding", "attempts", "from_cache")

    def __init__(self, status: int, content: bytes, *, url: str = "", headers: Any = None,
                 encoding: str | None = None, reason: str = "", method: str = "GET",
                 attempts: int = 1, from_cache: bool = False) -> None:
        self.status = status
        self.content = content
        self.url = url
        self.headers = headers if isinstance(headers, CIMultiDictProxy) else CIMultiDictProxy(CIMultiDict(headers or {}))
        self._encoding = text_encoding(encoding) if encoding else None
        self.reason = reason
        self.method = method
        self.attempts = attempts
        #: True when the response came from the loader's HTTP cache (no request was made)
        self.from_cache = from_cache

    @property
    def encoding(self) -> str:
        """The text encoding ``.text`` uses (Python's codec name, e.g. ``'gbk'``)."""
        if self._encoding is None:
            self._encoding = sniff_encoding(self.content, self.headers.get("Content-Type"))
        return self._encoding

    @encoding.setter
    def encoding(self, value: str | None) -> None:
        # an unknown or non-text codec (base64, hex, ...) means "decide from the body"
        self._encoding = text_encoding(value) if value else None

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding` (undecodable bytes replaced, a leading
        byte-order mark dropped). Always a str."""
        return decode(self.content, self.encoding)

    @property
    def json(self) -> Any:
        """The body parsed as JSON (parsed anew on each access, so callers may mutate it).
        Raises only ``json.JSONDecodeError`` (a ValueError) when it is not JSON, also
        for a document nested too deeply for Python's parser."""
        text = self.text
        try:
            return _json.loads(text)
        except RecursionError:
            raise _json.JSONDecodeError("JSON nested too deeply to parse", text[:100], 0) from None

    @property
    def ok(self) -> bool:
        return self.status < 400

    # databot code reads these names too
    body = property(lambda self: self.content)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.method} {redact(self.url)} ({len(self.content)} bytes)>"


_LINE_TOO_LONG = re.compile(r"Got more than (\d+) bytes")


def _unparsable(error: BaseException) -> str:
    """What was wrong with a response aiohttp's parser refused (no header bytes quoted:
    they may be a cookie)."""
    message = str(getattr(error, "message", "") or "")
    too_long = _LINE_TOO_LONG.search(message)
    if too_long:
        return (f"oversized response headers: a header line longer than {too_long.group(1)} bytes "
                f"(the server sent no status; HttpLoader(max_field_size=) raises the limit)")
    if "too many headers" in message.lower():
        return "oversized response headers: too many header lines (the server sent no status)"
    return f"malformed HTTP response ({_name(error)}; the server sent no usable status)"


def safe_cause(exc: BaseException | None) -> str:
    """A failure described for messages and logs: its type and safe fields only.

    aiohttp's exceptions put whole URLs in ``str()`` (a redirect target, the request
    URL of ``TooManyRedirects``), tokens included; here every URL goes through
    :func:`rxbot.redact.redact`, and text of unknown shape has the URLs in it masked the same way.
    """
    if exc is None:
        return "unknown error"
    name = _name(exc)
    try:
        if isinstance(exc, aiohttp.InvalidURL):  # also NonHttpUrlRedirectClientError
            return f"{name}: {redact(exc.url)}"
        if isinstance(exc, aiohttp.ClientResponseError) and isinstance(exc.__cause__, HttpProcessingError):
            # aiohttp reports a response it could not parse as "400": a status the server
            # never sent. Say what it was; its message quotes header bytes, so not shown
            return f"{name}: {_unparsable(exc.__cause__)}"
        if isinstance(exc, aiohttp.ClientResponseError):  # e.g. TooManyRedirects
            hops = len(getattr(exc, "history", ()) or ())
            info = getattr(exc, "request_info", None)
            where = redact(info.real_url) if info is not None else ""
            parts = [f"HTTP {exc.status}" if exc.status else "",
                     f"after {hops} redirect(s)" if hops else "", f"at {where}" if where else ""]
            return f"{name}: {' '.join(p for p in parts if p)}".rstrip(": ")
        text = " ".join(str(exc).split())
    except Exception:  # an exception with broken fields: say only what it is
        return name
    text = redact(text)
    return f"{name}: {text}" if text else name


class HttpError(Exception):
    """A request that failed for good. ``status`` is None when no response came back
    (connection error, timeout); ``response`` is the last :class:`HttpResponse`, if any;
    ``cause_type`` the class of the underlying exception (the exception itself is not
    chained: its text may hold the raw URL with its credentials).

    ``retryable`` is False: the node already retried what was worth retrying (and never
    repeats a POST the server may have acted on), so the engine's ``retry`` policy must
    not send the request again.
    """

    retryable = False

    def __init__(self, method: str, url: Any, *, status: int | None = None, reason: str = "",
                 attempts: int = 1, cause: BaseException | None = None,
                 response: HttpResponse | None = None, detail: str = "", what: str | None = None) -> None:
        shown = redact(url)
        if what is None:  # ``what`` went wrong, unless the caller says it better
            what = f"HTTP {status}{' ' + reason if reason else ''}" if status is not None else safe_cause(cause)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"HttpLoader: {method} {shown} failed{tries}: {what}{detail}")
        self.method = method
        self.url = shown
        self.status = status
        self.reason = reason
        self.attempts = attempts
        self.response = response
        self.cause_type = type(cause) if cause is not None else None


class HttpTimeoutError(HttpError, asyncio.TimeoutError):
    """No complete response within the time allowed: an :class:`HttpError` that
    ``except asyncio.TimeoutError`` catches too, as databot's timeouts were."""


class HttpResponseTooLarge(HttpError):
    """The response body, as decoded (decompressed), grew past the loader's ``max_size``:
    reading stopped there and the connection was closed."""


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class HttpLoader(Node):
    """Fetch each item over HTTP and emit an :class:`HttpResponse`.

    Items: a URL string, a dict ``{'url', 'method', 'headers', 'params', 'data' |
    'payload' | 'json', 'cookies'}``, or an :class:`HttpRequest`.

    Arguments (all keyword except ``delay``, databot's first positional):

    * ``delay`` — seconds to pause before each request (politeness);
    * ``timeout`` — seconds for the whole call the step waits for: every attempt,
      connect to last byte, and the waits between them (databot's default of 20 s);
      what is left when a retry is due must cover its wait, else the last outcome
      stands. An ``aiohttp.ClientTimeout`` instead limits each attempt, aiohttp's way;
      None: no limit;
    * ``headers`` (databot: ``header``) — sent with every request, over the default
      headers (:data:`DEFAULT_HEADERS`, a browser's as in databot, or
      ``config.http_headers``) one by one; an item's own headers win over both;
    * ``proxy`` — an ``http://`` proxy URL for every request;
    * ``concurrency`` — requests in flight for this step (the engine's slots);
    * ``retries`` — extra attempts after the first on a connection error, timeout, or a
      status in ``retry_statuses`` (429, 502, 503, 504); ``backoff`` the first wait
      (doubling each time, up to ``max_backoff``, with jitter). A ``Retry-After`` header
      is obeyed instead; one longer than ``max_retry_after`` ends the retries. POST/PATCH
      are retried only when the server cannot have acted (connection refused, 429, 503)
      unless ``retry_non_idempotent``;
    * ``max_size`` — the most bytes of body read per response, counted after decoding
      (a gzip/deflate/br body is counted decompressed), default 64 MiB; reading stops
      there with :class:`HttpResponseTooLarge`. None lifts the limit;
    * ``verify_ssl`` — True (default), False (only when asked), or an ``ssl.SSLContext``;
    * ``raise_for_status`` — False (default, databot's way): every response is emitted
      whatever its status; True: a final 4xx/5xx raises :class:`HttpError`;
    * ``per_host``, ``per_host_delay``/``per_host_rate``, ``throttle`` (with
      ``throttle_target``), ``backlog``, ``robots``, ``cache`` (with ``cache_expire``,
      ``cache_max_size``) — crawling politely, each off by default (``config.http_*``
      give defaults): see docs/crawling.md and :mod:`rxbot.http.hosts`;
    * ``name``, ``on_error`` — the label and the exception policy of this step.

    The node's ``retries``/``timeout`` *step options* stay unset on purpose: the engine
    would otherwise retry (and time-limit) the whole call again around these HTTP-aware
    retries. They are kept as ``http_retries`` and ``request_timeout``.
    """

    # Each setting's default, on the class: an instance holds only the settings its
    # user changed (see rxbot.tree.node.keep_settings; issue 26, item 11).
    delay: float = 0.0
    request_timeout: aiohttp.ClientTimeout = aiohttp.ClientTimeout(total=None)
    call_timeout: float | None = 20.0
    max_size: int | None = DEFAULT_MAX_SIZE
    max_field_size: int = 8190
    headers: dict | None = None
    proxy: str | None = None
    concurrency: int = 32
    max_in_flight: int = 32
    http_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 60.0
    retry_statuses: frozenset | None = None
    retry_non_idempotent: bool = False
    verify_ssl: bool | _ssl.SSLContext = True
    raise_for_status: bool = False
    per_host: int | None = None
    per_host_interval: float = 0.0
    throttle: bool = False
    throttle_target: float = 1.0
    robots: bool = False
    polite: bool = False
    backlog: int = 1000
    cache: str | None = None
    cache_expire: float | None = None
    cache_max_size: int = DEFAULT_CACHE_MAX_SIZE
    # the state of a run, made by init() and dropped by close()
    _gate: HostGate | None = None
    _robots: RobotsRules | None = None
    _cache: HttpCache | None = None
    _session: aiohttp.ClientSession | None = None
    #: per-host numbers of the last run (``host_report()``; read-only until a run ends)
    hosts: Mapping[str, Any] = MappingProxyType({})
    robots_disallowed: int = 0

    def __init__(
        self,
        delay: float = 0,
        *,
        timeout: float | aiohttp.ClientTimeout | None = 20,
        headers: Mapping[str, str] | None = None,
        header: Mapping[str, str] | None = None,
        proxy: str | None = None,
        concurrency: int = 32,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 60.0,
        retry_statuses: Iterable[int] | None = None,
        retry_non_idempotent: bool = False,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_field_size: int = 8190,
        verify_ssl: bool | _ssl.SSLContext = True,
        raise_for_status: bool = False,
        per_host: int | None = None,
        per_host_delay: float | None = None,
        per_host_rate: float | None = None,
        throttle: bool | None = None,
        throttle_target: float = 1.0,
        backlog: int = 1000,
        robots: bool | None = None,
        cache: str | os.PathLike | None = None,
        cache_expire: float | None = None,
        cache_max_size: int = DEFAULT_CACHE_MAX_SIZE,
        name: str | None = None,
        on_error: str | None = None,
        session_policy: Any = None,
    ) -> None:
        super().__init__()
        name = self._check_name(name)
        if not _is_number(delay) or delay < 0:
            self._bad("delay", "a number of seconds >= 0", delay)
        call_timeout: float | None = None
        if isinstance(timeout, aiohttp.ClientTimeout):
            client_timeout = timeout  # the user's own per-attempt limits
        elif timeout is None:
            client_timeout = aiohttp.ClientTimeout(total=None)
        elif _is_number(timeout) and timeout > 0:
            # the deadline of the whole call is kept here; no per-attempt limit would
            # be shorter than what is left of it
            call_timeout = float(timeout)
            client_timeout = aiohttp.ClientTimeout(total=None)
        else:
            self._bad("timeout", "a positive number of seconds, an aiohttp.ClientTimeout or None", timeout)
        if headers is not None and header is not None:
            raise ValueError("HttpLoader: give 'headers' or databot's 'header', not both")
        headers = self._check_headers("headers" if header is None else "header",
                                      headers if header is None else header)
        if proxy is not None:
            if not isinstance(proxy, (str, URL)) or URL(str(proxy)).scheme not in ("http", "https"):
                self._bad("proxy", "an http:// or https:// URL string or None", proxy, secret=True,
                          error=ValueError if isinstance(proxy, (str, URL)) else TypeError)
            proxy = str(proxy)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            self._bad("concurrency", "an int >= 1", concurrency)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            self._bad("retries", "an int >= 0", retries)
        for arg, value in (("backoff", backoff), ("max_backoff", max_backoff),
                           ("max_retry_after", max_retry_after)):
            if not _is_number(value) or value < 0:
                self._bad(arg, "a number of seconds >= 0", value)
        if retry_statuses is None:
            statuses = None
        else:
            expected = "a collection of HTTP status codes (ints 100-599) or None"
            if isinstance(retry_statuses, (str, bytes)) or not isinstance(retry_statuses, Iterable):
                self._bad("retry_statuses", expected, retry_statuses, error=TypeError)
            statuses = frozenset(retry_statuses)
            if not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses):
                self._bad("retry_statuses", expected, retry_statuses, error=ValueError)
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
            self._bad("max_size", "an int >= 1 (bytes) or None for no limit", max_size)
        if isinstance(max_field_size, bool) or not isinstance(max_field_size, int) or max_field_size < 1024:
            self._bad("max_field_size", "an int >= 1024 (bytes of one response header line)", max_field_size)
        if not isinstance(verify_ssl, (bool, _ssl.SSLContext)):
            self._bad("verify_ssl", "True, False or an ssl.SSLContext", verify_ssl)
        for arg, value in (("raise_for_status", raise_for_status), ("retry_non_idempotent", retry_non_idempotent)):
            if not isinstance(value, bool):
                self._bad(arg, "True or False", value, error=TypeError)
        if on_error is not None:
            on_error = policy_name(on_error, "HttpLoader: argument 'on_error'")
        if session_policy is not None:
            log.warning("rxbot: HttpLoader ignores databot's 'session_policy' argument "
                        "(one session per run is always used)")

        # ---- crawling politely (docs/crawling.md): config gives the defaults
        per_host = config.http_per_host if per_host is None else per_host
        if per_host is not None and (isinstance(per_host, bool) or not isinstance(per_host, int) or per_host < 1):
            self._bad("per_host", "an int >= 1 (requests in flight per host) or None", per_host)
        per_host_delay = config.http_per_host_delay if per_host_delay is None else per_host_delay
        interval = 0.0
        if per_host_delay is not None:
            if not _is_number(per_host_delay) or per_host_delay < 0:
                self._bad("per_host_delay", "a number of seconds >= 0 or None", per_host_delay)
            interval = float(per_host_delay)
        if per_host_rate is not None:
            if not _is_number(per_host_rate) or per_host_rate <= 0:
                self._bad("per_host_rate", "a positive number of requests per second or None", per_host_rate)
            interval = max(interval, 1.0 / per_host_rate)
        throttle = config.http_throttle if throttle is None else throttle
        robots = config.http_robots if robots is None else robots
        for arg, value in (("throttle", throttle), ("robots", robots)):
            if not isinstance(value, bool):
                self._bad(arg, "True or False", value, error=TypeError)
        if not _is_number(throttle_target) or throttle_target <= 0:
            self._bad("throttle_target", "a positive number (requests in flight per host to aim at)",
                      throttle_target)
        if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 0:
            self._bad("backlog", "an int >= 0 (items taken ahead while hosts are at their limits)", backlog)
        cache = config.http_cache if cache is None else cache
        if cache is not None and not isinstance(cache, (str, os.PathLike)):
            self._bad("cache", "a file path (str or os.PathLike) or None", cache, error=TypeError)
        if cache_expire is not None and (not _is_number(cache_expire) or cache_expire <= 0):
            self._bad("cache_expire", "a positive number of seconds or None (never)", cache_expire)
        if isinstance(cache_max_size, bool) or not isinstance(cache_max_size, int) or cache_max_size < 1:
            self._bad("cache_max_size", "an int >= 1 (bytes)", cache_max_size)
        polite = bool(per_host or interval or throttle or robots)
        keep_settings(self, {
            "name": name,
            "per_host": per_host,
            "per_host_interval": interval,
            "throttle": throttle,
            "throttle_target": float(throttle_target),
            "robots": robots,
            "cache": os.fspath(cache) if cache is not None else None,
            "cache_expire": cache_expire,
            "cache_max_size": cache_max_size,
            #: the requests in flight at once (``concurrency``). With per-host limits the
            #: engine gives the step ``backlog`` more slots: calls waiting for their host
            #: hold those, never a request slot (see :mod:`rxbot.http.hosts`)
            "max_in_flight": concurrency,
            "polite": polite,
            "concurrency": concurrency + backlog if polite else concurrency,
            "backlog": backlog,
            "delay": float(delay),
            "request_timeout": client_timeout,
            "call_timeout": call_timeout,
            "max_size": max_size,
            "max_field_size": max_field_size,
            "headers": headers,
            "proxy": proxy,
            "http_retries": retries,
            "backoff": float(backoff),
            "max_backoff": float(max_backoff),
            "max_retry_after": float(max_retry_after),
            "retry_statuses": statuses,
            "retry_non_idempotent": retry_non_idempotent,
            "verify_ssl": verify_ssl,
            "raise_for_status": raise_for_status,
            "on_error": on_error,
        })

    # ---- argument checks ------------------------------------------------------------
    @staticmethod
    def _bad(arg: str, expected: str, value: Any, secret: bool = False, error: type | None = None) -> None:
        """Raise the argument error: ValueError for a value of the right type but out of
        range, TypeError otherwise. A secret-bearing value is shown by type only."""
        shown = f"a {_name(value)}" if secret else repr(value)
        if error is None:
            error = ValueError if _is_number(value) else TypeError
        raise error(f"HttpLoader: argument '{arg}' must be {expected}; got {shown}")

    @classmethod
    def _check_name(cls, name: Any) -> str | None:
        if name is not None and not isinstance(name, str):
            cls._bad("name", "a string or None", name, error=TypeError)
        return name

    @classmethod
    def _check_headers(cls, arg: str, headers: Any) -> dict | None:
        if headers is None:
            return None
        if not isinstance(headers, Mapping):
            cls._bad(arg, "a mapping of header names to string values", headers, secret=True)
        for k, v in headers.items():
            if not isinstance(k, str) or not _TOKEN.match(k):
                raise ValueError(f"HttpLoader: argument '{arg}' has an invalid header name {k!r}")
            if not isinstance(v, str) or "\r" in v or "\n" in v:
                # the value is not shown: it may be a credential
                raise ValueError(f"HttpLoader: argument '{arg}' header {k!r} must have a single-line "
                                 f"string value; got a {_name(v)}")
        return dict(headers)

    # ---- lifecycle ------------------------------------------------------------------
    def shard_share(self) -> tuple:
        """``(per_host, interval, shards)`` for this run. In a sharded run every shard
        has its own loader, so the per-host limits are divided among the shards: each
        allows ``ceil(per_host / shards)`` requests in flight per host and keeps
        ``interval × shards`` between its own requests to a host, and the whole run
        stays within the limits asked for, with no round trip to the scheduler per
        request (docs/crawling.md says what that costs)."""
        from ..shard import current

        shards = current().count
        per_host, interval = self.per_host, self.per_host_interval
        if shards > 1:
            if per_host is not None:
                if per_host < shards:
                    log.warning("rxbot: HttpLoader(per_host=%d) cannot be divided among %d shards: each "
                                "allows 1 request in flight per host (%d in all); use per_host_delay= "
                                "for such hosts (docs/crawling.md)", per_host, shards, shards)
                per_host = -(-per_host // shards)
            interval *= shards
        return per_host, interval, shards

    async def init(self) -> None:
        per_host, interval, shards = self.shard_share()
        self._gate = HostGate(self.max_in_flight, per_host, interval, throttle=self.throttle,
                              target=self.throttle_target, max_delay=self.max_backoff * 2, shards=shards)
        self.robots_disallowed = 0
        if self.cache is not None:
            cache = HttpCache(self.cache, expire=self.cache_expire, max_size=self.cache_max_size)
            await cache.open()
            self._cache = cache
        connector = aiohttp.TCPConnector(
            # the engine's slots bound requests in flight; a pool limit below them would
            # only make requests queue inside aiohttp, where the timeout already runs
            limit=0,
            ssl=self.verify_ssl if isinstance(self.verify_ssl, _ssl.SSLContext) else bool(self.verify_ssl),
        )
        headers = self.session_headers()
        if self.robots:
            self._robots = RobotsRules(self._robots_fetch, headers.get("User-Agent") or "*")
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            max_field_size=self.max_field_size,
            max_line_size=max(8190, self.max_field_size),
            timeout=self.request_timeout,
        )

    def session_headers(self) -> dict:
        """The headers sent with every request: the defaults (``config.http_headers``,
        else :data:`DEFAULT_HEADERS`) with this loader's ``headers=`` over them."""
        defaults = config.http_headers
        if defaults is None:
            defaults = DEFAULT_HEADERS
        else:
            defaults = self._check_headers("config.http_headers", defaults) or {}
        merged = CIMultiDict(defaults)
        merged.update(self.headers or {})
        return dict(merged)

    async def close(self) -> None:
        session, self._session = self._session, None
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.close()
            self.hosts = gate.report()
        robots, self._robots = self._robots, None
        if robots is not None:
            robots.close()
        cache, self._cache = self._cache, None
        try:
            if session is not None:
                await session.close()
        finally:
            if cache is not None:
                await cache.close()

    def host_report(self) -> dict:
        """Per-host numbers of the run going on (or of the last one): requests, statuses,
        bytes, latency percentiles (ms), current delay (s), in flight, queued, cache hits,
        URLs robots.txt disallowed."""
        return self._gate.report() if self._gate is not None else dict(self.hosts)

    def report_data(self) -> dict:
        """What this loader adds to the run report (``report.nodes[label]``)."""
        data: dict = {"hosts": self.host_report()}
        if self.robots:
            data["robots_disallowed"] = self.robots_disallowed
        if self.cache is not None:
            data["cache_hits"] = sum(h.get("cached", 0) for h in data["hosts"].values())
        return data

    async def __aenter__(self) -> "HttpLoader":
        """Use the loader outside a pipe: ``async with HttpLoader() as get: r = await get(url)``."""
        await self.node_init()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.node_close()

    def label(self) -> str:
        return self.name or "HttpLoader"

    def describe_item(self, item: Any) -> str:
        """How an item may be shown in logs and error notes: method and redacted URL only,
        since request dicts can carry credentials in their headers or body."""
        if isinstance(item, HttpRequest):
            return preview(repr(item), URL_SHOWN)[1:-1]  # a bounded preview of the repr's text
        if isinstance(item, Mapping) and "url" in item:
            method = preview(str(item.get("method") or "GET").upper(), 20)
            return f"{{'method': {method}, 'url': {preview(str(item['url']), URL_SHOWN)}, ...}}"
        if isinstance(item, (str, URL)):
            return preview(str(item), URL_SHOWN)  # redacted, and bounded: never a 500 MB repr
        return f"<{_name(item)}>"

    # ---- requests -------------------------------------------------------------------
    def request_of(self, item: Any) -> dict:
        """Normalise an item into keyword arguments for ``ClientSession.request``."""
        if isinstance(item, (str, URL)):
            spec: dict = {"url": item}
        elif isinstance(item, HttpRequest):
            spec = {k: getattr(item, k) for k in HttpRequest.__slots__}
            spec["data"] = spec.pop("payload")
        elif isinstance(item, Mapping):
            unknown = [k for k in item if k not in REQUEST_KEYS]
            if unknown:
                raise ValueError(f"HttpLoader: request dict has unknown key(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: {', '.join(REQUEST_KEYS)}")
            if "url" not in item:
                raise ValueError("HttpLoader: request dict needs a 'url' key")
            if "data" in item and "payload" in item:
                raise ValueError("HttpLoader: request dict has both 'data' and 'payload' (databot's name for data)")
            spec = dict(item)
            if "payload" in spec:
                spec["data"] = spec.pop("payload")
        else:
            raise TypeError(f"HttpLoader: item must be a URL string, a dict with a 'url' key or an "
                            f"HttpRequest; got {_name(item)} {item!r:.80}")
        url = spec["url"]
        if not isinstance(url, (str, URL)) or not url:
            raise TypeError(f"HttpLoader: the request URL must be a non-empty string; got {_name(url)}")
        if URL(str(url)).scheme not in ("http", "https"):
            raise ValueError(f"HttpLoader: the request URL must be absolute http:// or https://; got {redact(url)!r}")
        method = spec.get("method") or "GET"
        if not isinstance(method, str) or not _TOKEN.match(method):
            raise ValueError(f"HttpLoader: invalid HTTP method {method!r} for {redact(url)}")
        spec["method"] = method.upper()
        if spec.get("data") is not None and spec.get("json") is not None:
            raise ValueError(f"HttpLoader: request for {redact(url)} has both a body ('data'/'payload') and 'json'")
        if spec.get("headers") is not None:
            spec["headers"] = self._check_headers("headers", spec["headers"])
        return {k: v for k, v in spec.items() if v is not None}

    def _retryable_status(self, status: int, method: str) -> bool:
        statuses = TRANSIENT_STATUSES if self.retry_statuses is None else self.retry_statuses
        retryable = status in statuses
        if retryable and method not in IDEMPOTENT and not self.retry_non_idempotent:
            return status in (429, 503)  # the server says it did not process the request
        return retryable

    def _retryable_error(self, exc: BaseException, method: str) -> bool:
        if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.InvalidURL)):
            return False  # a bad certificate or URL will not get better
        if method in IDEMPOTENT or self.retry_non_idempotent:
            return isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError))
        # the request may have reached the server: only a refused connection is safe to repeat
        return isinstance(exc, aiohttp.ClientConnectorError)

    def _wait(self, attempt: int) -> float:
        """The wait before the ``attempt``-th retry: rxbot's one backoff formula
        (:func:`rxbot.backoff.backoff`) with 'equal jitter' (half fixed, half random)."""
        return backoff(attempt, self.backoff, self.max_backoff, jitter=-0.5)

    async def __call__(self, item: Any) -> HttpResponse:
        spec = self.request_of(item)
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("HttpLoader: no open session; run it in a Pipe (BotFrame.run()) "
                               "or use 'async with HttpLoader() as get'")
        method = spec.pop("method")
        url = spec.pop("url")
        if self.delay:
            await asyncio.sleep(self.delay)
        gate = self._gate
        assert gate is not None
        host = gate.host(host_of(url))
        robots = self._robots
        if robots is not None:
            rules = await robots.rules(url)
            host.crawl_delay = robots.crawl_delay(rules) * gate.shards
            if not robots.allowed(rules, url):
                host.robots_dropped += 1
                self.robots_disallowed += 1
                log.debug("rxbot: HttpLoader: robots.txt disallows %s %s: dropped", method, redact(url))
                return None  # type: ignore[return-value]  # dropped: counted per host and in the report
        cache = self._cache
        if cache is None:
            return await self._request(session, gate, host, method, url, spec)
        sent = CIMultiDict(session.headers)
        sent.update(spec.get("headers") or {})
        key = cache_key(method, full_url(url, spec.get("params")), canonical_body(spec))
        stored = await cache.get(key, sent)
        if stored is not None:
            host.cached += 1
            response = HttpResponse(stored["status"], stored["body"], url=stored["url"], headers=stored["headers"],
                                    reason=stored["reason"], method=method, from_cache=True)
            return _Call(self, session, method, url, spec, host).final(response)
        try:
            response = await self._request(session, gate, host, method, url, spec)
        except HttpError as exc:
            if exc.response is not None:  # raise_for_status: kept, so a rerun raises it again
                await cache.put(key, exc.response, sent)
            raise
        await cache.put(key, response, sent)
        return response

    async def _robots_fetch(self, url: str) -> HttpResponse:
        """robots.txt, through the same limits (and cache) as any request of the host."""
        session, gate = self._session, self._gate
        if session is None or gate is None:
            raise RuntimeError("HttpLoader: no open session")
        host = gate.host(host_of(url))
        cache = self._cache
        key = cache_key("GET", url, b"") if cache is not None else ""
        if cache is not None:
            stored = await cache.get(key, session.headers)
            if stored is not None:
                host.cached += 1
                return HttpResponse(stored["status"], stored["body"], url=stored["url"], headers=stored["headers"],
                                    reason=stored["reason"], from_cache=True)
        response = await self._request(session, gate, host, "GET", url, {}, final=False)
        if cache is not None:
            await cache.put(key, response, session.headers)
        return response

    async def _request(self, session: aiohttp.ClientSession, gate: HostGate, host: HostState, method: str,
                       url: Any, spec: dict, final: bool = True) -> HttpResponse:
        """The call: a request slot of the host first (when limits apply: waiting for it
        does not count against ``timeout``), then the attempts within ``timeout``."""
        call = _Call(self, session, method, url, spec, host, final=final)
        if self.polite:
            await gate.acquire(host)
            call.held = True
        try:
            if self.call_timeout is None:
                return await call.run()
            limit = asyncio.timeout(self.call_timeout)
            try:
                async with limit:
                    call.deadline = limit.when()
                    return await call.run()
            except TimeoutError:
                if not limit.expired():  # an attempt's own timeout, already described
                    raise
                raise HttpTimeoutError(method, url, attempts=call.attempt, cause=TimeoutError(
                    f"no complete response within {self.call_timeout:g}s")) from None
        finally:
            if call.held:  # cancelled before its first attempt began
                call.held = False
                gate.release(host)

    async def read_body(self, resp: aiohttp.ClientResponse, method: str, url: Any, attempt: int) -> bytes:
        """The body, decoded, read chunk by chunk up to ``max_size`` bytes. aiohttp
        decompresses in bounded pieces as they are read, so a small compressed body
        that would inflate past the limit (a decompression bomb) stops at the limit."""
        limit = self.max_size
        if limit is None:
            return await resp.read()
        encoding = resp.headers.get("Content-Encoding", "identity")
        length = resp.content_length
        if length is not None and length > limit and encoding.lower() == "identity":
            resp.close()
            raise HttpResponseTooLarge(method, url, attempts=attempt, status=resp.status, reason=resp.reason or "",
                                       what=f"response body of {length} bytes (Content-Length) exceeds "
                                            f"max_size={limit}")
        # one growing buffer (large ones grow in place, outside the small-object heap)
        body = bytearray()
        async for chunk in resp.content.iter_chunked(1 << 16):
            if len(body) + len(chunk) > limit:
                del body
                resp.close()  # the rest is never read; the connection is not reused
                raise HttpResponseTooLarge(
                    method, url, attempts=attempt, status=resp.status, reason=resp.reason or "",
                    what=f"response body larger than max_size={limit} bytes once decoded "
                         f"(Content-Encoding: {encoding}); reading stopped there")
            body += chunk
        return bytes(body)


class _Call:
    """One HttpLoader call: attempts until a response or an error is final, within the
    ``deadline`` (loop time) of the whole call if there is one."""

    __slots__ = ("loader", "session", "method", "url", "spec", "attempt", "deadline", "host", "held", "is_final")

    def __init__(self, loader: HttpLoader, session: aiohttp.ClientSession, method: str, url: Any,
                 spec: dict, host: HostState | None = None, final: bool = True) -> None:
        self.loader, self.session, self.method, self.url, self.spec = loader, session, method, url, spec
        self.attempt = 0
        self.deadline: float | None = None
        self.host = host
        #: a request slot of the host is held for the next attempt (acquired before the
        #: call's deadline started)
        self.held = False
        self.is_final = final  # False: the response is for the loader itself (robots.txt)

    def final(self, response: HttpResponse, detail: str = "") -> HttpResponse:
        return self._final(response, detail) if self.is_final else response

    async def _attempt(self, method: str, url: Any) -> HttpResponse:
        """One request through the host's gate, counted for the host."""
        loader, host = self.loader, self.host
        gate = loader._gate
        if host is None or gate is None:
            return await self._send(method, url)
        if loader.polite and not self.held:
            await gate.acquire(host, retry=self.attempt > 1)
        self.held = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        paced = max(host.interval, host.crawl_delay)  # the pace this request is sent at
        status: int | None = None
        size = 0
        retry_after: float | None = None
        try:
            response = await self._send(method, url)
            status, size = response.status, len(response.content)
            if status in REFUSING:
                retry_after = _retry_after(response.headers.get("Retry-After"))
            return response
        finally:
            gate.observed(host, status, loop.time() - started, size, retry_after, paced)
            if loader.polite:
                gate.release(host)

    async def _send(self, method: str, url: Any) -> HttpResponse:
        loader = self.loader
        async with self.session.request(method, url, proxy=loader.proxy, **self.spec) as resp:
            body = await loader.read_body(resp, method, url, self.attempt)
            return HttpResponse(resp.status, body, url=str(resp.url), headers=resp.headers,
                                reason=resp.reason or "", method=method, attempts=self.attempt)

    async def run(self) -> HttpResponse:
        loader, method, url = self.loader, self.method, self.url
        while True:
            self.attempt += 1
            attempt = self.attempt
            failure: HttpError | None = None
            last: HttpError | HttpResponse | None  # what the next attempt's log line names
            try:
                response = await self._attempt(method, url)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # raised below, outside this block: neither chained nor as __context__,
                # because the cause's own text may hold the raw URL with its tokens
                failure = self._failure(exc)
                final = attempt > loader.http_retries or not loader._retryable_error(exc, method)
                wait, why, last = loader._wait(attempt), _name(exc), failure
            else:
                status = response.status
                if not loader._retryable_status(status, method) or attempt > loader.http_retries:
                    return self.final(response)
                wait = loader._wait(attempt)
                advised = _retry_after(response.headers.get("Retry-After"))
                if advised is not None:
                    if advised > loader.max_retry_after:
                        return self.final(response, f" (Retry-After {advised:g}s exceeds "
                                                     f"max_retry_after={loader.max_retry_after:g}s)")
                    wait = advised
                why, last, final = f"HTTP {status}", response, False
            if failure is not None and final:
                raise failure
            if self.deadline is not None and asyncio.get_running_loop().time() + wait >= self.deadline:
                # the wait alone would outlast the call's time: the last outcome stands
                if isinstance(last, HttpResponse):
                    return self.final(last)
                raise last
            log.debug("rxbot: HttpLoader %s %s: %s, retry %d/%d in %.2fs", method, redact(url), why,
                      attempt, loader.http_retries, wait)
            await asyncio.sleep(wait)

    def _final(self, response: HttpResponse, detail: str = "") -> HttpResponse:
        """The response to pass on, or (``raise_for_status=True``) the error for a 4xx/5xx."""
        if response.status >= 400 and self.loader.raise_for_status:
            raise HttpError(self.method, self.url, status=response.status, reason=response.reason,
                            attempts=response.attempts, response=response, detail=detail)
        return response

    def _failure(self, exc: BaseException) -> HttpError:
        """The error for a failed attempt: the cause is described, never chained (its own
        text may hold the raw URL with its tokens)."""
        if isinstance(exc, asyncio.TimeoutError):
            text = str(exc)
            if not text:
                total = self.loader.request_timeout.total
                text = f"no complete response within {total:g}s" if total else "timed out"
            error: HttpError = HttpTimeoutError(self.method, self.url, attempts=self.attempt,
                                                cause=TimeoutError(text))
        else:
            error = HttpError(self.method, self.url, attempts=self.attempt, cause=exc)
        error.cause_type = type(exc)
        return error


__all__ = ["HttpLoader", "HttpRequest", "HttpResponse", "HttpError", "HttpTimeoutError", "HttpResponseTooLarge",
           "safe_url", "safe_cause", "DEFAULT_MAX_SIZE", "DEFAULT_HEADERS", "TRANSIENT_STATUSES"]

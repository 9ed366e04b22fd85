"""HttpLoader against a real local aiohttp server (tests/local_http.py), never the internet."""
from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter

import aiohttp
import pytest

from local_http import free_port, http_server, https_server  # noqa: F401  (fixtures)
from rxbot import BotFrame, Filter, HttpLoader, HttpRequest, HttpResponse, Pipe, Step, config
from rxbot.demo_server import PRICE_PATH, PriceServer, serve_in_thread
from rxbot.http import HttpError, safe_url
from rxbot.http.http import _retry_after

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collect(out: list):
    """A sink step (named, so it is not mistaken for part of the HTTP node)."""
    def sink(x):
        out.append(x)
    return sink


# ---- imports and value objects ----------------------------------------------------------

def test_import_paths_export_the_same_classes():
    import rxbot
    import rxbot.http as h
    import rxbot.http.http as hh

    for name in ("HttpLoader", "HttpRequest", "HttpResponse"):
        assert getattr(rxbot, name) is getattr(h, name) is getattr(hh, name)


def test_response_properties():
    r = HttpResponse(200, '{"bpi": {"USD": {"rate_float": 1.5}}, "x": "é"}'.encode(), url="http://h/p",
                     headers={"Content-Type": "application/json"})
    assert r.json["bpi"]["USD"]["rate_float"] == 1.5
    assert r.text == '{"bpi": {"USD": {"rate_float": 1.5}}, "x": "é"}'
    assert r.content == r.body and isinstance(r.content, bytes)
    assert r.headers["content-type"] == "application/json"
    assert (r.status, r.url, r.ok) == (200, "http://h/p", True)
    r.json["bpi"] = None  # each access parses anew: mutation does not stick
    assert r.json["bpi"] == {"USD": {"rate_float": 1.5}}
    assert repr(r) == "<HttpResponse 200 GET http://h/p (48 bytes)>"


def test_request_item_access_and_redacted_repr():
    req = HttpRequest("https://user:pw@h/x?api_key=SECRET&q=1", headers={"Authorization": "Bearer SECRET"})
    assert req["url"] == req.url and req["method"] == "GET"
    req["method"] = "POST"
    assert req.method == "POST"
    with pytest.raises(KeyError):
        req["nope"] = 1
    assert repr(req) == "HttpRequest(POST https://h/x?api_key=***&q=1)"
    assert "SECRET" not in repr(req)


def test_describe_item_hides_headers_and_bodies():
    loader = HttpLoader()
    item = {"url": "http://h/x?token=T", "method": "post", "headers": {"Authorization": "Bearer S"}, "json": {"pw": 1}}
    assert loader.describe_item(item) == "{'method': 'POST', 'url': 'http://h/x?token=***', ...}"
    assert loader.describe_item(HttpRequest("http://h/", headers={"A": "S"})) == "HttpRequest(GET http://h/)"
    assert loader.describe_item("http://u:p@h/") == "'http://h/'"
    assert loader.describe_item(5) == "<int>"


def test_safe_url_masks_credentials():
    assert safe_url("http://u:p@h:8/a?token=t&page=2") == "http://h:8/a?token=***&page=2"
    assert safe_url("http://h/a?q=1") == "http://h/a?q=1"


def test_retry_after_parsing():
    assert _retry_after("3") == 3.0
    assert _retry_after(" 0.5 ") == 0.5
    assert _retry_after("-4") == 0.0
    assert _retry_after("soon") is None
    assert _retry_after(None) is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= _retry_after(future) <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after(past) == 0.0


# ---- constructor validation ------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, arg", [
    (dict(timeout=0), ValueError, "timeout"),
    (dict(timeout="5"), TypeError, "timeout"),
    (dict(delay=-1), ValueError, "delay"),
    (dict(delay="1"), TypeError, "delay"),
    (dict(concurrency=0), ValueError, "concurrency"),
    (dict(concurrency=True), TypeError, "concurrency"),
    (dict(retries=-1), ValueError, "retries"),
    (dict(retries=None), TypeError, "retries"),
    (dict(backoff=-0.1), ValueError, "backoff"),
    (dict(max_backoff="x"), TypeError, "max_backoff"),
    (dict(max_retry_after=-1), ValueError, "max_retry_after"),
    (dict(verify_ssl="no"), TypeError, "verify_ssl"),
    (dict(verify_ssl=None), TypeError, "verify_ssl"),
    (dict(raise_for_status=1), TypeError, "raise_for_status"),
    (dict(retry_non_idempotent="yes"), TypeError, "retry_non_idempotent"),
    (dict(headers=[("a", "b")]), TypeError, "headers"),
    (dict(headers={"bad name": "v"}), ValueError, "headers"),
    (dict(headers={"X": 1}), ValueError, "headers"),
    (dict(headers={"X": "a\r\nInjected: 1"}), ValueError, "headers"),
    (dict(header={"bad name": "v"}), ValueError, "header"),
    (dict(proxy="socks5://p:1"), ValueError, "proxy"),
    (dict(proxy=5), TypeError, "proxy"),
    (dict(retry_statuses=[503, 700]), ValueError, "retry_statuses"),
    (dict(retry_statuses=5), TypeError, "retry_statuses"),
    (dict(on_error="explode"), ValueError, "on_error"),
    (dict(name=3), TypeError, "name"),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, arg):
    with pytest.raises(error) as info:
        HttpLoader(**kwargs)
    message = str(info.value)
    assert message.startswith("HttpLoader: ")
    assert f"'{arg}'" in message


def test_header_values_are_not_echoed_in_errors():
    with pytest.raises(ValueError) as info:
        HttpLoader(headers={"Authorization": "Bearer SECRET\n"})
    assert "SECRET" not in str(info.value)


def test_headers_and_header_together_rejected():
    with pytest.raises(ValueError, match="HttpLoader: give 'headers' or databot's 'header'"):
        HttpLoader(headers={"a": "b"}, header={"a": "b"})


def test_defaults_and_label():
    loader = HttpLoader()
    assert loader.label() == "HttpLoader"
    assert HttpLoader(name="prices").label() == "prices"
    assert (loader.delay, loader.concurrency, loader.http_retries, loader.verify_ssl) == (0.0, 32, 3, True)
    assert (loader.call_timeout, loader.max_size, loader.raise_for_status) == (20, 64 * 1024 * 1024, False)
    # engine-level retries/timeout stay unset so they do not stack on the HTTP retries
    assert (loader.retries, loader.timeout) == (None, None)
    assert HttpLoader(2).delay == 2.0  # databot's first positional argument


@pytest.mark.parametrize("item, error, text", [
    (0, TypeError, "HttpLoader: item must be a URL string"),
    ({"method": "GET"}, ValueError, "needs a 'url' key"),
    ({"url": "http://h/", "body": "x"}, ValueError, "unknown key(s) 'body'"),
    ({"url": "http://h/", "data": "x", "json": {}}, ValueError, "both a body"),
    ({"url": "http://h/", "data": "x", "payload": "y"}, ValueError, "both 'data' and 'payload'"),
    ("ftp://h/file", ValueError, "must be absolute http:// or https://"),
    ("/relative", ValueError, "must be absolute http:// or https://"),
    ({"url": "http://h/", "method": "GE T"}, ValueError, "invalid HTTP method"),
])
def test_bad_items_rejected(item, error, text):
    with pytest.raises(error) as info:
        HttpLoader().request_of(item)
    assert text in str(info.value)


async def test_calling_without_a_session_is_a_clear_error():
    with pytest.raises(RuntimeError, match="HttpLoader: no open session"):
        await HttpLoader()("http://127.0.0.1:1/")


# ---- the pipe: volume, once-only delivery ----------------------------------------------

async def test_2000_gets_at_concurrency_100_each_response_once(http_server):
    urls = [http_server.url(f"/n/{i}?sleep=0.001") for i in range(2000)]
    bodies: list = []
    Pipe(urls, HttpLoader(concurrency=100), lambda r: r.text, collect(bodies))
    report = await BotFrame.run_async()
    assert Counter(bodies) == Counter(str(i) for i in range(2000))
    assert sum(http_server.hits.values()) == 2000  # no request sent twice
    assert 1 < http_server.max_inflight <= 100
    stats = report.find("HttpLoader")
    assert (stats.inp, stats.out, stats.failed) == (2000, 2000, 0)


async def test_step_returning_requests_and_responses_keeps_them_whole(http_server):
    out: list = []
    Pipe([http_server.url("/n/1"), http_server.url("/n/2")], lambda u: HttpRequest(u), HttpLoader(), collect(out))
    await BotFrame.run_async()
    assert all(isinstance(r, HttpResponse) for r in out)
    assert sorted(r.text for r in out) == ["1", "2"]


async def test_json_property(http_server):
    out: list = []
    Pipe(http_server.url("/price"), HttpLoader(), lambda r: r.json["bpi"]["USD"]["rate_float"], collect(out))
    await BotFrame.run_async()
    assert out == [57123.4567]


async def test_response_fields(http_server):
    out: list = []
    Pipe(http_server.url("/n/7"), HttpLoader(), collect(out))
    await BotFrame.run_async()
    (r,) = out
    assert (r.status, r.reason, r.text, r.content, r.url, r.method, r.attempts) == (
        200, "OK", "7", b"7", http_server.url("/n/7"), "GET", 1)
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.encoding == "utf-8"


# ---- what reaches the server -------------------------------------------------------------

async def test_dict_post_with_json_params_and_headers(http_server):
    out: list = []
    item = {"url": http_server.url("/echo"), "method": "post", "json": {"a": [1, 2], "b": "é"},
            "params": {"q": "x y", "page": "2"}, "headers": {"X-Test": "yes"}}
    Pipe(item, HttpLoader(headers={"X-Default": "d", "X-Test": "overridden"}), lambda r: r.json, collect(out))
    await BotFrame.run_async()
    (seen,) = out
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo"
    assert seen["query"] == [["q", "x y"], ["page", "2"]]
    assert seen["json"] == {"a": [1, 2], "b": "é"}
    assert seen["content_type"] == "application/json"
    assert seen["headers"]["x-test"] == "yes"        # the item's header wins
    assert seen["headers"]["x-default"] == "d"      # the loader's header is kept


async def test_http_request_with_payload_method_and_headers(http_server):
    out: list = []
    requests = [
        HttpRequest(http_server.url("/echo"), headers={"X-Req": "1"}, payload=b"raw bytes", method="PUT"),
        HttpRequest(http_server.url("/echo"), payload={"field": "v"}, method="POST"),
        HttpRequest(http_server.url("/echo"), params={"k": "v"}),
        {"url": http_server.url("/echo"), "payload": "databot body", "method": "PATCH"},
    ]
    Pipe(requests, HttpLoader(concurrency=1), lambda r: r.json, collect(out))
    await BotFrame.run_async()
    put, form, get, patch = out
    assert (put["method"], put["body"], put["headers"]["x-req"]) == ("PUT", "raw bytes", "1")
    assert (form["method"], form["body"], form["content_type"]) == (
        "POST", "field=v", "application/x-www-form-urlencoded")
    assert (get["method"], get["query"], get["body"]) == ("GET", [["k", "v"]], "")
    assert (patch["method"], patch["body"]) == ("PATCH", "databot body")


# ---- retries -----------------------------------------------------------------------------

async def test_503_twice_is_retried_then_succeeds(http_server):
    out: list = []
    Pipe(http_server.url("/flaky/a?fail=2&status=503"), HttpLoader(backoff=0.01), collect(out))
    report = await BotFrame.run_async()
    (r,) = out
    assert (r.status, r.text, r.attempts) == (200, "ok", 3)
    assert http_server.attempts["a"] == 3
    assert report.find("HttpLoader").failed == 0


async def test_retries_exhausted_pass_the_last_response_on(http_server):
    out: list = []
    Pipe(http_server.url("/flaky/b0?fail=99&status=502"), HttpLoader(retries=2, backoff=0.01), collect(out))
    report = await BotFrame.run_async()
    assert [(r.status, r.text, r.attempts) for r in out] == [(502, "attempt 3 failed", 3)]
    assert http_server.attempts["b0"] == 3
    assert report.find("HttpLoader").failed == 0


async def test_retries_exhausted_raise_for_status_names_url_and_status(http_server):
    url = http_server.url("/flaky/b?fail=99&status=502")
    Pipe(url, HttpLoader(retries=2, backoff=0.01, raise_for_status=True), print)
    with pytest.raises(HttpError) as info:
        await BotFrame.run_async()
    assert str(info.value) == f"HttpLoader: GET {url} failed after 3 attempts: HTTP 502 Bad Gateway"
    assert (info.value.status, info.value.attempts) == (502, 3)
    assert info.value.response.text == "attempt 3 failed"
    assert http_server.attempts["b"] == 3


async def test_429_retry_after_is_honoured(http_server):
    out: list = []
    Pipe(http_server.url("/flaky/c?fail=1&status=429&retry_after=1"), HttpLoader(backoff=0.001), collect(out))
    await BotFrame.run_async()
    assert [r.text for r in out] == ["ok"]
    first, second = http_server.arrivals["c"]
    assert second - first >= 0.95  # the server asked for 1 s; the backoff alone would be ~1 ms


async def test_retry_after_beyond_the_limit_ends_the_retries_at_once(http_server):
    url = http_server.url("/flaky/d?fail=1&status=429&retry_after=120")
    out: list = []
    Pipe(url, HttpLoader(max_retry_after=5), collect(out))
    await BotFrame.run_async()
    assert [(r.status, r.attempts) for r in out] == [(429, 1)]  # passed on, not waited for
    Pipe(url.replace("/d?", "/d2?"), HttpLoader(max_retry_after=5, raise_for_status=True), print)
    with pytest.raises(HttpError, match=r"HTTP 429 Too Many Requests \(Retry-After 120s exceeds max_retry_after=5s\)"):
        await BotFrame.run_async()
    assert http_server.attempts["d"] == http_server.attempts["d2"] == 1


async def test_a_404_reaches_the_next_step_as_databot_did(http_server):
    out: list = []
    Pipe(http_server.url("/status/404"), HttpLoader(backoff=0.01), lambda r: (r.status, r.text, r.ok), collect(out))
    report = await BotFrame.run_async()
    assert out == [(404, "status 404", False)]
    assert http_server.attempts["status/404"] == 1  # a client error is not retried
    assert report.find("HttpLoader").failed == 0


async def test_raise_for_status_true_raises_on_a_final_4xx(http_server):
    url = http_server.url("/status/404")
    Pipe(url, HttpLoader(backoff=0.01, raise_for_status=True), print)
    with pytest.raises(HttpError) as info:
        await BotFrame.run_async()
    assert str(info.value) == f"HttpLoader: GET {url} failed: HTTP 404 Not Found"
    assert http_server.attempts["status/404"] == 1


async def test_only_transient_statuses_are_retried(http_server):
    out: list = []
    Pipe([http_server.url("/flaky/e?fail=9&status=500"), http_server.url("/flaky/e2?fail=9&status=504")],
         HttpLoader(retries=1, backoff=0.01, concurrency=1), collect(out))
    await BotFrame.run_async()
    assert [(r.status, r.text) for r in out] == [(500, "attempt 1 failed"), (504, "attempt 2 failed")]
    assert (http_server.attempts["e"], http_server.attempts["e2"]) == (1, 2)


async def test_post_is_retried_only_when_the_server_cannot_have_acted(http_server):
    post = lambda key, status: {"url": http_server.url(f"/flaky/{key}?fail=1&status={status}"), "method": "POST"}
    Pipe(post("p502", 502), HttpLoader(backoff=0.01, raise_for_status=True), print)
    with pytest.raises(HttpError, match=r"POST .*/flaky/p502\?fail=1&status=502 failed: HTTP 502"):
        await BotFrame.run_async()
    assert http_server.attempts["p502"] == 1  # a 502 may have had effects: not repeated

    out: list = []
    Pipe([post("p503", 503), post("p429", 429)], HttpLoader(backoff=0.01), lambda r: r.text, collect(out))
    Pipe(post("opt", 502), HttpLoader(backoff=0.01, retry_non_idempotent=True), lambda r: r.text, collect(out))
    await BotFrame.run_async()
    assert out == ["ok", "ok", "ok"]
    assert (http_server.attempts["p503"], http_server.attempts["p429"], http_server.attempts["opt"]) == (2, 2, 2)


def test_retryable_status_rules():
    loader = HttpLoader()
    assert [s for s in range(100, 600) if loader._retryable_status(s, "GET")] == [429, 502, 503, 504]
    assert loader._retryable_status(502, "POST") is False
    assert loader._retryable_status(503, "POST") is True
    assert loader._retryable_status(429, "PATCH") is True
    assert loader._retryable_status(504, "PUT") is True
    assert HttpLoader(retry_non_idempotent=True)._retryable_status(502, "POST") is True
    assert HttpLoader(retry_statuses=[418])._retryable_status(503, "GET") is False
    assert HttpLoader(retry_statuses=[418])._retryable_status(418, "GET") is True


async def test_dropped_connection_is_retried(http_server):
    out: list = []
    Pipe(http_server.url("/drop/x?fail=2"), HttpLoader(backoff=0.01), collect(out))
    await BotFrame.run_async()
    assert [r.text for r in out] == ["ok"]
    assert http_server.attempts["x"] == 3


async def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/nothing"
    Pipe(url, HttpLoader(retries=1, backoff=0.01), print)
    with pytest.raises(HttpError) as info:
        await BotFrame.run_async()
    message = str(info.value)
    assert message.startswith(f"HttpLoader: GET {url} failed after 2 attempts: ClientConnectorError")
    assert info.value.status is None
    assert info.value.cause_type is aiohttp.ClientConnectorError
    assert info.value.__cause__ is None  # not chained: a cause's text may hold the raw URL


# ---- timeouts and exception policies --------------------------------------------------

async def test_hanging_endpoint_times_out_and_raise_policy_names_the_url(http_server):
    url = http_server.url("/hang")
    # an aiohttp.ClientTimeout limits each attempt (aiohttp's way), so the retry happens
    Pipe(url, HttpLoader(timeout=aiohttp.ClientTimeout(total=0.2), retries=1, backoff=0.01), print)
    with pytest.raises(asyncio.TimeoutError) as info:
        await BotFrame.run_async()
    assert isinstance(info.value, HttpError)
    assert str(info.value) == f"HttpLoader: GET {url} failed after 2 attempts: TimeoutError: no complete response within 0.2s"
    assert http_server.attempts["hang"] == 2  # a timeout is retried like a connection error
    assert any("HttpLoader" in note for note in info.value.__notes__)  # the engine's step note


async def test_timeout_bounds_the_whole_call_and_is_an_asyncio_timeout(http_server):
    """databot raised asyncio.TimeoutError after the 1 s asked for; retries do not stretch it."""
    url = http_server.url("/n/7?sleep=3")
    Pipe(url, HttpLoader(timeout=1, backoff=0.01), print)  # 3 retries by default
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError) as info:
        await BotFrame.run_async()
    assert time.monotonic() - started < 2.5  # well under the server's 3 s
    assert isinstance(info.value, HttpError) and info.value.status is None
    assert str(info.value) == f"HttpLoader: GET {url} failed: TimeoutError: no complete response within 1s"


async def test_a_retry_wait_longer_than_the_time_left_passes_the_last_response_on(http_server):
    out: list = []
    Pipe(http_server.url("/flaky/late?fail=1&status=503&retry_after=2"), HttpLoader(timeout=1), collect(out))
    await BotFrame.run_async()
    assert [(r.status, r.attempts) for r in out] == [(503, 1)]
    assert http_server.attempts["late"] == 1


async def test_hanging_endpoint_under_step_ignore_policy(http_server):
    out: list = []
    urls = [http_server.url("/hang"), http_server.url("/n/1")]
    Pipe(urls, Step(HttpLoader(timeout=0.2, retries=0), on_error="ignore"), lambda r: r.text, collect(out))
    report = await BotFrame.run_async()
    assert out == ["1"]
    stats = report.find("HttpLoader")
    assert (stats.inp, stats.out, stats.failed, stats.dropped) == (2, 1, 1, 1)
    (dead,) = report.dead_letters
    assert isinstance(dead.exception, HttpError) and dead.item == urls[0]


async def test_hanging_endpoint_under_node_ignore_policy(http_server):
    out: list = []
    urls = [http_server.url("/hang"), http_server.url("/n/2")]
    Pipe(urls, HttpLoader(timeout=0.2, retries=0, on_error="ignore"), lambda r: r.text, collect(out))
    report = await BotFrame.run_async()
    assert out == ["2"]
    assert (report.find("HttpLoader").failed, report.find("HttpLoader").dropped) == (1, 1)


async def test_global_ignore_policy(http_server):
    config.exception_policy = config.Exception_ignore
    out: list = []
    Pipe([http_server.url("/status/500"), http_server.url("/n/3")], HttpLoader(retries=0, raise_for_status=True),
         lambda r: r.text, collect(out))
    report = await BotFrame.run_async()
    assert out == ["3"]
    assert report.find("HttpLoader").failed == 1


async def test_pipein_policy_sends_the_error_downstream(http_server):
    errors: list = []
    url = http_server.url("/status/404")
    Pipe(url, HttpLoader(on_error="pipein", raise_for_status=True), Filter(route_type=HttpError), collect(errors))
    await BotFrame.run_async()
    (err,) = errors
    assert (err.rxbot_step, err.rxbot_item) == ("HttpLoader", url)
    assert err.status == 404 and err.response.text == "status 404"


async def test_delay_pauses_before_each_request(http_server):
    out: list = []
    Pipe([http_server.url("/flaky/t1?fail=0"), http_server.url("/flaky/t2?fail=0")],
         HttpLoader(delay=0.2, concurrency=1), collect(out))
    started = time.monotonic()
    await BotFrame.run_async()
    assert len(out) == 2
    (first,), (second,) = http_server.arrivals["t1"], http_server.arrivals["t2"]
    assert first - started >= 0.19 and second - first >= 0.19


# ---- session lifecycle and secrets --------------------------------------------------------

async def test_one_session_per_run_closed_afterwards(http_server):
    loader = HttpLoader()
    sessions: list = []

    def grab(r):
        sessions.append(loader._session)

    Pipe([http_server.url("/n/1"), http_server.url("/n/2")], loader, grab)
    Pipe(http_server.url("/n/3"), loader, grab)  # the same node in a second pipe
    await BotFrame.run_async()
    assert len(sessions) == 3 and len(set(map(id, sessions))) == 1
    assert sessions[0].closed and loader._session is None

    Pipe(http_server.url("/n/4"), loader, grab)  # a second run gets a fresh session
    await BotFrame.run_async()
    assert sessions[3] is not sessions[0] and sessions[3].closed


async def test_session_closed_after_a_failed_run(http_server):
    loader = HttpLoader(retries=0, raise_for_status=True)
    sessions: list = []
    Pipe([http_server.url("/n/1"), http_server.url("/status/500")],
         loader, lambda r: sessions.append(loader._session), )
    with pytest.raises(HttpError):
        await BotFrame.run_async()
    assert loader._session is None
    assert all(s.closed for s in sessions)


async def test_async_with_outside_a_pipe(http_server):
    async with HttpLoader() as get:
        r = await get({"url": http_server.url("/echo"), "params": {"a": "1"}})
        session = get._session
    assert r.json["query"] == [["a", "1"]]
    assert session.closed


async def test_secrets_never_logged(http_server, caplog):
    caplog.set_level(logging.DEBUG, logger="rxbot")
    url = http_server.url("/flaky/s?fail=9&status=503&api_key=SECRET3")
    loader = HttpLoader(headers={"Authorization": "Bearer SECRET1"}, retries=2, backoff=0.01, raise_for_status=True)
    Pipe(HttpRequest(url, headers={"X-Api-Key": "SECRET2"}), loader, print)
    with pytest.raises(HttpError) as info:
        await BotFrame.run_async()
    shown = caplog.text + str(info.value) + "".join(info.value.__notes__)
    assert "retry 1/2" in caplog.text  # the retries were logged ...
    assert "SECRET" not in shown       # ... without headers or credential parameters
    assert "api_key=***" in str(info.value)


@pytest.fixture
async def redirect_server():
    """/loop redirects to itself forever; /ftp redirects to a non-HTTP URL with a token."""
    from aiohttp import web

    async def loop_(request):
        raise web.HTTPFound(str(request.url))

    async def ftp(request):
        raise web.HTTPFound("ftp://files.example/x?token=SECRET2")

    app = web.Application()
    app.router.add_get("/loop", loop_)
    app.router.add_get("/ftp", ftp)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path, cause", [
    ("/loop?token=SECRET1", "TooManyRedirects"),
    ("/ftp?api_key=SECRET3", "NonHttpUrlRedirectClientError"),
    ("/bad url?token=SECRET4\n", None),
])
async def test_redirect_and_url_errors_never_reveal_secrets(redirect_server, caplog, path, cause):
    caplog.set_level(logging.DEBUG, logger="rxbot")
    url = redirect_server + path
    async with HttpLoader(retries=0, raise_for_status=True) as get:  # the bad URL gets a 400
        with pytest.raises(HttpError) as info:
            await get(url)
    error = info.value
    texts = [str(error), repr(error), str(error.__cause__), str(error.__context__)]
    if cause is not None:
        assert isinstance(error, HttpError) and error.cause_type.__name__ == cause
        assert f"failed: {cause}" in str(error)
    # in a pipe under the ignore policy: the drop is logged
    report_errors = []
    Pipe(url, HttpLoader(retries=0, on_error="ignore", raise_for_status=True), print)
    report = await BotFrame.run_async()
    report_errors = [str(d) + repr(d.exception) for d in report.dead_letters]
    assert len(report_errors) == 1
    assert "SECRET" not in "".join(texts + report_errors) + caplog.text


def test_safe_cause_masks_urls_in_any_exception_text():
    from rxbot.http.http import safe_cause

    assert safe_cause(ValueError("bad http://u:pw@h/x?token=T1&a=1 here")) == (
        "ValueError: bad http://h/x?token=***&a=1 here")
    assert safe_cause(aiohttp.InvalidURL("https://h/?key=K9")) == "InvalidURL: https://h/?key=***"
    assert safe_cause(OSError()) == "OSError"


async def test_global_retry_policy_does_not_multiply_http_retries(http_server):
    config.exception_policy = "retry"
    config.retry_backoff = 0.01
    Pipe(http_server.url("/flaky/g?fail=99&status=502"), HttpLoader(retries=2, backoff=0.01, raise_for_status=True),
         print)
    with pytest.raises(HttpError):
        await BotFrame.run_async()
    assert http_server.attempts["g"] == 3  # 1 + retries, not multiplied by the engine's attempts

    Pipe({"url": http_server.url("/flaky/p?fail=1&status=500"), "method": "POST", "data": "charge=1"},
         HttpLoader(backoff=0.01, raise_for_status=True), print)
    with pytest.raises(HttpError, match="POST .* failed: HTTP 500"):
        await BotFrame.run_async()
    assert http_server.attempts["p"] == 1  # a POST the server may have acted on is never re-sent


async def test_tls_verified_by_default(https_server):
    url = https_server.url("/n/1")
    Pipe(url, HttpLoader(retries=3, backoff=0.01), print)
    with pytest.raises(HttpError) as info:
        await BotFrame.run_async()
    assert "ClientConnectorCertificateError" in str(info.value)
    assert "after" not in str(info.value)  # a bad certificate is not retried


async def test_tls_with_custom_ca_and_verify_ssl_false(https_server):
    out: list = []
    context = ssl.create_default_context(cafile=https_server.cert_path)
    Pipe(https_server.url("/n/1"), HttpLoader(verify_ssl=context), lambda r: r.text, collect(out))
    Pipe(https_server.url("/n/2"), HttpLoader(verify_ssl=False), lambda r: r.text, collect(out))
    await BotFrame.run_async()
    assert sorted(out) == ["1", "2"]


# ---- demo server and the example ---------------------------------------------------------

async def test_price_server_serves_coindesk_shape():
    async with PriceServer(seed=1) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.price_url == server.base_url + PRICE_PATH
        out: list = []
        Pipe(Step(lambda _: [server.price_url] * 3), HttpLoader(concurrency=1), lambda r: r.json, collect(out))
        await BotFrame.run_async()
        assert server.requests == 3
    assert len(out) == 3
    for doc in out:
        assert set(doc) >= {"bpi", "time"}
        assert set(doc["bpi"]) == {"USD", "GBP", "EUR"}
        usd = doc["bpi"]["USD"]
        assert isinstance(usd["rate_float"], float) and usd["rate_float"] > 0
        assert usd["rate"] == f"{usd['rate_float']:,.4f}"
        assert set(doc["time"]) == {"updated", "updatedISO", "updateduk"}
    assert len({d["bpi"]["USD"]["rate_float"] for d in out}) == 3  # the price moves


def test_price_server_in_a_thread_with_blocking_run():
    out: list = []
    with serve_in_thread(seed=2) as server:
        Pipe(server.price_url, HttpLoader(), lambda r: r.json["bpi"]["EUR"]["code"], collect(out))
        BotFrame.run()
    assert out == ["EUR"]
    with pytest.raises(OSError):  # stopped: nothing listens there any more
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_bitcoin_ticker_example_prints_five_floats():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "bitcoin_ticker.py")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert len(lines) == 5
    prices = [float(line) for line in lines]
    assert all(p > 0 for p in prices)
    assert proc.stderr == ""

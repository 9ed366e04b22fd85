"""HttpLoader decodes pages like a browser, sends databot's kind of headers, and never
fails on a hostile Content-Type (issues 26 items 13-14, 27). Real local aiohttp servers."""
from __future__ import annotations

import json

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxbot import BotFrame, HttpLoader, HttpResponse, Pipe, config
from rxbot.http import DEFAULT_HEADERS, HttpError

TITLE_ZH = "中文标题"
PAGE_ZH = (f"<html><head><title>{TITLE_ZH}</title></head><body><p>这是一个用国标编码的中文页面，"
           "服务器没有在头里声明字符集。数据机器人的用户常常抓取这样的网站。</p></body></html>")
PAGE_JA = ("<html><head><title>日本語のページ</title></head><body><p>これはシフトJISで書かれた日本語の"
           "ページです。文字コードはどこにも宣言されていません。</p></body></html>")


def page_server_app() -> web.Application:
    """Pages in several encodings, each with a Content-Type that names no charset unless
    the path says so."""
    def raw(body: bytes, content_type: str) -> web.Response:
        # set the header verbatim: aiohttp's content_type= would add its own charset
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def gbk_no_charset(_):
        return raw(PAGE_ZH.encode("gbk"), "text/html")

    async def meta_charset(_):
        body = (f'<html><head><meta charset="gbk"><title>{TITLE_ZH}</title></head><body>短</body></html>')
        return raw(body.encode("gbk"), "text/html")

    async def http_equiv(_):
        body = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312">'
                f'<title>{TITLE_ZH}</title></head><body>短</body></html>')
        return raw(body.encode("gbk"), "text/html")

    async def xml_declaration(_):
        body = f'<?xml version="1.0" encoding="Shift_JIS"?><feed><title>日本語</title></feed>'
        return raw(body.encode("shift_jis"), "application/xml")

    async def shift_jis(_):
        return raw(PAGE_JA.encode("shift_jis"), "text/html")

    async def header_wins(_):
        # the header says latin-1; the page's meta says gbk: the header decides (browsers)
        return raw('<meta charset="gbk"><p>café</p>'.encode("latin-1"), "text/html; charset=ISO-8859-1")

    async def codec_charset(request):
        return raw(json.dumps({"k": "värde"}).encode(), f"application/json; charset={request.match_info['c']}")

    async def json_bom(_):
        return raw(b"\xef\xbb\xbf" + json.dumps({"k": "v\u00e4"}).encode(), "application/json")

    async def huge_header(_):
        return web.Response(text="x", headers={"X-Big": "a" * 20000})

    async def echo_headers(request):
        return web.json_response({k.lower(): v for k, v in request.headers.items()})

    app = web.Application()
    for path, handler in (("/gbk", gbk_no_charset), ("/meta", meta_charset), ("/equiv", http_equiv),
                          ("/xml", xml_declaration), ("/sjis", shift_jis), ("/header-wins", header_wins),
                          ("/charset/{c}", codec_charset), ("/bom", json_bom), ("/huge", huge_header),
                          ("/headers", echo_headers)):
        app.router.add_get(path, handler)
    return app


@pytest.fixture
async def pages():
    runner = web.AppRunner(page_server_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield base
    await runner.cleanup()


async def fetch(url: str, **kwargs) -> HttpResponse:
    async with HttpLoader(retries=0, **kwargs) as get:
        return await get(url)


# ---- encodings (issue 27) -------------------------------------------------------------

async def test_gbk_page_without_charset_is_detected(pages):
    r = await fetch(pages + "/gbk")
    assert r.headers["Content-Type"] == "text/html"
    assert r.encoding == "gb18030"  # charset-normalizer's name for the GBK family
    assert f"<title>{TITLE_ZH}</title>" in r.text
    assert r.text == PAGE_ZH


async def test_meta_charset_alone_decides(pages):
    r = await fetch(pages + "/meta")
    assert r.encoding == "gbk"
    assert f"<title>{TITLE_ZH}</title>" in r.text


async def test_meta_http_equiv_gb2312_is_read_as_gbk(pages):
    r = await fetch(pages + "/equiv")
    assert r.encoding == "gbk"  # gb2312 labels mean GBK, as in browsers
    assert TITLE_ZH in r.text


async def test_xml_declaration_decides(pages):
    r = await fetch(pages + "/xml")
    assert r.encoding == "shift_jis"
    assert "<title>日本語</title>" in r.text


async def test_shift_jis_page_without_any_declaration(pages):
    r = await fetch(pages + "/sjis")
    assert r.encoding == "cp932"  # Windows' Shift-JIS, a superset
    assert r.text == PAGE_JA


async def test_header_charset_wins_over_meta(pages):
    r = await fetch(pages + "/header-wins")
    assert r.encoding == "iso8859-1"
    assert r.text == '<meta charset="gbk"><p>café</p>'


def test_utf8_page_without_charset_needs_no_guess():
    body = "<p>naïve café – ok</p>".encode()
    assert HttpResponse(200, body, headers={"Content-Type": "text/html"}).encoding == "utf-8"


def test_assigning_encoding_redecodes_and_a_bad_one_means_decide():
    r = HttpResponse(200, "中文".encode("gbk"), headers={"Content-Type": "text/plain; charset=latin-1"})
    assert r.text == "中文".encode("gbk").decode("latin-1")
    r.encoding = "gbk"
    assert r.text == "中文"
    r.encoding = "base64"  # not a text encoding: decided from the body again
    assert r.encoding == "iso8859-1"  # the header's


# ---- hostile charsets, BOM, oversized headers (issue 26 items 13, 14) ------------------

@pytest.mark.parametrize("codec", ["base64", "hex", "rot13", "zlib", "bz2", "uu", "quopri", "idna",
                                   "unicode_escape", "undefined", "no-such-codec"])
async def test_a_non_text_charset_is_treated_as_unknown(pages, codec):
    r = await fetch(pages + f"/charset/{codec}")
    assert r.encoding == "utf-8"
    assert r.text == '{"k": "v\\u00e4rde"}'
    assert r.json == {"k": "värde"}


async def test_json_with_a_utf8_bom_parses(pages):
    r = await fetch(pages + "/bom")
    assert r.json == {"k": "vä"}
    assert r.text.startswith("{")


def test_json_nested_too_deeply_is_a_json_error():
    with pytest.raises(json.JSONDecodeError):
        HttpResponse(200, b"[" * 100_000, headers={"Content-Type": "application/json"}).json


async def test_oversized_response_headers_are_named_not_http_400(pages):
    with pytest.raises(HttpError) as caught:
        await fetch(pages + "/huge")
    message = str(caught.value)
    assert "oversized response headers" in message
    assert "HTTP 400" not in message
    assert caught.value.status is None
    assert "aaaa" not in message  # header bytes are never quoted
    r = await fetch(pages + "/huge", max_field_size=32768)  # the remedy the message names
    assert (r.status, r.text) == (200, "x")


CONTENT_TYPES = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.builds(lambda mime, cs: f"{mime}; charset={cs}",
              st.sampled_from(["text/html", "application/json", "text/plain", "application/xml", "x/y+json"]),
              st.one_of(st.sampled_from(["base64", "hex", "rot13", "zlib", "utf-16", "utf-32", "idna",
                                         "punycode", "unicode_escape", "utf-7", "gbk", "cp500", "undefined",
                                         '"utf-8"', "", "x" * 50]),
                        st.text(max_size=20))))
BODIES = st.one_of(st.binary(max_size=2048),
                   st.builds(lambda head, tail: head + tail,
                             st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff",
                                              b'<?xml version="1.0" encoding="base64"?>',
                                              b'<meta charset="rot13">', b'<meta charset="utf-16">']),
                             st.binary(max_size=512)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, content_type=CONTENT_TYPES)
def test_fuzz_text_is_always_str_and_json_raises_only_json_errors(body, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = HttpResponse(200, body, headers=headers)
    assert isinstance(r.encoding, str)
    assert isinstance(r.text, str)
    try:
        r.json
    except json.JSONDecodeError:
        pass


# ---- default headers (issue 27) --------------------------------------------------------

async def test_default_headers_are_a_browsers(pages):
    sent = (await fetch(pages + "/headers")).json
    assert sent["user-agent"] == DEFAULT_HEADERS["User-Agent"]
    assert sent["user-agent"].startswith("Mozilla/5.0") and "aiohttp" not in sent["user-agent"]
    assert sent["accept-language"] == "zh-CN,zh;q=0.9,en;q=0.8"


async def test_loader_headers_override_defaults_one_by_one(pages):
    sent = (await fetch(pages + "/headers", headers={"User-Agent": "mybot/1.0", "X-K": "v"})).json
    assert (sent["user-agent"], sent["x-k"]) == ("mybot/1.0", "v")
    assert sent["accept-language"] == DEFAULT_HEADERS["Accept-Language"]


async def test_config_http_headers_replace_the_defaults(pages, monkeypatch):
    monkeypatch.setattr(config, "http_headers", {"Accept-Language": "en"})
    sent = (await fetch(pages + "/headers")).json
    assert sent["accept-language"] == "en"
    assert sent["user-agent"].startswith("Python/")  # aiohttp's own: no browser default left
    monkeypatch.setattr(config, "http_headers", {"Bad Name": "x"})
    with pytest.raises(ValueError, match="config.http_headers"):
        await fetch(pages + "/headers")


def test_gbk_page_in_a_pipe(pages_sync):
    titles: list = []
    Pipe([pages_sync + "/gbk"], HttpLoader(), lambda r: r.text.split("<title>")[1].split("</")[0], titles.append)
    BotFrame.run()
    assert titles == [TITLE_ZH]


@pytest.fixture
def pages_sync():
    """The page server in a thread, for a blocking BotFrame.run()."""
    import asyncio
    import threading

    ready = threading.Event()
    box: dict = {}

    def serve():
        loop = asyncio.new_event_loop()
        box["loop"] = loop

        async def start():
            runner = web.AppRunner(page_server_app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            box["runner"] = runner
            box["base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(box["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield box["base"]
    box["loop"].call_soon_threadsafe(box["loop"].stop)
    thread.join(10)

"""databot's baidu spider, offline.

databot's ``examples/baidu_spider.py`` searched Baidu for a few keywords, parsed the
result entries of the first page, followed the page links at the bottom of that page
and parsed their entries too. The internet is off limits here, so this script starts its
own small search site on 127.0.0.1 (a random free port) that serves the same kind of
pages, then runs the same pipe against it:

    keywords -> search URL -> HttpLoader -> Join(entries of page 1,
                                                  page links -> HttpLoader -> entries)
             -> JSON lines file (aiofile)

The pages are fetched concurrently, so entries reach the file in no fixed order; the
script reads the file back and prints it sorted, which makes the output the same on
every run. HTML is parsed with the standard library's ``html.parser``.

Run: ``python examples/spider.py [OUT_FILE]`` (default: ``spider_results.jsonl`` in the
current folder); ``--render graph.svg`` also draws the pipe.
"""
from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from html import escape
from html.parser import HTMLParser
from typing import Iterator, List
from urllib.parse import parse_qs, quote_plus, urljoin, urlsplit

from aiohttp import web

from rxbot import BotFrame, HttpLoader, Join, Pipe, aiofile

# ------------------------------------------------------------------------ the local site
#: what the search site knows: keyword -> (title, url) of every hit, best first
CORPUS = {
    "asyncio": [
        ("asyncio — Asynchronous I/O", "https://docs.python.org/3/library/asyncio.html"),
        ("Coroutines and Tasks", "https://docs.python.org/3/library/asyncio-task.html"),
        ("Queues", "https://docs.python.org/3/library/asyncio-queue.html"),
        ("Streams & protocols", "https://docs.python.org/3/library/asyncio-stream.html"),
        ("Event Loop", "https://docs.python.org/3/library/asyncio-eventloop.html"),
        ("Developing with asyncio", "https://docs.python.org/3/library/asyncio-dev.html"),
        ("PEP 3156 – Asynchronous IO Support Rebooted", "https://peps.python.org/pep-3156/"),
    ],
    "reactive streams": [
        ("ReactiveX: An API for asynchronous programming", "https://reactivex.io/"),
        ("RxPY: Reactive Extensions for Python", "https://github.com/ReactiveX/RxPY"),
        ("Backpressure <explained>", "https://reactivex.io/documentation/operators/backpressure.html"),
        ("Reactive Streams specification", "https://www.reactive-streams.org/"),
    ],
    "no such thing": [],
}
PAGE_SIZE = 3


def _pages(hits: list) -> int:
    return max(1, -(-len(hits) // PAGE_SIZE))


def search_page(word: str, page: int) -> str:
    """One result page, shaped like a search engine's: result blocks, then page links."""
    hits = CORPUS.get(word, [])
    first = (page - 1) * PAGE_SIZE
    blocks = [
        f'<div class="result"><h3><a href="{escape(url)}">{escape(title)}</a></h3>'
        f'<p class="meta">hit {first + i + 1}</p></div>'
        for i, (title, url) in enumerate(hits[first:first + PAGE_SIZE])
    ]
    links = [
        f'<a href="/s?wd={quote_plus(word)}&amp;pn={n}">{n}</a>' if n != page else f"<strong>{n}</strong>"
        for n in range(1, _pages(hits) + 1)
    ]
    if page < _pages(hits):
        links.append(f'<a class="next" href="/s?wd={quote_plus(word)}&amp;pn={page + 1}">next &gt;</a>')
    return (f"<html><head><title>{escape(word)} - search</title></head><body>"
            f'<div id="results">{"".join(blocks)}</div><div id="page">{" ".join(links)}</div>'
            "</body></html>")


LATENCY = web.AppKey("latency", float)


async def handle_search(request: web.Request) -> web.Response:
    await asyncio.sleep(request.app[LATENCY])
    word = request.query.get("wd", "")
    try:
        page = int(request.query.get("pn", "1"))
    except ValueError:
        raise web.HTTPBadRequest(text="pn must be a number")
    if word not in CORPUS or not 1 <= page <= _pages(CORPUS[word]):
        raise web.HTTPNotFound()
    return web.Response(text=search_page(word, page), content_type="text/html")


class SearchSite:
    """The search site on 127.0.0.1 and a free port, in the running event loop.
    ``latency``: seconds each page takes to come back, like a real site's round trip."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    async def __aenter__(self) -> "SearchSite":
        app = web.Application()
        app[LATENCY] = self.latency
        app.router.add_get("/s", handle_search)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


# ---------------------------------------------------------------------------- the spider
@dataclass
class Result:
    keyword: str
    page: int
    rank: int
    title: str
    url: str


class PageParser(HTMLParser):
    """Collects the result links (``div.result h3 a``) and the page links
    (``div#page a``, up to the 'next' link) of one result page."""

    def __init__(self) -> None:
        super().__init__()  # convert_charrefs=True: '&amp;' arrives as '&'
        self.results: List[tuple] = []
        self.page_links: List[str] = []
        self._in_h3 = False
        self._in_pager = False
        self._href: str | None = None
        self._text: List[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "h3":
            self._in_h3 = True
        elif tag == "div" and attrs.get("id") == "page":
            self._in_pager = True
        elif tag == "a" and self._in_h3:
            self._href, self._text = attrs.get("href"), []
        elif tag == "a" and self._in_pager and attrs.get("class") != "next":
            self.page_links.append(attrs["href"])

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.results.append(("".join(self._text).strip(), self._href))
            self._href = None
        elif tag == "h3":
            self._in_h3 = False
        elif tag == "div" and self._in_pager:
            self._in_pager = False


def parse(response) -> PageParser:
    parser = PageParser()
    parser.feed(response.text)
    parser.close()
    return parser


def where(response) -> tuple:
    """(keyword, page number) from the URL the response came from."""
    query = parse_qs(urlsplit(response.url).query)
    return query["wd"][0], int(query.get("pn", ["1"])[0])


def get_all_items(response) -> Iterator[Result]:
    """Every result entry of a page, one item each (a generator is flattened)."""
    keyword, page = where(response)
    for rank, (title, url) in enumerate(parse(response).results, start=1):
        yield Result(keyword, page, rank, title, url)


def get_all_page_url(response) -> List[str]:
    """Absolute URLs of the other result pages linked from page 1 (a list is flattened;
    an empty one, for a keyword with a single page, emits nothing)."""
    return [urljoin(response.url, href) for href in parse(response).page_links]


def build(base_url: str, keywords: List[str], out_file: str) -> Pipe:
    def search_url(word: str) -> str:
        return f"{base_url}/s?wd={quote_plus(word)}"

    return Pipe(
        keywords,                                     # a list is a Loop: one item per keyword
        search_url,
        HttpLoader(name="fetch page 1"),
        Join(
            get_all_items,                            # the entries of page 1
            Pipe(get_all_page_url, HttpLoader(name="fetch other pages"), get_all_items),
        ),
        asdict,
        aiofile(out_file, format="json"),             # one JSON document per line
        name="spider",
    )


async def crawl(keywords: List[str], out_file: str, render: str | None = None) -> None:
    async with SearchSite() as site:
        pipe = build(site.base_url, keywords, out_file)
        if render:
            BotFrame.render(render, pipes=[pipe])
        report = await pipe.run_async()
    print(f"pages fetched: {report.find('fetch page 1').out} first + "
          f"{report.find('fetch other pages').out} more")


def show(out_file: str) -> None:
    with open(out_file, encoding="utf-8") as fh:
        results = [Result(**json.loads(line)) for line in fh]
    results.sort(key=lambda r: (r.keyword, r.page, r.rank))
    for r in results:
        print(f"{r.keyword} | page {r.page} #{r.rank} | {r.title} | {r.url}")
    print(f"{len(results)} results")


def main(argv: List[str]) -> None:
    render = None
    if "--render" in argv:
        i = argv.index("--render")
        render = argv[i + 1]
        del argv[i:i + 2]
    out_file = argv[0] if argv else "spider_results.jsonl"
    asyncio.run(crawl(["asyncio", "reactive streams", "no such thing"], out_file, render))
    show(out_file)


if __name__ == "__main__":
    main(sys.argv[1:])

"""databot's examples/baidu_spider_progress.py, offline.

databot's script crawled Baidu's result pages for 100 searches and printed its progress
from a second pipe, ``Pipe(Timer(delay=delay, until=p1.finished), show_progress)``: one
line at once, one every ``delay`` seconds, and a last one with the total once the crawl
had finished. Here the same pipes run against the local search site of ``spider.py``
(127.0.0.1, a free port, each page taking 0.2 s like a far-away server) with 20 searches
and a delay of 0.25 s instead of 5 s; everything else is databot's script with
``databot`` renamed ``rxbot``. The pages are parsed by ``spider.py``'s functions of the
same names, with the standard library's HTML parser instead of BeautifulSoup.

Run: ``python examples/baidu_spider_progress.py``. Prints lines like
``got len item 110 speed:146.666667 per second,total cost: 0.75s``.
"""
import asyncio
from urllib.parse import quote_plus

from rxbot.tree.flow import Pipe, Branch, Loop, Timer
from rxbot.botframe import BotFrame
from rxbot.http.http import HttpLoader
from rxbot.config import config

# the page parsers of spider.py: every entry of a result page (one Result each), and the
# links to the other result pages
from spider import SearchSite, get_all_items, get_all_page_url


result = []

delay = 0.25


def collect(i):
    result.append(i)


def show_progress(count):
    n = len(result)
    speed = n / (count * delay)
    print('got len item %s speed:%03f per second,total cost: %ss' % (n, speed, count * delay))


config.exception_policy = config.Exception_ignore


async def main():
    async with SearchSite(latency=0.2) as site:
        words = ['asyncio', 'reactive streams'] * 10
        search_url = site.base_url + '/s?wd=%s'
        urls = [search_url % quote_plus(word) for word in words]

        # make data flow net
        p1 = Pipe(
            Loop(urls),
            HttpLoader(),
            Branch(get_all_items, collect),
            Branch(get_all_page_url, HttpLoader(), get_all_items, collect),
        )
        Pipe(Timer(delay=delay, until=p1.finished), show_progress)
        await BotFrame.run_async()


asyncio.run(main())

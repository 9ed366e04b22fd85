"""databot's examples/baidu_spider_joined.py, offline.

databot's script fetched a Baidu search, joined the entries of page 1 and of the other
result pages back into the main pipe, inserted them into MySQL, and watched the crawl
from a second pipe whose Timer step called ``BotFrame.debug()`` every 2 s. Here the
same pipes run against the local search site of ``spider.py`` (127.0.0.1, a free port,
each page taking 0.2 s) with a Timer of 0.1 s, and the rows go to a SQLite file through
``rxbot.db.sqlite.Insert`` with databot's SQL text, so no server is needed (the MySQL
``Insert`` takes the same statement). The pages are parsed by ``spider.py``'s functions
of the same names. The graph is written as DOT source.

``BotFrame.debug()`` logs a snapshot of the live run on the ``rxbot`` logger (stderr
here, through ``logging.basicConfig``): every step with its counts and the items it
holds. At the end the script prints what the table holds.

Run: ``python examples/baidu_spider_joined.py [DB_FILE]`` (default ``baidu.db``).
"""
import asyncio
import logging
import os
import sqlite3
import sys
from urllib.parse import quote_plus

from rxbot.tree.flow import Pipe, Branch, Timer
from rxbot.botframe import BotFrame
from rxbot.http.http import HttpLoader, HttpResponse
from rxbot.db.sqlite import Insert

# the page parsers of spider.py: every entry of a result page (a Result with keyword,
# page, rank, title and url), and the links to the other result pages
from spider import SearchSite, get_all_items, get_all_page_url

logging.basicConfig(level=logging.DEBUG)


def show_info(i):
    BotFrame.debug()


async def main(db_file):
    with sqlite3.connect(db_file) as conn:
        conn.execute("drop table if exists baidu")
        conn.execute("create table baidu (keyword text, name text, url text, page_rank int, page_no int)")
    conn.close()
    async with SearchSite(latency=0.2) as site:
        words = ['asyncio', 'reactive streams']
        search_url = site.base_url + '/s?wd=%s'
        urls = [search_url % quote_plus(word) for word in words]

        # make data flow net
        insert = Insert("insert into baidu (keyword,name ,url,page_rank,page_no)values('{keyword}','{title}' ,'{url}',{rank},{page})",
                        path=db_file)

        p = Pipe(
            urls,
            HttpLoader(),
            Branch(get_all_items, join=True),

            Branch(get_all_page_url, HttpLoader(), get_all_items, share=False, join=True, route_type=HttpResponse),

            insert,
        )

        Pipe(Timer(delay=0.1, until=p.finished), show_info)

        out_dir = os.environ.get("RXBOT_EXAMPLE_OUT", "ex_output")
        os.makedirs(out_dir, exist_ok=True)
        BotFrame.render(os.path.join(out_dir, 'baiduspider.dot'))
        await BotFrame.run_async()


def show(db_file):
    conn = sqlite3.connect(db_file)
    rows = conn.execute("select name, page_no, page_rank from baidu order by name").fetchall()
    conn.close()
    for name, page_no, page_rank in rows:
        print(f"{name} | page {page_no} #{page_rank}")
    print(f"{len(rows)} rows in baidu")


db_file = sys.argv[1] if len(sys.argv) > 1 else "baidu.db"
asyncio.run(main(db_file))
show(db_file)

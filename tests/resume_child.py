"""A crawl-like job for the resume tests: a source of N items, an async step, a parse
that gives two rows per item, an Insert into SQLite or MariaDB; run with resume.

    python resume_child.py sqlite PATH TABLE N
    python resume_child.py mysql HOST:PORT TABLE N
"""
import asyncio
import sys

from rxbot import BotFrame, Pipe, Step, config

kind, where, table, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config.checkpoint_seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 0.05
config.durable_dir = sys.argv[6] if len(sys.argv) > 6 else None


async def fetch(i):
    await asyncio.sleep(0.004)  # a request
    return i


def parse(i):
    return [{"n": i, "part": 0}, {"n": i, "part": 1}]  # two rows: never split across transactions


sql = f"INSERT INTO {table} (n, part) VALUES ({{n}}, {{part}})"
if kind == "sqlite":
    from rxbot.db.sqlite import Insert
    sink = Insert(sql, path=where)
else:
    from rxbot.db.mysql import Insert
    host, port = where.split(":")
    sink = Insert(sql, host=host, port=int(port))

Pipe(range(n), Step(fetch, concurrency=4), parse, sink)
print("READY", flush=True)
report = BotFrame.run(resume=True)
print("DONE", report.delivery["P1"]["resumed_from"], flush=True)

"""examples/spider.py (databot's baidu spider, offline) runs as a subprocess against its
own local search site and prints every result of every page, sorted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SPIDER = Path(__file__).resolve().parent.parent / "examples" / "spider.py"

EXPECTED = """\
pages fetched: 3 first + 3 more
asyncio | page 1 #1 | asyncio — Asynchronous I/O | https://docs.python.org/3/library/asyncio.html
asyncio | page 1 #2 | Coroutines and Tasks | https://docs.python.org/3/library/asyncio-task.html
asyncio | page 1 #3 | Queues | https://docs.python.org/3/library/asyncio-queue.html
asyncio | page 2 #1 | Streams & protocols | https://docs.python.org/3/library/asyncio-stream.html
asyncio | page 2 #2 | Event Loop | https://docs.python.org/3/library/asyncio-eventloop.html
asyncio | page 2 #3 | Developing with asyncio | https://docs.python.org/3/library/asyncio-dev.html
asyncio | page 3 #1 | PEP 3156 – Asynchronous IO Support Rebooted | https://peps.python.org/pep-3156/
reactive streams | page 1 #1 | ReactiveX: An API for asynchronous programming | https://reactivex.io/
reactive streams | page 1 #2 | RxPY: Reactive Extensions for Python | https://github.com/ReactiveX/RxPY
reactive streams | page 1 #3 | Backpressure <explained> | https://reactivex.io/documentation/operators/backpressure.html
reactive streams | page 2 #1 | Reactive Streams specification | https://www.reactive-streams.org/
11 results
"""


def run_spider(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONWARNINGS="error::RuntimeWarning")
    proc = subprocess.run([sys.executable, str(SPIDER), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Task was destroyed" not in proc.stderr, proc.stderr
    return proc


def test_spider_prints_every_result_of_every_page_sorted(tmp_path):
    proc = run_spider(tmp_path)
    assert proc.stdout == EXPECTED
    # the pipe's aiofile wrote one JSON document per result (in arrival order)
    lines = (tmp_path / "spider_results.jsonl").read_text(encoding="utf-8").splitlines()
    records = sorted((json.loads(line) for line in lines), key=lambda r: (r["keyword"], r["page"], r["rank"]))
    assert [f"{r['keyword']} | page {r['page']} #{r['rank']} | {r['title']} | {r['url']}" for r in records] \
        == EXPECTED.splitlines()[1:-1]


def test_spider_output_file_and_graph(tmp_path):
    proc = run_spider(tmp_path, "hits.jsonl", "--render", "spider.svg")
    assert proc.stdout == EXPECTED
    assert len((tmp_path / "hits.jsonl").read_text(encoding="utf-8").splitlines()) == 11
    svg = (tmp_path / "spider.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg
    for label in ("fetch page 1", "fetch other pages", "get_all_page_url", "get_all_items", "aiofile(hits.jsonl)"):
        assert label in svg

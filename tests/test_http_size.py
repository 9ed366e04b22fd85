"""HttpLoader's ``max_size`` (issue 16): the body is read chunk by chunk and counted after
decoding, so a decompression bomb stops at the limit, under the step's policy, without
the memory the inflated body would take."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from http_bomb import MIB, OversizeServer
from rxbot import BotFrame, HttpLoader, Pipe
from rxbot.http import HttpError
from rxbot.http.http import DEFAULT_MAX_SIZE, HttpResponseTooLarge

HERE = Path(__file__).resolve().parent


@pytest.fixture
async def server():
    async with OversizeServer() as s:
        yield s


async def test_a_decompression_bomb_stops_at_max_size_under_raise(server):
    url = server.url("/bomb")  # ~1 MiB of gzip inflating to 1 GiB
    Pipe(url, HttpLoader(max_size=4 * MIB), print)
    with pytest.raises(HttpResponseTooLarge) as info:
        await BotFrame.run_async()
    assert str(info.value) == (
        f"HttpLoader: GET {url} failed: response body larger than max_size=4194304 bytes once decoded "
        f"(Content-Encoding: gzip); reading stopped there")
    assert isinstance(info.value, HttpError) and info.value.status == 200
    assert info.value.rxbot_step == "HttpLoader"  # the engine's note: step and item


async def test_an_oversize_body_follows_the_ignore_policy(server):
    out: list = []
    urls = [server.url("/bomb"), server.url("/plain?n=100")]
    Pipe(urls, HttpLoader(max_size=MIB, on_error="ignore", concurrency=1), lambda r: len(r.content), out.append)
    report = await BotFrame.run_async()
    assert out == [100]
    stats = report.find("HttpLoader")
    assert (stats.inp, stats.out, stats.failed, stats.dropped) == (2, 1, 1, 1)
    (dead,) = report.dead_letters
    assert isinstance(dead.exception, HttpResponseTooLarge) and dead.item == urls[0]


async def test_an_oversize_body_follows_the_pipein_policy(server):
    out: list = []
    Pipe(server.url("/chunked?n=3000000"), HttpLoader(max_size=MIB, on_error="pipein"), out.append)
    await BotFrame.run_async()
    (err,) = out
    assert type(err) is HttpResponseTooLarge
    assert "larger than max_size=1048576 bytes once decoded (Content-Encoding: identity)" in str(err)


async def test_a_declared_length_over_the_limit_is_refused_before_reading(server):
    url = server.url("/plain?n=2000000")
    Pipe(url, HttpLoader(max_size=MIB), print)
    with pytest.raises(HttpResponseTooLarge) as info:
        await BotFrame.run_async()
    assert str(info.value) == (f"HttpLoader: GET {url} failed: response body of 2000000 bytes "
                               f"(Content-Length) exceeds max_size=1048576")


@pytest.mark.parametrize("path", ["/plain", "/chunked"])
async def test_a_body_of_exactly_max_size_passes_whole(server, path):
    out: list = []
    Pipe(server.url(f"{path}?n={MIB}"), HttpLoader(max_size=MIB), out.append)
    await BotFrame.run_async()
    assert [len(r.content) for r in out] == [MIB]


async def test_max_size_none_lifts_the_limit(server):
    out: list = []
    Pipe(server.url("/chunked?n=3000000"), HttpLoader(max_size=None), out.append)
    await BotFrame.run_async()
    assert [(r.status, len(r.content), set(r.content)) for r in out] == [(200, 3000000, {ord("y")})]


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), ("64M", TypeError), (1.5, ValueError)])
def test_bad_max_size_names_the_argument(value, error):
    with pytest.raises(error, match=r"HttpLoader: argument 'max_size' must be an int >= 1 \(bytes\) or None"):
        HttpLoader(max_size=value)


def test_the_default_limit_is_64_mib():
    assert HttpLoader().max_size == DEFAULT_MAX_SIZE == 64 * MIB


def test_peak_memory_of_a_bomb_stays_within_max_size_plus_a_margin():
    """In a fresh process (so the peak is this call's): one default HttpLoader call on a
    1 MiB gzip body that inflates to 1 GiB. Unbounded, the body alone would take 1 GiB."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    proc = subprocess.run([sys.executable, str(HERE / "http_bomb.py")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["max_size"] == DEFAULT_MAX_SIZE and got["bomb_size"] < 1.1 * MIB
    (error,) = got["errors"]
    assert error.startswith("HttpResponseTooLarge: ") and f"max_size={DEFAULT_MAX_SIZE}" in error
    margin = 16 * MIB
    for peak in [got["peak_sampled"]] + [got["peak_hwm"]] * bool(got["peak_hwm"]):  # VmHWM: Linux only
        assert peak - got["baseline"] <= DEFAULT_MAX_SIZE + margin, got

"""Per-host limits hold for a whole sharded run (issue 28 item 5): each shard's loader
gets its share of the limits. A real Dask LocalCluster (2 worker processes), servers on
127.0.0.2/127.0.0.3 in a thread of this process, peaks measured server-side."""
from __future__ import annotations

import pytest

from conftest import local_cluster, require_distributed
from hosts_http import HostsInThread
from rxbot import BotFrame, HttpLoader, Pipe

A, B = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def cluster():
    require_distributed(pickle_by_value=__name__)
    yield from local_cluster(n_workers=2, threads_per_worker=1)


def status(response):
    return response.status


def test_per_host_limit_holds_across_two_shards(cluster):
    with HostsInThread([A, B]) as hosts:
        # A0 A1 B0 B1 A2 A3 ...: shard k takes the items i % 2 == k, so both shards crawl both hosts
        urls = [hosts.url(h, f"/n/{2 * i + j}?sleep=0.1") for i in range(20) for h in (A, B) for j in (0, 1)]
        Pipe(urls, HttpLoader(per_host=2, concurrency=8), status)
        report = BotFrame.run(cluster=cluster, shards=2)
    assert report.find("HttpLoader").out == 80
    assert hosts.peak[A] <= 2 and hosts.peak[B] <= 2  # the whole run, both shards together
    assert hosts.peak[A] + hosts.peak[B] >= 3  # ...and the shards did share the limits
    numbers = report.nodes["HttpLoader"]["hosts"]  # merged from the shards' reports
    assert sorted(n["requests"] for n in numbers.values()) == [40, 40]


def test_a_shard_gets_its_share_of_the_limits():
    from rxbot.shard import ShardInfo, entered

    loader = HttpLoader(per_host=3, per_host_delay=0.5)
    assert loader.shard_share() == (3, 0.5, 1)
    with entered(ShardInfo(1, 2)):
        assert loader.shard_share() == (2, 1.0, 2)  # ceil(3 / 2) in flight, twice the spacing


def test_a_per_host_limit_smaller_than_the_shards_is_said(caplog):
    from rxbot.shard import ShardInfo, entered

    with entered(ShardInfo(0, 3)):
        assert HttpLoader(per_host=2).shard_share()[0] == 1
    assert "cannot be divided among 3 shards" in caplog.text

"""Prometheus metrics from the stats hook (``pip install -e '.[prometheus]'`` in rxbot's repository).

:class:`PrometheusStats` is a stats hook (see :mod:`rxbot.observe.stats`) *and* a Prometheus
collector: the hook keeps the latest snapshot, and each scrape turns it into counter
families. The run's counters only grow, so they are exposed as Prometheus counters
(``rxbot_step_in_total{pipe="1",step="parse"}``, ``_out_``, ``_filtered_``,
``_consumed_``, ``_dropped_``, ``_failed_``, ``_retried_``, ``_cancelled_``) plus
``rxbot_run_seconds`` and ``rxbot_run_finished`` (0 while running, 1 after the last
snapshot)::

    from prometheus_client import start_http_server
    from rxbot.exporters.prometheus import PrometheusStats

    stats = PrometheusStats()               # registers with prometheus_client's registry
    start_http_server(9100, addr="127.0.0.1")
    BotFrame.run(stats=stats, interval=5)

A collector (not Counter objects incremented by the hook) because rxbot already holds
the totals: mirroring them needs no delta bookkeeping and a scrape always sees one
consistent snapshot.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from ..observe.report_io import COUNTERS

_HELP = {
    "inp": "items a step received",
    "out": "items a step emitted",
    "filtered": "items a step dropped by returning None",
    "consumed": "items a sink (a last step) consumed",
    "dropped": "items dropped after a failure (ignore policy)",
    "failed": "failures of a step",
    "retried": "retries of a step",
    "cancelled": "items accepted but cancelled when the run stopped",
    "closed": "items a holding node (Insert) finished when it was closed",
}


class PrometheusStats(Collector):
    """Stats hook + collector; ``registry=None`` registers with the default registry."""

    def __init__(self, registry: Optional[CollectorRegistry] = REGISTRY, prefix: str = "rxbot") -> None:
        self.prefix = prefix
        self.snapshot: Optional[Dict[str, Any]] = None
        if registry is not None:
            registry.register(self)

    def __call__(self, snapshot: Dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot
        if snap is None:
            return
        for name in COUNTERS:
            metric = "in" if name == "inp" else name
            family = CounterMetricFamily(f"{self.prefix}_step_{metric}", _HELP.get(name, name),
                                         labels=["pipe", "position", "step"])
            for step in snap["steps"]:
                family.add_metric([str(step["pipe"]), ".".join(map(str, step["position"])), step["label"]],
                                  step[name])
            yield family
        yield GaugeMetricFamily(f"{self.prefix}_run_seconds", "seconds since the run started",
                                value=snap["seconds"])
        yield GaugeMetricFamily(f"{self.prefix}_run_finished", "1 once the run has ended",
                                value=1.0 if snap.get("final") else 0.0)


__all__ = ["PrometheusStats"]

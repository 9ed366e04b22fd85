"""Export a run's per-step counters to Prometheus while it runs.

    pip install -e '.[prometheus]'      # in rxbot's repository
    python examples/prometheus_exporter.py --port 9100    # then: curl 127.0.0.1:9100/metrics

The stats hook (``BotFrame.run(stats=..., interval=...)``) hands rxbot's counters to
:class:`rxbot.exporters.prometheus.PrometheusStats` every second; Prometheus scrapes them
from a small HTTP server that listens on 127.0.0.1 only. ``--port 0`` (the default)
picks a free port and prints it.
"""
import argparse
import asyncio

from prometheus_client import CollectorRegistry, start_http_server

from rxbot import BotFrame, Loop, Pipe, Step
from rxbot.exporters.prometheus import PrometheusStats


async def fetch(i):
    await asyncio.sleep(0.01)          # stands for a network call
    return {"id": i, "size": i * 10}


def big(record):
    return record if record["size"] >= 100 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--items", type=int, default=300)
    args = parser.parse_args()
    registry = CollectorRegistry()
    stats = PrometheusStats(registry)
    server, _ = start_http_server(args.port, addr="127.0.0.1", registry=registry)
    print(f"metrics on http://127.0.0.1:{server.server_port}/metrics", flush=True)
    try:
        Pipe(Loop(range(args.items)), Step(fetch, concurrency=8), big, lambda r: None, name="records")
        report = BotFrame.run(stats=stats, interval=1.0)
        print(report)
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()

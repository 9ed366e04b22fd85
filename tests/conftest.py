"""Shared fixtures: real services or a clear skip (a hard failure under CI)."""
from __future__ import annotations

import os
import socket

import pytest

from rxbot import BotFrame, config

REQUIRE_SERVICES = os.environ.get("RXBOT_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Skip (laptop) or fail (CI, RXBOT_REQUIRE_SERVICES=1) when a service is down."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        msg = f"{name} not reachable at {host}:{port} ({exc}); start it or unset RXBOT_REQUIRE_SERVICES"
        if REQUIRE_SERVICES:
            pytest.fail(msg)
        pytest.skip(msg)


def require_distributed(pickle_by_value: str | None = None):
    """Dask's ``distributed``, or a skip (laptop) / failure (CI) naming the extra to install.
    ``pickle_by_value``: a test module whose functions the workers get by value, as they get
    a script's (the workers cannot import a test module)."""
    try:
        import cloudpickle
        import distributed
    except ImportError as exc:
        msg = f"Dask distributed is not installed ({exc}); pip install 'rxbot[test]'"
        if REQUIRE_SERVICES:
            pytest.fail(msg)
        pytest.skip(msg)
    if pickle_by_value is not None:
        import sys

        cloudpickle.register_pickle_by_value(sys.modules[pickle_by_value])
    return distributed


def local_cluster(**options):
    """A LocalCluster on loopback with rxbot's options (and ``options`` over them), its
    scheduler address yielded, closed after: for module-scoped ``cluster`` fixtures."""
    from rxbot.engine.dask_boost import LOCAL_CLUSTER_OPTIONS

    local = require_distributed().LocalCluster(**{**LOCAL_CLUSTER_OPTIONS, **options})
    try:
        yield local.scheduler_address
    finally:
        local.close()


@pytest.fixture
def mysql_params():
    """Connection arguments for the local MariaDB (the project machines' real server)."""
    host = os.environ.get("RXBOT_MYSQL_HOST", "127.0.0.1")
    port = int(os.environ.get("RXBOT_MYSQL_PORT", "3306"))
    require_service("MariaDB/MySQL", host, port)
    return dict(host=host, port=port, user=os.environ.get("RXBOT_MYSQL_USER", "root"),
                password=os.environ.get("RXBOT_MYSQL_PASSWORD", ""),
                db=os.environ.get("RXBOT_MYSQL_DB", "test"))


@pytest.fixture(autouse=True)
def _isolated_run_state():
    """Each test starts with no pending pipes and default settings."""
    saved = dict(vars(config))
    BotFrame.clear()
    yield
    BotFrame.clear()
    vars(config).clear()
    vars(config).update(saved)


@pytest.fixture(params=[True, False], ids=["fused", "unfused"])
def both_builds(request):
    """Run the test on the fused build and on the honest unfused Rx graph
    (``config.fusion = False``, what ``RXBOT_NO_FUSION=1`` selects): both must give the
    same items, errors and reports. Cheap enough for core behaviour tests."""
    config.fusion = request.param
    return request.param


class FlowTracker:
    """Measures how far a source runs ahead of the end of a pipe: ``worst`` is the most
    items ever pulled from :meth:`source` and not yet counted by :meth:`done` — the
    number flow control must keep bounded."""

    def __init__(self) -> None:
        self.pulled = 0
        self.finished = 0.0
        self.worst = 0

    def source(self, n: int):
        for i in range(n):
            self.pulled += 1
            self.worst = max(self.worst, self.pulled - self.finished)
            yield i

    def done(self, _item=None, weight: float = 1.0) -> None:
        self.finished += weight


@pytest.fixture
def tracker() -> FlowTracker:
    return FlowTracker()

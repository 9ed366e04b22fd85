"""Less (issue 24 item 8): one backoff formula for steps, HttpLoader and Insert; the
private reactivex API rxbot uses is pinned by an upper version bound these tests check;
what nothing reached is gone."""
from __future__ import annotations

import configparser
import importlib.util
import math
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from reactivex.observer.autodetachobserver import AutoDetachObserver

from rxbot import Branch, config
from rxbot.backoff import backoff
from rxbot.engine.policy import StepRuntime

ROOT = Path(__file__).resolve().parent.parent


def test_backoff_doubles_per_attempt_up_to_the_cap():
    assert [backoff(a, 0.1) for a in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    assert backoff(10, 0.1, cap=1.0) == 1.0
    assert backoff(3, 0.0) == 0.0


@pytest.mark.parametrize("jitter, low, high", [(0.5, 0.4, 0.6), (-0.5, 0.2, 0.4)])
def test_backoff_jitter_spreads_the_delay_on_one_side(jitter, low, high):
    delays = {backoff(3, 0.1, jitter=jitter) for _ in range(200)}
    assert len(delays) > 100  # random
    assert all(low < d <= high for d in delays)


@pytest.mark.parametrize("kwargs, argument", [({"attempt": 0}, "attempt"), ({"base": -1}, "'base'"),
                                               ({"jitter": 2}, "jitter")])
def test_backoff_refuses_bad_arguments(kwargs, argument):
    args = {"attempt": 1, "base": 0.1, **kwargs}
    with pytest.raises(ValueError, match=argument):
        backoff(**args)


def test_a_steps_retry_waits_the_one_formula():
    config.retry_backoff, config.retry_max_backoff, config.retry_jitter = 0.01, 0.03, 0.0
    rt = StepRuntime("step", "P1[1] step", None)
    assert [rt.backoff(a) for a in (1, 2, 3)] == [backoff(1, 0.01), backoff(2, 0.01), 0.03]
    assert math.isclose(rt.backoff(2), 0.02)


def test_httploaders_retry_waits_the_one_formula_with_equal_jitter():
    import random

    from rxbot.http import HttpLoader

    loader = HttpLoader(backoff=0.1, max_backoff=0.3)
    for attempt in (1, 2, 3, 4):
        random.seed(attempt)
        ours = loader._wait(attempt)
        random.seed(attempt)
        assert ours == backoff(attempt, 0.1, 0.3, jitter=-0.5)
        assert min(0.3, 0.1 * 2 ** (attempt - 1)) / 2 < ours <= min(0.3, 0.1 * 2 ** (attempt - 1))


def test_no_retry_delay_is_computed_outside_the_backoff_module():
    """Steps, HttpLoader and Insert (and whatever retries next) wait what
    rxbot.backoff.backoff says: no other module raises 2 to an attempt's power."""
    import re

    pattern = re.compile(r"\b2(\.0)?\s*\*\*\s*\(?\s*\w*attempt")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "rxbot").rglob("*.py"))
             if path.name != "backoff.py" or path.parent.name != "rxbot"
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if pattern.search(line)]
    assert found == []


def test_the_private_reactivex_api_is_pinned_by_an_upper_bound():
    """fast_on_next reads AutoDetachObserver._on_next (private): setup.cfg bounds the
    reactivex versions, and the installed one is inside them and still has it."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in setup["options"]["install_requires"].splitlines()]
    (spec,) = [Requirement(line) for line in lines if line.startswith("reactivex")]
    assert any(s.operator == "<" for s in spec.specifier)
    assert spec.specifier.contains(version("reactivex"))
    assert callable(AutoDetachObserver(lambda x: None)._on_next)


def test_what_nothing_reached_is_gone():
    assert importlib.util.find_spec("rxbot.engine.demand") is None
    assert not hasattr(Branch(print), "route_func_async")

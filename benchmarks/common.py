"""Shared helpers for rxbot's benchmarks: best-of-N timing, peak RSS of a fresh
subprocess, result rows and the table they print as.

Why ratios: absolute µs depend on the machine, so every figure is printed next to a
baseline measured in the same run (a plain loop, ``asyncio.gather`` ...), and the
targets in PEERS.md are stated as such ratios.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
#: set to "1" by ``run_all --quick`` so benchmarks whose ``main()`` takes no argument
#: can still pick small sizes
QUICK_ENV = "RXBOT_BENCH_QUICK"


def ensure_repo_on_path() -> None:
    """Make ``import rxbot`` / ``import benchmarks`` work when a file is run as a script
    (``python benchmarks/bench_core.py`` puts only ``benchmarks/`` on ``sys.path``)."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def quick_from_env() -> bool:
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """The best (minimum) wall time of ``repeat`` runs and the result of the runs."""

    best: float
    times: List[float]
    result: Any


def best_of(run: Callable[[], Any], repeat: int = 3, check: bool = True) -> Timing:
    """Call ``run()`` ``repeat`` times and keep the fastest wall time.

    The minimum is the least noisy estimate of what the code costs (noise only ever
    adds time). With ``check`` every run must return the same result, so a benchmark
    that silently computes something different on a later run is caught.
    """
    if repeat < 1:
        raise ValueError(f"best_of: argument 'repeat' must be >= 1; got {repeat!r}")
    times: List[float] = []
    result: Any = None
    for k in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        r = run()
        times.append(time.perf_counter() - t0)
        if k == 0:
            result = r
        elif check and r != result:
            raise AssertionError(f"best_of: run {k + 1} returned {r!r}, run 1 returned {result!r}")
    return Timing(min(times), times, result)


def best_of_each(runs: Dict[str, Callable[[], Any]], repeat: int = 3, check: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> Dict[str, Timing]:
    """:func:`best_of` for several implementations, interleaved round-robin.

    Other work on the machine (a test suite on the other core, a CPU frequency step)
    then hits every implementation alike instead of whichever ran during the spike,
    so the ratios between them stay honest. ``clock``: wall time by default;
    ``time.process_time`` counts this process's CPU time only (a shared machine's
    other processes then cost nothing, a sleep neither).
    """
    if repeat < 1:
        raise ValueError(f"best_of_each: argument 'repeat' must be >= 1; got {repeat!r}")
    times: Dict[str, List[float]] = {name: [] for name in runs}
    results: Dict[str, Any] = {}
    for k in range(repeat):
        for name, run in runs.items():
            gc.collect()
            t0 = clock()
            r = run()
            times[name].append(clock() - t0)
            if k == 0:
                results[name] = r
            elif check and r != results[name]:
                raise AssertionError(f"best_of_each: {name} run {k + 1} returned {r!r}, run 1 returned {results[name]!r}")
    return {name: Timing(min(times[name]), times[name], results[name]) for name in runs}


@contextlib.contextmanager
def configured(**settings: Any) -> Iterator[None]:
    """``rxbot.config`` with ``settings`` for the block, restored after (a benchmark's
    side that differs from its baseline by a setting: ``fusion=False``, ``trace=...``)."""
    from rxbot import config

    saved = {name: getattr(config, name) for name in settings}
    for name, value in settings.items():
        setattr(config, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


# ------------------------------------------------------------------- instructions
def measured(run: Callable[[], Any]) -> Any:
    """Call ``run`` inside ``functools.reduce``: under callgrind
    (``--toggle-collect=functools_reduce``, see :func:`callgrind_per_item`) only what
    runs in there is counted, not the interpreter's start or the imports."""
    return functools.reduce(lambda _, f: f(), [run], None)


#: set to "1" in the process :func:`callgrind_per_item` counts: see :func:`steady_turns`
STEADY_ENV = "RXBOT_BENCH_STEADY_TURNS"


def steady_turns() -> None:
    """Switch off the time-based turns of the loops that push items (``TURN_SECONDS``,
    the pace's clock, a slice's ``SLICE_SECONDS``) in this process, when
    :func:`callgrind_per_item` asked for it. Under callgrind a run is about 50 times
    slower, so turns that come by time come ~50 times more often per item than in a
    real run and each one counts an event loop pass; with them off the count-based
    turns (``config.yield_every``) remain, as in a real run of cheap items. Call it in
    the counted process before the first run."""
    if os.environ.get(STEADY_ENV, "") in ("", "0"):
        return
    from rxbot.engine import gate
    from rxbot.engine.operators import _pull_source

    never = 1e9
    gate.TURN_SECONDS = gate.BEAT_SECONDS = never
    _pull_source.TURN_SECONDS = _pull_source.SLICE_SECONDS = never


def callgrind_per_item(module_args: Sequence[str], n: int, what: str, steady: bool = True) -> float:
    """``python -m *module_args --n n`` under callgrind, counting only inside
    :func:`measured`, whose runs of ``n // 10`` and ``n`` items the module makes:
    instructions per item of the difference, which leaves out every fixed cost of a
    run. ``steady``: the counted process switches the time-based turns off (see
    :func:`steady_turns`; the module calls it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        env[STEADY_ENV] = "1" if steady else "0"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=functools_reduce",
             "--dump-after=functools_reduce", sys.executable, "-m", *module_args, "--n", str(n)],
            cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"callgrind {what}: {proc.stderr[-2000:]}")
        totals = []
        for dump in sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])):
            match = re.search(r"^(?:summary|totals):\s*(\d+)", dump.read_text(), re.M)
            if match is not None:
                totals.append(int(match.group(1)))
        if len(totals) < 2:
            raise RuntimeError(f"callgrind {what}: expected two dumps, found {totals}")
        return (totals[-1] - totals[-2]) / (n - n // 10)


# ------------------------------------------------------------------ subprocess + RSS
@dataclass
class ChildRun:
    """What a benchmark function did in its own interpreter."""

    result: Any
    seconds: float      # wall time of the function call only (imports excluded)
    peak_rss_mb: float  # the child's peak resident set size over its whole life


def run_in_subprocess(target: str, kwargs: dict | None = None, timeout: float = 600) -> ChildRun:
    """Run ``module:function(**kwargs)`` in a fresh interpreter; return its result, the
    call's wall time and the interpreter's peak RSS.

    The child reports its own peak (``VmHWM`` of ``/proc/self/status``) just before
    exiting. Not ``ru_maxrss``: on Linux, ``exec`` folds the *parent's* high-water mark
    into the child's ``ru_maxrss`` (measured: a parent holding 200 MB spawns a child
    whose ``ru_maxrss`` is 209 MB, ``VmHWM`` 13 MB), so after a memory-hungry benchmark
    every child would look as big as the parent; ``getrusage(RUSAGE_CHILDREN)`` has
    the same flaw and is also a maximum over all children ever waited for.
    ``VmHWM`` belongs to the child's own address space. Off Linux, ``ru_maxrss`` is the
    fallback. The result must be JSON-able.
    """
    payload = json.dumps({"target": target, "kwargs": kwargs or {}})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", "from benchmarks.common import _child_main; _child_main()", payload],
        cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmark child {target}({kwargs}) exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RXBOT_BENCH ")]
    if not lines:
        raise RuntimeError(f"benchmark child {target} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    data = json.loads(lines[-1][len("RXBOT_BENCH "):])
    return ChildRun(data["result"], data["seconds"], data["maxrss_kb"] / 1024.0)


def peak_rss_kb() -> float:
    """This process's peak resident set size in kB (see :func:`run_in_subprocess`)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform == "darwin" else float(rss)  # bytes on macOS


def _child_main() -> None:
    """Entry point of :func:`run_in_subprocess`'s child interpreter."""
    import importlib

    spec = json.loads(sys.argv[1])
    module_name, func_name = spec["target"].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    t0 = time.perf_counter()
    result = func(**spec["kwargs"])
    seconds = time.perf_counter() - t0
    maxrss_kb = peak_rss_kb()
    print("RXBOT_BENCH " + json.dumps({"result": result, "seconds": seconds, "maxrss_kb": maxrss_kb}), flush=True)


# ------------------------------------------------------------------------- results
@dataclass
class Row:
    """One line of the results table.

    ``ratio`` is ``value`` divided by the baseline named in ``vs`` (measured in the
    same run); ``ok`` is whether the target in ``target`` is met (None: no target).
    """

    bench: str
    case: str
    value: float
    unit: str
    ratio: float | None = None
    vs: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


#: words in a note that mean the *result* was wrong, not just slow
WRONG_MARKERS = ("WRONG", "EXCEEDED")


def unjudged(rows: Sequence[Row]) -> List[Row]:
    """For ``--quick`` runs: sizes that small say nothing about the targets (fixed
    costs dominate), so clear ``ok`` unless the computed result itself was wrong."""
    for r in rows:
        if r.ok is not None and not any(m in r.note for m in WRONG_MARKERS):
            r.ok = None
    return list(rows)


def compared(subject: str, seconds: float, other: str, other_seconds: float, digits: int = 1) -> str:
    """A note saying exactly what it compares: ``"rxbot 1.7x faster than reactivex sync"``
    or ``"unfused graph 5.6x slower than the fused build"``. The factor is always >= 1 and
    the word gives the direction, so a note never reads "0.8x faster". ``seconds`` and
    ``other_seconds`` must be for the same work (per item, or for the same N)."""
    if seconds <= 0 or other_seconds <= 0:
        return f"{subject} vs {other}: no time measured"
    if seconds <= other_seconds:
        return f"{subject} {other_seconds / seconds:.{digits}f}x faster than {other}"
    return f"{subject} {seconds / other_seconds:.{digits}f}x slower than {other}"


def _fmt_value(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def as_row(obj: Any) -> Row | None:
    """Accept a :class:`Row`, a dict with Row's keys, or anything with those attributes."""
    if isinstance(obj, Row):
        return obj
    if isinstance(obj, dict):
        data = obj
    else:
        data = {k: getattr(obj, k) for k in Row.__dataclass_fields__ if hasattr(obj, k)}
    try:
        return Row(**{k: v for k, v in data.items() if k in Row.__dataclass_fields__})
    except TypeError:
        return None


def format_table(rows: Iterable[Any]) -> str:
    """A fixed-width text table; ``ok`` shows as ``ok`` / ``MISS`` / blank."""
    header = ("bench", "case", "value", "unit", "ratio", "vs", "target", "", "note")
    body = []
    for raw in rows:
        r = as_row(raw)
        if r is None:
            continue
        body.append((
            r.bench, r.case, _fmt_value(r.value), r.unit,
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.vs, r.target, "" if r.ok is None else ("ok" if r.ok else "MISS"), r.note,
        ))
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)] if body else [len(h) for h in header]
    lines = []
    for k, cells in enumerate([header] + body):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_rows(title: str, rows: Sequence[Any]) -> None:
    print(f"\n== {title}")
    print(format_table(rows), flush=True)


__all__ = [
    "REPO_ROOT", "QUICK_ENV", "ensure_repo_on_path", "quick_from_env", "Timing", "best_of", "best_of_each",
    "configured", "measured", "STEADY_ENV", "steady_turns", "callgrind_per_item",
    "ChildRun", "run_in_subprocess", "peak_rss_kb", "Row", "as_row", "unjudged", "WRONG_MARKERS", "compared",
    "format_table", "print_rows",
]

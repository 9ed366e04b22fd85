"""Opt-in live progress (``config.progress = True``, ``rxbot run --progress`` or
``RXBOT_PROGRESS=1``).

Per pipe, one tqdm bar counts the items its source has emitted — with a total and an ETA
when the source's size is known (``Loop(range(200))``, a list, ``Timer(max_time=5)``) —
and below it one line per step, in pipe order, with the step's live counts
(``in>out``, failures). The numbers are the run report's own counters, so the last
picture equals the report.

While the bars are up, what the steps ``print`` goes through ``tqdm.write``: it appears
above the bars, whole lines only, never cutting a bar. Lines are trimmed to the
terminal's width.

Without tqdm (``pip install 'rxbot[progress]'``) the same numbers are printed as plain
text lines to stderr every few seconds; ``rxbot run --progress`` says so before the
script starts (:func:`check_library`).
"""
from __future__ import annotations

import asyncio
import contextlib
import operator
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from .report_io import counters, order, step_parts

#: seconds between two plain-text progress lines
PLAIN_INTERVAL = 2.0
_noted = False  # the "no tqdm" notice is printed once per process


def check_library(file: Optional[TextIO] = None) -> bool:
    """True when tqdm can be imported; otherwise say (once) that progress will be plain
    text."""
    global _noted
    try:
        import tqdm  # noqa: F401
    except ImportError:
        if _noted:
            return False
        _noted = True
        print("rxbot: tqdm is not installed, so progress is shown as plain text lines "
              "(for live bars: pip install 'rxbot[progress]')", file=file or sys.stderr)
        return False
    return True


def source_size(pipe: Any) -> Optional[int]:
    """How many items the pipe's first step will emit, when that is known up front."""
    from .node import Loop, Timer
    from .step import Step

    if not getattr(pipe, "steps", None):
        return None
    first = pipe.steps[0]
    node = first.fn if isinstance(first, Step) else first
    if isinstance(node, Loop):
        hint = operator.length_hint(node.iterable, -1) if hasattr(node.iterable, "__len__") else -1
        return hint if hint >= 0 else None
    if isinstance(node, Timer) and node.max_time is not None:
        return int(node.max_time)
    return None


def step_text(report: Any, key: Any) -> str:
    """``  parse  12>11  !1`` — one step's live counts."""
    c = counters(report, key)
    text = "{}>{}".format(*("-" if c[k] is None else c[k] for k in ("inp", "out")))
    for name, mark in (("matched", "matched "), ("failed", "!"), ("dropped", "dropped "), ("consumed", "consumed "),
                       ("cancelled", "cancelled ")):
        if c[name]:
            text += f" {mark}{c[name]}"
    return text


#: hosts shown per HttpLoader on a progress line (the busiest)
PROGRESS_HOSTS = 3


def node_text(report: Any, label: str) -> str:
    """`` | 127.0.0.2:8080 12 req p50 3ms delay 0.1s`` — a node's own live numbers (an
    HttpLoader's busiest hosts), empty for nodes without any."""
    numbers = getattr(report, "node_numbers", None)
    data = (numbers() if callable(numbers) else {}).get(label)
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not hosts:
        return ""
    busiest = sorted(hosts.items(), key=lambda kv: -kv[1].get("requests", 0))[:PROGRESS_HOSTS]
    parts = []
    for host, n in busiest:
        p50 = (n.get("latency_ms") or {}).get("p50")
        text = f"{host} {n.get('requests', 0)} req"
        if p50 is not None:
            text += f" p50 {p50:g}ms"
        if n.get("delay_s"):
            text += f" delay {n['delay_s']:g}s"
        parts.append(text)
    more = f" +{len(hosts) - len(busiest)} hosts" if len(hosts) > len(busiest) else ""
    return " | " + ", ".join(parts) + more


class Progress:
    """Bars (or plain lines) that read the run's own counters."""

    def __init__(self, pipes: Sequence[Any], report: Any, interval: float = 0.25,
                 file: Any = None) -> None:
        self.report = report
        self.interval = interval
        self.file = file or sys.stderr
        self.names = [getattr(pipe, "name", None) or f"Pipe {i + 1}" for i, pipe in enumerate(pipes)]
        self.totals = [source_size(pipe) for pipe in pipes]
        self.started = time.perf_counter()
        #: called before each update to bring live counters up to date (fused steps)
        self.refresh: Callable[[], None] = lambda: None
        self.keys = sorted(report.steps, key=order)
        self._stdout: Any = None
        try:
            from tqdm import tqdm
        except ImportError:
            check_library(self.file)
            self.tqdm = None
            self.bars: List[Any] = []
            self.lines: Dict[Any, Any] = {}
            self.last_plain = 0.0
            return
        self.tqdm = tqdm
        self.bars, self.lines = [], {}
        position = 0
        for i, name in enumerate(self.names):
            self.bars.append(tqdm(desc=name, total=self.totals[i], unit=" items", position=position,
                                  leave=True, file=self.file, dynamic_ncols=True))
            position += 1
            for key in self.keys:
                if step_parts(key)[0] == i + 1:
                    self.lines[key] = tqdm(bar_format="{desc}", position=position, leave=True,
                                           file=self.file, dynamic_ncols=True)
                    position += 1
        self._redirect_stdout()

    # -- steps' own output above the bars --------------------------------------------
    def _redirect_stdout(self) -> None:
        self._stdout = sys.stdout
        sys.stdout = _AboveBars(sys.stdout, self.tqdm)

    def _restore_stdout(self) -> None:
        if self._stdout is not None:
            wrapper, sys.stdout, self._stdout = sys.stdout, self._stdout, None
            if isinstance(wrapper, _AboveBars):
                wrapper.close()

    # -- numbers -----------------------------------------------------------------------
    def source_counts(self) -> Dict[int, int]:
        """Items each pipe's first step has emitted so far (sources always count)."""
        counts: Dict[int, int] = {}
        for key, stats in self.report.steps.items():
            pipe, positions, _ = step_parts(key)
            if positions == (1,):
                counts[pipe] = stats.out
        return counts

    def step_label(self, key: Any) -> str:
        _, positions, label = step_parts(key)
        indent = "  " * len(positions)
        return f"{indent}{label[:40]}: {step_text(self.report, key)}{node_text(self.report, label)}"

    def plain_line(self) -> str:
        counts = self.source_counts()
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        parts = []
        for i, name in enumerate(self.names, start=1):
            n, total = counts.get(i, 0), self.totals[i - 1]
            text = f"{name}: {n}" + (f"/{total}" if total else "") + f" items, {n / elapsed:.1f}/s"
            if total and n:
                text += f", ETA {max(total - n, 0) * elapsed / n:.0f}s"
            steps = [f"{step_parts(k)[2][:24]} {step_text(self.report, k)}{node_text(self.report, step_parts(k)[2])}"
                     for k in self.keys if step_parts(k)[0] == i]
            parts.append(text + (" | " + " | ".join(steps) if steps else ""))
        return "rxbot progress: " + " || ".join(parts)

    def update(self, final: bool = False) -> None:
        self.refresh()
        new = [k for k in self.report.steps if k not in self.keys]
        if new:  # steps made while running (a BlockedJoin's branches): plain text only
            self.keys = sorted([*self.keys, *new], key=order)
        if self.tqdm is None:
            now = time.perf_counter()
            if final or now - self.last_plain >= PLAIN_INTERVAL:
                self.last_plain = now
                print(self.plain_line(), file=self.file, flush=True)
            return
        counts = self.source_counts()
        for i, bar in enumerate(self.bars, start=1):
            n = counts.get(i, 0)
            if n != bar.n:
                bar.update(n - bar.n)
            bar.refresh()
        for key, line in self.lines.items():
            line.set_description_str(self.step_label(key), refresh=True)

    async def run(self) -> None:
        try:
            while True:
                self.update()
                await asyncio.sleep(self.interval)
        finally:
            self.update()

    def close(self) -> None:
        self.update(final=True)
        for bar in [*self.bars, *self.lines.values()]:
            bar.close()
        self._restore_stdout()


class _AboveBars:
    """``sys.stdout`` while bars are shown: whole lines go out through ``tqdm.write``
    (which lifts the bars, writes, and draws them again) and are flushed at once, so a
    line never lands in the middle of a bar, even when stdout is a pipe."""

    def __init__(self, wrapped: Any, tqdm: Any) -> None:
        self.wrapped, self.tqdm, self.partial = wrapped, tqdm, ""

    def write(self, text: str) -> int:
        head, newline, self.partial = (self.partial + text).rpartition("\n")
        if newline:
            # tqdm lifts the bars only for a file it knows as sys.stdout/stderr
            wrapper, sys.stdout = sys.stdout, self.wrapped
            try:
                self.tqdm.write(head, file=self.wrapped)
                self.wrapped.flush()
            finally:
                sys.stdout = wrapper
        return len(text)

    def flush(self) -> None:
        self.wrapped.flush()

    def close(self) -> None:
        """Write a last line that has no newline (not a close of the real stdout)."""
        if self.partial:
            with contextlib.suppress(OSError, ValueError):
                self.wrapped.write(self.partial)
                self.wrapped.flush()
            self.partial = ""

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno ...
        return getattr(self.wrapped, name)


__all__ = ["Progress", "check_library", "source_size"]

"""Opt-in live progress (``config.progress = True``, ``rxbot run --progress`` or
``RXBOT_PROGRESS=1``).

Per pipe, one tqdm bar counts the pipe's *step calls*: every item a step (after the
source) takes is one call, done once the step has finished with it. Its total is the
calls so far plus one per source item still to come when the source's size is known
(``Loop(range(200))``, a list, ``Timer(max_time=5)``), so it grows when a step fans out
(a page that yields 25 links adds 25 calls to the next step) instead of claiming 100%
when the source is read; with a source of unknown size it shows no total ("of ?").
Below the bar, one line per step, in pipe order, with the step's live counts (``in>out``,
failures). A pipe that has finished collapses to one line above the bars. The numbers
are the run report's own counters, so the last picture equals the report.

While the bars are up, whatever is printed (``print`` to stdout or stderr) or logged
(rxbot's own warnings, the application's console log handlers) goes through
``tqdm.write``: it appears above the bars, whole lines only, never cutting a bar.
Labels are shortened at a word boundary to fit.

Without tqdm (``pip install -e '.[progress]'`` in rxbot's repository) the same numbers are printed as plain
text lines to stderr every few seconds; ``rxbot run --progress`` says so before the
script starts (:func:`check_library`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from .report_io import counters, order, step_parts

#: seconds between two plain-text progress lines
PLAIN_INTERVAL = 2.0
#: the longest step label on a progress line
LABEL_WIDTH = 40
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
              "(for live bars: pip install -e '.[progress]' in rxbot's repository)", file=file or sys.stderr)
        return False
    return True


def source_size(pipe: Any) -> Optional[int]:
    """How many items the pipe's first step will emit, when that is known up front."""
    from ..tree.node import Loop, Timer
    from ..tree.step import Step

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


def shorten(label: str, width: int = LABEL_WIDTH) -> str:
    """``label`` cut to ``width`` characters at a word boundary (a space, or the start of
    a bracket or quote, or after a comma), ``…`` marking the cut; a label without any
    boundary early enough is cut where it must be."""
    if len(label) <= width:
        return label
    room = label[:width - 1]
    cut = max(room.rfind(c) for c in " ([{'\",.")
    if cut >= width // 2:
        room = room[:cut + 1] if room[cut] in ",." else room[:cut]
    return room.rstrip() + "…"


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
    """Bars (or plain lines) that read the run's own counters.

    ``in_flight(key)``: how many items the step ``key`` holds right now (its started,
    unfinished calls), so that a bar counts a call as done only when it is."""

    def __init__(self, pipes: Sequence[Any], report: Any, interval: float = 0.25,
                 file: Any = None, in_flight: Optional[Callable[[Any], int]] = None) -> None:
        self.report = report
        self.interval = interval
        self.file = file or sys.stderr
        self.pipes = list(pipes)
        self.names = [getattr(pipe, "name", None) or f"Pipe {i + 1}" for i, pipe in enumerate(pipes)]
        self.totals = [source_size(pipe) for pipe in pipes]
        self.started = time.perf_counter()
        self.in_flight: Callable[[Any], int] = in_flight or (lambda key: 0)
        #: called before each update to bring live counters up to date (fused steps)
        self.refresh: Callable[[], None] = lambda: None
        self.keys = sorted(report.steps, key=order)
        self.collapsed: Dict[int, str] = {}  # pipe number -> its one line, once finished
        self._redirected: List[Any] = []
        self.bars: List[Any] = []
        self.lines: Dict[Any, Any] = {}
        self.open: List[int] = []  # the pipe number of each bar
        self.tqdm: Any = None  # tqdm's class, when it is installed
        try:
            from tqdm import tqdm
        except ImportError:
            check_library(self.file)
            self.tqdm = None
            self.last_plain = 0.0
            return
        self.tqdm = tqdm
        self._layout()
        self._redirect_output()

    # -- the bars ---------------------------------------------------------------------
    def _layout(self) -> None:
        """(Re)create the bars and step lines of the pipes still running, top down."""
        for bar in [*self.bars, *self.lines.values()]:
            bar.close()
        self.bars, self.lines, self.open = [], {}, []
        position = 0
        for i, name in enumerate(self.names, start=1):
            if i in self.collapsed:
                continue
            done, total = self.calls(i)
            bar = self.tqdm(desc=shorten(name), total=total, unit=" calls", position=position, leave=False,
                            file=self.file, dynamic_ncols=True)
            bar.update(done)
            self.bars.append(bar)
            self.open.append(i)
            position += 1
            for key in self.keys:
                if step_parts(key)[0] == i:
                    self.lines[key] = self.tqdm(bar_format="{desc}", position=position, leave=False,
                                                file=self.file, dynamic_ncols=True)
                    self.lines[key].set_description_str(self.step_label(key), refresh=False)
                    position += 1

    # -- what is printed and logged goes above the bars --------------------------------
    def _redirect_output(self) -> None:
        """stdout and stderr become :class:`_AboveBars`, and so does the stream of every
        console log handler that writes to them (a handler keeps the stream it was made
        with, so replacing ``sys.stderr`` alone would not move its lines)."""
        originals = {"stdout": sys.stdout, "stderr": sys.stderr}
        wrappers = {name: _AboveBars(stream, self.tqdm, name, originals) for name, stream in originals.items()}
        sys.stdout, sys.stderr = wrappers["stdout"], wrappers["stderr"]
        self._redirected.append(("sys", originals))
        by_stream = {id(stream): wrappers[name] for name, stream in originals.items()}
        for handler in _console_handlers():
            wrapper = by_stream.get(id(handler.stream))
            if wrapper is not None:
                self._redirected.append((handler, handler.setStream(wrapper)))

    def _restore_output(self) -> None:
        for holder, original in reversed(self._redirected):
            if holder == "sys":
                for name, stream in original.items():
                    wrapper = getattr(sys, name)
                    setattr(sys, name, stream)
                    if isinstance(wrapper, _AboveBars):
                        wrapper.close()
            else:
                holder.setStream(original)
        self._redirected = []

    # -- numbers -----------------------------------------------------------------------
    def source_counts(self) -> Dict[int, int]:
        """Items each pipe's first step has emitted so far (sources always count)."""
        counts: Dict[int, int] = {}
        for key, stats in self.report.steps.items():
            pipe, positions, _ = step_parts(key)
            if positions == (1,):
                counts[pipe] = stats.out
        return counts

    def calls(self, pipe: int) -> Tuple[int, Optional[int]]:
        """``(done, total)`` step calls of ``pipe``: the items its steps after the
        source have taken, less those they still hold; the total adds one call per
        source item still to come when the source's size is known, else it is ``None``
        until the pipe has finished. A pipe that is only a source counts its items."""
        read = self.source_counts().get(pipe, 0)
        size = self.totals[pipe - 1]
        taken = held = 0
        steps = 0
        for key in self.keys:
            number, positions, _ = step_parts(key)
            if number == pipe and len(positions) == 1 and positions[0] > 1:
                stats = self.report.steps[key]
                took = int(stats.inp or 0)
                taken += took
                held += min(took, max(0, int(self.in_flight(key) or 0)))
                steps += 1
        finished = bool(getattr(self.pipes[pipe - 1], "finished", lambda: False)())
        if not steps:
            return read, (read if finished else size)
        if finished:
            return taken - held, taken
        return taken - held, (None if size is None else taken + max(size - read, 0))

    def step_label(self, key: Any) -> str:
        _, positions, label = step_parts(key)
        indent = "  " * len(positions)
        return f"{indent}{shorten(label)}: {step_text(self.report, key)}{node_text(self.report, label)}"

    def pipe_line(self, pipe: int) -> str:
        """The one line of a finished pipe: what its source read, how long it took, and
        its steps' counts."""
        seconds = time.perf_counter() - self.started
        read = self.source_counts().get(pipe, 0)
        steps = [f"{shorten(step_parts(k)[2], 24)} {step_text(self.report, k)}"
                 for k in self.keys if step_parts(k)[0] == pipe and len(step_parts(k)[1]) == 1]
        return (f"{self.names[pipe - 1]}: finished in {seconds:.1f}s, {read} items from the source"
                + (" | " + " | ".join(steps[1:]) if len(steps) > 1 else ""))

    def plain_line(self) -> str:
        counts = self.source_counts()
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        parts = []
        for i, name in enumerate(self.names, start=1):
            n, total = counts.get(i, 0), self.totals[i - 1]
            text = f"{name}: {n}" + (f"/{total}" if total else "") + f" items, {n / elapsed:.1f}/s"
            if total and n:
                text += f", ETA {max(total - n, 0) * elapsed / n:.0f}s"
            steps = [f"{shorten(step_parts(k)[2], 24)} {step_text(self.report, k)}{node_text(self.report, step_parts(k)[2])}"
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
        finished = [i for i in self.open
                    if final or getattr(self.pipes[i - 1], "finished", lambda: False)()]
        if finished:  # a finished pipe collapses to one line above the bars
            for i in finished:
                self.collapsed[i] = self.pipe_line(i)
            self._layout()
            for i in finished:  # from the line's start, wherever closing left the cursor
                self.tqdm.write("\r" + self.collapsed[i], file=self.file)
            return
        for i, bar in zip(self.open, self.bars):
            done, total = self.calls(i)
            if total != bar.total:
                bar.total = total
            if done != bar.n:
                bar.update(done - bar.n)
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
        try:
            self.update(final=True)
            for bar in [*self.bars, *self.lines.values()]:
                bar.close()
        finally:
            self._restore_output()


def _console_handlers() -> List[logging.StreamHandler]:
    """Every handler of every logger that writes to a stream (not a file)."""
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    return [h for logger in loggers for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


class _AboveBars:
    """``sys.stdout`` or ``sys.stderr`` (``name``) while bars are shown: whole lines go
    out through ``tqdm.write`` (which lifts the bars, writes, and draws them again) and
    are flushed at once, so a line never lands in the middle of a bar, even when the
    stream is a pipe."""

    def __init__(self, wrapped: Any, tqdm: Any, name: str = "stdout",
                 streams: Optional[Dict[str, Any]] = None) -> None:
        self.wrapped, self.tqdm, self.name, self.partial = wrapped, tqdm, name, ""
        #: the real stdout and stderr, set back while tqdm writes
        self.streams = streams or {name: wrapped}

    def write(self, text: str) -> int:
        head, newline, self.partial = (self.partial + text).rpartition("\n")
        if newline:
            # tqdm lifts the bars only for a file it knows as sys.stdout/stderr: the
            # real streams while it writes (its lock makes this one write at a time)
            saved = sys.stdout, sys.stderr
            for name, stream in self.streams.items():
                setattr(sys, name, stream)
            try:
                self.tqdm.write(head, file=self.wrapped)
                self.wrapped.flush()
            finally:
                sys.stdout, sys.stderr = saved
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


__all__ = ["Progress", "check_library", "source_size", "shorten"]

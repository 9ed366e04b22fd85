"""Opt-in live progress (``config.progress = True`` or ``rxbot run --progress``): one
tqdm bar per pipe with items/s, and the per-step counts of the run report as the bar's
text, refreshed a few times a second while a long run goes on."""
from __future__ import annotations

import asyncio
import sys
from typing import Any, Dict, List, Sequence


class Progress:
    """Bars that read the run's own counters (the same numbers as the run report)."""

    def __init__(self, pipes: Sequence[Any], report: Any, interval: float = 0.25, file: Any = None) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "rxbot: config.progress needs tqdm; install it with: pip install 'rxbot[progress]'"
            ) from None
        self.report = report
        self.interval = interval
        self.bars = [
            tqdm(desc=pipe.name or f"Pipe {i + 1}", unit=" items", position=i, leave=True,
                 file=file or sys.stderr, dynamic_ncols=True)
            for i, pipe in enumerate(pipes)
        ]

    def source_counts(self) -> Dict[int, int]:
        """Items each pipe's first step has emitted so far (sources always count)."""
        counts: Dict[int, int] = {}
        for sid, stats in self.report.steps.items():
            if getattr(sid, "positions", None) == (1,):  # a StepId: pipe N, step 1
                counts[sid.pipe_index] = stats.out
        return counts

    def step_summary(self, pipe_number: int) -> str:
        parts: List[str] = []
        for sid, s in self.report.steps.items():
            if getattr(sid, "pipe_index", None) != pipe_number or not sid.positions:
                continue
            name = "/".join(sid.labels)
            text = f"{name[:18]} {s.inp}>{s.out}"
            if s.failed:
                text += f" !{s.failed}"
            parts.append(text)
        return " | ".join(parts)

    def update(self) -> None:
        counts = self.source_counts()
        for i, bar in enumerate(self.bars, start=1):
            n = counts.get(i, 0)
            if n != bar.n:
                bar.update(n - bar.n)
            bar.set_postfix_str(self.step_summary(i), refresh=False)
            bar.refresh()

    async def run(self) -> None:
        try:
            while True:
                self.update()
                await asyncio.sleep(self.interval)
        finally:
            self.update()

    def close(self) -> None:
        self.update()
        for bar in self.bars:
            bar.close()


__all__ = ["Progress"]

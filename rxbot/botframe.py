"""BotFrame: the registry of built pipes and the entry points that run them."""
from __future__ import annotations

import asyncio
import signal
from typing import Any, List, Sequence

from . import registry
from .errors import PipelineError


class BotFrame:
    """databot's run façade. Every Pipe built and not yet run is registered here;
    ``BotFrame.run()`` runs them all concurrently and returns when all have finished."""

    #: the tree's registry of built pipes (``Pipe(...)`` registers there, see rxbot.registry)
    _pending: List[Any] = registry.pending
    #: when not None, run()/run_async() only record the pipes here (``rxbot render``
    #: uses this to draw a script's pipes without running them)
    _dry_run: List[Any] | None = None

    @classmethod
    def dry_run(cls) -> "_DryRun":
        """Context manager: inside it, runs record their pipes instead of running them.

        >>> with BotFrame.dry_run() as recorded:
        ...     exec(script)          # builds pipes, calls BotFrame.run()
        >>> recorded                  # every pipe the script built, in order
        """
        return _DryRun(cls)

    @classmethod
    def register(cls, pipe: Any) -> None:
        registry.register(pipe)

    @classmethod
    def unregister(cls, pipe: Any) -> None:
        registry.unregister(pipe)

    @classmethod
    def pipes(cls) -> List[Any]:
        """The pipes the next run would run."""
        return list(cls._pending)

    @classmethod
    def _take(cls, pipes: Sequence[Any] | None) -> List[Any]:
        chosen = list(cls._pending) if pipes is None else list(pipes)
        for p in chosen:
            cls.unregister(p)
        return chosen

    @classmethod
    async def run_async(cls, pipes: Sequence[Any] | None = None):
        """Run inside an already running event loop (Jupyter, an aiohttp app, ...)."""
        from .engine import run_pipes

        chosen = cls._take(pipes)
        if cls._dry_run is not None:
            cls._dry_run.extend(chosen)
            from .engine import RunReport

            return RunReport()
        if not chosen:
            from .engine import RunReport

            return RunReport()
        return await run_pipes(chosen)

    @classmethod
    def run(cls, pipes: Sequence[Any] | None = None):
        """Run every pending pipe to completion; return the run report.

        Raises the first exception of a failed run (``raise`` policy), with the step
        name and item attached as a note.
        """
        if cls._dry_run is not None:
            return asyncio.run(cls.run_async(pipes))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise PipelineError(
                "BotFrame.run() was called inside a running event loop; use "
                "'await BotFrame.run_async()' (or 'await pipe.run_async()') there instead"
            )
        return asyncio.run(cls._run_with_signals(pipes))

    @classmethod
    async def _run_with_signals(cls, pipes: Sequence[Any] | None):
        """SIGTERM cancels the run like Ctrl-C does, so sources stop and every node,
        session and file is closed before the process exits (status 143)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        terminated = []

        def on_sigterm() -> None:
            terminated.append(True)
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):  # not main thread / Windows
            installed = False
        try:
            return await cls.run_async(pipes)
        except asyncio.CancelledError:
            if terminated:
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGTERM)

    @classmethod
    def render(cls, path: str, format: str | None = None, pipes: Sequence[Any] | None = None, **kwargs: Any):
        """Draw every pending pipe (they are not run or consumed)."""
        from .render import render

        return render(list(cls._pending) if pipes is None else list(pipes), path, format=format, **kwargs)

    @classmethod
    def clear(cls) -> None:
        """Forget pending pipes without running them."""
        cls._pending.clear()


class _DryRun:
    def __init__(self, frame: type) -> None:
        self.frame = frame

    def __enter__(self) -> List[Any]:
        self.frame._dry_run = []
        return self.frame._dry_run

    def __exit__(self, *exc: Any) -> None:
        recorded = self.frame._dry_run or []
        # pipes built but never passed to run() are part of the script too
        recorded.extend(p for p in self.frame._take(None) if p not in recorded)
        self.frame._dry_run = None


def _render(pipes: Sequence[Any], path: str, format: str | None = None, **kwargs: Any):
    from .render import render

    return render(pipes, path, format=format, **kwargs)


registry.provide("run", BotFrame.run)
registry.provide("run_async", BotFrame.run_async)
registry.provide("render", _render)

__all__ = ["BotFrame"]

"""Nothing lost, nothing twice: settled epochs (:mod:`.settle`), resume after a hard kill
(:mod:`.resume`), durable dead letters and redrive (:mod:`.deadletters`).

Above the engine: joins a run through :class:`rxbot.engine.hooks.RunHooks`, as replay does."""
from __future__ import annotations

from .resume import ResumeHooks, ResumeRefused, resume_hooks

__all__ = ["ResumeHooks", "ResumeRefused", "resume_hooks"]

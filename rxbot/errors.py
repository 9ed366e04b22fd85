"""Exceptions that carry where a failure happened (step name and item)."""
from __future__ import annotations

from typing import Any

from .redact import redact


def short_repr(value: Any, limit: int = 120) -> str:
    """repr() redacted (no URL credentials, see :mod:`rxbot.redact`), then cut to
    ``limit`` characters so that a huge item never floods a log line."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the real failure
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class StepError(Exception):
    """A step failed on an item: what the run report's dead letters and
    ``config.dead_letters`` hold (``.step``, ``.item``, the original ``.exception``).
    Under the ``pipein`` policy the original exception itself travels downstream, as in
    databot, with ``rxbot_step``/``rxbot_item`` attributes and a note (see
    :func:`annotate`); route it with ``Filter(route_type=Exception)``."""

    def __init__(self, step: str, item: Any, exception: BaseException, shown: str | None = None) -> None:
        # ``shown``: how the item may appear in messages (a node can redact secrets)
        super().__init__(f"step {step!r} failed on item {shown or short_repr(item)}: "
                         f"{type(exception).__name__}: {exception}")
        self.step = step
        self.item = item
        self.exception = exception


class PipelineError(Exception):
    """Raised for errors of the pipeline itself (bad wiring, a run inside a running loop)."""


def annotate(exc: BaseException, step: str, item: Any, shown: str | None = None) -> BaseException:
    """Attach the step name and the item to the original exception, once (innermost wins).

    ``shown`` replaces the item's repr in the note (see ``Node.describe_item``)."""
    if getattr(exc, "rxbot_step", None) is None:
        try:
            exc.rxbot_step = step  # type: ignore[attr-defined]
            exc.rxbot_item = item  # type: ignore[attr-defined]
        except Exception:
            pass
        exc.add_note(f"rxbot: raised in step {step!r} on item {shown or short_repr(item)}")
    return exc


__all__ = ["StepError", "PipelineError", "annotate", "short_repr"]

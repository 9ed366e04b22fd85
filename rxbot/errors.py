"""Exceptions that carry where a failure happened (step name and item)."""
from __future__ import annotations

from typing import Any

from .preview import preview
from .redact import redact


#: characters of an exception's message shown in rxbot's own messages and reports
MESSAGE_LIMIT = 1000


def message_of(exc: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """``str(exc)`` redacted and cut to ``limit`` characters (redacted before it is cut,
    from a bounded part of it). Never raises."""
    try:
        text = str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"
    text = redact(text[: limit * 4])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 120) -> str:
    """A bounded, redacted preview of ``value`` (see :func:`rxbot.preview.preview`): at
    most ``limit`` characters, built without the full ``repr()`` of a huge item."""
    return preview(value, limit)


class StepError(Exception):
    """A step failed on an item: what the run report's dead letters and
    ``config.dead_letters`` hold (``.step``, ``.item``, the original ``.exception``).
    Under the ``pipein`` policy the original exception itself travels downstream, as in
    databot, with ``rxbot_step``/``rxbot_item`` attributes and a note (see
    :func:`annotate`); route it with ``Filter(route_type=Exception)``."""

    def __init__(self, step: str, item: Any, exception: BaseException, shown: str | None = None) -> None:
        # ``shown``: how the item may appear in messages (a node can redact secrets)
        # the exception's message may hold a secret (a URL with its token): redacted, as
        # everything rxbot shows, and bounded like the item's preview
        super().__init__(redact(f"step {step!r} failed on item {shown or short_repr(item)}: "
                                f"{type(exception).__name__}: {message_of(exception)}"))
        self.step = step
        self.item = item
        self.exception = exception

    def __reduce__(self) -> tuple:
        """Picklable (dead letters come back from the workers of a sharded run): rebuild
        from the message and attributes, not through ``__init__``."""
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: "type[BaseException]", args: tuple, state: dict) -> BaseException:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


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


__all__ = ["StepError", "PipelineError", "annotate", "short_repr", "message_of"]

"""Inline pictures in Jupyter: a ``Pipe`` and ``BotFrame`` (its pending pipes) display as
their graph, with the counts of their last run once they have run.

:func:`draw_tree` is the drawer :mod:`rxbot.display` calls for tree objects.
``BotFrame`` is used as a class, and IPython never asks a class for ``_repr_*_``
methods, so :func:`register_ipython` adds a formatter for BotFrame's metaclass to a
running IPython (done when ``rxbot`` is imported inside one).
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Dict, Optional, Sequence

log = logging.getLogger("rxbot")

Bundle = Dict[str, Any]


def bundle_of(pipes: Sequence[Any], report: Any = None, text: str = "") -> Optional[Bundle]:
    """``{'image/svg+xml': svg, 'text/plain': text}`` for ``pipes``; None when there is
    nothing to draw or no Graphviz to draw it with (the notebook then shows the text)."""
    from .layout import GraphvizUnavailable
    from .render import to_svg

    if not pipes:
        return None
    try:
        svg = to_svg(pipes, report)
    except GraphvizUnavailable as exc:
        log.warning("rxbot: cannot draw inline: %s", exc)
        return None
    return {"image/svg+xml": svg, "text/plain": text or repr(list(pipes))}


def draw_tree(obj: Any) -> Optional[Bundle]:
    """The display drawer of tree objects (a Pipe: itself, with its last run's counts)."""
    if hasattr(obj, "steps"):
        return bundle_of([obj], getattr(obj, "report", None), repr(obj))
    return None


def frame_bundle(pipes: Sequence[Any]) -> Optional[Bundle]:
    """BotFrame's picture: the pipes the next run would run."""
    return bundle_of(pipes, text=f"BotFrame with {len(pipes)} pending pipe(s)")


def register_ipython(frame: Any, shell: Any = None) -> bool:
    """Teach a running IPython (or ``shell``) to display ``frame`` — the BotFrame class
    itself — as its graph. Returns False when no IPython shell is running."""
    if shell is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    formatter = shell.display_formatter.mimebundle_formatter
    formatter.for_type(type(frame), lambda cls: cls._repr_mimebundle_())
    return True


__all__ = ["bundle_of", "draw_tree", "frame_bundle", "register_ipython"]

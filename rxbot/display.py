"""The notebook display hook of the step tree.

A ``Pipe`` shows its graph when it is the value of a notebook cell (Jupyter calls
``_repr_mimebundle_``). Drawing needs :mod:`rxbot.draw.render`, which sits above the step tree
(``flow.py``, ``step.py``, ``node.py`` import nothing above them), so the tree only
inherits :class:`Displayable` from this module, which imports nothing of rxbot; the
package registers the drawer (:func:`set_drawer`) when it is imported.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

Bundle = Dict[str, Any]

_drawer: Optional[Callable[[Any], Optional[Bundle]]] = None


_report_view: Optional[Callable[..., Any]] = None


def set_report_view(view: Optional[Callable[..., Any]]) -> None:
    """``view(name, report, *args)`` gives a run report's text, data, JSON, totals,
    summary or HTML table (``name``: 'text', 'dict', 'json', 'totals', 'summary',
    'html'). The engine's ``RunReport`` asks through here, so the engine imports no
    module that presents it; the package registers the view when it is imported."""
    global _report_view
    _report_view = view


def report_view(name: str, report: Any, *args: Any) -> Any:
    if _report_view is None:
        raise RuntimeError("rxbot: no report view registered; import rxbot (the package) first")
    return _report_view(name, report, *args)


def set_drawer(drawer: Optional[Callable[[Any], Optional[Bundle]]]) -> None:
    """``drawer(obj)`` returns the mime bundle (``{'image/svg+xml': ..., ...}``) of a tree
    object, or None when it cannot draw one (then the notebook shows its repr)."""
    global _drawer
    _drawer = drawer


class Displayable:
    """Mixin: the object displays as its graph in Jupyter/IPython."""

    __slots__ = ()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Optional[Bundle]:
        return None if _drawer is None else _drawer(self)

    def _repr_svg_(self) -> Optional[str]:
        bundle = self._repr_mimebundle_()
        return None if bundle is None else bundle.get("image/svg+xml")


__all__ = ["Displayable", "set_drawer", "set_report_view", "report_view"]

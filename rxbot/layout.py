"""Lay out DOT source and turn it into picture bytes (SVG, PNG, PDF).

rxbot builds DOT text with the ``graphviz`` package; this module is the only place that
runs Graphviz itself. It uses the Graphviz that ``pygraphviz``'s wheels bundle (libgvc
with the dot layout and cairo/pango for PNG and PDF) in process, so pictures work after
installing rxbot alone, the same Graphviz on every machine, without starting a
process per picture. A system ``dot`` program is the fallback where pygraphviz cannot be
imported (a platform without its wheel), or when asked for with ``engine="dot"``.
"""
from __future__ import annotations

import shutil
from typing import Any, Optional

#: picture formats rxbot renders
PICTURES = ("png", "svg", "pdf")
#: PNG resolution: 144 dpi (twice Graphviz's 72-point unit) keeps 11-point labels
#: sharp on high-density screens and readable when a PNG is scaled down in a page
PNG_DPI = 144
#: what to tell a user who has neither pygraphviz nor a ``dot`` program
INSTALL_HINT = (
    "rendering needs Graphviz: 'pip install pygraphviz' (its wheels bundle Graphviz; it is "
    "an install requirement of rxbot, so reinstalling rxbot brings it) or a system 'dot' "
    "program (Debian/Ubuntu: 'apt-get install graphviz', macOS: 'brew install graphviz', "
    "Windows: 'choco install graphviz')"
)
ENGINES = ("auto", "pygraphviz", "dot")


class GraphvizUnavailable(RuntimeError):
    """Neither pygraphviz nor a ``dot`` program is there to lay the graph out."""


def _pygraphviz() -> Optional[Any]:
    try:
        import pygraphviz
    except ImportError:
        return None
    return pygraphviz


def available_engine(engine: str = "auto") -> Optional[str]:
    """The engine ``draw`` would use: ``'pygraphviz'``, ``'dot'`` or None (neither)."""
    if engine not in ENGINES:
        raise ValueError(f"render: argument 'engine' must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine in ("auto", "pygraphviz") and _pygraphviz() is not None:
        return "pygraphviz"
    if engine in ("auto", "dot") and shutil.which("dot") is not None:
        return "dot"
    return None


def draw(source: str, fmt: str, engine: str = "auto", dpi: int = PNG_DPI) -> bytes:
    """Lay out ``source`` (DOT text) with the dot layout and return it as ``fmt`` bytes.

    Raises :class:`GraphvizUnavailable` (with :data:`INSTALL_HINT`) when the chosen
    engine is missing, ``ValueError`` for a format other than :data:`PICTURES`.
    """
    if fmt not in PICTURES:
        raise ValueError(f"render: format must be one of {', '.join(PICTURES)}; got {fmt!r}")
    chosen = available_engine(engine)
    if chosen is None:
        wanted = "" if engine == "auto" else f" (engine={engine!r})"
        raise GraphvizUnavailable(f"{INSTALL_HINT}{wanted}")
    if chosen == "pygraphviz":
        graph = _pygraphviz().AGraph(string=source)  # type: ignore[union-attr]
        if fmt == "png":
            graph.graph_attr["dpi"] = str(int(dpi))
        return bytes(graph.draw(format=fmt, prog="dot"))
    import graphviz

    data = _with_dpi(source, dpi) if fmt == "png" else source.encode("utf-8")
    return bytes(graphviz.pipe("dot", fmt, data, quiet=True))


def _with_dpi(source: str, dpi: int) -> bytes:
    """The same DOT text with ``dpi`` set for the whole graph (system ``dot`` path)."""
    head, brace, rest = source.partition("{")
    return f"{head}{brace}\n\tdpi={int(dpi)}{rest}".encode("utf-8")


__all__ = ["draw", "available_engine", "GraphvizUnavailable", "PICTURES", "PNG_DPI",
           "INSTALL_HINT", "ENGINES"]

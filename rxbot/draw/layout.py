"""Lay out DOT source and turn it into picture bytes (SVG, PNG, PDF).

rxbot builds DOT text with the ``graphviz`` package; this module is the only place that
runs Graphviz itself. It uses the Graphviz that ``pygraphviz``'s wheels bundle (libgvc
with the dot layout and cairo/pango for PNG and PDF) in process, so pictures work after
installing rxbot alone, the same Graphviz on every machine, without starting a
process per picture. A system ``dot`` program is the fallback where pygraphviz cannot be
imported (a platform without its wheel), or when asked for with ``engine="dot"``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from typing import Any, Iterator, Optional

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
        with _fontconfig_quiet():
            return bytes(graph.draw(format=fmt, prog="dot"))
    import graphviz

    data = _with_dpi(source, dpi) if fmt == "png" else source.encode("utf-8")
    return bytes(graphviz.pipe("dot", fmt, data, quiet=True))


#: the bundled fontconfig has read its configuration (it does so once per process)
_fontconfig_started = False


@contextlib.contextmanager
def _fontconfig_quiet() -> Iterator[None]:
    """Around the first in-process drawing: hide what the bundled fontconfig says about
    the system's newer configuration files.

    pygraphviz's wheel bundles an older fontconfig. When it starts it parses every file
    of the system's ``conf.avail`` folder, even with ``FONTCONFIG_FILE`` set, and prints
    ``Fontconfig warning: ...: unknown element "reset-dirs"`` (and the like) for elements
    newer than itself straight to the process's stderr: noise on every first picture,
    harmless (the elements are skipped). So the C-level stderr goes to a temporary file
    for that one call, and every other line it got is written back; later drawings are
    left alone."""
    global _fontconfig_started
    if _fontconfig_started:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (a service, a notebook kernel's pipe)
        _fontconfig_started = True
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
            _fontconfig_started = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not (line.startswith("Fontconfig warning:") and "unknown element" in line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _with_dpi(source: str, dpi: int) -> bytes:
    """The same DOT text with ``dpi`` set for the whole graph (system ``dot`` path)."""
    head, brace, rest = source.partition("{")
    return f"{head}{brace}\n\tdpi={int(dpi)}{rest}".encode("utf-8")


__all__ = ["draw", "available_engine", "GraphvizUnavailable", "PICTURES", "PNG_DPI",
           "INSTALL_HINT", "ENGINES"]

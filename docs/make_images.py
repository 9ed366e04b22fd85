"""Redraw the route pictures of docs/concepts.md (docs/images/concepts_*.svg) with rxbot.

    python docs/make_images.py [OUT_DIR]      # default OUT_DIR: docs/images

Each picture is rxbot's own drawing (``rxbot.draw.render.render``) of the pipe printed next
to it on the page; nothing is run. Graphviz comes with pygraphviz (an install requirement).
"""
from __future__ import annotations

import os
import sys

from rxbot import BlockedJoin, BotFrame, Branch, Filter, Fork, Join, Pipe, Return
from rxbot.draw.render import render


def double(x):
    return 2 * x


def triple(x):
    return 3 * x


def is_odd(x):
    return x % 2 == 1


side, out = [], []


def log(x):
    side.append(x)


def collect(x):
    out.append(x)


def pipes() -> dict:
    """name -> the pipe drawn as docs/images/concepts_<name>.svg (as on the page)."""
    drawn = {
        "branch": Pipe(range(4), Branch(log, route_func=is_odd), double, collect),
        "return": Pipe(range(4), Return(double, triple, route_func=is_odd), collect),
        "filter": Pipe(range(4), Filter(route_func=is_odd), collect),
        "fork": Pipe(range(2), Fork(double, triple, join=True), collect),
        "join": Pipe(range(2), Join(double, Pipe(triple, str)), collect),
        "blockedjoin": Pipe(range(2), BlockedJoin(double, triple), collect),
    }
    BotFrame.clear()  # drawn only, never run
    return drawn


def main(out_dir: str | None = None) -> None:
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")
    for name, pipe in pipes().items():
        path = os.path.join(out_dir, f"concepts_{name}.svg")
        print(render([pipe], path))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

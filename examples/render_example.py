"""Draw a non-trivial rxbot pipeline; this script produced docs/images/route_example.*.

    python examples/render_example.py [OUT_DIR]   # writes OUT_DIR/route_example.{dot,svg,png}
                                                  # (default OUT_DIR: docs/images)

The picture is made from the very step tree that would run; nothing runs here (the
pipe is only built and drawn), so the Loop below is never iterated. To draw a script
of your own without running it: ``python -m rxbot render my_script.py -o graph.svg``.
"""
from __future__ import annotations

import asyncio
import os
import sys

from rxbot import BlockedJoin, BotFrame, Branch, Fork, Loop, Pipe


def double(x: int) -> int:
    return x * 2


def triple(x: int) -> int:
    return x * 3


def is_big(x: int) -> bool:
    return x > 20


async def lookup(x: int) -> str:
    """Stands for a slow async call (an HTTP request, a query)."""
    await asyncio.sleep(0.01)
    return f"#{x}"


def build() -> Pipe:
    return Pipe(
        Loop(range(10)),
        Fork(double, triple, join=True),      # every number, doubled and tripled, comes back
        Branch(print, route_type=int, route_func=is_big),   # side flow: show the big ones
        BlockedJoin(double, Pipe(triple, lookup)),   # one (2x, lookup(3x)) tuple per item
        print,
    )


def main(out_dir: str | None = None) -> None:
    if out_dir is None:
        here = os.path.dirname(os.path.abspath(__file__))
        out_dir = os.path.join(here, os.pardir, "docs", "images")
    build()
    out = os.path.normpath(os.path.join(out_dir, "route_example"))
    for fmt in ("dot", "svg", "png"):
        print(BotFrame.render(f"{out}.{fmt}"))
    BotFrame.clear()  # drawn only: do not leave the pipe pending


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

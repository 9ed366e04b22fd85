"""databot's examples/blockedjoin.py: one tuple (double, triple) per input, then the
graph of the pipe rendered next to this script (DOT source + PNG when graphviz is there)."""
import os

from rxbot.tree.flow import Pipe, Loop, BlockedJoin
from rxbot.botframe import BotFrame


def double(i):
    return i * 2


def triple(i):
    return i * 3


def main():
    Pipe(
        Loop(range(10)),
        BlockedJoin(double, triple),
        print
    )
    out_dir = os.environ.get("RXBOT_EXAMPLE_OUT", "ex_output")
    os.makedirs(out_dir, exist_ok=True)
    BotFrame.render(os.path.join(out_dir, 'blockedjoin'))
    BotFrame.run()


main()

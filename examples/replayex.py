"""Replay mode (databot's replayex.py): fix the failed step, run again, ``double`` is not redone.

    python examples/replayex.py   # double runs for all 10 items; triple fails on its 7th call
    python examples/replayex.py   # double is skipped: triple gets all 10 saved items

The first run prints 0 6 12 18 24 30 and fails; before raising, it lets ``double`` finish
all ten items and saves its output in ``.rxbot/replay/replayex/`` next to this file. The
second run, like databot's, does not call ``double``: it feeds the ten saved items into
``triple``, which (unchanged) prints 0 6 12 18 24 30 and fails on its 7th call again. Edit
``triple`` (say ``count > 60``) and run once more: ``double`` is still skipped, all ten
results come out, and the successful run deletes the cache. ``rxbot replay --clear`` (or
``rxbot.replay.clear_cache()``) forgets a saved run. Compared with databot's file: the
imports are renamed, the exception has a message, logging is on, and
``RXBOT_EXAMPLE_DELAY`` shortens the one-second sleep.
"""
import logging
import os
import time

from rxbot import BotFrame, Loop, Pipe, config

DELAY = float(os.environ.get("RXBOT_EXAMPLE_DELAY", "1"))  # seconds per double (databot: 1)


def double(a):
    print('double %d' % a)
    time.sleep(DELAY)  # slow work we do not want to redo
    return 2 * a


count = 0


def triple(a):
    global count
    count += 1
    if count > 6:
        raise Exception('triple failed on its call %d' % count)
    return 3 * a


config.replay_mode = True


def main():
    logging.basicConfig(level=logging.INFO, format='%(name)s %(levelname)s: %(message)s')
    Pipe(
        Loop(range(10)),
        double,
        triple,
        print,
    )
    BotFrame.run()


main()

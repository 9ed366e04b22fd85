"""Replay mode (databot's replayex.py): a failed run resumes from the nearest completed step.

Run it twice:

    python examples/replayex.py    # double runs 10 times; triple fails on its 7th call
    python examples/replayex.py    # double is skipped: triple gets the 4 items it had not done

The first run prints 0 6 12 18 24 30 and fails; before raising it lets ``double`` finish
all ten items and saves its output in ``.rxbot/replay/replayex/`` next to this file. The
second run logs "replaying pipe P1 from step 3 (triple) with 4 items", prints 36 42 48 54
and, having succeeded, deletes the cache. Together the two runs print what one run
without the failure would have printed. ``python -m rxbot replay --clear`` (or
``rxbot.replay.clear_cache()``) forgets a saved run.
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

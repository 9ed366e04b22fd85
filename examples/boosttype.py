"""databot's boosttype example, offline: a blocking function in a Branch does not stop
the main flow.

``very_slow`` calls ``time.sleep``, which would freeze the whole event loop if it ran
on it. ``@Node.boost`` runs it in a thread pool, so the Timer keeps ticking and the
main pipe keeps printing while the sleeps run. databot's original ticked every second
for 10 ticks and slept 10 s; the defaults here are shorter.

Run::

    python examples/boosttype.py            # thread boost (databot's default)
    python examples/boosttype.py process    # a process pool
    python examples/boosttype.py cluster    # Dask: RXBOT_DASK_ADDRESS, else a local cluster

The tick numbers (1, 2, 3, ...) appear while "i am going to sleep" calls are still in
progress, and before their "i am awake" lines.
"""
import sys
import time

from rxbot import BotFrame, Branch, Pipe, Step, Timer
from rxbot.tree.node import Node

SLEEP = 1.0


@Node.boost
def very_slow(a):
    print('i am going to sleep', flush=True)
    time.sleep(SLEEP)
    print('i am awake', flush=True)


def main(boost: str = 'thread', delay: float = 0.5, ticks: int = 6, sleep: float = 1.0) -> None:
    global SLEEP
    SLEEP = sleep
    slow = very_slow if boost == 'thread' else Step(very_slow, boost=boost)
    Pipe(
        Timer(delay=delay, max_time=ticks),
        Branch(slow),
        print,
    )
    BotFrame.run()


if __name__ == '__main__':  # a process or Dask boost re-imports this file in its workers
    main(*sys.argv[1:2])

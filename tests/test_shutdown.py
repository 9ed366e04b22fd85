"""A run's shutdown ends on every supported Python (issue 30, item 1).

Since Python 3.12, ``asyncio.gather`` of futures that are all done completes without
giving the loop a turn. ``RunContext.shutdown`` waited in ``while self.tasks: await
gather(*self.tasks)`` for the tasks' done callbacks to empty the set; a task that had
ended just before (its callback still queued) kept it non-empty, and the loop spun at
100% CPU forever. Each reproducer runs in a child with a timeout that kills its process
group, so a regression fails the test instead of hanging the suite; the tests are run on
3.11, 3.12 and 3.13 by ``.ci/run``.
"""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from launch import python

#: the children finish in well under a second; this only bounds a hang
HANG = 30


def _script(tmp_path, body: str):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return path


def _ends(tmp_path, body: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return python(_script(tmp_path, body), *args, timeout=HANG)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the run never ended (stuck in its shutdown?); stderr: {exc.stderr}")


RX_FAILING = """
    import asyncio
    from reactivex.scheduler.eventloop import AsyncIOScheduler
    from rxbot import Loop, Node, Step
    from rxbot.rx import to_observable

    class Failing(Node):
        async def __call__(self, x):
            await asyncio.sleep(0)
            if x == 2:
                raise KeyError(x)
            return x * 10

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        items = []
        to_observable([Loop([1, 2, 3]), Step(Failing(), concurrency=1)]).subscribe(
            items.append, done.set_result, lambda: done.set_result(None),
            scheduler=AsyncIOScheduler(loop))
        print(items, repr(await done))

    asyncio.run(main())
"""


def test_a_failed_rx_run_shuts_down_and_reports_its_error(tmp_path):
    """Hung at 100% CPU on Python 3.12 and 3.13 (tests/test_rx.py's
    test_to_observable_raise_policy_gives_on_error_after_close did the same)."""
    done = _ends(tmp_path, RX_FAILING)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[10] KeyError(2)\n"


ISSUE_SCRIPT = """
    import sys
    from rxbot import BotFrame, Join, Pipe, Return, Step, config

    async def fetch(x):
        if x == 5:
            raise ValueError("item 5")
        return x

    f = lambda x: x
    config.fusion = sys.argv[1] == "fused"
    Pipe(range(30), Step(fetch, concurrency=3), Join(f), Return(f, route_func=lambda x: x % 2 == 0), print)
    try:
        BotFrame.run()
    except ValueError as exc:
        print("raised", exc)
"""


@pytest.mark.parametrize("build", ["fused", "unfused"])
def test_the_issues_failing_async_step_raises_at_once(tmp_path, build):
    done = _ends(tmp_path, ISSUE_SCRIPT, build)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "raised item 5"


SETTLE = """
    import asyncio
    from rxbot.engine.context import RunContext

    async def main():
        ctx = RunContext(asyncio.get_running_loop())

        async def failing():
            raise OSError("disk full")

        task = ctx.spawn(failing())
        while not task.done():  # the task runs to its end ...
            await asyncio.sleep(0)
        print("callback pending:", task in ctx.tasks)  # ... its done callback has not run yet
        await ctx.shutdown()
        print("after shutdown:", ctx.tasks, repr(ctx.error))

    asyncio.run(main())
"""


def test_shutdown_settles_a_task_whose_done_callback_has_not_run_yet(tmp_path):
    """The cause itself: a spawned task ends with an error and shutdown starts before the
    loop ran the task's done callback. Shutdown returns, the set of tasks is empty, the
    error is recorded (on 3.12 and 3.13 the old loop never returned)."""
    done = _ends(tmp_path, SETTLE)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "callback pending: True\nafter shutdown: set() OSError('disk full')\n"

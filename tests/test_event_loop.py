"""BotFrame.run() runs on the thread's current event loop, as databot did (issue 27).

databot ran on ``asyncio.get_event_loop()``; scripts ported from it use that loop before
and after the run, Nodes keep it from ``__init__`` (databot's own ``aiofile`` did), and an
aiohttp session made before the run is used inside it. Each script runs in a child, with
every DeprecationWarning raised from rxbot's own code turned into an error (the user's
own ``asyncio.get_event_loop()`` may warn on 3.12+; that is theirs).
"""
from __future__ import annotations

import textwrap

import pytest

from launch import python

STRICT = """
    import warnings
    warnings.filterwarnings("error", category=DeprecationWarning, module=r"rxbot(\\.|$)")
"""


def _run(tmp_path, body: str):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(STRICT) + textwrap.dedent(body))
    done = python(script, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "DeprecationWarning" not in done.stderr.replace("DeprecationWarning: There is no current event loop", "")
    return done.stdout.splitlines()


def test_the_loop_is_there_and_open_after_the_run(tmp_path):
    lines = _run(tmp_path, """
        import asyncio
        from rxbot import BotFrame, Pipe

        Pipe([1], print)
        BotFrame.run()
        loop = asyncio.get_event_loop()
        print(loop.is_closed(), loop.run_until_complete(asyncio.sleep(0, "still usable")))
    """)
    assert lines == ["1", "False still usable"]


def test_a_node_keeping_the_loop_from_init(tmp_path):
    """As databot's aiofile: ``self.loop = asyncio.get_event_loop()`` when the pipe is built,
    then ``await self.loop.run_in_executor(...)`` during the run."""
    lines = _run(tmp_path, """
        import asyncio
        from rxbot import BotFrame, Node, Pipe

        class Upper(Node):
            def __init__(self):
                super().__init__()
                self.loop = asyncio.get_event_loop()

            async def __call__(self, x):
                return await self.loop.run_in_executor(None, str.upper, x)

        Pipe(["a", "b"], Upper(), print)
        BotFrame.run()
    """)
    assert sorted(lines) == ["A", "B"]


def test_an_aiohttp_session_made_before_the_run(tmp_path):
    lines = _run(tmp_path, """
        import asyncio
        import aiohttp
        from rxbot import BotFrame, Pipe
        from rxbot.demo_server import serve_in_thread

        async def make_session():
            return aiohttp.ClientSession()

        session = asyncio.get_event_loop().run_until_complete(make_session())

        async def status(url):
            async with session.get(url) as response:
                return response.status

        with serve_in_thread() as server:
            Pipe([server.price_url], status, print)
            BotFrame.run()
        asyncio.get_event_loop().run_until_complete(session.close())
    """)
    assert lines == ["200"]


def test_several_runs_in_one_script_share_the_threads_loop(tmp_path):
    lines = _run(tmp_path, """
        import asyncio
        from rxbot import BotFrame, Pipe

        Pipe([1], print)
        BotFrame.run()
        first = asyncio.get_event_loop()
        Pipe([2], print)
        BotFrame.run()
        Pipe([3], print).run()
        print(asyncio.get_event_loop() is first, first.is_closed())
    """)
    assert lines == ["1", "2", "3", "True False"]


def test_a_closed_loop_is_replaced_by_a_new_current_one(tmp_path):
    lines = _run(tmp_path, """
        import asyncio
        from rxbot import BotFrame, Pipe

        old = asyncio.new_event_loop()
        asyncio.set_event_loop(old)
        old.close()
        Pipe([1], print)
        BotFrame.run()
        loop = asyncio.get_event_loop()
        print(loop is not old, loop.is_closed())
    """)
    assert lines == ["1", "True False"]


def test_run_inside_a_running_loop_points_at_run_async(tmp_path):
    lines = _run(tmp_path, """
        import asyncio
        from rxbot import BotFrame, Pipe
        from rxbot.errors import PipelineError

        async def main():
            Pipe([1], print)
            try:
                BotFrame.run()
            except PipelineError as exc:
                print(exc)
            await BotFrame.run_async()
            print("ran")

        asyncio.run(main())
    """)
    assert lines[0] == ("BotFrame.run() was called inside a running event loop; use "
                        "'await BotFrame.run_async()' (or 'await pipe.run_async()') there instead")
    assert lines[1:] == ["1", "ran"]


def test_the_loop_rxbot_made_is_used_again_after_something_unset_it():
    """``asyncio.run`` (or a test framework) unsets the current loop when it ends: the loop
    rxbot made is set again at the next run instead of being dropped unclosed (which
    would be garbage with a ResourceWarning) and a new one made."""
    import asyncio
    import gc
    import warnings

    from rxbot import BotFrame, Pipe

    policy = asyncio.get_event_loop_policy()
    kept = policy._local._loop  # whatever this test process had set (restored below)
    out = []
    try:
        asyncio.set_event_loop(None)
        Pipe([1], out.append)
        BotFrame.run()
        first = asyncio.get_event_loop()
        asyncio.run(asyncio.sleep(0))  # leaves no current loop behind
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()
            Pipe([2], out.append)
            BotFrame.run()
            gc.collect()
        again = asyncio.get_event_loop()
    finally:
        asyncio.set_event_loop(kept)
    assert again is first
    assert not first.is_closed()
    assert out == [1, 2]
    assert [str(w.message) for w in caught if "unclosed event loop" in str(w.message)] == []


def test_a_run_in_another_thread_closes_the_loop_it_made():
    import asyncio
    import threading

    from rxbot import BotFrame, Pipe

    seen = []

    def job():
        Pipe([1], seen.append)
        BotFrame.run()
        try:
            asyncio.get_event_loop()
        except RuntimeError as exc:  # none left set in this thread, none left open
            seen.append(type(exc).__name__)

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(60)
    assert seen == [1, "RuntimeError"]

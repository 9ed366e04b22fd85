"""File nodes (rxbot.db.aiofile): aiofile writes one line per item; ReadLines streams lines."""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

import rxbot
from rxbot import BotFrame, Loop, Pipe, Step, config
from rxbot.db.aiofile import ReadLines, aiofile


def run(*steps):
    out = []
    Pipe(*steps, out.append)
    BotFrame.run()
    return out


ITEMS = ["plain text", 1, 2.5, (2, 3), {"k": "v"}, [1, "a"], b"raw", True]


# ------------------------------------------------------------------ aiofile: formats
def test_repr_format_writes_str_as_is_and_the_rest_as_repr(tmp_path):
    path = tmp_path / "out.txt"
    assert run(Loop(ITEMS), aiofile(str(path))) == ITEMS  # every item passes on, unchanged
    assert path.read_text(encoding="utf-8").splitlines() == [
        "plain text", "1", "2.5", "(2, 3)", "{'k': 'v'}", "[1, 'a']", "b'raw'", "True"]


def test_str_format(tmp_path):
    path = tmp_path / "out.txt"

    class Money:
        def __str__(self):
            return "EUR 5"

        def __repr__(self):
            return "Money(5)"

    run(Loop(["é", 7, Money()]), aiofile(path, format="str"))
    assert path.read_text(encoding="utf-8") == "é\n7\nEUR 5\n"


def test_json_format_round_trips_through_readlines(tmp_path):
    path = tmp_path / "out.jsonl"
    items = [{"id": i, "name": f"n{i}", "tags": ["a", "ü"]} for i in range(50)] + ["s", 3, False, {"nested": [1, [2]]}]
    run(Loop(items), aiofile(path, format="json"))
    assert run(ReadLines(path), json.loads) == items


def test_json_format_rejects_unserialisable_items_naming_the_node(tmp_path):
    Pipe(Loop([{"ok": 1}, {1, 2}]), aiofile(tmp_path / "x.jsonl", format="json"))
    with pytest.raises(TypeError, match="not JSON serializable") as info:
        BotFrame.run()
    assert "aiofile(x.jsonl)" in " ".join(info.value.__notes__)
    assert (tmp_path / "x.jsonl").read_text() == '{"ok": 1}\n'


# ------------------------------------------------------------------ aiofile: modes
def test_write_mode_truncates_each_run_and_append_mode_appends(tmp_path):
    path = tmp_path / "log.txt"
    w = aiofile(path)
    for n in (3, 2):
        Pipe(Loop(range(n)), w)
        BotFrame.run()
    assert path.read_text() == "0\n1\n"
    a = aiofile(path, mode="a")
    for start in (10, 20):
        Pipe(Loop([start, start + 1]), a)
        BotFrame.run()
    assert path.read_text() == "0\n1\n10\n11\n20\n21\n"


def test_exclusive_mode_fails_at_start_when_the_file_exists(tmp_path):
    path = tmp_path / "exists.txt"
    path.write_text("keep me\n")
    Pipe(Loop([1]), aiofile(path, mode="x"))
    with pytest.raises(FileExistsError) as info:
        BotFrame.run()
    assert "aiofile(exists.txt)" in " ".join(info.value.__notes__)
    assert path.read_text() == "keep me\n"


@pytest.mark.parametrize("kw, text", [
    ({"mode": "r"}, "aiofile: argument 'mode' must be one of 'w', 'a', 'x'"),
    ({"mode": "wb"}, "aiofile: argument 'mode'"),
    ({"format": "xml"}, "aiofile: argument 'format' must be one of 'repr', 'str', 'json'; got 'xml'"),
    ({"buffer_size": 0}, "aiofile: argument 'buffer_size' must be an int >= 1"),
])
def test_bad_arguments_are_a_clear_value_error(tmp_path, kw, text):
    with pytest.raises(ValueError) as info:
        aiofile(tmp_path / "f.txt", **kw)
    assert text in str(info.value)


def test_bad_filename_is_a_clear_type_error():
    with pytest.raises(TypeError, match="aiofile: argument 'filename' must be a file path"):
        aiofile(42)


# ------------------------------------------------------------------ aiofile: buffering and failures
def test_many_items_with_a_tiny_buffer_are_all_written_in_order(tmp_path):
    path = tmp_path / "big.txt"
    n = 20_000
    out = run(Loop(range(n)), aiofile(path, buffer_size=100), Step(lambda x: x))
    assert Counter(out) == Counter(range(n))  # all passed on (a full-buffer item waits for its write)
    assert path.read_text().splitlines() == [str(i) for i in range(n)]


def test_a_later_step_raising_leaves_every_item_written_so_far_on_disk(tmp_path):
    path = tmp_path / "partial.txt"

    def fail_at_500(x):
        if x == 500:
            raise ValueError("boom at 500")
        return x

    Pipe(Loop(range(10_000)), aiofile(path, buffer_size=64), fail_at_500)
    with pytest.raises(ValueError, match="boom at 500"):
        BotFrame.run()
    assert path.read_text().splitlines() == [str(i) for i in range(501)]


def test_a_failure_in_another_pipe_still_flushes_the_buffer(tmp_path):
    path = tmp_path / "other.txt"
    written = asyncio.Event()

    def mark(x):
        if x == 9:
            written.set()
        return x

    async def hold(x):
        if x >= 10:
            await asyncio.Event().wait()
        return x

    async def boom(_):
        await written.wait()
        raise RuntimeError("other pipe failed")

    Pipe(Loop(range(100)), hold, aiofile(path), mark)
    Pipe(boom)
    with pytest.raises(RuntimeError, match="other pipe failed"):
        BotFrame.run()
    assert sorted(int(v) for v in path.read_text().splitlines()) == list(range(10))


def test_ignore_policy_keeps_writing_after_a_failing_item(tmp_path):
    config.exception_policy = "ignore"
    path = tmp_path / "ign.jsonl"
    run(Loop([1, object(), 3]), aiofile(path, format="json"))
    assert path.read_text().splitlines() == ["1", "3"]


def test_write_error_at_end_of_input_follows_the_step_policy():
    """A full disk (/dev/full): the rest written at end of input fails the run, instead
    of being only logged at close() while the run reports success."""
    out = []
    Pipe(Loop(range(3)), aiofile("/dev/full"), out.append)
    with pytest.raises(OSError, match="No space left") as info:
        BotFrame.run()
    assert "<flush at end of input>" in " ".join(info.value.__notes__)
    assert out == [0, 1, 2]


def test_write_error_is_charged_to_the_item_that_triggered_the_write():
    config.exception_policy = "ignore"
    Pipe(Loop(range(4)), Step(aiofile("/dev/full", buffer_size=4), concurrency=1))
    report = BotFrame.run()
    # "0\n1\n" fills the buffer at item 1, "2\n3\n" at item 3: each write fails for its item
    assert [(d.item, type(d.exception).__name__) for d in report.dead_letters] == [
        (1, "OSError"), (3, "OSError")]


def test_lazy_top_level_export_is_the_same_class():
    assert rxbot.aiofile is aiofile


# ------------------------------------------------------------------ ReadLines
def test_readlines_strips_line_ends_by_default(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"one\r\ntwo\n\n  three  \nlast-without-newline")
    assert run(ReadLines(path)) == ["one", "two", "", "  three  ", "last-without-newline"]
    assert run(ReadLines(path, strip=False)) == ["one\n", "two\n", "\n", "  three  \n", "last-without-newline"]


def test_readlines_handles_lines_longer_than_a_chunk(tmp_path):
    path = tmp_path / "long.txt"
    lines = ["x" * 1000, "", "y" * 7, "z" * 3333]
    path.write_text("\n".join(lines) + "\n")
    assert run(ReadLines(path, chunk_size=64)) == lines


def test_readlines_takes_the_path_from_the_item(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a1\na2\n")
    b.write_text("b1\n")
    assert run(Loop([str(a), b]), ReadLines()) == ["a1", "a2", "b1"]  # one file at a time, in order


def test_readlines_streams_with_backpressure(tmp_path):
    path = tmp_path / "many.txt"
    n = 50_000
    path.write_text("".join(f"{i}\n" for i in range(n)))
    reader = ReadLines(path, chunk_size=1024)
    got = []

    async def slow(line):
        await asyncio.sleep(0)
        got.append(int(line))

    Pipe(reader, Step(slow, concurrency=4))
    report = BotFrame.run()
    assert got == list(range(n))
    assert report.find(reader.label()).out == n


def test_readlines_missing_file_names_the_node(tmp_path):
    Pipe(ReadLines(tmp_path / "nope.txt"))
    with pytest.raises(FileNotFoundError) as info:
        BotFrame.run()
    assert "ReadLines(nope.txt)" in " ".join(info.value.__notes__)


def test_readlines_bad_arguments():
    with pytest.raises(TypeError, match="ReadLines: argument 'strip' must be True or False"):
        ReadLines("x", strip="yes")
    with pytest.raises(ValueError, match="ReadLines: argument 'chunk_size' must be an int >= 1"):
        ReadLines("x", chunk_size=0)
    with pytest.raises(TypeError, match="ReadLines: unexpected keyword argument"):
        ReadLines("x", bogus=1)

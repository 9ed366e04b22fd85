"""Replay benchmarks (issue 26): what the replay cache's codec costs per item, and what
replay mode costs a run.

* RP1 — encode + decode of one item with the replay codec (``rxbot.replay.codec``:
  msgpack), per item, for a plain item (a dict of str, int, float, bool and a list, as a
  scraper yields) and a rich one (a tuple, an aware datetime, a Decimal, bytes, a set):
  records written one by one as the recorder does, read back as a file as a replay
  does. Baselines in the same run: ``pickle`` (protocol 5, what the opt-in codec
  stores) and, for the plain item, ``json.dumps``/``json.loads``. Run against a tree
  whose codec is the JSON-lines one of the previous round (it has ``encode_json``), the
  same rows measure that codec instead, so before/after come from one script.
* RP2 — a pipe of three sync steps over 100,000 ints in replay mode (every top-level
  step's output recorded, the run succeeds, the recording is deleted) against the same
  pipe without replay mode: the recording's cost per item.

Run: ``python benchmarks/bench_replay.py [--quick] [--repeat N]``.
"""
from __future__ import annotations

import argparse
import datetime
import decimal
import io
import json
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``rxbot`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, best_of_each, compared, print_rows, quick_from_env, unjudged
from rxbot import BotFrame, Pipe, config
from rxbot.replay import codec as replay_codec

PLAIN = {"id": 12345, "url": "https://example.com/item/12345", "title": "A title of some length",
         "price": 12.5, "tags": ["new", "sale"], "ok": True}
RICH = {"id": 12345, "key": ("shop", 7),
        "when": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc),
        "price": decimal.Decimal("12.50"), "body": b"\x00" * 64, "tags": {"a", "b"}}


def codec_functions() -> tuple[str, Callable[[Any], bytes], Callable[[bytes], List[Any]]]:
    """``(name, encode one item into a record, decode a file of records)`` of the codec
    this tree has."""
    if hasattr(replay_codec, "MsgpackCodec"):
        encode = replay_codec.MsgpackCodec.encoder()
        return "msgpack codec", encode, lambda data: list(replay_codec.read_items(io.BytesIO(data)))
    old_encode, old_decode = replay_codec.encode_json, replay_codec.decode_json  # the previous round's
    return ("JSON-lines codec", lambda x: old_encode(x) + b"\n",
            lambda data: [old_decode(line) for line in data.splitlines()])


def round_trip(encode: Callable[[Any], bytes], decode: Callable[[bytes], List[Any]], item: Any, n: int) -> int:
    data = b"".join([encode(item) for _ in range(n)])
    back = decode(data)
    assert len(back) == n and back[0] == item and back[-1] == item, "WRONG round trip"
    return len(back)


def pickle_round_trip(item: Any, n: int) -> int:
    records = [pickle.dumps(item, protocol=5) for _ in range(n)]
    back = [pickle.loads(r) for r in records]
    assert back[-1] == item
    return len(back)


def json_round_trip(item: Any, n: int) -> int:
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    data = "\n".join([dumps(item) for _ in range(n)])
    back = [json.loads(line) for line in data.splitlines()]
    assert back[-1] == item
    return len(back)


def bench_codec(n: int, repeat: int) -> List[Row]:
    name, encode, decode = codec_functions()
    rows: List[Row] = []
    for label, item in (("plain", PLAIN), ("rich", RICH)):
        runs: Dict[str, Callable[[], Any]] = {name: lambda: round_trip(encode, decode, item, n),
                                              "pickle": lambda: pickle_round_trip(item, n)}
        if label == "plain":
            runs["json (stdlib)"] = lambda: json_round_trip(item, n)
        timings = best_of_each(runs, repeat=repeat)
        per = {k: t.best / n * 1e6 for k, t in timings.items()}
        for case, us in per.items():
            rows.append(Row("RP1", f"{label} item: {case}", us, "µs/item (encode+decode)",
                            ratio=us / per["pickle"], vs="pickle",
                            note="" if case == "pickle" else compared(case, us, "pickle", per["pickle"])))
    return rows


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def pipe_run(n: int, replay: bool, folder: str) -> int:
    total = [0]

    def acc(x: int) -> None:
        total[0] += x

    config.replay_mode, config.replay_dir = replay, folder
    try:
        Pipe(range(n), inc, double, acc)
        BotFrame.run()
    finally:
        config.replay_mode, config.replay_dir = False, None
    return total[0]


def bench_mode(n: int, repeat: int) -> List[Row]:
    with tempfile.TemporaryDirectory() as folder:
        timings = best_of_each({"off": lambda: pipe_run(n, False, folder),
                                "on": lambda: pipe_run(n, True, folder)}, repeat=repeat)
    expected = sum(2 * (x + 1) for x in range(n))
    off, on = (timings[k].best / n * 1e6 for k in ("off", "on"))
    wrong = "" if timings["on"].result == timings["off"].result == expected else "WRONG sum; "
    return [Row("RP2", "3 sync steps, replay mode off", off, "µs/item", ratio=1.0, vs="off"),
            Row("RP2", "3 sync steps, replay mode on (recorded, deleted)", on, "µs/item", ratio=on / off, vs="off",
                note=wrong + f"recording costs {on - off:.2f} µs an item ({(on - off) / 2:.2f} per recorded step)")]


def main(argv: Sequence[str] | None = None) -> List[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that everything runs")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    quick = args.quick or quick_from_env()
    n_codec, n_pipe = (500, 2_000) if quick else (20_000, 100_000)
    rows = bench_codec(n_codec, args.repeat if not quick else 1) + bench_mode(n_pipe, 3 if not quick else 1)
    if quick:
        rows = unjudged(rows)
    print_rows("replay: codec cost per item (RP1), replay mode's cost per item (RP2)", rows)
    return rows


if __name__ == "__main__":
    main()

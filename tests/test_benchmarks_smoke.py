"""The benchmarks keep working: every implementation they time computes the right
answer at tiny sizes, the RSS measurement is per-child, and run_all finds and calls
every benchmark module. No timing is asserted here (benchmarks measure, tests don't)."""
from __future__ import annotations

import os
import sys

import pytest

from benchmarks import bench_core, bench_routes, run_all
from benchmarks.common import (QUICK_ENV, Row, as_row, best_of, best_of_each, compared, format_table,
                               run_in_subprocess, unjudged)

# ------------------------------------------------------------------------------ B1


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
def test_b1_expected_is_the_brute_force_sum(n):
    assert bench_core.b1_expected(n) == sum(3 * (x + 1) for x in range(n) if (x + 1) % 2 == 0)


@pytest.mark.parametrize("name", list(bench_core.available(bench_core.B1_IMPLS)))
def test_b1_every_implementation_computes_the_same_sum(name):
    assert bench_core.B1_IMPLS[name](1001) == bench_core.b1_expected(1001) == 751_500


def test_bench_b1_rows_name_every_implementation_and_no_wrong_sum():
    rows = bench_core.bench_b1(2000, repeat=1)
    cases = [r.case for r in rows]
    assert cases[:4] == ["plain loop", "rxbot", "reactivex sync", "reactivex AsyncIOScheduler"]
    assert cases[-1] == "rxbot fixed cost per run (1 item)"
    assert all("WRONG" not in r.note for r in rows)
    assert rows[0].ratio == 1.0
    assert rows[1].target.startswith("<= 1.5x")
    assert all(("faster" in r.note) != ("slower" in r.note) for r in rows[2:-1])
    # every comparison names both sides: the peer's own name, or the fused build
    for r in rows[2:-1]:
        if r.case == bench_core.B1_UNFUSED:
            assert r.note.startswith("unfused graph ") and r.note.endswith(" than the fused build")
        else:
            assert r.note.startswith("rxbot ") and r.note.endswith(f" than {r.case}")


def test_notes_say_which_way_with_a_factor_of_at_least_one():
    assert compared("rxbot", 1.0, "reactivex sync", 2.0) == "rxbot 2.0x faster than reactivex sync"
    assert compared("rxbot", 1.25, "aiostream", 1.0) == "rxbot 1.2x slower than aiostream"
    assert compared("unfused graph", 5.6, "the fused build", 1.0) == "unfused graph 5.6x slower than the fused build"
    assert compared("rxbot", 1.02, "gather", 1.0, digits=2) == "rxbot 1.02x slower than gather"
    assert compared("rxbot", 1.0, "gather", 1.0) == "rxbot 1.0x faster than gather"  # a tie is never "0.x"


def test_b1_note_compares_rxbot_with_a_peer_and_the_unfused_graph_with_the_fused_build():
    assert bench_core.b1_note("reactivex sync", 2.0, rxbot=1.0) == "rxbot 2.0x faster than reactivex sync"
    assert bench_core.b1_note("aiostream", 0.8, rxbot=1.0) == "rxbot 1.2x slower than aiostream"
    assert bench_core.b1_note(bench_core.B1_UNFUSED, 5.6, rxbot=1.0) == "unfused graph 5.6x slower than the fused build"
    assert bench_core.b1_note("plain loop", 0.5, rxbot=1.0) == bench_core.b1_note("rxbot", 1.0, rxbot=1.0) == ""


# ------------------------------------------------------------------------------ B2


@pytest.mark.parametrize("name", list(bench_core.available(bench_core.B2_IMPLS)))
def test_b2_every_implementation_returns_all_items_and_respects_the_limit(name):
    results, peak = bench_core.B2_IMPLS[name](50, 10, 0.001)
    assert results == list(range(50))
    # Never exceeded, by any implementation. How far a peer fills its limit is its own
    # scheduling (aiostream missed 10 one run in 3 under load): not asserted here.
    assert 1 <= peak <= 10


@pytest.mark.parametrize("name", ["rxbot", "asyncio.gather+Semaphore"])
def test_b2_rxbot_and_the_floor_fill_the_limit_exactly(name):
    # Deterministic for both: the first 10 calls start in the same loop pass, before
    # any 1 ms sleep can have ended, so "fills its limit" does not depend on load.
    results, peak = bench_core.B2_IMPLS[name](50, 10, 0.001)
    assert results == list(range(50)) and peak == 10


def test_bench_b2_rows_report_the_floor_ratio():
    rows = bench_core.bench_b2(40, 10, 0.001, repeat=1)
    assert [r.case for r in rows][:2] == ["asyncio.gather+Semaphore", "rxbot"]
    assert all(r.vs == "floor 0.004s" and "peak in flight 10" in r.note for r in rows)
    assert all("WRONG" not in r.note and "EXCEEDED" not in r.note for r in rows)


# ------------------------------------------------------------------------------ B3


def test_b3_workers_count_and_sum_every_item_in_process():
    assert bench_core.b3_rxbot(3000) == bench_core.b3_expected(3000) == [3000, 4_498_500]
    assert bench_core.b3_asyncio_workers(3000) == bench_core.b3_expected(3000)
    assert bench_core.b3_rx_flat_map(300) == bench_core.b3_expected(300)


def test_run_in_subprocess_returns_result_time_and_the_childs_own_peak():
    hog = bytearray(64 * 1024 * 1024)  # the parent holds 64 MB ...
    hog[:: 4096] = b"\x01" * len(hog[:: 4096])
    child = run_in_subprocess("benchmarks.bench_core:b3_rxbot", {"n": 500})
    base = run_in_subprocess("benchmarks.bench_core:b3_baseline")
    del hog
    assert child.result == [500, 124_750]
    assert child.seconds > 0
    # ... and no child inherits it (ru_maxrss would: exec folds the parent's peak in)
    assert 5 < base.peak_rss_mb < 60
    assert 5 < child.peak_rss_mb < 60


def test_run_in_subprocess_reports_a_failing_child():
    with pytest.raises(RuntimeError, match="b3_rxbot"):
        run_in_subprocess("benchmarks.bench_core:b3_rxbot", {"n": "not a number"})


def test_bench_b3_rows_cover_both_sizes_growth_and_the_trap():
    rows = bench_core.bench_b3((1000, 2000), trap_n=200, repeat=1)
    cases = [r.case for r in rows]
    assert cases == [
        "baseline: interpreter + imports",
        "32 asyncio workers time @1,000", "rxbot mem @1,000", "rxbot time @1,000",
        "32 asyncio workers time @2,000", "rxbot mem @2,000", "rxbot time @2,000",
        "rxbot growth 1,000 -> 2,000", "reactivex flat_map(from_future) @200",
    ]
    assert all("WRONG" not in r.note for r in rows)
    assert rows[0].value > 5  # an interpreter with rxbot imported


# -------------------------------------------------------------------------- routes


def test_join_implementations_agree():
    expected = bench_routes.join_expected(1000)
    assert expected == sum((x + 1) + 2 * x + (x - 1) for x in range(1000))
    assert bench_routes.join_plain(1000) == bench_routes.join_rxbot(1000) == bench_routes.join_rx_sync(1000) == expected


def test_branch_implementations_agree():
    expected = bench_routes.branch_expected(1000)
    assert expected == sum((x + 1) + 2 * x for x in range(1000))
    assert bench_routes.branch_plain(1000) == bench_routes.branch_rxbot(1000) == expected


def test_fork_memory_worker_feeds_both_branches_every_item():
    assert bench_routes.fork_memory(2000) == bench_routes.fork_memory_expected(2000) == [2000, 1_999_000, 1_999_000]


def test_bench_routes_cpu_rows():
    rows = bench_routes.bench_cpu(500, repeat=1)
    assert [r.bench for r in rows] == ["R1"] * 4 + ["R2"] * 3 + ["R4"] * 5
    assert all("WRONG" not in r.note and r.ok is not False or r.target for r in rows)
    assert [r.target for r in rows if r.target] == ["<= 2x", "<= 2x", "<= 3x"]  # the rxbot rows
    notes = {r.case: r.note for r in rows}
    for case, note in notes.items():
        assert ("faster" in note) != ("slower" in note) or "plain loop" in case or "asyncio.gather" in case, case
    assert notes["Join: rxbot Join(f1, f2, f3)"].endswith(" than the plain loop")
    assert notes["Join: reactivex publish+merge"].startswith("rxbot ")
    assert notes["Join: reactivex publish+merge"].endswith(" than reactivex publish+merge")
    assert all(notes[c].startswith("unfused graph ") and notes[c].endswith(" than the fused build")
               for c in notes if "unfused" in c)
    assert notes["async BlockedJoin: rxbot BlockedJoin(af1, af2)"].endswith(" than asyncio.gather per item")
    assert notes["Join: plain loop"] == notes["async BlockedJoin: asyncio.gather per item"] == ""


def test_blocked_join_benchmarks_compute_the_same_sums():
    expected = bench_routes.blocked_expected(300)
    assert expected == sum((x + 1) + 2 * x for x in range(300))
    assert bench_routes.blocked_plain(300) == bench_routes.blocked_rxbot(300) == expected
    assert bench_routes.blocked_async_gather(300) == bench_routes.blocked_async_rxbot(300) == expected


# ------------------------------------------------------------------------- helpers


def test_best_of_keeps_the_minimum_and_checks_results_agree():
    t = best_of(lambda: 42, repeat=3)
    assert t.result == 42 and len(t.times) == 3 and t.best == min(t.times)
    flips = iter([1, 2])
    with pytest.raises(AssertionError, match="run 2 returned 2"):
        best_of(lambda: next(flips), repeat=2)


def test_best_of_each_interleaves_runs():
    calls = []
    timings = best_of_each({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}, repeat=2)
    assert calls == ["a", "b", "a", "b"]
    assert timings["a"].result == 1 and timings["b"].result == 2


def test_best_of_each_measures_with_the_clock_it_is_given():
    ticks = iter(range(100))
    timings = best_of_each({"a": lambda: 1}, repeat=2, clock=lambda: next(ticks) * 2.0)
    assert timings["a"].times == [2.0, 2.0]


def test_configured_sets_the_settings_for_the_block_and_restores_them_after_a_failure():
    from benchmarks.common import configured
    from rxbot import config

    before = (config.trace, config.fusion)
    with pytest.raises(RuntimeError):
        with configured(trace="item == 1", fusion=False):
            assert (config.trace, config.fusion) == ("item == 1", False)
            raise RuntimeError("inside")
    assert (config.trace, config.fusion) == before


def test_steady_turns_switches_the_time_based_turns_off_only_when_the_counted_process_asks(monkeypatch):
    from benchmarks.common import STEADY_ENV, steady_turns
    from rxbot.engine import gate
    from rxbot.engine.operators import _pull_source

    for module, name in ((gate, "TURN_SECONDS"), (gate, "BEAT_SECONDS"), (_pull_source, "TURN_SECONDS"),
                         (_pull_source, "SLICE_SECONDS")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    monkeypatch.delenv(STEADY_ENV, raising=False)
    steady_turns()
    assert gate.TURN_SECONDS == 0.05 and _pull_source.SLICE_SECONDS == 0.001
    monkeypatch.setenv(STEADY_ENV, "1")
    steady_turns()
    assert min(gate.TURN_SECONDS, gate.BEAT_SECONDS, _pull_source.TURN_SECONDS, _pull_source.SLICE_SECONDS) >= 1e6


def test_bench_trace_rows_compare_each_trace_with_b1_and_every_sum_is_right():
    from benchmarks import bench_trace

    rows = bench_trace.main(["--quick", "--n", "3000"])
    assert [r.bench for r in rows] == ["T0", "T1", "T2", "T3"]
    assert all(r.vs == "B1 without a trace" and r.ratio > 0 for r in rows)


def test_unjudged_clears_targets_but_keeps_wrong_results():
    rows = unjudged([Row("B", "slow", 1, "s", ok=False), Row("B", "bad", 1, "s", ok=False, note="WRONG SUM"),
                     Row("B", "fine", 1, "s", ok=True)])
    assert [r.ok for r in rows] == [None, False, None]


def test_format_table_accepts_rows_and_dicts():
    text = format_table([Row("B1", "rxbot", 0.29, "µs/item", 2.27, "plain loop", "<= 3x", True),
                         {"bench": "X", "case": "other", "value": 150, "unit": "s", "ok": False}])
    lines = text.splitlines()
    assert lines[0].split() == ["bench", "case", "value", "unit", "ratio", "vs", "target", "note"]
    assert lines[2].split() == ["B1", "rxbot", "0.290", "µs/item", "2.27x", "plain", "loop", "<=", "3x", "ok"]
    assert lines[3].split() == ["X", "other", "150", "s", "MISS"]
    assert as_row({"bench": "X"}) is None  # not enough keys: skipped, not a crash


# ------------------------------------------------------------------------- run_all


def test_discover_lists_core_and_routes_first():
    names = run_all.discover()
    assert names[:2] == ["core", "routes"]


def test_call_main_adapts_to_each_signature(monkeypatch):
    monkeypatch.delenv(QUICK_ENV, raising=False)
    seen = []

    def kw(quick=False):
        seen.append(("kw", quick))
        return [1]

    def argv_main(argv=None):
        seen.append(("argv", list(argv)))

    def bare():
        seen.append(("bare", os.environ.get(QUICK_ENV), list(sys.argv[1:])))

    def no_quick_flag(argv=None):
        import argparse

        argparse.ArgumentParser().parse_args(argv)
        seen.append(("strict", list(argv), os.environ.get(QUICK_ENV)))

    def exits():
        sys.exit(0)

    assert run_all.call_main(kw, True) == [1]
    run_all.call_main(argv_main, True)
    run_all.call_main(argv_main, False)
    run_all.call_main(bare, True)
    run_all.call_main(no_quick_flag, True)
    assert run_all.call_main(exits, False) is None
    assert seen == [("kw", True), ("argv", ["--quick"]), ("argv", []), ("bare", "1", []),
                    ("strict", [], "1")]
    assert QUICK_ENV not in os.environ


def test_run_module_reports_an_import_error_without_raising():
    rows, error, _ = run_all.run_module("does_not_exist", quick=True)
    assert rows == [] and "ModuleNotFoundError" in error


def test_run_all_list_and_bad_only(capsys):
    assert run_all.main(["--list"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["core", "routes"]
    with pytest.raises(SystemExit) as exc:
        run_all.main(["--only", "nope"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- boost


def test_x1_note_says_how_a_boost_does_against_inline_with_a_factor_of_at_least_one():
    from benchmarks import bench_boost

    assert bench_boost.x1_note("process", 0.5, inline=1.0, items=40) == "80 items/s, process 2.00x faster than inline"
    assert bench_boost.x1_note("thread", 1.25, inline=1.0, items=40) == "32 items/s, thread 1.25x slower than inline"
    assert bench_boost.x1_note("inline", 1.0, inline=1.0, items=40) == "40 items/s"  # the baseline


# --------------------------------------------------------------------------- scale


def test_sc1_note_says_how_a_sharded_run_does_against_the_local_run():
    from benchmarks import bench_scale

    assert bench_scale.sc1_note("sharded x2, running cluster", 5.08, local=9.54) == \
        "sharded run 1.88x faster than the local run, "
    assert bench_scale.sc1_note("sharded x2, own cluster", 15.9, local=13.3) == \
        "sharded run 1.20x slower than the local run, "
    assert bench_scale.sc1_note("local", 9.54, local=9.54) == ""


def test_scale_cpu_run_writes_every_burned_item_once(tmp_path):
    from benchmarks import bench_scale

    seconds, (lines, total) = bench_scale.cpu_run(tmp_path, 30, 50)
    assert seconds > 0
    assert (lines, total) == (30, sum(bench_scale.burn(50, i) for i in range(30)))
    assert [p.name for p in tmp_path.glob("out-*.txt")] == ["out-0.txt"]  # unsharded: one file


def test_scale_calibration_scales_with_the_time_asked_for():
    from benchmarks import bench_scale

    assert bench_scale.calibrate(0.004) > bench_scale.calibrate(0.0005) >= 1


# -------------------------------------------------------------------- shape matrix


@pytest.mark.parametrize("row", [s.row for s in __import__("benchmarks.bench_shapes").bench_shapes.SHAPES])
def test_every_shape_and_its_baseline_compute_the_same_result(row):
    from benchmarks import bench_shapes

    shape = bench_shapes.BY_ROW[row]
    assert shape.rxbot(1001) == shape.baseline(1001) == shape.expected(1001)


def test_the_shape_matrix_covers_the_issue_rows_with_targets_and_ratios():
    from benchmarks import bench_shapes

    rows = bench_shapes.bench_shapes(300, repeat=1)
    assert [r.bench for r in rows] == ["S1", "S2", "S3", "S4", "S5", "S6", "A1", "A2", "A3", "A4", "A5",
                                       "R1", "R1g", "R2", "R2g", "R4", "R4g"]
    assert {r.target for r in rows if r.bench.startswith("S")} == {"<= 1.5x"}
    assert {r.target for r in rows if r.bench.startswith("A")} == {"<= 1.3x"}
    assert {r.target for r in rows if r.bench.startswith("R")} == {"<= 1.6x"}
    assert all("WRONG" not in r.note and r.ratio > 0 for r in rows)
    assert {r.vs for r in rows if r.bench.startswith("A")} == {"32 asyncio workers"}


def test_run_all_finds_the_shape_matrix():
    assert "shapes" in run_all.discover()


def test_the_shape_matrix_over_processes_reports_each_rows_median_and_range():
    from benchmarks import bench_shapes

    seen = []
    rows = bench_shapes.in_processes(3, n=300, repeat=1, only={"A1", "S2"}, progress=seen.append)
    assert [r.bench for r in rows] == ["S2", "A1"]  # the matrix's order, whatever order ``only`` has
    assert len(seen) == 3 and all(line.lstrip().startswith(f"process {k}/3:") for k, line in enumerate(seen, 1))
    for row in rows:
        per_process = [float(part.split()[1].rstrip("x")) for line in seen for part in line.split(": ", 1)[1].split("  ")
                       if part.split()[0] == row.bench]
        assert len(per_process) == 3
        assert row.ratio == pytest.approx(sorted(per_process)[1], abs=0.006)  # the median (printed to 2 places)
        assert row.note.startswith(f"median of 3 processes: {min(per_process):.2f}-{max(per_process):.2f}x, ")
        assert row.ok == (row.ratio <= bench_shapes.TARGETS[bench_shapes.BY_ROW[row.bench].group])

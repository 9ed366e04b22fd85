"""Run every rxbot benchmark with one command and print one summary table.

    python -m benchmarks.run_all            # full sizes (about 2 minutes for core+routes)
    python -m benchmarks.run_all --quick    # small sizes: checks everything still runs
    python -m benchmarks.run_all --only core,routes --json results.json

Every ``benchmarks/bench_*.py`` that defines ``main()`` is run, in the order
core, routes, http, db, boost, then any other alphabetically; a module that is missing is
simply not there, one that fails is reported and the others still run.

The convention for ``main`` (see README.md): ``main(argv=None)`` accepting ``--quick``,
printing its own tables and returning a list of :class:`benchmarks.common.Row` (or
dicts with the same keys). ``main()`` without arguments works too: ``--quick`` is then
passed through the ``RXBOT_BENCH_QUICK=1`` environment variable.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, List, Sequence

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``rxbot`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import QUICK_ENV, Row, as_row, format_table

BENCH_DIR = Path(__file__).resolve().parent
ORDER = ("core", "routes", "http", "db", "boost")


def discover(directory: Path = BENCH_DIR) -> List[str]:
    """Short names (``core`` for bench_core.py) of the benchmark files present."""
    names = [p.stem[len("bench_"):] for p in directory.glob("bench_*.py")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def call_main(main: Callable[..., Any], quick: bool) -> Any:
    """Call a benchmark's ``main`` whatever its signature (see the module docstring).

    ``sys.argv`` is reduced to the program name meanwhile, so a ``main()`` that parses
    ``sys.argv`` itself does not see run_all's own options.
    """
    saved_argv, saved_env = sys.argv, os.environ.get(QUICK_ENV)
    sys.argv = [sys.argv[0]]
    if quick:
        os.environ[QUICK_ENV] = "1"
    try:
        try:
            params = inspect.signature(main).parameters
        except (TypeError, ValueError):
            params = {}
        if "quick" in params:
            return main(quick=quick)
        positional = [p for p in params.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        if positional:
            if not quick:
                return main([])
            try:
                return main(["--quick"])
            except SystemExit as exc:  # an argparse that does not know --quick: rely on the env var
                if exc.code != 2:
                    raise
                print(f"(run_all: {getattr(main, '__module__', 'this benchmark')} does not accept --quick; "
                      f"running it with its own default sizes)", flush=True)
                return main([])
        return main()
    except SystemExit as exc:  # a main() ending in sys.exit(0) is a success without rows
        if exc.code not in (0, None):
            raise
        return None
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop(QUICK_ENV, None)
        else:
            os.environ[QUICK_ENV] = saved_env


def run_module(name: str, quick: bool) -> tuple[List[Row], str | None, float]:
    """(rows, error text or None, seconds) for ``benchmarks/bench_<name>.py``."""
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        main = getattr(module, "main", None)
        if not callable(main):
            return [], None, 0.0
        returned = call_main(main, quick)
    except Exception:  # one broken benchmark must not hide the others' numbers
        return [], traceback.format_exc(), time.perf_counter() - t0
    rows = [r for r in (as_row(x) for x in (returned or [])) if r is not None]
    return rows, None, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every rxbot benchmark and print one table.")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, targets not judged")
    parser.add_argument("--only", default="", help="comma-separated short names, e.g. core,routes")
    parser.add_argument("--list", action="store_true", help="list the benchmark modules found and exit")
    parser.add_argument("--json", metavar="PATH", help="also write every row as JSON to PATH")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])

    names = discover()
    if args.only:
        wanted = [w.strip().removeprefix("bench_") for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            parser.error(f"--only: no benchmarks/bench_{unknown[0]}.py (found: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    if args.list:
        print("\n".join(names))
        return 0

    print(f"rxbot benchmarks: {', '.join(names)}{' (--quick)' if args.quick else ''}; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    all_rows: List[Row] = []
    failures: List[str] = []
    for name in names:
        print(f"\n######## bench_{name}", flush=True)
        rows, error, seconds = run_module(name, args.quick)
        if error is not None:
            print(error, file=sys.stderr, flush=True)
            failures.append(name)
            all_rows.append(Row(name, "FAILED (traceback above)", 0.0, "", ok=False))
            continue
        if not rows:
            all_rows.append(Row(name, "(tables above; main() returned no rows)", seconds, "s"))
        all_rows.extend(rows)
        print(f"-- bench_{name}: {seconds:.1f} s", flush=True)

    print("\n######## summary" + (" (--quick: targets not judged)" if args.quick else ""))
    print(format_table(all_rows), flush=True)
    missed = [r for r in all_rows if r.ok is False]
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in all_rows], indent=1, ensure_ascii=False))
    if failures:
        print(f"\nFAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    if missed:
        print(f"\n{len(missed)} target(s) missed: " + "; ".join(f"{r.bench} {r.case}" for r in missed))
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

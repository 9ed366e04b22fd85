"""The ``rxbot`` command line: ``rxbot demo``, ``rxbot render SCRIPT -o OUT``,
``rxbot run SCRIPT [--replay] [--policy P]`` and ``rxbot replay --clear``.

Each subcommand is one function decorated with :func:`subcommand`: it receives the
argparse sub-parsers object, adds its parser and sets ``handler`` (a function taking the
parsed arguments and returning an exit code). Adding ``demo`` or ``replay --clear`` is
one more such function; :func:`main` needs no change.
"""
from __future__ import annotations

import argparse
import difflib
import os
import runpy
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .config import POLICIES
from .config_env import LOG_LEVELS

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[[Any], None]

_REGISTRARS: List[Registrar] = []


def subcommand(fn: Registrar) -> Registrar:
    """Register ``fn(subparsers)`` as the builder of one subcommand (in definition order)."""
    _REGISTRARS.append(fn)
    return fn


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rxbot",
        description="databot-style data-flow pipelines on reactivex: draw or run a script's pipes.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"rxbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``rxbot`` and ``python -m rxbot``; returns the exit status.

    Bad arguments print the usage and exit with status 2 (argparse's convention).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # 'rxbot' alone: say what it can do
        parser.print_help()
        return 0
    extra: List[str] = []
    if "--" in argv:  # split here: argparse's sub-commands mishandle a bare '--'
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    problem = misspelt_option(parser, argv)
    if problem is not None:
        sub, message = problem
        sub.error(message)
    args, unknown = parser.parse_known_args(argv)
    if unknown or extra:
        if not hasattr(args, "script_args"):
            parser.error(f"unrecognized arguments: {' '.join(unknown or extra)} (arguments after "
                         "the script go to it with 'rxbot run' only)")
        # 'rxbot run job.py --day 3': what rxbot does not know goes to the script
        args.script_args = [*args.script_args, *unknown, *extra]
    return int(args.handler(args) or 0)


# -- helpers ---------------------------------------------------------------------------
def _options_of(parser: argparse.ArgumentParser) -> Dict[str, bool]:
    """``{option string: takes a value}`` of ``parser``'s options."""
    return {name: action.nargs != 0 for action in parser._actions for name in action.option_strings}


def misspelt_option(parser: argparse.ArgumentParser, argv: Sequence[str]
                    ) -> Optional[Tuple[argparse.ArgumentParser, str]]:
    """The sub-command's parser and the error for an option rxbot does not know, or
    ``None``.

    Before the script (``rxbot run --polcy ignore job.py``) every option is rxbot's, so
    an unknown one is an error, with the option it probably means. After the script,
    options go to the script (``rxbot run job.py --day 3``) unless one is a near miss of
    rxbot's own (``rxbot run job.py --polcy ignore``): that is taken for a typo, not
    handed to the script to run under the default settings; ``--`` passes it on anyway
    (``rxbot run job.py -- --polcy ignore``). Commands that run no script accept no
    unknown option."""
    commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    at = next((i for i, token in enumerate(argv) if token in commands), None)
    if at is None:
        return None
    sub = commands[argv[at]]
    options = _options_of(sub)
    script_args = "script_args" in sub._defaults  # 'rxbot run': the script takes arguments
    seen_script = False
    tokens = iter(argv[at + 1:])
    for token in tokens:
        if not token.startswith("-") or token == "-" or _is_number(token):
            seen_script = True
            continue
        name = token.split("=", 1)[0]
        # argparse takes an unambiguous prefix of a long option (--pol for --policy)
        prefixed = [o for o in options if o.startswith("--") and o.startswith(name)] if name.startswith("--") else []
        known = name if name in options else (prefixed[0] if len(prefixed) == 1 else None)
        if known is not None:
            if options[known] and "=" not in token:
                next(tokens, None)  # its value
            continue
        close = difflib.get_close_matches(name, [o for o in options if o.startswith("--")], n=1, cutoff=0.7)
        if seen_script and script_args and not close:
            continue  # the script's own
        if close:
            tail = (f" (for the script's own option, put it after '--': rxbot {argv[at]} SCRIPT -- {token})"
                    if script_args and seen_script else "")
            return sub, f"unknown option {name}, did you mean {close[0]}?{tail}"
        if script_args:
            return sub, (f"unknown option {name} before the script (the script's own options go "
                         f"after it: rxbot {argv[at]} SCRIPT {token})")
        return None  # argparse says: unrecognized arguments
    return None


def output_problem(path: str, picture: bool = False, format: Optional[str] = None) -> Optional[str]:
    """What is wrong with ``path`` as an output file, or ``None``: checked before the
    script runs. A ``picture`` needs an extension rxbot draws (``render -o x.jpg`` is
    refused at once); every output needs a folder that exists."""
    if picture:
        from .draw.render import _targets

        try:
            _targets(path, format)
        except ValueError as exc:
            return str(exc).replace("render: argument 'path'", repr(path), 1).replace(
                "pass format=...", "pass --format")
    from .draw.render import _targets, check_writable

    try:  # every file the output makes (a path without extension: the DOT source and the picture)
        _, dot_path, picture_path = _targets(path, format) if picture else (None, path, None)
        for target in (dot_path, picture_path):
            if target is not None:
                check_writable(target, "output")
    except (ValueError, OSError) as exc:
        return str(exc).split(": ", 1)[1]
    return None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _existing_script(value: str) -> str:
    """argparse type: a readable Python file (a missing one is a usage error, exit 2)."""
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"no such script: {value!r}")
    return value


def _exec_script(script: str, script_args: Sequence[str] = ()) -> None:
    """Run ``script`` as ``__main__`` the way ``python script.py`` would: its folder
    first on ``sys.path`` and ``sys.argv`` set to the script and its arguments."""
    script = os.path.abspath(script)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [script, *script_args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path


def _script_failed(command: str, script: str) -> int:
    from .errors_display import print_short

    print_short(sys.exc_info()[1] or RuntimeError("unknown failure"))
    print(f"rxbot {command}: {script} failed (traceback above)", file=sys.stderr)
    return 1


# -- render ----------------------------------------------------------------------------
@subcommand
def _render_command(sub: Any) -> None:
    from .draw.render import FORMATS

    p = sub.add_parser(
        "render",
        help="draw the pipes a script builds, without running them",
        description="Execute SCRIPT with BotFrame in dry-run mode (pipes are built and "
                    "recorded, never run) and draw them with graphviz.",
    )
    p.add_argument("script", type=_existing_script, help="the Python script that builds the pipes")
    p.add_argument("-o", "--output", default=None,
                   help="output file (default: SCRIPT's name with .png); its extension picks the "
                        "format unless --format is given")
    p.add_argument("-f", "--format", choices=FORMATS, default=None,
                   help="picture format (dot = DOT source only)")
    p.add_argument("--view", action="store_true", help="open the picture in a viewer")
    p.set_defaults(handler=_render)


def _render(args: argparse.Namespace) -> int:
    from .botframe import BotFrame
    from .draw.render import render

    out = args.output
    if out is None:
        out = os.path.splitext(os.path.basename(args.script))[0] + "." + (args.format or "png")
    problem = output_problem(out, picture=True, format=args.format)
    if problem:  # before the script runs, which may take long or have effects
        print(f"rxbot render: {problem}", file=sys.stderr)
        return 2
    try:
        with BotFrame.dry_run() as recorded:
            _exec_script(args.script)
    except SystemExit as exc:  # a script may sys.exit() after building its pipes
        if exc.code not in (None, 0):
            print(f"rxbot render: {args.script} exited with {exc.code!r}", file=sys.stderr)
            return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        if not recorded:
            return _script_failed("render", args.script)
        # the script went on after BotFrame.run() and used results a dry run has not
        # produced (an empty report, no rows): draw what it built up to there
        print(f"rxbot render: {args.script} stopped after building its pipes "
              f"({type(exc).__name__}: {exc}); drawing the {len(recorded)} pipe(s) built",
              file=sys.stderr)
    if not recorded:
        print(f"rxbot render: {args.script} built no Pipe; nothing to draw", file=sys.stderr)
        return 1
    try:
        written = render(recorded, out, format=args.format, view=args.view)
    except (ValueError, OSError) as exc:  # checked before the script ran; one line, never a traceback
        print(f"rxbot {exc}" if str(exc).startswith("render: ") else f"rxbot render: {exc}", file=sys.stderr)
        return 2
    print(*([written] if isinstance(written, str) else written), sep="\n")
    return 0


# -- explain ---------------------------------------------------------------------------
@subcommand
def _explain_command(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="say how the pipes a script builds would run, without running them",
        description="Execute SCRIPT with BotFrame in dry-run mode (pipes are built and recorded, "
                    "never run) and print their plan: which steps run fused and whether they are "
                    "counted, how each source and async step is fed, which executor each route gets, "
                    "and why a step is not fused or a fast path does not apply.",
    )
    p.add_argument("script", type=_existing_script, help="the Python script that builds the pipes")
    p.add_argument("--source", action="store_true",
                   help="also print each fused segment's generated code (what a traceback through it shows)")
    p.set_defaults(handler=_explain)


def _explain(args: argparse.Namespace) -> int:
    from .botframe import BotFrame

    try:
        with BotFrame.dry_run() as recorded:
            _exec_script(args.script)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            print(f"rxbot explain: {args.script} exited with {exc.code!r}", file=sys.stderr)
            return exc.code if isinstance(exc.code, int) else 1
    except Exception:
        if not recorded:
            return _script_failed("explain", args.script)
    if not recorded:
        print(f"rxbot explain: {args.script} built no Pipe; nothing to explain", file=sys.stderr)
        return 1
    print(BotFrame.explain(recorded, source=args.source))
    return 0


# -- run -------------------------------------------------------------------------------
@subcommand
def _run_command(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a script with rxbot settings from the command line",
        description="Run SCRIPT as __main__ after applying the given rxbot settings.",
    )
    p.add_argument("script", type=_existing_script, help="the Python script to run")
    p.add_argument("--replay", action="store_true",
                   help="enable replay mode: a failed run resumes from its last completed steps")
    p.add_argument("--resume", action="store_true",
                   help="checkpoint the run; killed at any moment, run it again with --resume to continue "
                        "(Inserts exactly-once, other sinks at-least-once: docs/resume.md)")
    p.add_argument("--policy", choices=POLICIES, default=None,
                   help="exception policy for every step, set before the script starts (an "
                        "assignment in the script itself still wins)")
    p.add_argument("--progress", action="store_true",
                   help="show a live progress bar per pipe with per-step counts")
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run every pipe sharded on the Dask scheduler at ADDRESS ('local': a "
                        "local cluster); see docs/scaling.md")
    p.add_argument("--shards", type=_positive_int, default=None, metavar="N",
                   help="split each pipe's source into N shards (default with --cluster: one "
                        "per worker thread; alone: a local cluster)")
    p.add_argument("--report", choices=("text", "json"), default=None,
                   help="print the report of the script's last run to stderr when it ends")
    p.add_argument("--report-file", default=None, metavar="PATH",
                   help="write that report to PATH (JSON unless --report text)")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                   help="level of rxbot's log lines (default WARNING; env RXBOT_LOG_LEVEL)")
    p.add_argument("--debug", action="store_true",
                   help="print full tracebacks, rxbot and asyncio frames included (env RXBOT_DEBUG=1)")
    p.add_argument("--trace", default=None, metavar="EXPR",
                   help="follow the source items for which EXPR (Python over `item`, e.g. "
                        "\"'product/13' in str(item)\") is true through every step; printed after "
                        "the run and in the report (env RXBOT_TRACE; docs/when-items-fail.md)")
    p.add_argument("--watch", action="store_true",
                   help="serve a live view of the run (graph, counts, rates, failures) on "
                        "127.0.0.1 at a free port; its address is printed")
    p.add_argument("--watch-address", default=None, metavar="HOST:PORT",
                   help="serve the live view here instead (implies --watch); another "
                        "interface than 127.0.0.1 only if you name one")
    p.add_argument("--render", default=None, metavar="OUTPUT",
                   help="after the run, draw its pipes with each step's counts and throughput "
                        "(png, svg, pdf or dot by extension)")
    p.epilog = ("Arguments rxbot does not know go to the script: rxbot run job.py --day 3 (one "
                "that is a near miss of an rxbot option is an error: a typo). Use '--' when one "
                "looks like an rxbot option: rxbot run job.py -- --policy x")
    p.set_defaults(script_args=[])
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from .config import config

    if args.replay:
        config.replay_mode = True
    if getattr(args, "resume", False):
        config.resume = True
    if args.policy is not None:
        config.exception_policy = args.policy
    if args.progress:
        config.progress = True
        from .observe.progress import check_library

        check_library()  # before the script starts: a missing tqdm means plain text
    if args.cluster is not None or args.shards is not None:
        config.cluster = True if args.cluster in (None, "local") else args.cluster
        config.shards = args.shards
    if args.log_level is not None:
        config.log_level = args.log_level
    if args.debug:
        config.debug = True
    trace = getattr(args, "trace", None)  # (rxbot redrive shares this handler, without --trace)
    if trace is not None:
        from .observe.trace import TraceExpressionError, compile_expression

        try:  # before the script runs: a typo is one line, not a failed crawl
            config.trace = compile_expression(trace, "--trace")
        except TraceExpressionError as exc:
            print(f"rxbot run: {exc}", file=sys.stderr)
            return 2
    for option, path, picture in (("--render", args.render, True), ("--report-file", args.report_file, False)):
        problem = None if path is None else output_problem(path, picture=picture)
        if problem:  # before the script runs, not after an hour of crawling
            print(f"rxbot run: {option}: {problem}", file=sys.stderr)
            return 2
    if args.watch or args.watch_address is not None or args.render is not None:
        from .draw.watch import parse_address

        try:
            parse_address(args.watch_address)
        except ValueError as exc:
            print(f"rxbot run: {exc}", file=sys.stderr)
            return 2
        if args.watch or args.watch_address is not None:
            config.watch = args.watch_address or True
    try:
        return _exec_and_status(args)
    finally:
        _write_report(args)
        if trace is not None and args.report != "text":  # the text report ends with it
            _print_trace(config.trace or trace)
        if args.render is not None:
            _render_last_run(args.render)


def _exec_and_status(args: argparse.Namespace) -> int:
    """Run the script; its exit status the way ``python script.py`` would give it."""
    try:
        _exec_script(args.script, args.script_args)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        from .errors_display import print_interruption

        print_interruption(getattr(exc, "rxbot_report", None))
        return 130
    except Exception:
        return _script_failed("run", args.script)
    return 0


def _write_report(args: argparse.Namespace) -> None:
    """``--report``/``--report-file``: the report of the script's last run."""
    if args.report is None and args.report_file is None:
        return
    from .botframe import BotFrame

    report = BotFrame.last_report
    if report is None:
        print("rxbot run: the script ran no pipe; no report", file=sys.stderr)
        return
    text = str(report) if args.report == "text" else report.to_json()
    if args.report_file is not None:
        try:
            with open(args.report_file, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as exc:  # checked before the run; the disk may still fill up
            print(f"rxbot run: cannot write the report to {args.report_file!r}: {exc.strerror or exc}",
                  file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def _print_trace(expr: str) -> None:
    """``--trace``: the traced items of the script's last run, after its report."""
    from .botframe import BotFrame
    from .observe.trace import report_trace_lines

    lines = report_trace_lines(BotFrame.last_report)
    if not lines:
        print(f"rxbot run: --trace {expr!r}: the script ran no pipe to trace", file=sys.stderr)
        return
    print("\n".join(lines), file=sys.stderr)


def _render_last_run(out: str) -> None:
    """``--render``: the script's last run (finished or failed) with its numbers."""
    from .botframe import BotFrame
    from .draw.render import render

    if BotFrame.last_run is None:
        print("rxbot run: the script ran no pipe; nothing to draw", file=sys.stderr)
        return
    pipes, report = BotFrame.last_run
    try:
        written = render(pipes, out, report=report)
    except (ValueError, OSError) as exc:  # checked before the run; one line, not a traceback
        print(f"rxbot run: --render: {exc}", file=sys.stderr)
        return
    for path in [written] if isinstance(written, str) else written:
        print(f"rxbot run: drew the run to {path}", file=sys.stderr)


# -- demo ------------------------------------------------------------------------------
@subcommand
def _demo_command(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the offline showcase (local price server -> HttpLoader -> SQLite + file)",
        description="Start a local price server, poll it with Timer + HttpLoader for a few "
                    "seconds, store the quotes in SQLite and a JSON-lines file, draw the graph.",
    )
    p.add_argument("--out", default=".", help="folder for rxbot-demo.svg/.db/.jsonl (default: here)")
    p.add_argument("--ticks", type=_positive_int, default=10, help="how many quotes to fetch")
    p.add_argument("--delay", type=float, default=0.3, help="seconds between quotes")
    p.set_defaults(handler=_demo)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value!r}")
    return number


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args.out, args.ticks, args.delay)


# -- replay ----------------------------------------------------------------------------
@subcommand
def _replay_command(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="manage the replay cache of failed runs",
        description="Replay caches live in .rxbot/replay/ next to a script (or config.replay_dir).",
    )
    p.add_argument("--clear", action="store_true", help="delete the replay cache")
    p.add_argument("script", nargs="?", default=None,
                   help="'list' to show the caches, or the script whose cache to clear (its "
                        ".rxbot/replay folder)")
    p.add_argument("list_script", nargs="?", default=None, metavar="SCRIPT",
                   help="with 'list': the script whose caches to show")
    p.add_argument("--dir", default=None,
                   help="cache folder (default: next to SCRIPT, else config.replay_dir or ./.rxbot/replay)")
    p.set_defaults(handler=_replay, replay_parser=p)


def _replay(args: argparse.Namespace) -> int:
    from .replay import ReplayPathError, clear_cache, default_root, replay_root

    listing = args.script == "list" and not args.clear
    script = args.list_script if listing else args.script
    root = args.dir if args.dir is not None else (
        default_root(script) if script is not None else None)
    if listing:
        from .replay_list import print_caches

        return print_caches(replay_root(root))
    if not args.clear:
        args.replay_parser.error("say 'list' to show the caches or '--clear' to delete them")
    try:
        removed = clear_cache(root)
    except ReplayPathError as exc:
        print(exc, file=sys.stderr)
        return 1
    where = replay_root(root)
    print(f"rxbot replay: cleared {removed} cache(s) in {where}" if removed
          else f"rxbot replay: no cache in {where}")
    return 0


# -- cache (HttpLoader's on-disk HTTP cache) ---------------------------------------------
@subcommand
def _cache_command(sub: Any) -> None:
    p = sub.add_parser(
        "cache",
        help="manage HttpLoader's on-disk HTTP cache",
        description="HttpLoader(cache=PATH) or config.http_cache keeps responses in an SQLite file "
                    "(docs/crawling.md); 'rxbot cache clear PATH' empties it.",
    )
    p.add_argument("action", choices=["clear"], help="clear: delete every stored response")
    p.add_argument("path", nargs="?", default=None,
                   help="the cache file (default: config.http_cache, e.g. from the script's settings)")
    p.set_defaults(handler=_cache, cache_parser=p)


def _cache(args: argparse.Namespace) -> int:
    from .config import config
    from .http.cache import clear_cache

    path = args.path if args.path is not None else config.http_cache
    if path is None:
        args.cache_parser.error("give the cache file: rxbot cache clear PATH")
        return 2  # (error() exits)
    path = os.fspath(path)
    try:
        removed = clear_cache(path)
    except (ValueError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"rxbot cache: cleared {removed} response(s) from {path}")
    return 0


# -- dead letters and redrive (rxbot.durable) --------------------------------------------
@subcommand
def _deadletters_command(sub: Any) -> None:
    p = sub.add_parser(
        "deadletters",
        help="list the items a script's runs failed on (durable dead letters)",
        description="Items that failed under ignore/retry/pipein are stored in .rxbot/durable/<script>/ "
                    "(docs/when-items-fail.md). Lists the open ones by step and error.")
    p.add_argument("script", type=_existing_script, help="the script whose dead letters to list")
    p.add_argument("--show", type=_positive_int, default=None, metavar="ID", help="print one dead letter")
    p.set_defaults(handler=_deadletters)


def _deadletters(args: argparse.Namespace) -> int:
    from .durable.deadletters import listing, show

    if args.show is not None:
        try:
            print(show(args.show, args.script))
        except KeyError as exc:
            print(f"rxbot deadletters: {exc.args[0]}", file=sys.stderr)
            return 1
        return 0
    for line in listing(args.script):
        print(line)
    return 0


@subcommand
def _redrive_command(sub: Any) -> None:
    p = sub.add_parser(
        "redrive",
        help="run only a script's stored dead letters, each from its failing step, through the current code",
        description="Runs the script with BotFrame.run(redrive=True): the stored failed items go through "
                    "the step they failed in and on to the end; nothing before that step runs again.")
    p.add_argument("script", type=_existing_script, help="the script to re-drive")
    # the report of the last round names each step by its id in the script's pipe, a step
    # inside a route too (P1[3] Join/1[2] parse), as `rxbot deadletters` lists its letters
    p.add_argument("--report", choices=("text", "json"), default=None,
                   help="print the report of the last redrive round to stderr when it ends")
    p.add_argument("--report-file", default=None, metavar="PATH",
                   help="write that report to PATH (JSON unless --report text)")
    p.set_defaults(script_args=[], replay=False, resume=False, policy=None, progress=False, cluster=None,
                   shards=None, log_level=None, debug=False, watch=False, watch_address=None, render=None,
                   handler=_redrive)


def _redrive(args: argparse.Namespace) -> int:
    from .config import config

    config.redrive = True
    return _run(args)


__all__ = ["main", "build_parser", "subcommand"]

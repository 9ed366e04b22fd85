"""Run-wide settings, kept as one mutable object so databot scripts that do
``config.exception_policy = config.Exception_ignore`` keep working unchanged."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from .config_env import POLICIES, EnvironmentSettingError, from_environment, misspelt, one_line_hook, suggest


@dataclass
class Config:
    """Global defaults; every field can be overridden per step with :class:`rxbot.Step`."""

    # databot's constants with databot's values (0..3, the order of POLICIES), so
    # ``config.exception_policy == config.Exception_ignore`` reads as it did there; the
    # names 'raise', 'ignore', 'retry', 'pipein' work everywhere too (see policy()).
    Exception_raise: int = 0
    Exception_ignore: int = 1
    Exception_retry: int = 2
    Exception_pipein: int = 3
    Exception_default: int = 0

    exception_policy: int | str = 0
    retry_attempts: int = 3
    retry_backoff: float = 0.05
    retry_max_backoff: float = 2.0
    retry_jitter: float = 0.1
    retry_final_policy: str = "raise"

    # items in flight for an async step unless the step says otherwise (databot used 32)
    default_concurrency: int = 32
    #: seconds a stopping run waits for boosted calls already running before it closes
    #: the nodes they may use; calls still running then are abandoned (logged, listed in
    #: ``report.abandoned``), so a run always ends
    shutdown_grace: float = 10.0
    # a source yields to the event loop after this many items so timers and other pipes run
    yield_every: int = 256

    #: count items in/out of every sync step for the run report. None = automatic: on
    #: for steps whose policy is not 'raise' (where the accounting matters), off
    #: otherwise (counting costs ~30% of a fused step's time). Async steps and sources
    #: always count; a route counts the items it sees (in) and those it matched (out).
    metrics: bool | None = None
    #: where failed items go besides the report: a list to append to, or a callable
    #: taking a :class:`rxbot.StepError`
    dead_letters: Any = None

    #: the optimisation pass: fuse runs of sync steps (and all-sync routes) into one
    #: generated operator. False (or the environment variable RXBOT_NO_FUSION=1) builds
    #: the unfused operator graph instead: slower, the same items.
    fusion: bool = True

    #: show a live progress bar per pipe (needs tqdm: ``pip install -e '.[progress]'`` in rxbot's repository);
    #: turns per-step counting on
    progress: bool = False
    #: serve the live view of every run (``rxbot run --watch``): True for 127.0.0.1 on a
    #: free port, or ``'HOST:PORT'``; None/False: off (nothing is started)
    watch: Any = None

    #: called with the per-step counters every ``stats_interval`` seconds and at the end
    #: of a run (see :mod:`rxbot.observe.stats`); turns per-step counting on
    stats_hook: Any = None
    stats_interval: float = 5.0

    #: print Python's full traceback for uncaught errors (also ``RXBOT_DEBUG=1``); by
    #: default engine and asyncio frames are hidden
    debug: bool = False
    #: level of the 'rxbot' logger (DEBUG, INFO, WARNING, ERROR); None leaves it alone
    log_level: str | None = None

    #: headers every HttpLoader sends (a loader's ``headers=`` win over them one by
    #: one). None: rxbot.http.DEFAULT_HEADERS, a browser's User-Agent and
    #: Accept-Language as databot sent; ``{}``: aiohttp's own
    http_headers: Any = None
    #: defaults for every HttpLoader's crawling-politely arguments (docs/crawling.md):
    #: requests in flight per host, seconds between requests to one host, adaptive
    #: throttling, robots.txt, and the on-disk HTTP cache's path
    http_per_host: int | None = None
    http_per_host_delay: float | None = None
    http_throttle: bool = False
    http_robots: bool = False
    http_cache: str | None = None

    replay_mode: bool = False
    replay_dir: str | None = None
    replay_serializer: str = "json"

    #: resume after a hard kill (``BotFrame.run(resume=True)``, ``rxbot run --resume``,
    #: docs/resume.md): each pipe's source pauses about every ``checkpoint_seconds``
    #: (or ``checkpoint_items`` source items) until what it gave is settled, and the
    #: Insert rows of that epoch commit together with the pipe's checkpoint
    resume: bool = False
    checkpoint_seconds: float = 1.0
    checkpoint_items: int = 20000
    #: where durable dead letters and checkpoints of pipes without a database sink are
    #: kept (None: beside the replay cache, ``.rxbot/<script>/``)
    durable_dir: str | None = None
    #: run only the stored dead letters, each from its failing step (``rxbot redrive``,
    #: ``BotFrame.run(redrive=True)``, docs/when-items-fail.md)
    redrive: bool = False
    #: follow the source items for which this Python expression over ``item`` is true,
    #: and everything derived from them, through every step (``rxbot run --trace``,
    #: env ``RXBOT_TRACE``; see :mod:`rxbot.observe.trace` and docs/when-items-fail.md)
    trace: str | None = None

    #: multiprocessing start method for boost='process' pools (None: fork while the
    #: process has a single thread, else forkserver or spawn; see docs/boost.md)
    boost_start_method: str | None = None
    #: seconds rxbot waits for a remote peer to connect and answer its handshake, and
    #: for each control call to it (the Dask scheduler: connect, worker list, cancel,
    #: close); a stalled peer fails the run with an error instead of hanging it
    connect_timeout: float = 10.0
    dask_address: str | None = field(default_factory=lambda: os.environ.get("RXBOT_DASK_ADDRESS"))
    #: run every pipe sharded on a Dask cluster (``rxbot run --cluster/--shards``): a
    #: scheduler address or True (docs/scaling.md); None runs here
    cluster: Any = None
    shards: int | None = None

    # databot's other settings, accepted so its scripts run; rxbot has one execution
    # mode (streaming) and always joins the network, so they change nothing.
    stream: int = 0
    hierarchical: int = 1
    execute_mode: int = 0
    joined_network: bool = True
    suppress_exception: bool = False

    def __post_init__(self) -> None:
        try:
            settings = from_environment(os.environ, {f.name: f.type for f in fields(self)})
        except EnvironmentSettingError:
            one_line_hook()  # uncaught (rxbot's own import), it prints as one line
            raise
        for name, value in settings.items():
            object.__setattr__(self, name, value)
        for line in misspelt(os.environ):  # a typo would be silently ignored
            print(line, file=sys.stderr)

    def __setattr__(self, name: str, value: Any) -> None:
        # a typo (config.exeption_policy = ...) must not be accepted and ignored
        if name not in self.__dataclass_fields__:
            raise AttributeError(f"rxbot config has no setting {name!r}{suggest(name, self.__dataclass_fields__)}")
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # called only for names that do not exist
        raise AttributeError(f"rxbot config has no setting {name!r}{suggest(name, self.__dataclass_fields__)}")

    def counting(self) -> bool:
        """Something watches the counters while the run goes on (progress, stats hook),
        so sync steps must count even under the ``raise`` policy."""
        return bool(self.progress or self.stats_hook is not None)

    def policy(self, value: Any = None) -> str:
        """The policy's name ('raise', ...) for a databot constant (0..3) or a name;
        ``None`` reads ``exception_policy``. Unknown values raise ValueError."""
        return policy_name(self.exception_policy if value is None else value)


def policy_name(value: Any, what: str = "exception policy") -> str:
    """'raise', 'ignore', 'retry' or 'pipein' for that name or databot's number of it
    (0..3, the order of POLICIES); anything else is a ValueError naming ``what``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(POLICIES):
        return POLICIES[value]
    if isinstance(value, str) and value in POLICIES:
        return value
    raise ValueError(f"{what} must be one of {', '.join(POLICIES)} (or databot's "
                     f"config.Exception_* numbers 0-3); got {value!r}")


config = Config()

__all__ = ["config", "Config", "POLICIES", "policy_name"]

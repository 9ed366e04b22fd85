"""Run a coroutine on the thread's event loop until it ends or a signal stops it.

``BotFrame.run()`` runs here (issues 27 and 31):

* **The thread's own loop**, as databot did: the loop ``asyncio.get_event_loop()`` gives
  (created and set when there is none, or when it is closed), left set and open after the
  run, so a script may use it before and after, and a Node may keep it from ``__init__``.
* **SIGINT / SIGTERM always stop the run.** The first one asks for the graceful stop: the
  run's task is cancelled on the loop, so sources stop, boosted calls get the shutdown
  grace, nodes close and the counts are published; then ``KeyboardInterrupt`` (Ctrl-C) or
  the one line, the report and ``SystemExit(143)`` (SIGTERM). The handler itself only
  schedules that on the loop, and a sync step that never returns (a ``while`` on a page
  that never changes, a ``time.sleep``) never gives the loop a turn. So a watchdog thread
  waits :data:`STOP_GRACE` seconds for the loop to act; if it has not, it sends the signal
  again to the main thread, and the handler then raises ``KeyboardInterrupt`` /
  ``SystemExit`` right where the main thread is, inside the step, as plain Python does
  for Ctrl-C. A second signal does that at once. The run is then given its shutdown on
  the loop (what can be closed is closed, what went through is counted) unless yet
  another signal comes. Code stuck in C that never returns to the interpreter is the one
  case only SIGKILL stops (docs/policies.md).
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import warnings
from typing import Any, Callable, Coroutine, Dict, List, Optional, Tuple

#: seconds the event loop has to act on a first SIGINT/SIGTERM before the stop is forced
STOP_GRACE = 1.0

#: the signals a run stops on, and the status a stopped process exits with (128 + number)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


#: the loop rxbot made for the main thread. Kept, so that it is used again (and set as
#: current again) when something unset the current loop in between, e.g. ``asyncio.run``
#: or a test framework: dropped unclosed, it would be garbage with a ResourceWarning
_made: Optional[asyncio.AbstractEventLoop] = None


def thread_loop() -> Tuple[asyncio.AbstractEventLoop, bool]:
    """The thread's current event loop, and whether it was made here: a new one, set as
    current, when there is none or it is closed (never a running one: the caller has
    checked). In the main thread, the loop rxbot made before comes back first."""
    global _made
    with warnings.catch_warnings():
        # 3.12-3.13 warn when get_event_loop() makes the loop implicitly; making and
        # setting one is what is wanted here, and 3.14 raises instead of making one
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop: Optional[asyncio.AbstractEventLoop] = asyncio.get_event_loop()
        except RuntimeError:  # no loop set (3.14+), or not the main thread
            loop = None
    if loop is not None and not loop.is_closed():
        return loop, False
    main = threading.current_thread() is threading.main_thread()
    if main and _made is not None and not _made.is_closed():
        asyncio.set_event_loop(_made)
        return _made, False
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if main:
        _made = loop
    return loop, True


def release_thread_loop(loop: asyncio.AbstractEventLoop, made: bool) -> None:
    """After a run: a loop made for another thread than the main one is closed and unset
    (databot ran on the main thread's loop only; a thread's loop left open would be
    dropped unclosed when the thread ends). The main thread's stays set and open."""
    if made and threading.current_thread() is not threading.main_thread() and not loop.is_closed():
        loop.close()
        asyncio.set_event_loop(None)


class SignalStop:
    """The handlers of one run: install them in the main thread, run, uninstall."""

    def __init__(self, loop: asyncio.AbstractEventLoop, task: "asyncio.Task[Any]") -> None:
        self.loop = loop
        self.task = task
        #: the signals received, in order (the first asks for the graceful stop)
        self.received: List[int] = []
        #: raised in the main thread: the loop did not act in time, or a second signal came
        self.forced = False
        self._acted = threading.Event()
        # the watchdog resends a signal only while the handlers are ours (see uninstall)
        self._resending = threading.Lock()
        self._main = threading.get_ident()
        self._previous: Dict[int, Any] = {}
        self._wakeup: Optional[tuple] = None

    # -- install / uninstall -----------------------------------------------------------
    def install(self) -> None:
        """Take over SIGINT (when it has Python's default handler: an ignored SIGINT, as in a
        background job, stays ignored) and SIGTERM (when it has the default action). Only
        the main thread can; elsewhere the run has no signal handling of its own."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            ours = current is signal.default_int_handler if sig == signal.SIGINT else current == signal.SIG_DFL
            if ours:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        if self._previous:
            self._wake_loop_on_signals()

    def uninstall(self) -> None:
        with self._resending:  # no resend after this: it would meet the previous handler
            self._acted.set()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._wakeup is not None:
            reader, writer, previous_fd = self._wakeup
            self._wakeup = None
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(previous_fd)
            with contextlib.suppress(Exception):
                self.loop.remove_reader(reader.fileno())
            reader.close()
            writer.close()

    def _wake_loop_on_signals(self) -> None:
        """A signal that lands on another thread (a boost pool's) while the main thread waits
        in the loop's select() must wake it, or the handler would not run until the next
        timer or I/O: a wakeup fd the loop reads. Not when one is set already (the loop's
        own, after ``add_signal_handler``): that one wakes it just as well."""
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        try:
            previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except ValueError:
            reader.close()
            writer.close()
            return
        if previous_fd != -1:
            signal.set_wakeup_fd(previous_fd)
            reader.close()
            writer.close()
            return
        try:
            self.loop.add_reader(reader.fileno(), _drain, reader)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            signal.set_wakeup_fd(-1)
            reader.close()
            writer.close()
            return
        self._wakeup = (reader, writer, previous_fd)

    # -- the handler, the loop's part, the watchdog -------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if len(self.received) > 1:  # a second signal, or the watchdog's resend: stop here
            self.forced = True
            raise interruption(signum)
        try:
            self.loop.call_soon_threadsafe(self._stop_gracefully)
        except RuntimeError:  # the loop is closed: nothing graceful left to do
            self.forced = True
            raise interruption(signum) from None
        threading.Thread(target=self._watch, args=(signum,), name="rxbot-stop-watchdog",
                         daemon=True).start()

    def _stop_gracefully(self) -> None:
        self._acted.set()
        if not self.task.done():
            self.task.cancel()

    def _watch(self, signum: int) -> None:
        if self._acted.wait(STOP_GRACE):
            return
        # the loop is stuck (a step that does not return): interrupt the main thread itself;
        # a real signal, so that a blocking call there (time.sleep) is interrupted too
        with self._resending:
            if self._acted.is_set():  # the run ended meanwhile
                return
            with contextlib.suppress(ProcessLookupError, ValueError, OSError):
                signal.pthread_kill(self._main, signum)

    @property
    def signum(self) -> Optional[int]:
        """The signal that stops the run: the last one received (a Ctrl-C after a SIGTERM
        ends it as a Ctrl-C)."""
        return self.received[-1] if self.received else None


def interruption(signum: int) -> BaseException:
    """What a stopped run raises: ``KeyboardInterrupt`` for Ctrl-C, as plain Python does;
    ``SystemExit(128 + n)`` for SIGTERM and others (the status ``docker stop`` and systemd
    expect)."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return SystemExit(128 + signum)


def _drain(reader: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while reader.recv(4096):
            pass


def run_until_stopped(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop,
                      on_stop: Callable[[int], None]) -> Any:
    """Run ``coro`` as a task on ``loop`` (not running) to its end and return its result.

    Stopped by SIGINT/SIGTERM (see the module docstring): ``on_stop(signum)`` is called once
    the run has shut down as far as it could (print the line and the report there), then
    ``KeyboardInterrupt`` or ``SystemExit(143)`` is raised. Tasks the run started and left
    pending are cancelled and awaited, as ``asyncio.run`` does; the user's own tasks from
    before the run are left alone, and the loop stays open."""
    before = asyncio.all_tasks(loop)
    task = loop.create_task(coro)
    stop = SignalStop(loop, task)
    stop.install()
    try:
        try:
            result = loop.run_until_complete(task)
            if stop.signum is None:  # (a signal that came as the run ended still stops it)
                return result
        except asyncio.CancelledError:
            if stop.signum is None:
                raise
        except (KeyboardInterrupt, SystemExit):
            if stop.signum is None:  # raised by a step itself, or SIGINT handled elsewhere
                _settle(loop, task, stop)
                raise
            _settle(loop, task, stop)
        signum = stop.signum
        assert signum is not None
        stop.uninstall()  # the report is printed without handlers: a further Ctrl-C ends it
        on_stop(signum)
        raise interruption(signum) from None
    finally:
        stop.uninstall()
        _cancel_leftovers(loop, before, task)


def _settle(loop: asyncio.AbstractEventLoop, task: "asyncio.Task[Any]", stop: SignalStop) -> None:
    """The main thread was interrupted in the middle of the run (a forced stop, or a step
    raised KeyboardInterrupt itself): let the run shut down on the loop now — its tasks
    cancelled, boosted calls given the grace, nodes closed, counts published. A further
    signal ends this at once."""
    if task.done():
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.wait([task]))


def _cancel_leftovers(loop: asyncio.AbstractEventLoop, before: set, task: "asyncio.Task[Any]") -> None:
    if loop.is_running() or loop.is_closed():
        return
    leftovers = [t for t in asyncio.all_tasks(loop) if t not in before and t is not task and not t.done()]
    if not leftovers:
        return
    for t in leftovers:
        t.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.wait(leftovers))


__all__ = ["STOP_GRACE", "SignalStop", "interruption", "release_thread_loop", "run_until_stopped", "thread_loop"]

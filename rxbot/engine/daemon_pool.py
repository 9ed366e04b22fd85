"""A thread pool whose workers cannot keep the process alive.

``concurrent.futures.ThreadPoolExecutor`` joins its (non-daemon) workers when the
interpreter exits, so one boosted call that never returns keeps a finished script
running forever. rxbot abandons such a call after ``config.shutdown_grace`` (see
:func:`rxbot.engine.boost.stop_boosted`); the thread running it must then not be waited
for by anyone: these workers are daemon threads, registered nowhere.
"""
from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable, List

_STOP = None  # the sentinel a stopping worker passes on to the next one


class DaemonThreadPool(concurrent.futures.Executor):
    """At most ``workers`` daemon threads, started on demand, reused while busy."""

    def __init__(self, workers: int, name: str = "rxbot") -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1; got {workers}")
        self._workers = workers
        self._name = name
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            future: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._workers:
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"{self._name}_{len(self._threads)}")
                t.start()
                self._threads.append(t)
            return future

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                self._queue.put(_STOP)
                return
            future, fn, args, kwargs = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # delivered to the awaiting step, like the stdlib pool
                    future.set_exception(exc)
            del job, future, fn, args, kwargs  # an idle worker holds no item
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is not _STOP:
                        job[0].cancel()
            self._queue.put(_STOP)
        if wait:
            for t in self._threads:
                t.join()


__all__ = ["DaemonThreadPool"]

"""Real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 for a test module
(issue 25): started as subprocesses, killed by pid at the end, their logs kept in files
so a test can read what a worker said (a re-run, an unresponsive event loop)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DaskProcesses:
    address: str
    #: worker address -> pid (no nanny: the pid is the worker's own process)
    workers: Dict[str, int]
    #: the log files: the scheduler's, then one per worker in the order of ``workers``' names
    logs: List[Path] = field(default_factory=list)


def dask_processes(folder: Path, workers: int = 2, **env_extra: str) -> Iterator[DaskProcesses]:
    """A scheduler and ``workers`` single-threaded workers (no nanny), yielded once all are
    up; every process is killed by pid afterwards, also when starting failed. ``env_extra``:
    environment of the processes (e.g. Dask settings as ``DASK_...`` variables)."""
    pytest.importorskip("distributed")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")] if p), **env_extra)
    paths = [folder / f"dask{i}.log" for i in range(workers + 1)]
    logs = [open(path, "w") for path in paths]
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        _wait_for_port(port)
        for i in range(1, workers + 1):
            procs.append(subprocess.Popen(["dask", "worker", address, "--nthreads", "1", "--no-nanny",
                                           "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"],
                                          env=env, stdout=logs[i], stderr=subprocess.STDOUT))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
            pids = client.run(os.getpid)  # address -> pid: the processes started here
        assert sorted(pids.values()) == sorted(p.pid for p in procs[1:])
        yield DaskProcesses(address, pids, paths)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        for log in logs:
            log.close()


def _wait_for_port(port: int) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)

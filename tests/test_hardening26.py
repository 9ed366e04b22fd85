"""Issue 26 (hardening, round 3): one test per numbered item that the ``security`` part
fixed, named after it (``test_itemNN_...``), so the closing note can cite them.

Real components only: silent TCP servers on loopback for a stalled scheduler, the live
view's own aiohttp server, real files in tmp_path, subprocesses of ``rxbot``.
"""
from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from pathlib import Path

import pytest

from conftest import local_cluster, require_distributed
from rxbot import BotFrame, Pipe, config

ROOT = Path(__file__).resolve().parent.parent


class SilentServer:
    """A TCP port that accepts every connection and never sends a byte (a stalled peer,
    or a port that speaks another protocol and waits for the client to start)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.address = f"tcp://{host}:{self.sock.getsockname()[1]}"
        self.accepted: list = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def double(x):
    return x * 2


# ------------------------------------------------------------------------------ item 2
def _run_sharded_against(address: str):
    async def run():
        # the outer bound only turns a hang (today's main) into a failure of this test
        return await asyncio.wait_for(BotFrame.run_async(cluster=address, shards=2), 120)

    return asyncio.run(run())


def test_item02_a_scheduler_that_never_answers_fails_the_run_within_the_connect_deadline():
    require_distributed()
    server = SilentServer()
    config.connect_timeout = 1
    Pipe(range(3), double)
    try:
        with pytest.raises(ConnectionError) as caught:
            _run_sharded_against(server.address)
    finally:
        server.close()
    message = str(caught.value)
    assert f"cannot connect to the Dask scheduler at '{server.address}'" in message
    assert "no answer within 1s (config.connect_timeout / RXBOT_CONNECT_TIMEOUT)" in message
    assert server.accepted  # it did connect: the handshake is what the deadline covered
    assert "8787" not in message


def test_item02_the_dashboard_port_given_for_the_scheduler_gets_a_hint():
    require_distributed()
    try:
        server = SilentServer("127.0.0.26", 8787)  # a loopback host of its own
    except OSError:  # a real dashboard (another test's scheduler) listens on every interface
        server = None  # then the connection reaches it: an HTTP server, not a scheduler either
    config.connect_timeout = 1
    Pipe(range(3), double)
    try:
        with pytest.raises(ConnectionError) as caught:
            _run_sharded_against("tcp://127.0.0.26:8787")
    finally:
        if server is not None:
            server.close()
    assert "Port 8787 is the Dask dashboard's (HTTP); the scheduler listens on 8786" in str(caught.value)


def test_item02_connect_timeout_comes_from_the_environment(monkeypatch):
    from rxbot.config import Config

    monkeypatch.setenv("RXBOT_CONNECT_TIMEOUT", "2.5")
    assert Config().connect_timeout == 2.5
    assert config.connect_timeout == 10.0  # the default: a stalled peer fails in seconds


# ------------------------------------------------------------------------------ item 12
@pytest.fixture(scope="module")
def dask_cluster():
    """A LocalCluster on loopback for the sharded-run tests of this module."""
    require_distributed(pickle_by_value=__name__)  # as a script's functions go
    yield from local_cluster(threads_per_worker=2)


class HoldsALock(Exception):
    """An exception that cannot be pickled (it keeps a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def fails_with_a_lock(x):
    if x == 3:
        raise HoldsALock(f"cannot handle {x}")
    return x


def fails_while_handling_a_lock(x):
    if x == 3:
        try:
            raise HoldsALock("the first failure")
        except HoldsALock:
            raise KeyError("the second failure")  # its __context__ cannot be pickled
    return x


def test_item12_an_unpicklable_exception_of_a_shard_keeps_its_type_message_step_and_shard(dask_cluster):
    Pipe(range(6), fails_with_a_lock)
    with pytest.raises(Exception) as caught:
        BotFrame.run(cluster=dask_cluster, shards=2)
    error = caught.value
    assert type(error).__name__ == "RemoteError"
    assert str(error) == f"{__name__}.HoldsALock: cannot handle 3"
    notes = "\n".join(error.__notes__)
    assert "rxbot: raised in step 'fails_with_a_lock' on item 3" in notes
    assert "rxbot: raised in shard 1 of 2 on Dask worker" in notes
    assert "could not be sent from the worker (TypeError: cannot pickle '_thread.lock' object)" in notes


def test_item12_an_unpicklable_cause_does_not_cost_the_exception_itself(dask_cluster):
    Pipe(range(6), fails_while_handling_a_lock)
    with pytest.raises(KeyError) as caught:
        BotFrame.run(cluster=dask_cluster, shards=2)
    assert "rxbot: raised in shard 1 of 2 on Dask worker" in "\n".join(caught.value.__notes__)
    assert str(caught.value.__context__) == f"{__name__}.HoldsALock: the first failure"


@pytest.mark.parametrize("shards", [2, None])
def test_item12_an_unpicklable_source_item_is_named_before_connecting(shards):
    require_distributed()
    from rxbot.cluster import ShardingError

    server = SilentServer()  # would hang or fail if the run connected to it
    Pipe([1, 2, threading.Lock(), 4], double)
    try:
        with pytest.raises(ShardingError) as caught:
            _run_sharded_against(server.address) if shards else asyncio.run(
                BotFrame.run_async(cluster=server.address))
    finally:
        server.close()
    message = str(caught.value)
    assert message.startswith("step 'P1[1] Loop(list[4])': source item 2 (<unlocked _thread.lock object at")
    assert "cannot be sent to the Dask workers: pickling it failed: TypeError: cannot pickle '_thread.lock' object" in message
    assert not server.accepted


# ------------------------------------------------------------------------------ item 15
async def slow_double(x):
    await asyncio.sleep(0.02)
    return x * 2


async def _events(url: str, until: set, seen: list) -> None:
    import json

    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(url + "events") as reply:
            async for raw in reply.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["state"] in until:
                        return


async def _printed_url(capsys) -> str:
    for _ in range(3000):
        err = capsys.readouterr().err
        if "watch the run at " in err:
            return err.split("watch the run at ", 1)[1].split()[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no address printed: the live view was not started")


async def test_item15_watch_with_shards_shows_the_shards_counts_summed(dask_cluster, capsys):
    from rxbot.draw.watch import close_all

    Pipe(range(40), slow_double)
    run = asyncio.ensure_future(BotFrame.run_async(cluster=dask_cluster, shards=2, watch=True))
    try:
        url = await _printed_url(capsys)
        seen: list = []
        reader = asyncio.ensure_future(_events(url, {"finished", "failed"}, seen))
        report = await run
        await asyncio.wait_for(reader, 30)
    finally:
        close_all()
    final = seen[-1]
    assert final["state"] == "finished"
    rows = {s["path"]: (s["inp"], s["out"]) for s in final["steps"]}
    assert rows["P1[2] slow_double"] == (40, 40)  # both shards' items, summed
    assert rows == {str(k): (s.inp, s.out) for k, s in report.steps.items()}


# ------------------------------------------------------------------------- items 6, 9
def _raw_get(port: int, path: str, headers: dict, host: str = "127.0.0.1") -> tuple:
    """One HTTP/1.1 GET with exactly these headers (aiohttp's client sets Host itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(10)
        sock.connect((host, port))
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
        sock.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def watch_server():
    from rxbot.draw.watch import close_all, server_for

    server, _ = server_for(True)
    server.publish({"run": 1, "graph": "", "state": "running", "steps": [], "dead_letters": 0,
                    "last_dead_letters": [], "seconds": 1, "error": None})
    yield server
    close_all()


@pytest.mark.parametrize("path", ["/", "/state.json", "/graph.json", "/events"])
def test_item06_live_view_refuses_foreign_host(watch_server, path):
    port = watch_server.port
    status, body = _raw_get(port, path, {"Host": "attacker.example"})
    assert status == 421
    assert b"Host header 'attacker.example' refused" in body
    assert _raw_get(port, path, {"Host": f"attacker.example:{port}"})[0] == 421
    assert _raw_get(port, path, {"Host": "127.0.0.1"})[0] == 421  # another port's name


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LOCALHOST"])
def test_item06_live_view_answers_its_own_names(watch_server, name):
    status, body = _raw_get(watch_server.port, "/state.json", {"Host": f"{name}:{watch_server.port}"})
    assert status == 200
    assert json.loads(body)["state"] == "running"


def test_item06_live_view_refuses_another_origin(watch_server):
    port = watch_server.port
    own = {"Host": f"127.0.0.1:{port}"}
    assert _raw_get(port, "/state.json", {**own, "Origin": "http://attacker.example"})[0] == 403
    assert _raw_get(port, "/state.json", {**own, "Origin": f"http://localhost:{port}"})[0] == 200


def test_item06_an_ipv6_live_view_answers_its_bracketed_name():
    from rxbot.draw.watch import close_all, server_for

    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback")
    server, _ = server_for("[::1]")
    try:
        assert server.url == f"http://[::1]:{server.port}/"
        assert _raw_get(server.port, "/state.json", {"Host": f"[::1]:{server.port}"}, host="::1")[0] == 200
        assert _raw_get(server.port, "/state.json", {"Host": "evil.example"}, host="::1")[0] == 421
    finally:
        close_all()


def _stalled_stream(port: int) -> socket.socket:
    """A client of /events that never reads (its receive buffer as small as allowed)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def test_item09_a_client_that_never_reads_holds_at_most_one_snapshot(watch_server):
    import time
    import tracemalloc

    sock = _stalled_stream(watch_server.port)
    try:
        while not watch_server.clients:  # the stream is open once the server lists it
            time.sleep(0.01)
        big = {"run": 1, "state": "running", "steps": [], "padding": "x" * 100_000}
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(200):  # 20 MB of snapshots
                watch_server.publish({**big, "seconds": n})
            ready = watch_server.publish_final({**big, "state": "finished"})
            ready.result(timeout=30)  # the stalled page is not waited for
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        [client] = watch_server.clients
        assert client.dropped > 150  # older snapshots were replaced, not queued
        assert held < 2_000_000  # one pending message, the latest, and what the socket holds
    finally:
        sock.close()


def test_item09_stopping_the_server_with_a_stalled_client_ends_its_thread():
    from rxbot.draw.watch import close_all, server_for

    server, _ = server_for(True)
    sock = _stalled_stream(server.port)
    try:
        for n in range(50):
            server.publish({"run": 1, "state": "running", "padding": "x" * 200_000, "seconds": n})
        server.publish_final({"run": 1, "state": "finished", "padding": "x" * 200_000})
        close_all()
        assert not server.thread.is_alive()
        assert server.loop.is_closed()
    finally:
        sock.close()


def test_item09_a_script_with_a_stalled_page_exits_without_a_traceback(tmp_path):
    import subprocess
    import os

    script = tmp_path / "stalled.py"
    script.write_text(
        "import socket\n"
        "from rxbot import BotFrame, Pipe\n"
        "from rxbot.draw.watch import server_for\n"
        "server, _ = server_for(True)\n"
        "sock = socket.socket(); sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)\n"
        "sock.connect(('127.0.0.1', server.port))\n"
        "sock.sendall(f'GET /events HTTP/1.1\\r\\nHost: 127.0.0.1:{server.port}\\r\\n\\r\\n'.encode())\n"
        "Pipe(range(20000), lambda x: {'x': x, 'pad': 'y' * 50})\n"
        "for n in range(40):\n"
        "    server.publish({'run': 1, 'state': 'running', 'padding': 'x' * 300_000, 'seconds': n})\n"
        "BotFrame.run(watch=True)\n"
        "print('ran')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ran"
    assert "Traceback" not in proc.stderr
    assert "TimeoutError" not in proc.stderr


# ------------------------------------------------------------------------------ item 18
@pytest.mark.parametrize("given, expected", [
    ("::1", ("::1", 0)),
    ("[::1]", ("::1", 0)),
    ("[::1]:8000", ("::1", 8000)),
    ("fe80::1", ("fe80::1", 0)),
    ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    (":8765", ("127.0.0.1", 8765)),
])
def test_item18_watch_addresses_with_ipv6_literals_parse(given, expected):
    from rxbot.draw.watch import parse_address

    assert parse_address(given) == expected


@pytest.mark.parametrize("given, words", [
    ("[::1", "is not '[IPv6]' or '[IPv6]:PORT'"),
    ("[::1]8000", "is not '[IPv6]' or '[IPv6]:PORT'"),
    ("[::1]:http", "port in '[::1]:http' is not a number"),
])
def test_item18_bad_bracketed_watch_addresses_are_named(given, words):
    from rxbot.draw.watch import parse_address

    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_address(given)


def _fresh(code: str, **env: str):
    import os
    import subprocess

    clean = {k: v for k, v in os.environ.items() if not k.startswith("RXBOT_")}
    argv = code.split() if code.startswith("-m") else ["-c", code]
    return subprocess.run([sys.executable, *argv], env=dict(clean, PYTHONPATH=str(ROOT), **env),
                          capture_output=True, text=True, timeout=60)


BAD_VALUES = [
    ("RXBOT_POLICY", "nope", "one of raise, ignore, retry, pipein"),
    ("RXBOT_CONCURRENCY", "abc", "an integer >= 1"),
    ("RXBOT_RETRY_ATTEMPTS", "-1", "an integer >= 0"),
    ("RXBOT_PROGRESS", "maybe", "a boolean: 1, true, yes, on or 0, false, no, off"),
    ("RXBOT_NO_FUSION", "perhaps", "a boolean: 1, true, yes, on or 0, false, no, off"),
    ("RXBOT_SHUTDOWN_GRACE", "nan", "a number of seconds >= 0"),
    ("RXBOT_CONNECT_TIMEOUT", "0", "a number of seconds > 0"),
    ("RXBOT_STATS_INTERVAL", "inf", "a number of seconds > 0"),
    ("RXBOT_LOG_LEVEL", "loud", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
]


@pytest.mark.parametrize("variable, value, allowed", BAD_VALUES)
def test_item18_a_bad_environment_value_names_the_variable_the_value_and_what_is_allowed(
        monkeypatch, variable, value, allowed):
    from rxbot.config import Config
    from rxbot.config_env import EnvironmentSettingError

    monkeypatch.setenv(variable, value)
    with pytest.raises(EnvironmentSettingError) as caught:
        Config()
    assert str(caught.value) == f"{variable} must be {allowed}; got {value!r}"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("command", ["-m rxbot --version", "import rxbot"])
def test_item18_a_bad_environment_value_is_one_line(command):
    proc = _fresh(command, RXBOT_POLICY="nope")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["rxbot: RXBOT_POLICY must be one of raise, ignore, retry, pipein; got 'nope'"]


@pytest.mark.parametrize("value, fusion", [("false", True), ("0", True), ("no", True), ("OFF", True), ("", True),
                                           ("true", False), ("1", False), ("yes", False), ("On", False)])
def test_item18_no_fusion_parses_booleans(monkeypatch, value, fusion):
    from rxbot.config import Config

    monkeypatch.setenv("RXBOT_NO_FUSION", value)
    assert Config().fusion is fusion


@pytest.mark.parametrize("value, progress", [("false", False), ("off", False), ("on", True), ("Yes", True)])
def test_item18_boolean_variables_parse_words(monkeypatch, value, progress):
    from rxbot.config import Config

    monkeypatch.setenv("RXBOT_PROGRESS", value)
    assert Config().progress is progress


def _source_generator(closed: list):
    try:
        yield from range(1000)
    finally:
        closed.append("closed")


def _fails_on_five(x):
    if x == 5:
        raise ValueError("five")
    return x


def _generator_step(closed: list):
    def step(x):
        try:
            yield from range(100)
        finally:
            closed.append(x)
    return step


def test_item18_a_generator_source_is_closed_when_take_stops_it(both_builds):
    import reactivex.operators as ops

    from rxbot import Loop

    for make in (lambda g: g, Loop):
        closed: list = []
        out: list = []
        Pipe(make(_source_generator(closed)), ops.take(3), out.append)
        BotFrame.run()
        assert out == [0, 1, 2]
        assert closed == ["closed"]


def test_item18_a_generator_source_is_closed_when_the_run_fails(both_builds):
    closed: list = []
    Pipe(_source_generator(closed), _fails_on_five)
    with pytest.raises(ValueError, match="five"):
        BotFrame.run()
    assert closed == ["closed"]


def test_item18_a_generator_a_step_returns_is_closed_when_take_stops_it(both_builds):
    import reactivex.operators as ops

    from rxbot import Loop

    closed: list = []
    out: list = []
    Pipe(Loop([7]), _generator_step(closed), ops.take(2), out.append)
    BotFrame.run()
    assert out == [0, 1]
    assert closed == [7]


# ------------------------------------------------------------------------------ item 17
def _rxbot(*argv: str, cwd=None):
    import os
    import subprocess

    return subprocess.run([sys.executable, "-m", "rxbot", *argv], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.fixture
def marking_script(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("from pathlib import Path\nfrom rxbot import BotFrame, Pipe\n"
                      "Path(__file__).with_name('ran').write_text('yes')\n"
                      "Pipe(range(3), print)\nBotFrame.run()\n")
    return script


@pytest.mark.parametrize("option", ["--report-file", "--render"])
def test_item17_an_unwritable_output_path_fails_before_the_run(marking_script, tmp_path, option):
    target = tmp_path / "missing" / "out.json"
    if option == "--render":
        target = target.with_suffix(".svg")
    proc = _rxbot("run", str(marking_script), option, str(target))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"rxbot run: {option}: cannot write {str(target)!r}: the folder {str(target.parent)!r} does not exist "
        f"(rxbot creates no folders; make it first)"]
    assert not (tmp_path / "ran").exists()  # refused before the script ran
    assert not target.parent.exists()


def test_item17_a_folder_given_as_the_report_file_fails_before_the_run(marking_script, tmp_path):
    proc = _rxbot("run", str(marking_script), "--report-file", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"rxbot run: --report-file: cannot write {str(tmp_path)!r}: it is a folder"]
    assert not (tmp_path / "ran").exists()


def test_item17_render_to_a_missing_folder_is_one_line_and_creates_nothing(marking_script, tmp_path):
    target = tmp_path / "a" / "b" / "graph.dot"
    proc = _rxbot("render", str(marking_script), "-o", str(target))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"rxbot render: cannot write {str(target)!r}: the folder {str(target.parent)!r} does not exist "
        f"(rxbot creates no folders; make it first)"]
    assert not (tmp_path / "a").exists()


def test_item17_botframe_render_creates_no_folders(tmp_path):
    Pipe(range(3), double)
    with pytest.raises(FileNotFoundError, match="rxbot creates no folders"):
        BotFrame.render(str(tmp_path / "new" / "g.dot"))
    assert not (tmp_path / "new").exists()
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        (tmp_path / "file").write_text("x")
        BotFrame.render(str(tmp_path / "file" / "g.dot"))


# ------------------------------------------------------------------------- items 7, 8
TOKEN = "Tk9zQ7secretXw"  # planted; must never be shown
LEAKY_URL = f"https://api.example/v1?access_token={TOKEN}&page=2"


def fails_naming_a_secret(x):
    raise ConnectionError(f"cannot fetch {LEAKY_URL}")


def _surfaces(report, errors) -> dict:
    """Every text about a run that leaves the process, by where it goes."""
    from rxbot.errors_display import format_short
    from rxbot.draw.watch.server import _json
    from rxbot.draw.watch.snapshot import Sampler

    texts = {"report text": str(report), "report json": report.to_json(),
             "live view": _json(Sampler(1, "g").snapshot(report, "failed", error=errors[0])).decode()}
    from rxbot.errors import StepError

    for k, error in enumerate(errors):
        if isinstance(error, StepError):  # rxbot's own text (the user's exception is theirs)
            texts[f"str(error {k})"] = str(error)
        import io

        from rxbot.errors_display import print_short

        out = io.StringIO()
        print_short(error, out)
        texts[f"printed error {k}"] = out.getvalue()
    for k, letter in enumerate(report.dead_letters):
        texts[f"dead letter {k}"] = str(letter)
    return texts


def test_item07_a_secret_in_an_exception_message_is_masked_where_the_run_is_shown(caplog):
    from rxbot import Step

    Pipe(range(2), Step(fails_naming_a_secret, on_error="ignore"))
    with caplog.at_level("INFO", logger="rxbot"):
        report = BotFrame.run()
    assert len(report.dead_letters) == 2
    texts = _surfaces(report, list(report.dead_letters))
    texts["log"] = "\n".join(r.getMessage() for r in caplog.records)
    assert "access_token=***&page=2" in texts["report json"]
    assert "access_token=***&page=2" in texts["str(error 0)"]
    assert {where for where, text in texts.items() if TOKEN in text} == set()


def test_item07_the_full_traceback_of_debug_mode_is_redacted_too():
    import io

    from rxbot.errors_display import print_short

    config.debug = True
    Pipe(range(2), fails_naming_a_secret)
    with pytest.raises(ConnectionError) as caught:
        BotFrame.run()
    out = io.StringIO()
    print_short(caught.value, out)
    assert "Traceback (most recent call last)" in out.getvalue()
    assert "access_token=***&page=2" in out.getvalue()
    assert TOKEN not in out.getvalue()


def test_item07_a_failed_run_shows_its_error_without_the_secret():
    Pipe(range(2), fails_naming_a_secret)
    with pytest.raises(ConnectionError) as caught:
        BotFrame.run()
    report = BotFrame.last_report
    report.error = caught.value
    texts = _surfaces(report, [caught.value])
    assert "access_token=***" in texts["printed error 0"]
    assert {where for where, text in texts.items() if TOKEN in text} == set()


def test_item07_rxbot_run_prints_the_error_and_the_json_report_without_the_secret(tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text("from rxbot import BotFrame, Pipe\n"
                      "def fetch(x):\n"
                      f"    raise ConnectionError('cannot fetch {LEAKY_URL}')\n"
                      "Pipe(range(2), fetch)\nBotFrame.run()\n")
    for extra in ([],):  # --debug: see test_item07_the_full_traceback_of_debug_mode_is_redacted_too
        proc = _rxbot("run", str(script), "--report", "json", *extra)
        assert proc.returncode == 1
        assert "ConnectionError: cannot fetch https://api.example/v1?access_token=***&page=2" in proc.stderr
        assert '"error": "ConnectionError: cannot fetch https://api.example/v1?access_token=***&page=2"' in proc.stderr
        assert TOKEN not in proc.stderr + proc.stdout


@pytest.mark.parametrize("text, shown", [
    ("{'password': b'hunter2'}", "{'password': b'***'}"),
    ("{'db password': 'hunter2'}", "{'db password': '***'}"),
    ("{'" + "x" * 80 + "_token': 'hunter2'}", "{'" + "x" * 80 + "_token': '***'}"),
    ("{'pin_code': 123456}", "{'pin_code': ***}"),
    ("https://app/cb?next=https%3A%2F%2Fh%2F%3Ftoken%3Dhunter2%26a%3D1", "https://app/cb?next=https://h/?token=***&a=1"),
    ("https://app/cb?next=https%253A%252F%252Fh%252F%253Fkey%253Dhunter2", "https://app/cb?next=https://h/?key=***"),
    ("connect failed: host=db password=hunter2 port=3306", "connect failed: host=db password=*** port=3306"),
    ("headers: Authorization: Bearer hunter2hunter2", "headers: Authorization: Bearer ***"),
    ("f(token=hunter2)", "f(token=***)"),
])
def test_item08_values_the_docs_promise_to_mask_are_masked(text, shown):
    from rxbot.redact import redact

    assert redact(text) == shown
    assert redact(shown) == shown


def test_item08_an_item_preview_masks_secret_keys_whatever_the_value():
    from rxbot.errors import short_repr

    item = {"user": "bob", "password": b"hunter2", "db password": "hunter2", "x" * 70 + "Token": "hunter2",
            "nested": {"api_key": ["hunter2"]}, b"secret": 42}
    shown = short_repr(item, 400)
    assert "hunter2" not in shown
    assert "'password': b'***'" in shown
    assert "'db password': '***'" in shown
    assert "'api_key': ***" in shown
    assert "b'secret': ***" in shown
    assert "'user': 'bob'" in shown


# ------------------------------------------------------------------- the property test
_SECRET_KEYS = ["password", "api_key", "apiKey", "db password", "X-Amz-Security-Token", "client secret",
                "x" * 70 + "_token", "sessionid", "Authorization"]
_PLAIN_KEYS = ["user", "page", "id", "name", "q", "title"]


def _planted(secret: str):
    """Strategies for a value that holds ``secret`` the way the docs promise to mask."""
    from urllib.parse import quote

    from hypothesis import strategies as st

    forms = st.sampled_from([
        lambda s, k: {k: s},
        lambda s, k: {k.encode(): s.encode()},
        lambda s, k: {k: s.encode()},
        lambda s, k: f"https://user:{s}@host.example/p",
        lambda s, k: f"https://host.example/p?{k.replace(' ', '_')}={s}&page=1",
        lambda s, k: "https://app/cb?next=" + quote(f"https://h/?token={s}", safe=""),
        lambda s, k: f"dsn host=db password={s} port=1",
    ])
    keys = st.sampled_from([k for k in _SECRET_KEYS if k != "Authorization"])
    return st.builds(lambda form, key: form(secret, key), forms, keys)


def _structures(secret: str):
    from hypothesis import strategies as st

    leaves = st.one_of(st.integers(-5, 5), st.text("abc xyz", max_size=8), st.binary(max_size=6))
    planted = _planted(secret)

    def nest(children):
        return st.one_of(st.lists(children, max_size=3), st.tuples(children, children),
                         st.dictionaries(st.sampled_from(_PLAIN_KEYS), children, max_size=3))

    plain = st.recursive(leaves, nest, max_leaves=6)
    return st.builds(lambda outer, inner, where: _insert(outer, inner, where), plain, planted, st.integers(0, 3))


def _insert(outer, inner, where):
    """``inner`` placed somewhere in ``outer`` (wrapped when ``outer`` is a leaf)."""
    if isinstance(outer, dict):
        return {**outer, "payload": inner}
    if isinstance(outer, list):
        return outer[:where] + [inner] + outer[where:]
    if isinstance(outer, tuple):
        return (inner, *outer)
    return [outer, inner] if where % 2 else {"data": outer, "more": inner}


def test_item07_item08_property_no_planted_secret_reaches_any_output(tmp_path_factory):
    """Generated items holding a secret in any promised form (nested, bytes, odd keys,
    URLs, percent-encoding), and steps failing with the item and the secret in their
    message: no surface shows the secret."""
    import logging

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from rxbot import Step

    folder = tmp_path_factory.mktemp("graphs")
    secret = "Sx7" + "q" * 3 + "Pw9z"

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(item=_structures(secret), how=st.sampled_from(["repr", "url", "both"]))
    def check(item, how):
        def fails(x):
            message = {"repr": f"bad item {x!r}", "url": f"GET https://h/x?token={secret} failed",
                       "both": f"bad item {x!r} at https://u:{secret}@h/"}[how]
            raise ValueError(message)

        records: list = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(logging.Formatter().format(record))
        logger = logging.getLogger("rxbot")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        try:
            BotFrame.clear()
            Pipe([item], Step(fails, on_error="ignore"), name="p")
            report = BotFrame.run()
            BotFrame.clear()
            Pipe([item], fails)
            with pytest.raises(ValueError) as caught:
                BotFrame.run()
            failed = BotFrame.last_report
            failed.error = caught.value
            Pipe([item], fails)
            dot = folder / "g.dot"
            BotFrame.render(str(dot))
            BotFrame.clear()
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        texts = {**_surfaces(report, list(report.dead_letters)),
                 **{f"failed {k}": v for k, v in _surfaces(failed, [caught.value]).items()},
                 "log": "\n".join(records), "graph": dot.read_text()}
        assert report.dead_letters  # the step did fail: the surfaces hold the item and message
        leaks = {where: text for where, text in texts.items() if secret in text}
        assert leaks == {}, (item, how)

    check()


# ------------------------------------------------------------------------------ item 10
class CountsRepr:
    calls = 0

    def __repr__(self):
        CountsRepr.calls += 1
        return "<counted>"


def _peak_while(fn) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "str", "list", "dict", "nested"])
def test_item10_a_preview_of_a_huge_item_is_built_from_a_bounded_part(kind):
    from rxbot.errors import short_repr

    size = 50_000_000
    item = {"bytes": lambda: b"\x01" * size, "bytearray": lambda: bytearray(size), "str": lambda: "é" * size,
            "list": lambda: list(range(size // 50)), "dict": lambda: dict.fromkeys(range(size // 100)),
            "nested": lambda: [[b"x" * size]]}[kind]()
    shown: list = []
    peak = _peak_while(lambda: shown.append(short_repr(item, 120)))
    assert len(shown[0]) <= 120
    assert shown[0].endswith(("...", "...'", "...]", "...]]", "...}", "...')"))
    assert peak < 1_000_000  # the full repr would be 50-200 MB


def test_item10_a_preview_asks_only_the_shown_elements_for_their_repr():
    from rxbot.errors import short_repr

    CountsRepr.calls = 0
    shown = short_repr([CountsRepr() for _ in range(10_000)], 200)
    assert shown.startswith("[<counted>, <counted>")
    assert CountsRepr.calls <= 8


def test_item10_a_step_failing_on_a_50_mb_item_shows_it_without_its_full_repr():
    from rxbot import Step

    def refuse(x):
        raise ValueError("too big")

    item = b"\x00" * 50_000_000
    outputs: list = []

    def run():
        Pipe([item], Step(refuse, on_error="ignore"))
        report = BotFrame.run()
        outputs.extend([str(report.dead_letters[0]), report.to_json(), str(report)])

    peak = _peak_while(run)
    assert "failed on item b'\\x00\\x00" in outputs[0]
    assert len(outputs[0]) < 400
    assert peak < 20_000_000  # a full repr() costs 200 MB (4 characters a byte)


# ------------------------------------------------------------------------------ item 11
def _bytes_per_pipe(make, count: int) -> float:
    import gc
    import tracemalloc

    make()  # first use: imports, registries, caches shared by every pipe
    BotFrame.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pipes = [make() for _ in range(count)]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(pipes) == count
    BotFrame.clear()
    return held / count


def _pipe_shapes(tmp: Path) -> dict:
    """The shapes users build, each as a function making one pipe: no node connects or
    opens anything until a run starts, so the database sinks need no server here."""
    from rxbot import Branch, Filter, HttpLoader, Join, Loop, Step, Timer
    from rxbot.db import mysql, sqlite
    from rxbot.db.aiofile import aiofile

    def row(response):
        return {"a": 1, "b": "x"}

    def tick():
        return Timer(delay=2, max_time=3)

    return {
        "source, function, sink": lambda: Pipe(range(3), double, print),
        "timer, constant, async step": lambda: Pipe(tick(), "http://h/x", Step(slow_double, concurrency=4),
                                                    print),
        "routes": lambda: Pipe(Loop([1, 2]), Branch(double, print), Join(double, double),
                               Filter(route_type=int), Step(double, concurrency=4)),
        "Timer + HttpLoader": lambda: Pipe(tick(), "http://h/x", HttpLoader(), print),
        "Timer + HttpLoader + MySQL Insert": lambda: Pipe(
            tick(), "http://h/x", HttpLoader(), row, mysql.Insert("insert into t (a, b) values ({a}, {b})")),
        "Timer + HttpLoader + SQLite Insert": lambda: Pipe(
            tick(), "http://h/x", HttpLoader(), row,
            sqlite.Insert("insert into t (a, b) values ({a}, {b})", path=str(tmp / "t.db"))),
        "MySQL Query source": lambda: Pipe(mysql.Query("select a, b from t"), double, print),
        "SQLite Query source": lambda: Pipe(sqlite.Query("select a, b from t", path=str(tmp / "t.db")),
                                            double, print),
        "Timer + HttpLoader + aiofile": lambda: Pipe(tick(), "http://h/x", HttpLoader(),
                                                     aiofile(str(tmp / "out.txt"))),
    }


SHAPES = list(_pipe_shapes(Path(".")))


@pytest.mark.parametrize("shape", SHAPES)
def test_item11_an_idle_pipe_costs_at_most_5_kib(shape, tmp_path):
    """10,000 idle pipes of each shape, measured with tracemalloc: at most 5 KiB a pipe.
    (Before the fix a MySQL Insert pipe cost 8.6 KiB, an HttpLoader 1.9 KiB of it alone:
    an instance with 30+ attributes gets a dict of its own; an Insert built its batching
    state and value tables with the node instead of when a run starts.)"""
    make = _pipe_shapes(tmp_path)[shape]
    per_pipe = _bytes_per_pipe(make, 10_000)
    assert per_pipe <= 5 * 1024, f"{shape}: {per_pipe / 1024:.2f} KiB a pipe"


@pytest.mark.parametrize("kind", ["sqlite", "mysql"])
def test_item11_a_pipe_built_lazily_runs_and_adapts_exactly(kind, tmp_path, request):
    """What an idle Insert no longer builds (its batches, its value adapter) is made when
    the run starts: the pipe still writes every row, each value converted exactly, and
    still refuses a value it cannot store, naming the step, the placeholder and the type."""
    import datetime
    import decimal
    import uuid

    from rxbot.db import UnsupportedValueError

    table = f"t_{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        from rxbot.db import sqlite as mod

        conn_kw: dict = {"path": str(tmp_path / "t.db")}
        raw = __import__("sqlite3").connect(conn_kw["path"], isolation_level=None)
        execute = raw.execute
        columns = "id integer primary key, at text, amount text"
        amount = "1.5"
    else:
        import pymysql

        from rxbot.db import mysql as mod

        conn_kw = request.getfixturevalue("mysql_params")
        raw = pymysql.connect(host=conn_kw["host"], port=conn_kw["port"], user=conn_kw["user"],
                              password=conn_kw["password"], database=conn_kw["db"], autocommit=True)

        def execute(sql):
            cur = raw.cursor()
            cur.execute(sql)
            return cur

        columns = "id integer primary key, at datetime(6), amount decimal(10, 2)"
        amount = decimal.Decimal("1.5")
    execute(f"create table {table} ({columns})")
    try:
        at = datetime.datetime(2026, 1, 2, 3, 4, 5, 678)
        insert = mod.Insert(f"insert into {table} (id, at, amount) values ({{id}}, {{at}}, {{amount}})",
                            batch_size=7, **conn_kw)
        assert insert.settled_at_close() == (0, [], 0)  # a node that never ran holds nothing
        pipe = Pipe(range(40), lambda i: {"id": i, "at": at, "amount": amount}, insert)
        BotFrame.run([pipe])
        rows = execute(f"select id, at, amount from {table} order by id").fetchall()
        expected_at = str(at) if kind == "sqlite" else at
        assert [tuple(r) for r in rows] == [(i, expected_at, amount) for i in range(40)]

        bad = mod.Insert(f"insert into {table} (id, at, amount) values ({{id}}, {{at}}, {{amount}})",
                         name="bad rows", **conn_kw)
        with pytest.raises(UnsupportedValueError) as caught:
            BotFrame.run([Pipe([{"id": 99, "at": at, "amount": 1 + 2j}], bad)])
        assert (caught.value.step, caught.value.placeholder, caught.value.type_name) == \
            ("bad rows", "{amount}", "complex")
        assert execute(f"select count(*) from {table} where id = 99").fetchall()[0][0] == 0
    finally:
        BotFrame.clear()
        execute(f"drop table {table}")
        raw.close()


def test_item11_an_insert_called_outside_a_run_says_so():
    from rxbot.db.sqlite import Insert

    node = Insert("insert into t (a) values ({a})", path=":memory:")
    with pytest.raises(RuntimeError, match="outside a run"):
        asyncio.run(node({"a": 1}))


def test_item11_building_pipes_with_a_builtin_step_checks_its_signature_once():
    import inspect

    from rxbot.tree import step as step_module

    calls = []
    original = inspect.signature

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return original(fn, *args, **kwargs)

    inspect.signature = counting
    try:
        step_module._BUILTINS_CHECKED.discard(print)
        for _ in range(50):
            Pipe(range(3), print)
    finally:
        inspect.signature = original
    assert calls.count(print) == 1  # parsing print's text signature costs ~2.5 ms a time


def test_item10_an_http_item_is_shown_from_a_bounded_part():
    from rxbot import HttpLoader

    loader = HttpLoader()
    huge = "http://h/x?token=abc&q=" + "a" * 20_000_000
    shown: list = []
    peak = _peak_while(lambda: shown.append(loader.describe_item(huge)))
    assert shown[0].startswith("'http://h/x?token=***&q=aaaa") and shown[0].endswith("...'")
    assert len(shown[0]) <= 300
    assert peak < 1_000_000
    assert loader.describe_item({"url": huge, "method": "post"}).startswith("{'method': 'POST', 'url': 'http://h/x?token=***")

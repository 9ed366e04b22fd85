"""The live view's web server: aiohttp on its own thread and event loop.

One server per process and address, started by the first watched run and kept until the
process ends, so several runs (or a notebook's runs) share one page. It serves

* ``/``            the page (one static file, no external resources);
* ``/graph.json``  the current run's picture (SVG) and which node draws which step;
* ``/state.json``  the latest snapshot;
* ``/events``      the snapshots as Server-Sent Events while the run goes on.

Its own thread keeps the page answering while a run is busy, and keeps serving the final
report after the run's event loop has closed. The run publishes snapshots with
:meth:`WatchServer.publish`, which is thread-safe and costs one loop wake-up.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import html
import json
import logging
import socket
import threading
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from aiohttp import web

from ...redact import redact_data

PAGE = "page.html"
#: SSE comment sent when nothing changed for this long, so proxies keep the stream open
KEEPALIVE = 15.0
#: how long stopping the server (at the latest, at process exit) waits for open pages
#: to receive the final report of the runs
DELIVERY_TIMEOUT = 5.0
#: how long stopping the server thread may take before the process moves on without it
STOP_TIMEOUT = 2.0

log = logging.getLogger("rxbot")


def parse_address(address: Any) -> Tuple[str, int]:
    """``True``/``None`` -> 127.0.0.1 on a free port; ``'HOST:PORT'``, ``':PORT'``,
    ``'HOST'`` or ``PORT`` otherwise; IPv6 literals bare (``'::1'``) or in brackets
    (``'[::1]'``, ``'[::1]:8000'``). Only loopback unless the user names a host."""
    if address in (None, True, "", "auto"):
        return "127.0.0.1", 0
    if isinstance(address, bool) or not isinstance(address, (str, int)):
        raise TypeError(f"watch: argument 'watch' must be True, a port or 'HOST:PORT'; got {address!r}")
    if isinstance(address, int):
        return "127.0.0.1", _port(address, address)
    text = address.strip()
    if text.startswith("["):  # [v6] or [v6]:PORT
        host, closing, rest = text[1:].partition("]")
        if not closing or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"watch: {address!r} is not '[IPv6]' or '[IPv6]:PORT'")
        port = rest[1:] or "0"
    elif text.count(":") > 1:  # a bare IPv6 literal has no port ('[::1]:8000' has one)
        host, port = text, "0"
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, "0"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"watch: port in {address!r} is not a number") from None
    return host or "127.0.0.1", _port(number, address)


def _port(number: int, given: Any) -> int:
    if not 0 <= number <= 65535:
        raise ValueError(f"watch: port must be 0..65535; got {given!r}")
    return number


class _Client:
    """One open event stream: the newest message not yet written (an older one that
    was not written yet is dropped: a page only needs the latest snapshot, and a page
    that does not read costs one message, not a queue that grows with the run)."""

    __slots__ = ("pending", "wake", "dropped", "closing")

    def __init__(self) -> None:
        self.pending: Optional[bytes] = None
        self.wake = asyncio.Event()
        self.dropped = 0  # messages replaced before they were written
        self.closing = False

    def offer(self, message: bytes) -> None:
        if self.pending is not None:
            self.dropped += 1
        self.pending = message
        self.wake.set()

    def take(self) -> Optional[bytes]:
        message, self.pending = self.pending, None
        self.wake.clear()
        return message

    def close(self) -> None:
        self.closing = True
        self.wake.set()


class WatchServer:
    """See the module docstring. ``url`` is where the page is."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(exc.errno, f"watch: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.sock.listen(64)
        self.host, self.port = host, self.sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{self.port}/"
        #: the Host headers this server answers (a DNS-rebinding page sends its own name)
        self.allowed_hosts = allowed_hosts(host, self.port)
        self.loop = asyncio.new_event_loop()
        self.clients: Set[_Client] = set()
        self.latest: Dict[str, Any] = {"run": 0, "graph": "", "state": "waiting", "steps": [], "dead_letters": 0,
                                       "last_dead_letters": [], "seconds": 0, "error": None}
        #: the current run's picture as the JSON body of /graph.json (None: not drawn yet)
        self.graph: Optional[bytes] = _graph_body({"svg": "", "nodes": {}})
        self._pipes: Sequence[Any] = ()
        self._shape: Any = None
        self._drawn: Dict[Any, bytes] = {}  # outline -> /graph.json body (last 16)
        self._runner: Optional[web.AppRunner] = None
        self._waiting: Dict[_Client, concurrent.futures.Future] = {}
        self._streams: Set[Any] = set()  # the handler tasks of open event streams
        #: final snapshots not yet delivered to every open page
        self.finals: Set[concurrent.futures.Future] = set()
        started: concurrent.futures.Future = concurrent.futures.Future()
        self.thread = threading.Thread(target=self._serve, args=(started,), name="rxbot-watch", daemon=True)
        self.thread.start()
        started.result(timeout=30)

    # -- called from the run's thread ----------------------------------------------------
    def new_run(self, run: int, pipes: Sequence[Any], shape: Any) -> None:
        """A run starts: the page redraws the graph of ``pipes`` (drawn on request, once
        per distinct ``shape``, see :func:`rxbot.draw.render.outline`)."""
        self.loop.call_soon_threadsafe(self._new_run, run, list(pipes), shape)

    def publish(self, snapshot: Dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self._publish, snapshot)

    def publish_final(self, snapshot: Dict[str, Any]) -> "concurrent.futures.Future[None]":
        """Send the last snapshot of a run; the future is done once every page connected
        now has received it (or gone away). :meth:`close` (at the latest when the
        process exits) waits for that, so the run itself does not."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self.finals.add(done)
        done.add_done_callback(self.finals.discard)
        self.loop.call_soon_threadsafe(self._publish, snapshot, done)
        return done

    def close(self, grace: float = DELIVERY_TIMEOUT) -> None:
        """Stop serving, after open pages that keep up got the final report of every run
        (at most ``grace`` seconds; a page that does not read is not waited for, see
        :meth:`_publish`). Never raises: it runs at process exit."""
        concurrent.futures.wait(list(self.finals), timeout=grace)
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=STOP_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:  # a closed loop: already stopped
            log.debug("rxbot: stopping the live view: %r", exc)
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=STOP_TIMEOUT)

    # -- the server thread ---------------------------------------------------------------
    def _serve(self, started: concurrent.futures.Future) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # pragma: no cover - reported to the starting thread
            started.set_exception(exc)
            return
        started.set_result(None)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._check_host])
        app.router.add_get("/", self._page)
        app.router.add_get("/graph.json", self._graph)
        app.router.add_get("/state.json", self._state)
        app.router.add_get("/events", self._events)
        # open event streams are ended by _stop; nothing else may hold the exit up
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()

    async def _stop(self) -> None:
        for client in list(self.clients):
            client.close()
        for task in list(self._streams):  # one blocked writing to a page that does not read
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        self.loop.call_soon(self.loop.stop)

    def _new_run(self, run: int, pipes: List[Any], shape: Any) -> None:
        self._pipes, self._shape = pipes, shape
        self.graph = None

    def _publish(self, snapshot: Dict[str, Any], done: Optional[concurrent.futures.Future] = None) -> None:
        self.latest = snapshot
        message = _event(snapshot)
        for client in self.clients:
            behind = client.pending is not None  # its last message is still unwritten
            client.offer(message)
            if done is not None and not behind:  # a page that does not read is not waited for
                self._waiting[client] = done
        if done is not None and not any(f is done for f in self._waiting.values()):
            done.set_result(None)

    def _delivered(self, client: _Client) -> None:
        done = self._waiting.pop(client, None)
        if done is not None and not done.done() and not any(f is done for f in self._waiting.values()):
            done.set_result(None)

    # -- handlers ------------------------------------------------------------------------
    @web.middleware
    async def _check_host(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Answer only requests for this server's own name: a page of another site whose
        name the attacker points at 127.0.0.1 (DNS rebinding) sends that name as Host
        (421); a page of another origin sends its Origin (403)."""
        host = request.headers.get("Host", "").strip().lower()
        if host not in self.allowed_hosts:
            return web.Response(status=421, text="rxbot live view: this server answers only for "
                                                 f"{self.url} (Host header {_shown(host)} refused)\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin.strip().lower() not in {f"http://{h}" for h in self.allowed_hosts}:
            return web.Response(status=403, text=f"rxbot live view: requests from {_shown(origin)} are refused\n")
        return await handler(request)

    async def _page(self, request: web.Request) -> web.Response:
        text = resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8")
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _graph(self, request: web.Request) -> web.Response:
        if self.graph is None:
            body = self._drawn.get(self._shape)
            if body is None:
                body = self._drawn[self._shape] = _graph_body(_draw(self._pipes))
                while len(self._drawn) > 16:
                    self._drawn.pop(next(iter(self._drawn)))
            self.graph = body
        return web.Response(body=self.graph, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def _state(self, request: web.Request) -> web.Response:
        return web.Response(body=_json(self.latest), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        client = _Client()
        self.clients.add(client)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            await response.write(_event(self.latest))
            while not client.closing:
                try:
                    await asyncio.wait_for(client.wake.wait(), KEEPALIVE)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                message = client.take()
                if message is not None:
                    await response.write(message)
                if client.pending is None:
                    self._delivered(client)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.clients.discard(client)
            self._streams.discard(task)
            self._delivered(client)
        return response


def allowed_hosts(host: str, port: int) -> Set[str]:
    """The Host header values a server bound to ``host``:``port`` answers (lower case):
    the loopback names, the configured name, and this machine's names when it listens
    on every interface. Port 80 may be left out, as browsers do."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    wildcard = host in ("0.0.0.0", "::", "")
    if wildcard:
        names.update({socket.gethostname(), socket.getfqdn()})
    elif host:
        names.add(f"[{host}]" if ":" in host else host)
    hosts = {f"{name.lower()}:{port}" for name in names if name}
    if port == 80:
        hosts.update(name.lower() for name in names if name)
    return hosts


def _shown(text: str, limit: int = 80) -> str:
    """A client-sent header value, cut and made printable, for an error message."""
    return repr(text[:limit])


def _graph_body(graph: Dict[str, Any]) -> bytes:
    return json.dumps(graph, separators=(",", ":")).encode("utf-8")


def _json(snapshot: Dict[str, Any]) -> bytes:
    """A snapshot as it leaves the process: redacted (:func:`rxbot.redact.redact_data`:
    an error message or a dead letter may name a secret), then JSON."""
    return json.dumps(redact_data(snapshot), separators=(",", ":")).encode("utf-8")


def _event(snapshot: Dict[str, Any]) -> bytes:
    return b"data: " + _json(snapshot) + b"\n\n"


def _draw(pipes: Sequence[Any]) -> Dict[str, Any]:
    """The page's picture: the graph with a zero count line under every step, so each
    node already has room for the numbers the page writes into it. Laid out once per
    distinct graph (a notebook re-running one pipe does not pay for it again)."""
    from ..render import build_graph, node_paths

    from ..layout import GraphvizUnavailable, draw

    nodes, counted = node_paths(pipes)
    source = build_graph(pipes, _ZeroReport(nodes.values())).source
    try:
        svg = draw(source, "svg").decode("utf-8")
    except GraphvizUnavailable as exc:
        svg = f'<p class="nograph">{html.escape(str(exc))}</p>'
    return {"svg": svg, "nodes": nodes, "counted": counted}


class _ZeroReport:
    """A report in which no step counted anything yet: nodes get room for the numbers."""

    live = True  # placeholder count lines, no run time in the pipes' titles

    def __init__(self, paths: Any) -> None:
        from ...engine.policy import StepStats

        self.steps = {p: StepStats(p) for p in paths}
        self.seconds = 1.0


_servers: Dict[Tuple[str, int], WatchServer] = {}
_lock = threading.Lock()


def server_for(address: Any) -> Tuple[WatchServer, bool]:
    """The process's server for ``address`` (started now if needed) and whether it is new."""
    host, port = parse_address(address)
    with _lock:
        for (h, p), server in _servers.items():
            if h == host and (port == 0 or p == port) and server.thread.is_alive():
                return server, False
        server = WatchServer(host, port)
        _servers[(host, server.port)] = server
        return server, True


def close_all() -> None:
    """Stop every live-view server of this process (at exit, and between tests)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.close()


atexit.register(close_all)

__all__ = ["WatchServer", "server_for", "close_all", "parse_address"]

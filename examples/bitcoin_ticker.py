"""databot's bitcoin ticker, offline.

databot's original polled coindesk's public price API every couple of seconds. That API
is gone (and tests must not use the internet), so this version starts rxbot's local
price server, which answers with the same JSON shape, and polls it five times.

Run: ``python examples/bitcoin_ticker.py`` — prints five USD prices, one per tick.
"""
from rxbot import BotFrame, HttpLoader, Pipe, Timer
from rxbot.demo_server import serve_in_thread


def main(delay: float = 0.5, ticks: int = 5) -> None:
    # BotFrame.run() owns this thread's event loop, so the server runs in its own thread.
    with serve_in_thread() as server:
        Pipe(
            Timer(delay=delay, max_time=ticks),
            server.price_url,
            HttpLoader(timeout=5),
            lambda r: r.json['bpi']['USD']['rate_float'],
            print,
        )
        BotFrame.run()


if __name__ == "__main__":
    main()

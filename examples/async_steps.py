"""Async steps run concurrently (32 in flight by default, set per step with Step);
a Timer in a second pipe keeps ticking meanwhile and stops when the first pipe ends."""
import asyncio

from rxbot import BotFrame, Pipe, Step, Timer


async def fetch(i):
    await asyncio.sleep(0.01)          # stands for a network call
    return {'id': i, 'size': i * 100}


def big(record):
    return record if record['size'] >= 1000 else None


results = []
work = Pipe(range(50), Step(fetch, concurrency=10), big, results.append)
Pipe(Timer(delay=0.01, until=work.finished), lambda t: None)
report = BotFrame.run()
print(len(results), 'records, largest', max(r['size'] for r in results))
print(report)

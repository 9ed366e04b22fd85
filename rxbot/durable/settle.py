"""When is a source item fully settled? Once, for resume and for dead letters.

An item is *settled* when every item derived from it has reached an end: delivered to
the pipe's end or into a sink (an Insert's row, held for the next checkpoint), dropped
by a rule (None, a Filter), failed under a policy (a dead letter), or raised. rxbot does
not tag every derived item with its source (that would cost on the hottest path of
every run); it settles items in **epochs**: the pipe's source pauses after element
``n`` and waits until the pipe is quiet — no step of the pipe has work in flight, no
gate is closed by a full step, no fused segment has work waiting. At that moment every
element below ``n`` is settled, and ``n`` is the pipe's *settled watermark*.

What happens at a watermark is the caller's: :mod:`rxbot.durable.resume` commits the
Insert rows of the epoch together with the watermark (its checkpoint) in one database
transaction, and makes the epoch's dead letters durable first
(:mod:`rxbot.durable.deadletters`).

The pause costs one drain of the pipe per epoch (the steps run below their
concurrency while the last items of the epoch finish): epochs are about a second
long (``config.checkpoint_seconds``) or ``config.checkpoint_items`` source items, so
the cost is the pipe's latency once a second (see benchmarks/bench_resume.py).
"""
from __future__ import annotations

import asyncio
from typing import Any

#: consecutive quiet looks (one loop pass apart) before the pipe counts as quiet: a
#: task that was just woken (a delivery resuming at an open gate) runs in between
QUIET_LOOKS = 3


def busy(ctx: Any, pipe: int, source: Any) -> bool:
    """Has pipe ``pipe`` of the run ``ctx`` any work in flight (besides its ``source``
    runtime, which is the one asking)?"""
    for path, rt in ctx.runtimes.items():
        if rt is source or rt.in_flight <= 0:
            continue
        if getattr(path, "pipe_index", pipe) == pipe:
            return True
    for gate in list(ctx.gates):
        if gate.blocked and not gate.halted:
            return True
    for segment in list(ctx.segments):
        idle = getattr(segment, "idle", None)
        if idle is not None and not idle():
            return True
    return False


async def settled(ctx: Any, pipe: int, source: Any) -> bool:
    """Wait until every item pipe ``pipe`` has taken from its (paused) source is settled.
    False when the run stopped meanwhile (nothing can be settled any more)."""
    quiet = 0
    delay = 0.0
    while quiet < QUIET_LOOKS:
        if ctx.stopped:
            return False
        if busy(ctx, pipe, source):
            quiet = 0
            # a short sleep, growing, rather than spinning the loop while steps work
            delay = min(0.002, delay + 0.0002)
            await asyncio.sleep(delay)
        else:
            quiet += 1
            await asyncio.sleep(0)
    return not ctx.stopped


__all__ = ["settled", "busy", "QUIET_LOOKS"]

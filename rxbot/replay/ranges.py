"""Sequence-number bookkeeping: which recorded items the next step has finished."""
from __future__ import annotations

import bisect
from typing import List, Sequence


class RangeSet:
    """A set of ints kept as sorted, disjoint half-open ranges. Items are finished
    almost in order, so a million finished items are a handful of ranges."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: List[int] = []
        self.ends: List[int] = []

    def add(self, x: int) -> None:
        ends = self.ends
        if ends and ends[-1] == x:  # the common case: the next one in order
            ends[-1] = x + 1
            return
        starts = self.starts
        i = bisect.bisect_right(starts, x)
        if i and ends[i - 1] > x:
            return  # already in
        left = i and ends[i - 1] == x
        right = i < len(starts) and starts[i] == x + 1
        if left and right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif left:
            ends[i - 1] = x + 1
        elif right:
            starts[i] = x
        else:
            starts.insert(i, x)
            ends.insert(i, x + 1)

    def ranges(self) -> List[List[int]]:
        return [[a, b] for a, b in zip(self.starts, self.ends)]


def subtract(base: Sequence[Sequence[int]], taken: RangeSet) -> List[List[int]]:
    """``base`` (sorted ranges) minus ``taken``."""
    out: List[List[int]] = []
    cuts = taken.ranges()
    j = 0
    for a, b in base:
        while j < len(cuts) and cuts[j][1] <= a:
            j += 1
        k = j
        cur = a
        while k < len(cuts) and cuts[k][0] < b:
            if cuts[k][0] > cur:
                out.append([cur, cuts[k][0]])
            cur = max(cur, cuts[k][1])
            k += 1
        if cur < b:
            out.append([cur, b])
    return out


def _count(ranges: Sequence[Sequence[int]]) -> int:
    return sum(b - a for a, b in ranges)

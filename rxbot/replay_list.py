"""``rxbot replay list``: the replay caches on disk, one line each (folder, size, date).

Kept to what any cache layout has — folders with files — so that it does not depend on
the replay package's internal file format (only on :func:`rxbot.replay.replay_root`).
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import List, Tuple


def caches(root: Path) -> List[Tuple[Path, int, int, float]]:
    """``(folder, files, bytes, last modified)`` for every folder below ``root`` that
    holds files (the root itself included), sorted by folder."""
    found = []
    if not root.is_dir():
        return []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
        if not files:
            continue
        stats = [f.stat() for f in files]
        found.append((folder, len(files), sum(s.st_size for s in stats), max(s.st_mtime for s in stats)))
    return found


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def print_caches(root: Path) -> int:
    """Print the caches under ``root``; exit status 0 (an empty list is not an error)."""
    found = caches(root)
    if not found:
        print(f"rxbot replay: no cache in {root}")
        return 0
    print(f"rxbot replay: caches in {root}")
    for folder, files, size, mtime in found:
        when = datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M:%S")
        name = "." if folder == root else str(folder.relative_to(root))
        print(f"  {name}  {files} file{'s' if files != 1 else ''}, {_size(size)}, {when}")
    return 0


__all__ = ["caches", "print_caches"]

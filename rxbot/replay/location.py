"""Where the replay caches live (next to the running script by default) and how they
are cleared."""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any, Optional

from ..config import config
from .layout import KEY_FILE, MANIFEST, _is_our_file

log = logging.getLogger("rxbot")


def _is_tool_path(path: Path) -> bool:
    """True for files of installed tools (pytest's console script, ``python -m x`` of a
    package in site-packages): the cache then goes to the working directory instead."""
    parts = set(path.parts)
    if parts & {"site-packages", "dist-packages"}:
        return True
    return path.parent.name in ("bin", "Scripts") and path.suffix != ".py"


def _main_file() -> Optional[Path]:
    main = sys.modules.get("__main__")
    name = getattr(main, "__file__", None)
    if not name:
        return None
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return None  # ``python -m package`` (e.g. ``python -m rxbot``): a tool, not a script
    path = Path(name).resolve()
    return None if _is_tool_path(path) else path


def default_root(script: Any = None) -> Path:
    """``.rxbot/replay/`` next to ``script`` or, by default, next to the running script
    (the ``__main__`` module's file); in the working directory when there is no script
    (REPL, notebooks, pytest, ``python -m rxbot``)."""
    main = Path(script).resolve() if script is not None else _main_file()
    base = main.parent if main is not None else Path.cwd()
    return base / ".rxbot" / "replay"


def replay_root(dir: Any = None) -> Path:
    """The directory holding the caches: ``dir``, else ``config.replay_dir``, else
    :func:`default_root`."""
    chosen = dir if dir is not None else config.replay_dir
    return Path(chosen).expanduser() if chosen else default_root()


def script_name() -> str:
    """The cache of each script lives in its own folder below the root."""
    main = _main_file()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", main.stem) if main is not None else "session"


def clear_cache(dir: Any = None) -> int:
    """Delete every replay cache under ``dir`` (default: ``config.replay_dir`` or the
    default location). Only rxbot's own files are removed, and then the folders they
    leave empty. Returns the number of pipe caches removed."""
    root = replay_root(dir)
    if not root.is_dir():
        return 0
    removed = 0
    candidates = [root] + [p for p in root.iterdir() if p.is_dir()]
    candidates += [q for p in candidates[1:] for q in p.iterdir() if q.is_dir()]
    for folder in sorted(candidates, key=lambda p: len(p.parts), reverse=True):
        mine = [f for f in folder.iterdir() if f.is_file() and (_is_our_file(f.name) or f.name == KEY_FILE)]
        if any(f.name == MANIFEST for f in mine):
            removed += 1
        for f in mine:
            f.unlink(missing_ok=True)
        if folder != root:
            _rmdir_if_empty(folder)
    _rmdir_if_empty(root)
    if root.parent.name == ".rxbot":
        _rmdir_if_empty(root.parent)
    log.info("rxbot replay: removed %d cache(s) under %s", removed, root)
    return removed


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass

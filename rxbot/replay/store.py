"""Where replay caches live and how their files are written, read and removed.

Layout: ``<root>/<script>/P<i>/manifest.json`` plus one data file per pipe, and, for
pickle caches only, ``<root>/<script>/replay.key``. ``<root>`` is ``config.replay_dir``,
else ``.rxbot/replay`` next to the running script (the working directory when there is
no script). Writes are atomic (temporary file, fsync, rename, fsync of the folder), so a
process killed at any moment leaves the previous cache whole. No symbolic link at or
below the root (nor ``.rxbot``) is ever followed, written through or deleted through:
finding one is a :class:`ReplayPathError`.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from typing import IO, AbstractSet, Any, List, Optional

from ..config import config

log = logging.getLogger("rxbot")

MANIFEST = "manifest.json"
KEY_FILE = "replay.key"
LOCK_FILE = "replay.lock"
#: every name rxbot writes in a cache folder (nothing else there is touched): the
#: manifest, its temporary files, data files ``<run id>.s<step>.<jsonl|pkl>`` and the
#: ``.part`` files they are recorded in
_OURS = re.compile(r"^(manifest\.json(\.[0-9a-f]{8}\.tmp)?|replay\.key(\.[0-9a-f]{8}\.tmp)?|replay\.lock"
                   r"|\d{8}T\d{6}-[0-9a-f]{8}\.s\d+\.(jsonl|msgpack|pkl)(\.part)?)$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class ReplayPathError(RuntimeError):
    """A symbolic link where rxbot keeps its replay cache (it never follows one there)."""


def is_ours(name: str) -> bool:
    return bool(_OURS.match(name))


# ---- location ---------------------------------------------------------------------------------
#: the last answer of :func:`_main_file` and what it was worked out from
_main_seen: tuple = (None, None)


def _main_file() -> Optional[Path]:
    """The running script, unless it is a tool (pytest, ``python -m package``).

    Asked at the start of every run (are dead letters durable?): the answer is kept for
    as long as ``__main__`` names the same file from the same working directory, since
    resolving the path costs a system call per folder (~15 µs, a fair part of a small
    job's run). ``rxbot run SCRIPT`` sets another ``__main__``: asked again then."""
    global _main_seen
    main = sys.modules.get("__main__")
    name = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if not name or (spec is not None and spec.name.endswith(".__main__")):
        return None
    key = (name, None if os.path.isabs(name) else os.getcwd())
    if _main_seen[0] == key:
        seen: Optional[Path] = _main_seen[1]
        return seen
    found = _script_at(name)
    _main_seen = (key, found)
    return found


def _script_at(name: str) -> Optional[Path]:
    """``__main__``'s file resolved, or None when it is a tool's launcher."""
    path = Path(name).resolve()
    if {"site-packages", "dist-packages"} & set(path.parts) or (
            path.parent.name in ("bin", "Scripts") and path.suffix != ".py"):
        return None
    return path


def default_root(script: Any = None) -> Path:
    """``.rxbot/replay/`` next to ``script`` or, by default, next to the running script;
    in the working directory when there is none (REPL, notebook, pytest, ``python -m``)."""
    main = Path(script).resolve() if script is not None else _main_file()
    return (main.parent if main is not None else Path.cwd()) / ".rxbot" / "replay"


def replay_root(dir: Any = None) -> Path:
    """The folder holding the caches: ``dir``, else ``config.replay_dir``, else the default."""
    chosen = dir if dir is not None else config.replay_dir
    return Path(chosen).expanduser() if chosen else default_root()


def script_name() -> str:
    """Each script's caches live in their own folder below the root."""
    main = _main_file()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", main.stem) if main is not None else "session"


# ---- no symbolic links ------------------------------------------------------------------------
def _chain(root: Path, path: Path) -> List[Path]:
    """``root`` (with its ``.rxbot`` parent) and every path from it down to ``path``."""
    chain = [root.parent] if root.parent.name == ".rxbot" else []
    chain.append(root)
    for part in path.relative_to(root).parts:
        chain.append(chain[-1] / part)
    return chain


def refuse_links(root: Path, path: Path) -> None:
    """Raise :class:`ReplayPathError` if ``path`` or any folder between it and ``root``
    is a symbolic link (missing paths are fine)."""
    for p in _chain(root, path):
        try:
            mode = os.lstat(p).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise ReplayPathError(
                f"rxbot replay: {p} is a symbolic link; the replay cache never follows one. Remove "
                f"it, or point config.replay_dir at a real folder")


def make_dirs(root: Path, folder: Path) -> None:
    """Create ``folder`` (mode 0700) and its parents below ``root``, refusing links."""
    refuse_links(root, folder)
    for p in _chain(root, folder):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass
    refuse_links(root, folder)  # nothing swapped in while we made them


# ---- files ------------------------------------------------------------------------------------
def open_new(path: Path) -> int:
    """A new file, never an existing one or a link: an OS-level file descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)


def open_read(path: Path) -> IO[bytes]:
    """An existing file for reading, never through a link."""
    return os.fdopen(os.open(path, os.O_RDONLY | _NOFOLLOW), "rb")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves either the old
    file or the new one, complete."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(open_new(tmp), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_ours(folder: Path, keep: AbstractSet[str] = frozenset()) -> None:
    """Delete rxbot's files in ``folder`` except ``keep`` (links are never deleted)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return
    for name in names:
        if name not in keep and is_ours(name) and not os.path.islink(folder / name):
            (folder / name).unlink(missing_ok=True)


def rmdir_empty(*folders: Path) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def load_key(root: Path, base: Path) -> bytes:
    """The HMAC key signing this script's pickle caches (``replay.key``, mode 0600),
    made on first use. A damaged key is replaced, with a warning: caches signed with it
    then fail their check and are not loaded."""
    path = base / KEY_FILE
    refuse_links(root, path)
    try:
        with open_read(path) as fh:
            key = bytes.fromhex(fh.read().decode("ascii").strip())
        if len(key) == 32:
            return key
        raise ValueError(f"{len(key)} bytes, expected 32")
    except FileNotFoundError:
        pass
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("rxbot replay: the key file %s is damaged (%s); making a new one, so the pickle "
                    "caches signed with the old key will not be replayed", path, exc)
    make_dirs(root, base)
    key = secrets.token_bytes(32)
    atomic_write(path, key.hex().encode())
    return key


# ---- one run at a time per script ------------------------------------------------------------
class CacheLock:
    """``<root>/<script>/replay.lock``, held (``flock``, released by the OS when the
    process dies, even by kill -9) while a run uses the script's caches, so two runs of
    one script never load, write or delete each other's files. The file is deleted by
    its holder on release; whoever locked a file that was deleted meanwhile tries again."""

    def __init__(self, root: Path, base: Path) -> None:
        self.root, self.path = root, base / LOCK_FILE
        self.fd: Optional[int] = None

    def acquire(self) -> Optional[str]:
        """Lock it: None, or (when another run holds it) who holds it."""
        make_dirs(self.root, self.path.parent)
        refuse_links(self.root, self.path)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
            if not _try_lock(fd):
                try:
                    holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                finally:
                    os.close(fd)
                return f"pid {holder}"
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self.fd = fd
                return None
            os.close(fd)  # its holder deleted it while we waited for it: lock the new one

    def release(self) -> None:
        """Delete the file (while still holding it), then unlock."""
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def __del__(self) -> None:  # a run that never got to its end: the OS unlocks on close
        if self.fd is not None:
            os.close(self.fd)


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting: False if another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # BlockingIOError: held elsewhere
        return False


def clear_cache(dir: Any = None) -> int:
    """Delete every replay cache under ``dir`` (default ``config.replay_dir`` or the
    default location): only rxbot's own files, then the folders they leave empty.
    Returns the number of pipe caches removed. A symbolic link anywhere in the cache is
    a :class:`ReplayPathError`, and then nothing is deleted."""
    root = replay_root(dir)
    refuse_links(root, root)
    tree = list(os.walk(root, topdown=False))  # never descends into a linked folder
    for folder, dirs, files in tree:
        for name in dirs + files:
            refuse_links(root, Path(folder) / name)
    removed = 0
    for folder, _, files in tree:
        if len(Path(folder).relative_to(root).parts) <= 2:  # <root>/<script>/P<i>: the layout
            removed += MANIFEST in files
            # a run that is using its caches keeps its lock (and so its folder)
            remove_ours(Path(folder), keep={LOCK_FILE} if LOCK_FILE in files else frozenset())
            if LOCK_FILE in files:
                lock = CacheLock(root, Path(folder))
                if lock.acquire() is None:
                    lock.release()
            rmdir_empty(Path(folder))
    if root.parent.name == ".rxbot":
        rmdir_empty(root.parent)
    log.info("rxbot replay: removed %d cache(s) under %s", removed, root)
    return removed


__all__ = ["ReplayPathError", "default_root", "replay_root", "script_name", "clear_cache", "atomic_write", "CacheLock"]

"""Atomic output: the site is rendered into a fresh directory next to `out`, then swapped in.

A failure at any point before the swap leaves the previous site untouched. On Linux the swap is one
atomic exchange (renameat2 RENAME_EXCHANGE); elsewhere it is two renames (old away, new in), and a
run killed between them is repaired by the next one, which puts the old site back first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from sae_atlas.locks import pid_alive


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover(out: Path) -> None:
    """Undo what a killed run left beside `out`: restore a site moved away and never replaced,
    and remove staging directories of runs that are no longer alive."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(rendering|old)-(\d+)$")
    leftovers = []
    for entry in out.parent.iterdir() if out.parent.exists() else ():
        m = pattern.match(entry.name)
        if m and not pid_alive(int(m[2])):
            leftovers.append((m[1], entry))
    if not (out.exists() or out.is_symlink()):
        olds = sorted((e for kind, e in leftovers if kind == "old"), key=lambda e: e.stat().st_mtime)
        if olds:
            os.replace(olds[-1], out)
            print(f"sae-atlas: restored the previous site left by an interrupted run into {out}", file=sys.stderr)
    for _, entry in leftovers:
        if entry.exists():
            _remove(entry)


@contextlib.contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it replaces `out`, on error it is removed."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    staging = out.with_name(f".{out.name}.rendering-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    for leftover in (staging, old):
        _remove(leftover)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise
    swap_in(staging, out, old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def swap_in(staging: Path, out: Path, old: Path) -> None:
    if out.is_dir() and not out.is_symlink() and _exchange(staging, out):
        _remove(staging)  # now holds the previous site
        return
    had_old = out.exists() or out.is_symlink()
    if had_old:
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if had_old:
            os.replace(old, out)
        _remove(staging)
        raise
    if had_old:
        _remove(old)


class SiteWriter:
    """Writes files under a root, creating directories once."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._dirs: set[Path] = set()
        self.files = 0
        self.bytes = 0

    def path(self, rel: str) -> Path:
        path = self.root / rel
        parent = path.parent
        if parent not in self._dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        return path

    def write(self, rel: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        with open(self.path(rel), "wb") as f:
            f.write(data)
        self.files += 1
        self.bytes += len(data)

    def copy(self, rel: str, source: Path) -> None:
        shutil.copyfile(source, self.path(rel))
        self.files += 1
        self.bytes += source.stat().st_size

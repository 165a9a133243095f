"""Atomic output: the site is rendered into a fresh directory next to `out`, then swapped in.

A failure at any point before the swap leaves the previous site untouched; the swap itself is two
renames (old away, new in) and restores the old directory if the second rename fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it replaces `out`, on error it is removed."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
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


def swap_in(staging: Path, out: Path, old: Path) -> None:
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

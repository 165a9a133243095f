"""Content-addressed, resumable store under build/cache. Keys are computed without torch.

Every entry directory is written under a temporary name, then renamed into place, so a reader
never sees half an entry. `meta.json` lists a sha256 per array file; a mismatch on read means the
entry is corrupt: it is reported and treated as missing (so it is recomputed, never rendered).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from generator.manifest import Release, SaeSpec

CACHE_FORMAT = 1
KEY_LENGTH = 24


def _sha256_file(path: Path, h: "hashlib._Hash | None" = None) -> "hashlib._Hash":
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


def file_digest(path: Path) -> str:
    return _sha256_file(path).hexdigest()


def _digest_dir(path: Path, names: list[str] | None = None) -> str:
    """Hash of the files in a directory (sorted by name; sub-dirs ignored)."""
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.is_file() and (names is None or p.name in names):
            h.update(p.name.encode() + b"\0")
            _sha256_file(p, h)
    return h.hexdigest()


def _key(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:KEY_LENGTH]


_digest_memo: dict[tuple[str, float, int], str] = {}


def _memo_digest(path: Path) -> str:
    """Digest of a file or directory, memoised per (path, mtime, size) for this process."""
    st = path.stat()
    k = (str(path), st.st_mtime, st.st_size)
    if k not in _digest_memo:
        _digest_memo[k] = _digest_dir(path) if path.is_dir() else file_digest(path)
    return _digest_memo[k]


def model_identity(release: Release) -> str:
    m = release.model
    if m.path is not None:
        return "path:" + _memo_digest(m.path)
    return "tl:" + str(m.transformer_lens)


def corpus_key(release: Release) -> str:
    c = release.corpus
    source = "file:" + _memo_digest(c.path) if c.path is not None else "dataset:" + str(c.dataset)
    return _key("corpus", CACHE_FORMAT, source, c.prompts, c.context, model_identity(release))


def sae_key(release: Release, sae: SaeSpec) -> str:
    if sae.path is not None:
        weights = "path:" + _memo_digest(sae.path)
    else:
        weights = f"sae_lens:{sae.sae_lens.release}/{sae.sae_lens.id}"  # type: ignore[union-attr]
    return _key(
        "sae",
        CACHE_FORMAT,
        model_identity(release),
        weights,
        corpus_key(release),
        sae.hook,
        dataclasses.asdict(release.compute),
    )


def write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_entry(
    final_dir: Path, meta: dict, arrays: dict[str, np.ndarray], extra_files: dict[str, bytes] | None = None
) -> None:
    """Write arrays (+ raw extra files) and meta.json (with per-file sha256) to a temp dir, then
    rename it into place."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.with_name(final_dir.name + f".writing{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = {}
    for name, array in arrays.items():
        path = tmp / f"{name}.npy"
        with open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[path.name] = file_digest(path)
    for name, data in (extra_files or {}).items():
        (tmp / name).write_bytes(data)
        files[name] = hashlib.sha256(data).hexdigest()
    write_json_atomic(tmp / "meta.json", {**meta, "format": CACHE_FORMAT, "files": files})
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp, final_dir)


@dataclass
class Entry:
    """A verified cache entry: its meta.json and its arrays (memory-mapped)."""

    path: Path
    meta: dict
    arrays: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class CorruptEntry(Exception):
    pass


def read_entry(path: Path, verify: bool = True) -> Entry | None:
    """The entry at `path`, or None if absent. Raises CorruptEntry if it fails its checks."""
    meta_path = path / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = orjson.loads(meta_path.read_bytes())
        if meta.get("format") != CACHE_FORMAT:
            raise CorruptEntry(f"{path}: cache format {meta.get('format')} (expected {CACHE_FORMAT})")
        arrays = {}
        for name, digest in meta["files"].items():
            p = path / name
            if verify and file_digest(p) != digest:
                raise CorruptEntry(f"{p}: checksum mismatch")
            if name.endswith(".npy"):
                arrays[name.removesuffix(".npy")] = np.load(p, mmap_mode="r", allow_pickle=False)
        return Entry(path, meta, arrays)
    except CorruptEntry:
        raise
    except (OSError, ValueError, KeyError, orjson.JSONDecodeError) as e:
        raise CorruptEntry(f"{path}: unreadable ({e})") from e


class CacheStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def sae_dir(self, key: str) -> Path:
        return self.root / "sae" / key

    def partial_dir(self, key: str) -> Path:
        return self.root / "sae" / f"{key}.partial"

    def corpus_dir(self, key: str) -> Path:
        return self.root / "corpus" / key

    def _read_or_drop(self, path: Path) -> Entry | None:
        try:
            return read_entry(path)
        except CorruptEntry as e:
            print(f"sae-atlas: corrupt cache entry, will recompute: {e}", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
            return None

    def sae_entry(self, key: str) -> Entry | None:
        return self._read_or_drop(self.sae_dir(key))

    def corpus(self, key: str) -> Entry | None:
        """Corpus entry: arrays["tokens"] int32 [prompts, context]; vocab via `vocab(key)`."""
        return self._read_or_drop(self.corpus_dir(key))

    def vocab(self, key: str) -> list[str]:
        return orjson.loads((self.corpus_dir(key) / "vocab.json").read_bytes())

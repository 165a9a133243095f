"""Content-addressed, resumable store under build/cache. Keys are computed without torch.

Every entry directory is written under a temporary name, then renamed into place, so a reader
never sees half an entry. `meta.json` lists a sha256 per array file; a mismatch on read means the
entry is corrupt: it is reported and treated as missing (so it is recomputed, never rendered).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from sae_atlas import stats as statistics
from sae_atlas.backends.transformer_lens import neuron_hook
from sae_atlas.locks import pid_alive
from sae_atlas.manifest import Release, SaeSpec, SetSpec

CACHE_FORMAT = 1
KEY_LENGTH = 24
# Dtypes a model can be computed in (`--dtype`); each gets its own SAE entries.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_DTYPE = "float32"


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


_digest_memo: dict[tuple[str, int, int], str] = {}


def _memo_digest(path: Path) -> str:
    """Digest of a file or directory, memoised per (path, mtime, size) for this process, so that
    a build hashes each weights file and each cache array once (compute and render both ask)."""
    st = path.stat()
    k = (str(path), st.st_mtime_ns, st.st_size)
    if k not in _digest_memo:
        _digest_memo[k] = _digest_dir(path) if path.is_dir() else file_digest(path)
    return _digest_memo[k]


def export_identity(path: Path) -> str:
    """Digest of every file under one SAE's folder of a Neuronpedia export (by relative path)."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + _memo_digest(p).encode())
    return h.hexdigest()


def model_identity(release: Release) -> str:
    m = release.model
    if release.neuronpedia_export is not None:
        return "neuronpedia:" + m.id
    if m.path is not None:
        return "path:" + _memo_digest(m.path)
    from sae_atlas.backends.transformer_lens import identity

    return "tl:" + orjson.dumps(identity(m)).decode()


def corpus_key(release: Release) -> str:
    c = release.corpus
    if release.neuronpedia_export is not None:
        # A mirror's corpus is the activation rows of all its SAEs (sae_atlas.mirror).
        return _key("corpus", CACHE_FORMAT, "neuronpedia", [(s.id, export_identity(s.path)) for s in release.saes()])
    source = "file:" + _memo_digest(c.path) if c.path is not None else "dataset:" + str(c.dataset)
    # Prompts without BOS (for SAEs trained with prepend_bos false) are another corpus.
    bos = [] if c.prepend_bos else ["no-bos"]
    return _key("corpus", CACHE_FORMAT, source, c.prompts, c.context, model_identity(release), *bos)


def sae_identity(sae: SaeSpec) -> str:
    if sae.path is not None:
        return "path:" + _memo_digest(sae.path)
    return f"sae_lens:{sae.sae_lens.release}/{sae.sae_lens.id}"  # type: ignore[union-attr]


def sae_key(release: Release, sae: SaeSpec, dtype: str = DEFAULT_DTYPE) -> str:
    """Key of an SAE's statistics; `dtype` is the model's compute dtype (results differ per dtype).
    It covers what the corpus passes depend on; the statistics computed after them are recorded
    with their versions and settings in the entry (`sae_atlas.stats.stale`)."""
    if release.neuronpedia_export is not None:
        # Imported, not computed: the same entry for every dtype; the settings shape its arrays.
        return _key("neuronpedia", CACHE_FORMAT, sae.id, corpus_key(release), dataclasses.asdict(release.compute))
    weights = sae_identity(sae)
    # An SAE on hook_mlp_out correlates with the MLP's neurons (mlp.hook_post), not the hook's own
    # dimensions: that basis is part of its key (so entries from before are recomputed); for every
    # other SAE the key is what it was.
    neurons = neuron_hook(sae.hook)
    return _key(
        "sae",
        CACHE_FORMAT,
        model_identity(release),
        weights,
        corpus_key(release),
        sae.hook,
        statistics.corpus_settings(release.compute),
        statistics.corpus_signature(),
        dtype,
        *([["neurons", neurons]] if neurons else []),
    )


def computed_dtypes(store: "CacheStore", release: Release, sae: SaeSpec) -> list[str]:
    """The dtypes this SAE has a finished entry for (to say so when another dtype was asked for)."""
    return [d for d in COMPUTE_DTYPES if (store.sae_dir(sae_key(release, sae, d)) / "meta.json").exists()]


def missing_entry_hint(store: "CacheStore", release: Release, sae: SaeSpec, dtype: str) -> str:
    """'' or, when the SAE was computed with other dtypes only, a clause naming them."""
    others = [d for d in computed_dtypes(store, release, sae) if d != dtype]
    if not others:
        return ""
    return f"; it is computed with --dtype {' and '.join(others)} (pass that --dtype, or compute with --dtype {dtype})"


def set_key(release: Release, set_spec: SetSpec) -> str:
    """Key of a Set's cross-layer neighbours: the model and every SAE's weights, in manifest order."""
    return _key(
        "set",
        CACHE_FORMAT,
        model_identity(release),
        [(s.id, sae_identity(s)) for s in set_spec.saes],
    )


def write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_stale_writes(final_dir: Path) -> None:
    """Remove temp dirs of this entry left by runs that were killed mid-write."""
    leftovers = [(p, ".writing") for p in final_dir.parent.glob(final_dir.name + ".writing*")]
    leftovers += [(p, ".replaced") for p in final_dir.parent.glob(final_dir.name + ".replaced*")]
    for entry, suffix in leftovers:
        pid = entry.name.rsplit(suffix, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def write_entry(
    final_dir: Path, meta: dict, arrays: dict[str, np.ndarray], extra_files: dict[str, bytes] | None = None
) -> None:
    """Write arrays (+ raw extra files) and meta.json (with per-file sha256) to a temp dir, then
    rename it into place."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.with_name(final_dir.name + f".writing{os.getpid()}")
    _remove_stale_writes(final_dir)
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
    # An entry being replaced is renamed aside first (a reader sees it whole or not at all).
    old = final_dir.with_name(final_dir.name + f".replaced{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(final_dir, old)
    try:
        os.replace(tmp, final_dir)
    except OSError:
        # Another process wrote the same entry first: keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final_dir / "meta.json").exists():
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


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
            if verify and _memo_digest(p) != digest:
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

    def unit_dir(self, key: str, lo: int, hi: int) -> Path:
        """The state of one work unit of an SAE, prompts [lo, hi) (`compute.units`)."""
        return self.root / "sae" / f"{key}.u{lo}-{hi}.partial"

    def remove_partials(self, key: str) -> None:
        """The SAE's checkpoint and work-unit states (once its entry is written)."""
        shutil.rmtree(self.partial_dir(key), ignore_errors=True)
        for path in (self.root / "sae").glob(f"{key}.u*-*.partial"):
            shutil.rmtree(path, ignore_errors=True)

    def corpus_dir(self, key: str) -> Path:
        return self.root / "corpus" / key

    def set_dir(self, key: str) -> Path:
        return self.root / "set" / key

    def _read_or_drop(self, path: Path) -> Entry | None:
        try:
            return read_entry(path)
        except CorruptEntry as e:
            print(f"sae-atlas: corrupt cache entry, will recompute: {e}", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
            return None

    def sae_entry(self, key: str) -> Entry | None:
        return self._read_or_drop(self.sae_dir(key))

    def set_entry(self, key: str) -> Entry | None:
        """Cross-layer neighbours of a Set: meta["sae_ids"], arrays index_<a> / cosine_<a>."""
        return self._read_or_drop(self.set_dir(key))

    def corpus(self, key: str) -> Entry | None:
        """Corpus entry: arrays["tokens"] int32 [prompts, context]; vocab via `vocab(key)`."""
        return self._read_or_drop(self.corpus_dir(key))

    def vocab(self, key: str) -> list[str]:
        return orjson.loads((self.corpus_dir(key) / "vocab.json").read_bytes())

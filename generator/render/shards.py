"""Data files of the site: classic scripts calling `AtlasData.*` with JSON made by orjson.

Per SAE: `data/summary.js` (columns) and `data/f/NNNN.js` (feature records, `shard_size` each).
Per corpus: `corpus/<key>/NNNN.js` (token strings, `prompts_per_shard` prompts each) and
`corpus/<key>/vocab.js` (the corpus's token strings by frequency rank, for the records' `tt`).
Records are built from the cache arrays a chunk of features at a time with vectorised numpy
(no Python work per token), so no SAE is ever held as one string in memory.
"""

from __future__ import annotations

import functools
import gc
import operator
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from sae_atlas import stats as statistics
from sae_atlas.render import packing
from sae_atlas.render.markup import clean_text
from sae_atlas.render.write import SiteWriter
from sae_atlas.stats.common import round_sig, vocab_covering

# Sizing (see docs/BENCHMARKS.md): a feature shard of ~16 records is ~33 KB and a prompt shard of
# one 128-token prompt ~1.1 KB, so opening a feature (its shard + up to 45 prompt shards) stays well
# under 200 KB. A feature's examples come from different prompts, so bigger prompt shards would not
# mean fewer files per feature, only more bytes.
FEATURE_SHARD_TARGET_BYTES = 48_000
PROMPT_SHARD_TARGET_BYTES = 1_000
BYTES_PER_TOKEN_STRING = 7  # quotes, comma, ~4 characters
PEAK_TOKENS = 5  # distinct peak tokens kept per feature in the summary (token lookup)
LABEL_TOKENS = 3  # positive-logit tokens joined into a feature's label
CHUNK_FEATURES = 1024  # features converted per numpy pass

_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def escape_json(data: bytes) -> bytes:
    """JSON safe to embed in a script or HTML: `<`, `>`, `&`, U+2028, U+2029 as \\u escapes.
    These bytes only ever occur inside JSON strings, where the escape means the same text."""
    for raw, escaped in _ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def to_json(obj: object) -> bytes:
    return escape_json(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY))


def js_call(function: str, *json_args: bytes) -> bytes:
    return b"AtlasData." + function.encode() + b"(" + b",".join(json_args) + b");\n"


def choose_prompts_per_shard(context: int) -> int:
    return max(1, PROMPT_SHARD_TARGET_BYTES // max(1, context * BYTES_PER_TOKEN_STRING))


def choose_shard_size(examples_per_feature: int, logits: int, neighbours: int) -> int:
    """Largest power of two whose shard of typical records stays under the target size."""
    estimate = 400 + 30 * examples_per_feature + 16 * 2 * logits + 16 * neighbours
    size = 1
    while size * 2 * estimate <= FEATURE_SHARD_TARGET_BYTES and size < 1024:
        size *= 2
    return size


def shard_name(shard: int) -> str:
    return f"{shard:04d}.js"


@functools.lru_cache(maxsize=4)
def load_vocab(corpus_dir: str) -> tuple[str, ...]:
    """Display strings of every token id, cleaned of lone surrogates and NUL."""
    raw = Path(corpus_dir, "vocab.json").read_bytes()
    try:
        vocab = orjson.loads(raw)
    except orjson.JSONDecodeError:
        import json  # the stdlib parser accepts lone surrogate escapes that orjson rejects

        vocab = json.loads(raw)
    return tuple(clean_text(str(s)) for s in vocab)


def display_vocab(corpus_dir: str, *token_arrays: np.ndarray) -> tuple[str, ...]:
    """`load_vocab` extended to the largest id in `token_arrays`, so that every id indexes it:
    ids past the tokenizer (a padded d_vocab) read `<id N>`."""
    vocab = load_vocab(corpus_dir)
    top = max((int(np.max(a)) for a in token_arrays if a.size), default=-1)
    return vocab if top < len(vocab) else tuple(vocab_covering(vocab, top))


def _open_array(directory: str, name: str) -> np.ndarray | None:
    path = Path(directory, f"{name}.npy")
    return np.load(path, mmap_mode="r", allow_pickle=False) if path.exists() else None


@dataclass(frozen=True)
class CrossNeighbours:
    """Cross-layer neighbours of one SAE: column t of `index`/`cosine` holds, for each feature, its
    closest decoder direction in SAE `targets[t]` (index -1 = none)."""

    targets: tuple[tuple[str, str], ...]  # (sae id, page href relative to this SAE's page)
    index: np.ndarray  # i32[F, T]
    cosine: np.ndarray  # f32[F, T]


@dataclass(frozen=True)
class SaeDataJob:
    """Everything one worker needs to write one SAE's data files (picklable)."""

    sae_id: str
    entry_dir: str
    corpus_dir: str
    data_dir: str  # site-relative, e.g. "gpt2-small/9-res-jb/data"
    corpus_href: str  # from the SAE page, e.g. "../../corpus/<key>/"
    shard_size: int
    prompts_per_shard: int
    context_before: int
    context_after: int
    layers: tuple[tuple[str, str], ...]  # (sae id, href) of every SAE of the Set
    explanations: dict[int, list[dict]] = field(default_factory=dict)  # index -> [{html, author, score, text}]
    cross: CrossNeighbours | None = None
    neurons: str | None = None  # the hook of the MLP neurons of an MLP-out SAE's neuron panes (entry meta "neurons")


def feature_records(
    job: SaeDataJob, arrays: dict[str, np.ndarray], vocab: tuple[str, ...], lo: int, hi: int, text: packing.TopText | None = None
) -> list[dict]:
    """Feature records for features [lo, hi) as plain lists/dicts ready for orjson: each
    statistic's columns (`sae_atlas.stats`), then the features' explanations; with `text`, the
    shard form: the top examples' text (`tt`) added and the packable columns packed (`packing`)."""
    ctx = statistics.RecordContext(vocab, job.context_before, job)
    records = statistics.records(arrays, lo, hi, ctx)
    for record in records:
        record["expl"] = [
            {"html": e["html"], "author": e["author"], "score": e["score"], **({"scores": e["scores"]} if e.get("scores") else {})}
            for e in job.explanations.get(record["i"], ())
        ]
    if text is not None:
        for record, tt in zip(records, text.texts([r.get("top") or [] for r in records])):
            if tt:
                record["tt"] = tt
            packing.pack_columns(record)
    return records


def summary_object(job: SaeDataJob, arrays: dict[str, np.ndarray], vocab: tuple[str, ...], tokens: np.ndarray) -> dict:
    d_sae = int(arrays["max_activation"].shape[0])
    umap = np.asarray(arrays["umap"], dtype=np.float64)
    span = umap.max(axis=0) - umap.min(axis=0) if d_sae else np.ones(2)
    span[~(span > 0)] = 1.0
    xy = (umap - (umap.min(axis=0) if d_sae else 0)) / span
    labels = [
        " ".join(vocab[t] for t in row[:LABEL_TOKENS] if t >= 0)
        for row in np.asarray(arrays["pos_logit_token"]).tolist()
    ]
    prompts = np.asarray(arrays["top_prompt"])
    positions = np.asarray(arrays["top_position"])
    valid = prompts >= 0
    peak_ids = np.where(valid, tokens[np.where(valid, prompts, 0), np.where(valid, positions, 0)], -1).tolist()
    peak_tokens = [[vocab[t] for t in dict.fromkeys(row) if t >= 0][:PEAK_TOKENS] for row in peak_ids]
    expl = [None] * d_sae
    for index, entries in job.explanations.items():
        if 0 <= index < d_sae and entries:
            expl[index] = entries[0]["text"]
    return {
        "sae": job.sae_id,
        "d_sae": d_sae,
        "shard_size": job.shard_size,
        "corpus": job.corpus_href,
        "prompts_per_shard": job.prompts_per_shard,
        "context_before": job.context_before,
        "context_after": job.context_after,
        "text_context": packing.TEXT_CONTEXT,
        "max": round_sig(arrays["max_activation"]),
        "density": round_sig(arrays["density"]),
        "x": round_sig(xy[:, 0]),
        "y": round_sig(xy[:, 1]),
        "cluster": np.ascontiguousarray(arrays["cluster"], dtype=np.int32),
        "label": labels,
        "expl": expl,
        "peak_tokens": peak_tokens,
        "layers": [{"sae": sae, "href": href} for sae, href in job.layers],
        **({"neurons": job.neurons} if job.neurons else {}),  # only then: other summaries stay as they were
    }


# The arrays the summary needs; the feature records use every statistic's arrays that the entry has.
SUMMARY_ARRAYS = ("max_activation", "density", "top_prompt", "top_position", "pos_logit_token", "umap", "cluster")


def write_sae_data(job: SaeDataJob, site_root: str) -> tuple[int, int]:
    """Write summary.js and every feature shard of one SAE; returns (files, bytes)."""
    # Records are millions of small acyclic lists: the cyclic GC would rescan them over and over.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _write_sae_data(job, site_root)
    finally:
        if enabled:
            gc.enable()


def _write_sae_data(job: SaeDataJob, site_root: str) -> tuple[int, int]:
    writer = SiteWriter(Path(site_root))
    arrays = {}
    for name in statistics.arrays_of(statistics.REGISTRY):
        arr = _open_array(job.entry_dir, name)
        if arr is not None:
            arrays[name] = arr
    for name in SUMMARY_ARRAYS:
        if name not in arrays:
            raise FileNotFoundError(f"{job.sae_id}: cache entry lacks {name}.npy")
    tokens = np.load(Path(job.corpus_dir, "tokens.npy"), mmap_mode="r", allow_pickle=False)
    vocab = display_vocab(job.corpus_dir, tokens, *(arrays[n] for n in statistics.TOKEN_ARRAYS if n in arrays))
    d_sae = int(arrays["max_activation"].shape[0])

    summary = summary_object(job, arrays, vocab, tokens)
    writer.write(posixpath.join(job.data_dir, "summary.js"), js_call("summary", to_json(summary)))
    del summary

    size = job.shard_size
    chunk = max(size, CHUNK_FEATURES // size * size)
    text = packing.TopText(job.corpus_dir)
    for lo in range(0, d_sae, chunk):
        hi = min(d_sae, lo + chunk)
        records = feature_records(job, arrays, vocab, lo, hi, text)
        for start in range(lo, hi, size):
            shard = start // size
            body = to_json(records[start - lo : start - lo + size])
            writer.write(posixpath.join(job.data_dir, "f", shard_name(shard)), js_call("features", str(shard).encode(), body))
    return writer.files, writer.bytes


def write_corpus(corpus_dir: str, site_dir: str, prompts_per_shard: int, site_root: str) -> tuple[int, int]:
    """Token strings of every prompt, `prompts_per_shard` prompts per file, and `vocab.js`: the
    strings of the tokens the corpus has, by frequency rank (`packing.corpus_ranking`). A mirror's
    prompts (one per activation row, padded with id 0, the empty string) end at their row's last
    token."""
    writer = SiteWriter(Path(site_root))
    tokens = np.load(Path(corpus_dir, "tokens.npy"), mmap_mode="r", allow_pickle=False)
    encoded = [to_json(s) for s in display_vocab(corpus_dir, tokens)]
    order, _, _ = packing.corpus_ranking(corpus_dir)
    ranked = b"[" + b",".join(encoded[t] for t in order.tolist()) + b"]"
    writer.write(posixpath.join(site_dir, "vocab.js"), js_call("vocab", ranked))
    padded = orjson.loads(Path(corpus_dir, "meta.json").read_bytes()).get("source") == "neuronpedia"
    n_prompts = tokens.shape[0]
    lookup = operator.itemgetter
    for shard, lo in enumerate(range(0, n_prompts, prompts_per_shard)):
        rows = np.asarray(tokens[lo : lo + prompts_per_shard]).tolist()
        if padded:
            rows = [row[: len(row) - next((n for n, t in enumerate(reversed(row)) if t != 0), len(row))] for row in rows]
        body = b"[" + b",".join(b"[" + b",".join(_pick(lookup, row, encoded)) + b"]" for row in rows) + b"]"
        writer.write(posixpath.join(site_dir, shard_name(shard)), js_call("prompts", str(shard).encode(), body))
    return writer.files, writer.bytes


def _pick(lookup, row: list[int], encoded: list[bytes]) -> tuple[bytes, ...]:
    if not row:
        return ()
    picked = lookup(*row)(encoded)
    return picked if isinstance(picked, tuple) else (picked,)

"""Site size and render speed on a synthetic release (no model, no torch).

Writes a cache in the exact cache format with random but plausible statistics, renders it with
`render_site`, and prints total size, largest file, file count, bytes per feature, render time,
features/s, and the transfer for opening one feature (its shard + the prompt shards of its examples).

    python bench/synthetic_release.py            # full size: 12 SAEs x 24,576 features
    python bench/synthetic_release.py --small    # 2 SAEs x 2,048 features
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_atlas import stats as statistics  # noqa: E402
from sae_atlas.cache import CacheStore, corpus_key, sae_key, set_key, write_entry  # noqa: E402
from sae_atlas.manifest import ComputeSettings, CorpusSpec, ModelSpec, Release, SaeLensRef, SaeSpec, SetSpec  # noqa: E402

HOSTILE_TOKENS = ("</script><script>alert(1)</script>", "<b>", "&amp;", "\u2028", "\u2029", "\ud800", "\x00", '"\\')


def synthetic_vocab(size: int, rng: np.random.Generator) -> list[str]:
    """Token display strings with GPT-2-like lengths: mostly 2-8 characters, half with a leading space."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzetaoinshrdlu", dtype="S1")
    lengths = np.clip(rng.poisson(4.0, size) + 1, 1, 14)
    spaced = rng.random(size) < 0.5
    flat = letters[rng.integers(0, len(letters), int(lengths.sum()))].tobytes().decode()
    vocab, at = [], 0
    for n, s in zip(lengths.tolist(), spaced.tolist()):
        vocab.append((" " if s else "") + flat[at : at + n])
        at += n
    for i, token in enumerate(HOSTILE_TOKENS):
        vocab[1 + i] = token
    return vocab


def synthetic_release(
    n_saes: int, d_sae: int, prompts: int, context: int, vocab_size: int, settings: ComputeSettings | None = None,
    release_id: str = "synthetic", model_id: str = "gpt2-small", set_id: str = "res-syn",
    description: str = "Synthetic statistics for benchmarking the render stage.",
) -> Release:
    settings = settings or ComputeSettings()
    hook = "blocks.{layer}.hook_resid_pre"
    saes = tuple(
        SaeSpec(model_id, set_id, layer, hook.format(layer=layer), sae_lens=SaeLensRef(f"{model_id}-{set_id}", hook.format(layer=layer)))
        for layer in range(n_saes)
    )
    return Release(
        id=release_id,
        title="Synthetic release",
        model=ModelSpec(model_id, transformer_lens=model_id),
        corpus=CorpusSpec(dataset=f"synthetic/v{vocab_size}", prompts=prompts, context=context),
        sets=(SetSpec(set_id, "Residual stream (synthetic)", hook, saes, description=description),),
        source=Path(__file__).resolve(),
        description=description,
        authors=("Bench",),
        links=(("code", "https://example.org/sae-atlas"),),
        compute=settings,
    )


def write_corpus(store: CacheStore, release: Release, vocab_size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    c = release.corpus
    # Zipf-like token frequencies, as in real text.
    ranks = np.minimum(rng.zipf(1.2, size=(c.prompts, c.context)), vocab_size - 1)
    tokens = ((ranks * 7919) % vocab_size).astype(np.int32)
    tokens[0, : len(HOSTILE_TOKENS)] = np.arange(1, 1 + len(HOSTILE_TOKENS))[: c.context]  # every hostile string is used
    vocab = synthetic_vocab(vocab_size, rng)
    # json (ASCII-escaped) keeps lone surrogates representable, as a tokenizer's vocab may contain them.
    write_entry(
        store.corpus_dir(corpus_key(release)),
        {"prompts": c.prompts, "context": c.context, "vocab_size": vocab_size},
        {"tokens": tokens},
        {"vocab.json": json.dumps(vocab).encode()},
    )


def write_sae(store: CacheStore, release: Release, spec: SaeSpec, d_sae: int, vocab_size: int, seed: int) -> None:
    """An SAE entry as compute writes it, with every statistic's arrays from its `fake`."""
    rng = np.random.default_rng(seed)
    s, c = release.compute, release.corpus
    n_tokens = c.prompts * c.context
    ctx = statistics.FakeContext(rng, d_sae, s, c.prompts, c.context, vocab_size, sae_meta={"hook": spec.hook})
    arrays = statistics.fake_arrays(ctx)
    density, dead = arrays["density"], arrays["nonzero_count"] == 0
    meta = {
        "sae_id": spec.id,
        "release": release.id,
        "model": spec.model_id,
        "set": spec.set_id,
        "layer": spec.layer,
        "hook": spec.hook,
        "hook_out": spec.hook,
        "architecture": "standard",
        "d_in": 768,
        "d_sae": d_sae,
        "d_out": 768,
        "dtype": "float32",
        "n_tokens": n_tokens,
        "n_prompts": c.prompts,
        "context": c.context,
        "corpus_key": corpus_key(release),
        "settings": dataclasses.asdict(s),
        "map": "umap",
        "stats": {
            "l0": float(density.sum()),
            "dead": int(dead.sum()),
            "dense": int((density > 0.1).sum()),
            "explained_variance": float(rng.uniform(0.6, 0.95)),
            "mse": float(rng.uniform(0.01, 0.2)),
            "ce_loss_clean": 3.3,
            "ce_loss_spliced": 3.4,
            "ce_loss_delta": 0.1,
        },
    }
    meta["statistics"] = statistics.signatures(statistics.wanted(meta, s), s)
    write_entry(store.sae_dir(sae_key(release, spec)), meta, arrays)


def write_set(store: CacheStore, release: Release, set_spec: SetSpec, d_sae: int, seed: int, per_sae: int = 3) -> None:
    """Cross-layer neighbours as compute writes them: index_a / cosine_a [F, n_saes, per_sae]."""
    rng = np.random.default_rng(seed)
    n = len(set_spec.saes)
    arrays = {}
    for a in range(n):
        index = rng.integers(0, d_sae, (d_sae, n, per_sae)).astype(np.int32)
        cosine = np.sort(rng.uniform(0.1, 0.9, (d_sae, n, per_sae)), axis=2)[:, :, ::-1].astype(np.float32)
        index[:, a], cosine[:, a] = -1, 0
        arrays[f"index_{a}"], arrays[f"cosine_{a}"] = index, cosine
    meta = {"release": release.id, "model": release.model.id, "set": set_spec.id, "sae_ids": [s.id for s in set_spec.saes]}
    write_entry(store.set_dir(set_key(release, set_spec)), meta, arrays)


def build_synthetic_cache(cache: Path, release: Release, d_sae: int, vocab_size: int, seed: int = 0) -> None:
    store = CacheStore(cache)
    write_corpus(store, release, vocab_size, seed)
    for i, spec in enumerate(release.saes()):
        write_sae(store, release, spec, d_sae, vocab_size, seed + 1 + i)
    for j, set_spec in enumerate(release.sets):
        write_set(store, release, set_spec, d_sae, seed + 1000 + j)


def site_numbers(site: Path, sample: int = 200, seed: int = 0) -> dict:
    """Size numbers of a rendered site, and the transfer for opening features picked at random."""
    import orjson

    sizes = {p: p.stat().st_size for p in site.rglob("*") if p.is_file()}
    largest = max(sizes, key=sizes.get)
    transfers = []
    rng = np.random.default_rng(seed)
    for summary_path in sorted(site.glob("*/*/data/summary.js")):
        summary = orjson.loads(_payload(summary_path.read_bytes()))
        page_dir = summary_path.parent.parent
        corpus_dir = (page_dir / summary["corpus"]).resolve()
        for index in rng.integers(0, summary["d_sae"], max(1, sample // 12)).tolist():
            shard = index // summary["shard_size"]
            shard_path = summary_path.parent / "f" / f"{shard:04d}.js"
            records = orjson.loads(_payload(shard_path.read_bytes()).split(b",", 1)[1])
            record = next(r for r in records if r["i"] == index)
            examples = record["top"] + [e for group in record["intervals"] for e in group]
            prompt_shards = {e[0] // summary["prompts_per_shard"] for e in examples}
            transfers.append(
                shard_path.stat().st_size + sum((corpus_dir / f"{p:04d}.js").stat().st_size for p in prompt_shards)
            )
    return {
        "total_bytes": sum(sizes.values()),
        "files": len(sizes),
        "largest_file": largest.relative_to(site).as_posix(),
        "largest_bytes": sizes[largest],
        "open_feature_median": float(np.median(transfers)) if transfers else 0.0,
        "open_feature_max": max(transfers) if transfers else 0,
    }


def record_breakdown(site: Path, sample: int = 400, seed: int = 0) -> list[tuple[str, float, float]]:
    """Where the feature shards' bytes go: (field, bytes per record, MB over all shards) for each key of
    the records of `sample` shards picked at random, and for the examples (top and intervals) as a
    whole, scaled to the shards' total size. A key's bytes include its name and punctuation."""
    import collections

    import orjson

    shards = sorted(site.glob("*/*/data/f/*.js"))
    total = sum(p.stat().st_size for p in shards)
    picked = np.random.default_rng(seed).choice(len(shards), min(sample, len(shards)), replace=False)
    fields: collections.Counter = collections.Counter()
    size = n_records = 0
    for k in picked.tolist():
        raw = shards[k].read_bytes()
        size += len(raw)
        for record in orjson.loads(_payload(raw).split(b",", 1)[1]):
            n_records += 1
            for key, value in record.items():
                fields[key] += len(orjson.dumps(value)) + len(key) + 4
            examples = record["top"] + [e for group in record["intervals"] for e in group]
            fields["(examples)"] += sum(len(orjson.dumps(e)) + 1 for e in examples)
            fields["(example count)"] += len(examples)
    scale = total / max(1, size)
    return [(key, v / max(1, n_records), v * scale / 1e6) for key, v in fields.most_common()]


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _payload(script: bytes) -> bytes:
    """The JSON arguments of an `AtlasData.x(...);` script."""
    return script[script.index(b"(") + 1 : script.rindex(b")")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="2 SAEs x 2,048 features, 2,048 prompts")
    p.add_argument("--work", type=Path, default=Path("build/bench-site"), help="cache and site go here")
    p.add_argument("--keep", action="store_true", help="reuse an existing synthetic cache")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--loss-effects", action="store_true", help="with loss effects (off by default on a CPU)")
    args = p.parse_args(argv)
    n_saes, d_sae, prompts = (2, 2048, 2048) if args.small else (12, 24576, 24576)
    context, vocab_size = 128, 50257
    settings = ComputeSettings(loss_effects=True) if args.loss_effects else None
    release = synthetic_release(n_saes, d_sae, prompts, context, vocab_size, settings=settings)
    cache, out = args.work / "cache", args.work / "site"
    if not args.keep and cache.exists():
        shutil.rmtree(cache)
    t0 = time.perf_counter()
    if not (args.keep and cache.exists()):
        build_synthetic_cache(cache, release, d_sae, vocab_size)
    t_cache = time.perf_counter()
    from sae_atlas.render import render_site

    # Removing a previous 1 GB site is timed apart: on disks mounted with online discard it alone
    # can take a minute; render_site does the same removal after its swap.
    t_rm = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    removal_s = time.perf_counter() - t_rm
    t1 = time.perf_counter()
    cpu0 = _cpu_seconds()
    render_site([release], cache=cache, out=out, quiet=True, workers=args.workers)
    t2 = time.perf_counter()
    cpu = _cpu_seconds() - cpu0
    n = site_numbers(out)
    features = n_saes * d_sae
    render_s = t2 - t1
    print(f"synthetic release: {n_saes} SAEs x {d_sae:,} features, {prompts:,} prompts x {context} tokens, "
          f"vocab {vocab_size:,}, {os.cpu_count()} CPU(s)")
    print(f"cache written in     {t_cache - t0:8.1f} s")
    print(f"render time          {render_s:8.1f} s  ({features / render_s:,.0f} features/s), {cpu:.1f} CPU-s")
    print(f"old site removed in  {removal_s:8.1f} s  (before the render; not counted above)")
    print(f"total site size      {n['total_bytes'] / 1e6:8.1f} MB in {n['files']:,} files")
    print(f"bytes per feature    {n['total_bytes'] / features:8.0f}")
    print(f"largest file         {n['largest_bytes'] / 1e6:8.2f} MB  ({n['largest_file']})")
    print(f"open one feature     {n['open_feature_median'] / 1e3:8.1f} KB median, {n['open_feature_max'] / 1e3:.1f} KB max")
    print("feature shards by record field (400 sampled shards): bytes per record, MB in all shards")
    for key, per_record, mb in record_breakdown(out):
        print(f"   {key:16s} {per_record:8.1f}  {mb:8.1f} MB" if key != "(example count)" else f"   {key:16s} {per_record:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

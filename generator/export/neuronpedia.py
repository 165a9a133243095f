"""`sae-atlas export neuronpedia`: every SAE as the files Neuronpedia's admin import reads.

Per SAE, `{modelId}/{sourceId}/` (sourceId = `{layer}-{set}`) holds `release.jsonl`, `model.jsonl`,
`sourceset.jsonl`, `source.jsonl` (one row each), `features/batch-N.jsonl.gz` (its `Neuron` rows),
`activations/batch-N.jsonl.gz` (`Activation` rows: the top examples, then the interval samples),
`explanations/batch-N.jsonl.gz` where the release has explanations, and `skipped_indexes.json`
(the features that never fire, which get no rows). Batch N covers features
[N * batch_size, (N + 1) * batch_size). Column names and types are those of Neuronpedia's prisma
schema (apps/webapp/prisma/schema.prisma); the importer takes a file's columns from its first line,
so every line of a file has the same keys. Rows are built from the `sae-atlas dump` records
(exact cache values); ids are derived from the row's feature, so two exports are byte-identical.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import posixpath
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from sae_atlas.cache import DEFAULT_DTYPE, Entry, read_entry
from sae_atlas.errors import AtlasError
from sae_atlas.export import Task, run_tasks
from sae_atlas.manifest import Release
from sae_atlas.render.write import SiteWriter, atomic_directory

# The bot user every Neuronpedia instance seeds as the creator of imported data
# (apps/webapp/prisma/seed.ts; also the default of DEFAULT_CREATOR_USER_ID in apps/webapp/lib/env.ts).
CREATOR_ID = "clkht01d40000jv08hvalcvly"
# Features per batch file, as Neuronpedia's own exports (utils/neuronpedia-utils/.../export-data.py).
BATCH_FEATURES = 1024
GZIP_LEVEL = 5  # as Neuronpedia's exporters
_ID_CHARACTERS = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class ExportReport:
    out: Path
    saes: int
    features: int
    skipped: int
    files: int
    bytes: int


def model_id(release: Release) -> str:
    """Neuronpedia's model id: the TransformerLens model name, or the manifest's model id for a
    local model directory."""
    name = release.model.transformer_lens or release.model.id
    if not _ID_CHARACTERS.match(name):
        raise AtlasError(
            f"model {name!r} of release {release.id} cannot be a Neuronpedia model id (a directory name); "
            "expected letters, digits, '.', '_' and '-' only, e.g. TransformerLens's short name gpt2-small"
        )
    return name


def source_id(layer: int, set_id: str) -> str:
    return f"{layer}-{set_id}"


def _row_id(*parts: object) -> str:
    """A 25-character id in the shape of Neuronpedia's cuids, fixed by what the row is."""
    return "c" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24]


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


# --- one batch of features ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchJob:
    """Everything one worker needs to write one batch of one SAE (picklable)."""

    directory: str  # "{modelId}/{sourceId}"
    batch: int
    lo: int
    hi: int
    model_id: str
    source_id: str
    set_name: str
    entry_dir: str
    corpus_dir: str
    # (index, plain text, author, score) of features in [lo, hi)
    explanations: tuple[tuple[int, str, str | None, float | None], ...] = ()


def interval_fractions(histogram: np.ndarray, intervals: int, n_tokens: int) -> list[float]:
    """Fraction of all corpus tokens whose activation falls in each interval (i * max / I, (i + 1)
    * max / I], from the histogram of non-zero activations ([0, max] in B equal bins): each bin
    counted in the intervals it overlaps, in proportion (exact when B is a multiple of I)."""
    counts = np.asarray(histogram, dtype=np.float64)
    bins = len(counts)
    out = []
    for i in range(intervals):
        lo, hi = i / intervals, (i + 1) / intervals
        total = 0.0
        for b in range(bins):
            overlap = min(hi, (b + 1) / bins) - max(lo, b / bins)
            if overlap > 0:
                total += counts[b] * min(1.0, overlap * bins)
        out.append(float(total / n_tokens) if n_tokens else 0.0)
    return out


def _activation_row(job: BatchJob, index: int, slot: str, example: dict, start: int, bins: tuple[float, float, float]) -> dict:
    """One example as an `Activation` row: its window (clipped to the prompt, `start` its first
    token's position) with the example's own token at `qualifyingTokenIndex`."""
    values = [float(v) for v in example["activations"]]
    qualifying = example["position"] - start
    if 0 <= qualifying < len(values):
        values[qualifying] = float(example["activation"])  # the window is f16; the peak is exact
    peak = int(np.argmax(values)) if values else 0
    bin_min, bin_max, bin_contains = bins
    dfa = [float(v) for v in example.get("dfa") or ()]  # top examples of attention SAEs: to the peak
    return {
        "id": _row_id(job.model_id, job.source_id, index, slot),
        "modelId": job.model_id,
        "layer": job.source_id,
        "index": str(index),
        "creatorId": CREATOR_ID,
        "dataIndex": str(example["prompt"]),
        "tokens": example["token_strings"],
        "values": values,
        "maxValue": values[peak] if values else 0.0,
        "maxValueTokenIndex": peak,
        "minValue": min(values) if values else 0.0,
        "qualifyingTokenIndex": qualifying,
        "dfaValues": dfa,
        "dfaTargetIndex": qualifying if dfa else None,
        "dfaMaxValue": max(dfa) if dfa else None,
        "binMin": bin_min,
        "binMax": bin_max,
        "binContains": bin_contains,
    }


def _pairs(record: dict, key: str, a: str, b: str) -> tuple[list, list]:
    items = record.get(key) or []
    return [x[a] for x in items], [x[b] for x in items]


def _centres(histogram: dict | None) -> tuple[list, list]:
    """(bar heights, bar centres) of a dump histogram {"edges", "counts"}; empty when it counts nothing."""
    if not histogram or not any(histogram["counts"]):
        return [], []
    edges = histogram["edges"]
    return [int(c) for c in histogram["counts"]], [(edges[b] + edges[b + 1]) / 2 for b in range(len(edges) - 1)]


def neuron_row(job: BatchJob, record: dict) -> dict:
    """The `Neuron` row of a dump record."""
    index = record["index"]
    pos_str, pos_values = _pairs(record, "positive_logits", "token_string", "value")
    neg_str, neg_values = _pairs(record, "negative_logits", "token_string", "value")
    hist_heights, hist_values = _centres(record.get("histogram"))
    logit_heights, logit_values = _centres(record.get("logit_histogram"))
    cos_index, cos_value = _pairs(record, "neighbours", "index", "cosine")
    al = record.get("aligned_neurons") or []
    cn_index, cn_r = _pairs(record, "correlated_neurons", "index", "r")
    cf_index, cf_r = _pairs(record, "correlated_features", "index", "r")
    umap = record.get("umap") or {}
    density = float(record["density"])
    return {
        "modelId": job.model_id,
        "layer": job.source_id,
        "index": str(index),
        "sourceSetName": job.set_name,
        "creatorId": CREATOR_ID,
        "maxActApprox": float(record["max_activation"]),
        "frac_nonzero": density,
        "pos_str": pos_str,
        "pos_values": pos_values,
        "neg_str": neg_str,
        "neg_values": neg_values,
        "freq_hist_data_bar_heights": hist_heights,
        "freq_hist_data_bar_values": hist_values,
        "logits_hist_data_bar_heights": logit_heights,
        "logits_hist_data_bar_values": logit_values,
        "topkCosSimIndices": cos_index,
        "topkCosSimValues": cos_value,
        "neuron_alignment_indices": [x["index"] for x in al],
        "neuron_alignment_values": [x["value"] for x in al],
        "neuron_alignment_l1": [x["l1_share"] for x in al],
        "correlated_neurons_indices": cn_index,
        "correlated_neurons_pearson": cn_r,
        "correlated_features_indices": cf_index,
        "correlated_features_pearson": cf_r,
        "umap_x": umap.get("x"),
        "umap_y": umap.get("y"),
        "umap_cluster": umap.get("cluster"),
        "umap_log_feature_sparsity": math.log10(density) if density > 0 else None,
    }


def activation_rows(job: BatchJob, record: dict, fractions: list[float], context_before: int) -> list[dict]:
    """The `Activation` rows of a dump record: top examples (binMin = binContains = -1, binMax =
    the feature's max), then each interval's samples with its bounds and its share of all tokens."""
    index, top = record["index"], float(record["max_activation"])

    def start(ex: dict) -> int:
        return max(0, ex["position"] - context_before)

    rows = [
        _activation_row(job, index, f"t{k}", ex, start(ex), (-1.0, top, -1.0))
        for k, ex in enumerate(record.get("top_examples") or [])
    ]
    for j, interval in enumerate(record.get("interval_examples") or []):
        bins = (float(interval["lo"]), float(interval["hi"]), fractions[j])
        rows += [_activation_row(job, index, f"i{j}.{s}", ex, start(ex), bins) for s, ex in enumerate(interval["examples"])]
    return rows


def explanation_row(job: BatchJob, index: int, n: int, explanation: tuple, neuron: dict) -> dict:
    """One explanation as an `Explanation` row: its author as the explainer's name, its score as
    `scoreV1` (what Neuronpedia's own explanations carry there; 0, its "no score", where it has none)."""
    text, author, score = explanation
    return {
        "id": _row_id(job.model_id, job.source_id, index, f"e{n}"),
        "modelId": job.model_id,
        "layer": job.source_id,
        "index": str(index),
        "description": text,
        "authorId": CREATOR_ID,
        "umap_x": neuron["umap_x"],
        "umap_y": neuron["umap_y"],
        "umap_cluster": neuron["umap_cluster"],
        "umap_log_feature_sparsity": neuron["umap_log_feature_sparsity"],
        "explanationModelName": author or None,
        "scoreV1": float(score or 0),  # Neuronpedia's default, 0, where there is no score
    }


def write_batch(job: BatchJob, root: str) -> tuple[int, int]:
    """Write the features, activations and explanations files of one batch; returns (files, bytes)."""
    from sae_atlas.export.dump import feature_record
    from sae_atlas.render.shards import load_vocab

    mapped = read_entry(Path(job.entry_dir), verify=False)  # verified when the export was planned
    # Plain ndarray views of the memory maps: the records index them element by element, which
    # np.memmap's own indexing makes ~5x slower.
    entry = Entry(mapped.path, mapped.meta, {name: np.asarray(a) for name, a in mapped.arrays.items()})
    tokens = np.asarray(np.load(Path(job.corpus_dir, "tokens.npy"), mmap_mode="r", allow_pickle=False))
    vocab = load_vocab(job.corpus_dir)
    meta = entry.meta
    before = int(meta["settings"]["context_before"])
    n_tokens = int(meta.get("n_tokens") or 0)
    live = np.asarray(entry["nonzero_count"][job.lo : job.hi]) > 0
    explanations: dict[int, list[tuple]] = {}
    for index, *explanation in job.explanations:
        explanations.setdefault(index, []).append(tuple(explanation))
    neurons, activations, described = [], [], []
    for index in range(job.lo, job.hi):
        if not live[index - job.lo]:
            continue
        record = feature_record(entry, tokens, vocab, index)
        neuron = neuron_row(job, record)
        neurons.append(neuron)
        n_intervals = len(record.get("interval_examples") or [])
        fractions = interval_fractions(entry["histogram"][index], n_intervals, n_tokens) if "histogram" in entry.arrays else [0.0] * n_intervals
        activations += activation_rows(job, record, fractions, before)
        described += [explanation_row(job, index, n, e, neuron) for n, e in enumerate(explanations.get(index, ()))]
    writer = SiteWriter(Path(root))
    name = f"batch-{job.batch}.jsonl.gz"
    for folder, rows in (("features", neurons), ("activations", activations), ("explanations", described)):
        if rows:
            writer.write(posixpath.join(job.directory, folder, name), _gzip(_jsonl(rows)))
    return writer.files, writer.bytes


def write_files(files: tuple[tuple[str, bytes], ...], root: str) -> tuple[int, int]:
    writer = SiteWriter(Path(root))
    for rel, data in files:
        writer.write(rel, data)
    return writer.files, writer.bytes


# --- the rows of an SAE's metadata ----------------------------------------------------------------


def _urls(release: Release) -> list[str]:
    return [url for _, url in release.links if url.startswith(("https://", "http://"))]


def _creator(release: Release) -> str:
    return ", ".join(release.authors) or release.id


def release_row(release: Release, first_source: str) -> dict:
    return {
        "name": release.id,
        "description": release.title,
        "descriptionShort": release.title,
        "urls": _urls(release),
        "creatorName": _creator(release),
        "creatorNameShort": _creator(release),
        "creatorId": CREATOR_ID,
        "visibility": "PUBLIC",
        "defaultSourceSetName": release.sets[0].id,
        "defaultSourceId": first_source,
    }


def model_row(release: Release) -> dict:
    from sae_atlas.sources.configs import ConfigError, read_model_config

    try:
        config = read_model_config(release.model) or {}
    except ConfigError:  # the sizes are informative only; 0 is Neuronpedia's own exporters' default
        config = {}
    name = model_id(release)
    return {
        "id": name,
        "displayNameShort": name,
        "displayName": name,
        "creatorId": CREATOR_ID,
        "tlensId": release.model.transformer_lens,
        "dimension": config.get("d_model"),
        "visibility": "PUBLIC",
        "inferenceEnabled": False,
        "instruct": name.endswith("-it"),
        "layers": int(config.get("n_layers") or 0),
        "neuronsPerLayer": int(config.get("d_mlp") or 0),
        "owner": "",
    }


def sourceset_row(release: Release, set_spec, arrays: set[str]) -> dict:
    return {
        "modelId": model_id(release),
        "name": set_spec.id,
        "creatorId": CREATOR_ID,
        "creatorName": _creator(release),
        "description": set_spec.title,
        "urls": _urls(release),
        "releaseName": release.id,
        "visibility": "PUBLIC",
        "hasDashboards": True,
        "showDfa": "top_dfa" in arrays,
        "showCorrelated": "corr_feature_index" in arrays or "corr_neuron_index" in arrays,
        "showUmap": "umap" in arrays,
    }


def source_row(release: Release, spec, meta: dict, arrays: set[str]) -> dict:
    c = release.corpus
    return {
        "id": source_id(spec.layer, spec.set_id),
        "modelId": model_id(release),
        "setName": spec.set_id,
        "creatorId": CREATOR_ID,
        "hasDashboards": True,
        "inferenceEnabled": False,
        "visibility": "PUBLIC",
        "saelensRelease": spec.sae_lens.release if spec.sae_lens is not None else None,
        "saelensSaeId": spec.sae_lens.id if spec.sae_lens is not None else None,
        "hasUmap": "umap" in arrays,
        "hasUmapLogSparsity": "umap" in arrays,
        "hasUmapClusters": "cluster" in arrays,
        "num_prompts": int(meta.get("n_prompts") or 0),
        "num_tokens_in_prompt": int(meta.get("context") or 0),
        "dataset": str(c.dataset) if c.dataset is not None else c.path.name,
        "notes": f"hook {meta.get('hook') or spec.hook}",
    }


# --- planning and writing -------------------------------------------------------------------------


def plan(releases: list[Release], cache: Path, dtype: str = DEFAULT_DTYPE, batch_size: int = BATCH_FEATURES) -> tuple[list[Task], int, int]:
    """(tasks, features exported, features skipped as dead) of every SAE of `releases`; AtlasError
    naming every SAE the cache lacks."""
    from sae_atlas.render.sitemodel import build_site_model

    if batch_size < 1:
        raise AtlasError(f"batch size {batch_size}; expected at least 1")
    site = build_site_model(releases, Path(cache), dtype)
    tasks: list[Task] = []
    n_live = n_dead = 0
    for r in site.releases:
        release = r.release
        mid = model_id(release)
        first = r.saes[0] if r.saes else None
        for s in r.sets:
            for sae in s.saes:
                spec = sae.spec
                sid = source_id(spec.layer, spec.set_id)
                directory = f"{mid}/{sid}"
                entry = read_entry(sae.entry_dir, verify=False)
                arrays = set(entry.arrays)
                nonzero = np.asarray(entry["nonzero_count"])
                dead = np.flatnonzero(nonzero == 0).tolist()
                n_dead += len(dead)
                n_live += int(nonzero.shape[0]) - len(dead)
                skipped = {"model_id": mid, "layer": str(spec.layer), "sae_set": spec.set_id, "skipped_indexes": dead}
                files = (
                    (f"{directory}/release.jsonl", _jsonl([release_row(release, source_id(first.spec.layer, first.spec.set_id))])),
                    (f"{directory}/model.jsonl", _jsonl([model_row(release)])),
                    (f"{directory}/sourceset.jsonl", _jsonl([sourceset_row(release, s.spec, arrays)])),
                    (f"{directory}/source.jsonl", _jsonl([source_row(release, spec, sae.meta, arrays)])),
                    (f"{directory}/skipped_indexes.json", orjson.dumps(skipped) + b"\n"),
                )
                tasks.append((write_files, (files,)))
                corpus_dir = str(site.corpora[sae.corpus_key].entry_dir)
                for batch, lo in enumerate(range(0, sae.d_sae, batch_size)):
                    hi = min(sae.d_sae, lo + batch_size)
                    expl = tuple(
                        (i, e["text"], e.get("author"), e.get("score"))
                        for i, entries in sae.explanations.items() if lo <= i < hi for e in entries if e["text"]
                    )
                    job = BatchJob(directory, batch, lo, hi, mid, sid, spec.set_id, str(sae.entry_dir), corpus_dir, expl)
                    tasks.append((write_batch, (job,)))
    return tasks, n_live, n_dead


def _check_replaceable(out: Path) -> None:
    """`out` is replaced as a whole: refuse a file, or a folder holding anything but a previous
    export (`MODEL/SOURCE/source.jsonl`), so that a mistyped --out loses nothing."""
    if not out.exists():
        return
    if out.is_dir() and all(
        model.is_dir() and all((source / "source.jsonl").is_file() for source in model.iterdir()) for model in out.iterdir()
    ):
        return
    raise AtlasError(
        f"{out} exists and is not a Neuronpedia export (it would be replaced); expected a new folder or a previous export"
    )


def export_neuronpedia(
    releases: list[Release],
    cache: Path,
    out: Path,
    dtype: str = DEFAULT_DTYPE,
    quiet: bool = False,
    workers: int | None = None,
    batch_size: int = BATCH_FEATURES,
) -> ExportReport:
    """Write the Neuronpedia export of every SAE of `releases` into `out` (replaced atomically; on
    failure untouched)."""
    _check_replaceable(Path(out))
    tasks, n_live, n_dead = plan(releases, cache, dtype, batch_size)
    n_saes = sum(1 for function, _ in tasks if function is write_files)
    if workers is None:
        from sae_atlas.render.site import PARALLEL_MIN_FEATURES

        workers = min(os.cpu_count() or 1, len(tasks)) if n_live >= PARALLEL_MIN_FEATURES else 1
    with atomic_directory(Path(out)) as root:
        files, size = run_tasks(tasks, root, workers, quiet, "export neuronpedia", unit="batch")
    report = ExportReport(Path(out), n_saes, n_live, n_dead, files, size)
    if not quiet:
        print(
            f"sae-atlas: exported {n_saes} SAE(s), {n_live:,} features ({n_dead:,} dead, in skipped_indexes.json), "
            f"{files:,} files ({size / 1e6:.1f} MB) for Neuronpedia into {out}",
            file=sys.stderr,
        )
    return report

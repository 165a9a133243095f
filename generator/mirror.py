"""Mirroring from Neuronpedia: its export rows -> cache entries that `render` turns into the site.

Nothing is recomputed and torch is never imported. Every row of every SAE of the release is read
and checked before anything is written, so malformed input (`path:line:col` errors) leaves the
cache as it was.

The mirror's corpus: Neuronpedia's activation rows carry token strings, not prompt ids, so each
activation row becomes its own prompt of the release's imported corpus (numbered SAE by SAE: its top
examples by feature index, then its interval samples by feature index, each in file order); the vocabulary is every
distinct token string (of the rows and of the logit tables) after the empty string, id 0, which
pads prompts shorter than the longest row.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from sae_atlas import stats as statistics
from sae_atlas.cache import CacheStore, corpus_key, sae_key, write_entry
from sae_atlas.errors import AtlasError, Problem
from sae_atlas.manifest import Release, SaeSpec
from sae_atlas.sources import neuronpedia as np_export
from sae_atlas.sources.explanations import neuronpedia_explanation

# Neuronpedia's (indices, values[, l1]) columns -> our arrays, each [F, N] (N: the longest row's list).
_PAIRED = (
    ("correlated_features", ("correlated_features_indices", "correlated_features_pearson"), ("corr_feature_index", "corr_feature_value")),
    ("correlated_neurons", ("correlated_neurons_indices", "correlated_neurons_pearson"), ("corr_neuron_index", "corr_neuron_value")),
    (
        "aligned_neurons",
        ("neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1"),
        ("aligned_index", "aligned_value", "aligned_l1"),
    ),
)


_UMAP_FIELDS = {k: np_export.FEATURE_OPTIONAL[k] for k in ("umap_x", "umap_y", "umap_cluster")}
_EXPLANATION_FIELDS = {
    **_UMAP_FIELDS, "scoreV1": np_export.NUMBER, "scoreV2": np_export.NUMBER,
    "explanationModelName": np_export.TEXT, "typeName": np_export.TEXT,
}


@dataclass
class _Sae:
    spec: SaeSpec
    source: dict
    features: dict[int, dict] = field(default_factory=dict)
    top: dict[int, list[dict]] = field(default_factory=dict)
    samples: dict[int, list[dict]] = field(default_factory=dict)
    explanations: list[dict] = field(default_factory=list)
    # (umap_x, umap_y, umap_cluster) of the explanation rows: Neuronpedia's export carries the map there.
    umap: dict[int, tuple] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


def _read_sae(spec: SaeSpec, problems: list[Problem]) -> _Sae:
    folder = Path(spec.path)  # type: ignore[arg-type]
    sae = _Sae(spec, np_export.first_row(folder / "source.jsonl", problems))
    sae.skipped = np_export.load_skipped(folder / "skipped_indexes.json", problems)
    for path in np_export.batch_files(folder / "features"):
        for line_no, line, obj in np_export.read_rows(path, problems):
            bad = np_export.check_row(obj, line, np_export.FEATURE_REQUIRED, np_export.FEATURE_OPTIONAL, "feature")
            if bad is None:
                for a, b in np_export.FEATURE_PAIRS:
                    if len(obj.get(a) or []) != len(obj.get(b) or []):
                        bad = (np_export.column(line, b), f'"{b}" has {len(obj.get(b) or [])} entries; expected as many as "{a}" ({len(obj.get(a) or [])})')
                        break
            if bad is None:
                index = int(obj["index"])
                if index in sae.features:
                    bad = (np_export.column(line, "index"), f"feature {index} appears twice; expected one row per feature")
                else:
                    sae.features[index] = obj
            if bad:
                problems.append(Problem(str(path), line_no, bad[0], bad[1]))
    for path in np_export.batch_files(folder / "activations"):
        for line_no, line, obj in np_export.read_rows(path, problems):
            bad = np_export.check_row(obj, line, np_export.ACTIVATION_REQUIRED, np_export.ACTIVATION_OPTIONAL, "activation")
            if bad is None and len(obj["tokens"]) != len(obj["values"]):
                bad = (np_export.column(line, "values"), f'"values" has {len(obj["values"])} entries; expected one per token ({len(obj["tokens"])})')
            for key in ("maxValueTokenIndex", "qualifyingTokenIndex", "dfaTargetIndex"):
                if bad is None and obj.get(key) is not None and not 0 <= obj[key] < len(obj["tokens"]):
                    bad = (np_export.column(line, key), f'"{key}" {obj[key]} is outside the {len(obj["tokens"])} tokens; expected a token index')
            if bad:
                problems.append(Problem(str(path), line_no, bad[0], bad[1]))
                continue
            # The example's own token: qualifyingTokenIndex where the row names it, else its peak.
            obj["_at"] = obj["maxValueTokenIndex"] if obj.get("qualifyingTokenIndex") is None else obj["qualifyingTokenIndex"]
            obj["_value"] = float(obj["values"][obj["_at"]]) if obj.get("qualifyingTokenIndex") is not None else obj["maxValue"]
            top = obj.get("binMin") is None or obj["binMin"] == -1
            (sae.top if top else sae.samples).setdefault(int(obj["index"]), []).append(obj)
    for path in np_export.batch_files(folder / "explanations"):
        for line_no, line, obj in np_export.read_rows(path, problems):
            bad = np_export.check_row(obj, line, {"index": np_export.INDEX, "description": np_export.TEXT}, _EXPLANATION_FIELDS, "explanation")
            if bad:
                problems.append(Problem(str(path), line_no, bad[0], bad[1]))
                continue
            if obj.get("umap_x") is not None and obj.get("umap_y") is not None:
                sae.umap.setdefault(int(obj["index"]), (obj["umap_x"], obj["umap_y"], obj.get("umap_cluster")))
            e = neuronpedia_explanation(obj)
            sae.explanations.append({"index": int(obj["index"]), "text": e.text, "author": e.author, "score": e.score, "scores": e.scores})
    return sae


class _Vocab:
    def __init__(self) -> None:
        self.strings: list[str] = [""]
        self.ids: dict[str, int] = {"": 0}

    def id(self, s: str) -> int:
        if s not in self.ids:
            self.ids[s] = len(self.strings)
            self.strings.append(s)
        return self.ids[s]


def _window(values: list, at: int, context_before: int, window: int) -> list:
    """The `window` values around token `at` (`context_before` of them before it); 0 outside the row."""
    return [values[t] if 0 <= t < len(values) else 0 for t in range(at - context_before, at - context_before + window)]


def _examples(rows_by_feature: list[list[dict]], groups: int, prompt_of: dict[int, int], context_before: int, window: int, group_of):
    """value, prompt, position, window arrays [F, groups, S] (+ W) of each feature's rows placed in
    group `group_of(feature, row)`, in the given order within a group; unused slots -1 / 0. The
    example's token is the row's `_at` (its qualifying token, else its peak), its value `_value`."""
    f = len(rows_by_feature)
    placed = [[[] for _ in range(groups)] for _ in range(f)]
    for i, rows in enumerate(rows_by_feature):
        for row in rows:
            placed[i][group_of(i, row)].append(row)
    per = max([len(g) for gs in placed for g in gs] + [1])
    value = np.zeros((f, groups, per), np.float32)
    prompt = np.full((f, groups, per), -1, np.int32)
    position = np.full((f, groups, per), -1, np.int32)
    win = np.zeros((f, groups, per, window), np.float16)
    for i, gs in enumerate(placed):
        for g, rows in enumerate(gs):
            for s, row in enumerate(rows):
                value[i, g, s], prompt[i, g, s], position[i, g, s] = row["_value"], prompt_of[id(row)], row["_at"]
                win[i, g, s] = _window(row["values"], row["_at"], context_before, window)
    return value, prompt, position, win


def _arrays(sae: _Sae, vocab: _Vocab, prompt_of: dict[int, int], release: Release) -> tuple[dict[str, np.ndarray], int]:
    s = release.compute
    cfg = sae.source.get("saelensConfig") if isinstance(sae.source.get("saelensConfig"), dict) else {}
    named = cfg.get("d_sae") if isinstance(cfg.get("d_sae"), int) else 0  # trailing dead features have no row
    d_sae = max([*sae.features, *sae.skipped, *sae.top, *sae.samples, named - 1, -1]) + 1
    feats = [sae.features.get(i, {}) for i in range(d_sae)]
    n_tokens = int(sae.source.get("num_prompts") or 0) * int(sae.source.get("num_tokens_in_prompt") or 0)
    max_act = np.array([float(r.get("maxActApprox") or 0) for r in feats], np.float32)
    density = np.array([float(r.get("frac_nonzero") or 0) for r in feats], np.float32)
    arrays: dict[str, np.ndarray] = {
        "max_activation": max_act,
        "density": density,
        "nonzero_count": np.array([max(1, round(d * n_tokens)) if d > 0 else 0 for d in density.tolist()], np.int64),
    }
    top_rows = [sorted(sae.top.get(i, []), key=lambda r: -r["_value"]) for i in range(d_sae)]
    v, p, x, w = _examples(top_rows, 1, prompt_of, s.context_before, s.window, lambda i, r: 0)
    arrays.update(top_value=v[:, 0], top_prompt=p[:, 0], top_position=x[:, 0], top_window=w[:, 0])
    if any(r.get("dfaValues") for rows in top_rows for r in rows):  # attribution to the example's token
        dfa = np.zeros(w[:, 0].shape, np.float16)
        for i, rows in enumerate(top_rows):
            for k, r in enumerate(rows):
                if r.get("dfaValues"):
                    target = r["_at"] if r.get("dfaTargetIndex") is None else r["dfaTargetIndex"]
                    dfa[i, k] = _window(r["dfaValues"], target, s.context_before, s.window)
        arrays["top_dfa"] = dfa
    if any(sae.samples.values()):
        def interval(i: int, row: dict) -> int:
            top = float(max_act[i]) or max(r["_value"] for r in sae.samples[i])
            return min(s.intervals - 1, max(0, math.ceil(row["_value"] * s.intervals / top) - 1)) if top > 0 else 0

        v, p, x, w = _examples([sae.samples.get(i, []) for i in range(d_sae)], s.intervals, prompt_of, s.context_before, s.window, interval)
        arrays.update(interval_value=v, interval_prompt=p, interval_position=x, interval_window=w)
    for sign in ("pos", "neg"):
        n = max([len(r.get(f"{sign}_str") or []) for r in feats] + [1])
        token = np.full((d_sae, n), -1, np.int32)
        value = np.zeros((d_sae, n), np.float32)
        for i, r in enumerate(feats):
            for j, (t, val) in enumerate(zip(r.get(f"{sign}_str") or [], r.get(f"{sign}_values") or [])):
                token[i, j], value[i, j] = vocab.id(t), val
        arrays[f"{sign}_logit_token"], arrays[f"{sign}_logit_value"] = token, value
    # Neuronpedia's cosine neighbours list the feature itself first; ours leave it out.
    nb = [[(j, c) for j, c in zip(r.get("topkCosSimIndices") or [], r.get("topkCosSimValues") or []) if j != i] for i, r in enumerate(feats)]
    n = max([len(row) for row in nb] + [0])
    if n:
        index = np.full((d_sae, n), -1, np.int32)
        cosine = np.zeros((d_sae, n), np.float32)
        for i, row in enumerate(nb):
            for j, (k, c) in enumerate(row):
                index[i, j], cosine[i, j] = k, c
        arrays.update(neighbour_index=index, neighbour_cosine=cosine)
    for _, sources, names in _PAIRED:
        n = max([min(len(r.get(k) or []) for k in sources) for r in feats] + [0])
        if not n:
            continue
        out = [np.full((d_sae, n), -1, np.int32)] + [np.zeros((d_sae, n), np.float32) for _ in sources[1:]]
        for i, r in enumerate(feats):
            columns = [r.get(k) or [] for k in sources]
            for j in range(min(len(c) for c in columns)):
                for a, c in zip(out, columns):
                    a[i, j] = c[j]
        arrays.update(zip(names, out))
    # The map: the feature row's UMAP columns, else its explanation row's (where the export has them).
    umap = [
        (r["umap_x"], r["umap_y"], r.get("umap_cluster")) if r.get("umap_x") is not None and r.get("umap_y") is not None
        else sae.umap.get(i, (0, 0, 0))
        for i, r in enumerate(feats)
    ]
    arrays["umap"] = np.array([[float(x), float(y)] for x, y, _ in umap], np.float32).reshape(d_sae, 2)
    arrays["cluster"] = np.array([int(c or 0) for _, _, c in umap], np.int32)
    return arrays, n_tokens


def _meta(sae: _Sae, release: Release, d_sae: int, n_tokens: int, n_prompts: int, context: int, ckey: str) -> dict:
    cfg = sae.source.get("saelensConfig") if isinstance(sae.source.get("saelensConfig"), dict) else {}
    spec = sae.spec
    meta = {
        "sae_id": spec.id, "release": release.id, "model": spec.model_id, "set": spec.set_id, "layer": spec.layer,
        "hook": str(cfg.get("hook_name") or next((r["hookName"] for r in sae.features.values() if isinstance(r.get("hookName"), str)), "")), "architecture": str(cfg.get("architecture") or ""),
        "d_in": cfg.get("d_in") if isinstance(cfg.get("d_in"), int) else None, "d_sae": d_sae, "dtype": cfg.get("dtype"),
        "n_tokens": n_tokens or None, "n_prompts": n_prompts, "context": context, "corpus_key": ckey, "map": "neuronpedia",
        "source": "neuronpedia", "settings": dataclasses.asdict(release.compute),
        "stats": {"dead": int(sum(1 for i in range(d_sae) if not sae.features.get(i, {}).get("frac_nonzero")))},
    }
    # Imported statistics are what the export holds: none is stale (the key covers the settings).
    meta["statistics"] = statistics.signatures(statistics.wanted(meta, release.compute), release.compute)
    return meta


def import_release(release: Release, cache_root: Path, quiet: bool = False) -> int:
    """Write the corpus and SAE entries of an imported release; returns how many SAEs were written
    (entries already in the cache are kept)."""
    store = CacheStore(Path(cache_root))
    ckey = corpus_key(release)
    todo = [spec for spec in release.saes() if not (store.sae_dir(sae_key(release, spec)) / "meta.json").exists()]
    if not todo and (store.corpus_dir(ckey) / "meta.json").exists():
        return 0
    problems: list[Problem] = []
    saes = []
    for n, spec in enumerate(release.saes(), 1):
        if not quiet:
            print(f"sae-atlas: reading {spec.id} ({n}/{len(release.saes())})", file=sys.stderr)
        saes.append(_read_sae(spec, problems))
    np_export.fail_if(problems)
    vocab = _Vocab()
    prompts: list[list[int]] = []
    prompt_of: dict[int, int] = {}
    for sae in saes:
        for group in (sae.top, sae.samples):
            for i in sorted(group):
                for row in group[i]:
                    prompt_of[id(row)] = len(prompts)
                    prompts.append([vocab.id(t) for t in row["tokens"]])
    built = [(sae, *_arrays(sae, vocab, prompt_of, release)) for sae in saes]
    context = max([len(p) for p in prompts] + [1])
    tokens = np.zeros((len(prompts), context), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
    write_entry(
        store.corpus_dir(ckey), {"release": release.id, "n_prompts": len(prompts), "context": context, "source": "neuronpedia"},
        {"tokens": tokens}, {"vocab.json": orjson.dumps(vocab.strings)},
    )
    for sae, arrays, n_tokens in built:
        d_sae = int(arrays["max_activation"].shape[0])
        meta = _meta(sae, release, d_sae, n_tokens, len(prompts), context, ckey)
        extra = {"explanations.json": orjson.dumps(sae.explanations)} if sae.explanations else {}
        write_entry(store.sae_dir(sae_key(release, sae.spec)), meta, arrays, extra)
    return len(built)


def import_export(folder: Path, cache_root: Path, quiet: bool = False) -> tuple[Release, int]:
    """`sae-atlas import neuronpedia DIR`: import an export with the default settings, as a manifest
    `release: MODEL-neuronpedia` with `source: {neuronpedia_export: DIR}` names it."""
    import tempfile

    from sae_atlas.manifest import load_release

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise AtlasError(f"{folder} is not a folder; expected Neuronpedia's export ({{modelId}}/{{sourceId}}/features/...)")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "mirror.yaml"
        found = np_export.find_saes(folder) if folder.is_dir() else []
        model = found[0].model_id if found else "model"
        manifest.write_text(orjson.dumps({"release": f"{model}-neuronpedia", "source": {"neuronpedia_export": str(folder)}}).decode())
        release = load_release(manifest)
    return release, import_release(release, cache_root, quiet)

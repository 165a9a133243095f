"""`sae-atlas export neuronpedia`: the files validate against Neuronpedia's schema (pinned in
tests/neuronpedia_schema.py) and carry the cache's values, checked against the cache arrays read
here, the corpus file and a brute-force TransformerLens + SAELens recomputation."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
from pathlib import Path

import numpy as np
import orjson
import pytest

from sae_atlas.cache import CacheStore, corpus_key, sae_key
from sae_atlas.errors import AtlasError
from sae_atlas.export.neuronpedia import export_neuronpedia, interval_fractions, model_id
from sae_atlas.manifest import load_content
from tests import neuronpedia_schema as schema
from tests.conftest import sae_atlas
from tests.test_compute import _corpus_tokens, _reference
from tests.fixtures import build_fixture_content

SETS = (
    ("res-st", "blocks.{layer}.hook_resid_post", "standard", (0,)),
    ("att-st", "blocks.{layer}.attn.hook_z", "standard", (1,)),
)
# 9 histogram bins over 3 intervals: each interval is whole bins, so its share of the tokens is exact.
COMPUTE = {"top_k": 4, "intervals": 3, "per_interval": 2, "histogram_bins": 9, "logits": 4, "neighbours": 3,
           "context_before": 3, "context_after": 2, "umap_neighbours": 5, "ce_prompts": 0}
D_SAE, BATCH = 48, 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from sae_atlas.compute import ComputeOptions, compute_releases

    root = tmp_path_factory.mktemp("np-export")
    content = build_fixture_content(root, n_prompts=16, context=12, d_sae=D_SAE, corpus="tokens", sets=SETS, compute=COMPUTE)
    releases = load_content(content)
    cache = root / "cache"
    compute_releases(releases, cache, ComputeOptions(device="cpu", quiet=True, pca_map=True))
    out = root / "np"
    report = export_neuronpedia(releases, cache, out, quiet=True, batch_size=BATCH)
    return releases[0], content, cache, out, report


def _lines(path: Path) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [orjson.loads(line) for line in data.split(b"\n") if line]


def _arrays(cache: Path, release, spec) -> dict:
    """The entry's arrays, loaded here from its .npy files."""
    entry = CacheStore(cache).sae_dir(sae_key(release, spec))
    return {p.stem: np.load(p) for p in entry.glob("*.npy")}


def _source(out: Path, spec) -> Path:
    return out / "tiny-2l" / f"{spec.layer}-{spec.set_id}"


def _rows(folder: Path) -> list[dict]:
    return [row for path in sorted(folder.glob("batch-*.jsonl.gz")) for row in _lines(path)]


def _shown_vocab(cache: Path, release) -> list[str]:
    """The cache's token strings as every output shows them: NUL and lone surrogates (which JSON
    cannot carry) as U+FFFD."""
    return [re.sub("[\x00\ud800-\udfff]", "\ufffd", s) for s in CacheStore(cache).vocab(corpus_key(release))]


@pytest.fixture(scope="module")
def brute(exported):
    """{SAE id: activations f32 [prompts, context, F]} recomputed with TransformerLens and SAELens."""
    return {sae_id: ref[0].numpy() for sae_id, ref in _reference(exported[0])[2].items()}


def test_every_file_validates_against_neuronpedia_schema(exported):
    release, _, _, out, report = exported
    assert report.saes == 2
    for spec in release.saes():
        source = _source(out, spec)
        for name, table in schema.FILES.items():
            path = source / name
            if name.endswith(".jsonl"):
                rows = _lines(path)
                assert len(rows) == 1, path
                assert schema.problems(table, rows) == []
                continue
            for batch in sorted(path.glob("*")):
                assert batch.name.startswith("batch-") and batch.name.endswith(".jsonl.gz")
                assert schema.problems(table, _lines(batch), BATCH) == [], batch
        source_row = _lines(source / "source.jsonl")[0]
        assert source_row["id"] == f"{spec.layer}-{spec.set_id}" and source_row["setName"] == spec.set_id
        assert _lines(source / "sourceset.jsonl")[0]["name"] == spec.set_id
        assert _lines(source / "release.jsonl")[0]["name"] == release.id
        assert _lines(source / "model.jsonl")[0]["id"] == "tiny-2l" == source_row["modelId"]


def test_feature_rows_carry_the_cache_arrays_and_the_brute_force_max(exported, brute):
    release, _, cache, out, _ = exported
    vocab = _shown_vocab(cache, release)
    for spec in release.saes():
        a = _arrays(cache, release, spec)
        acts = brute[spec.id].reshape(-1, D_SAE)
        rows = {int(r["index"]): r for r in _rows(_source(out, spec) / "features")}
        assert rows, spec.id
        for i, row in rows.items():
            assert row["index"] == str(i) and row["layer"] == f"{spec.layer}-{spec.set_id}" and row["modelId"] == "tiny-2l"
            assert row["maxActApprox"] == float(a["max_activation"][i])
            assert math.isclose(row["maxActApprox"], float(acts[:, i].max()), rel_tol=1e-5)
            assert row["frac_nonzero"] == float(a["density"][i]) == pytest.approx((acts[:, i] > 0).mean())
            assert row["pos_str"] == [vocab[t] for t in a["pos_logit_token"][i] if t >= 0]
            assert row["neg_values"] == [float(v) for t, v in zip(a["neg_logit_token"][i], a["neg_logit_value"][i]) if t >= 0]
            assert row["topkCosSimIndices"] == [int(j) for j in a["neighbour_index"][i] if j >= 0]
            assert row["freq_hist_data_bar_heights"] == a["histogram"][i].tolist()
            top = float(a["max_activation"][i])
            assert row["freq_hist_data_bar_values"] == pytest.approx([(b + 0.5) * top / 9 for b in range(9)])
            assert row["correlated_features_indices"] == [int(j) for j in a["corr_feature_index"][i] if j >= 0]
            assert row["neuron_alignment_indices"] == a["aligned_index"][i].tolist()
            assert (row["umap_x"], row["umap_y"], row["umap_cluster"]) == (float(a["umap"][i, 0]), float(a["umap"][i, 1]), int(a["cluster"][i]))
            assert row["umap_log_feature_sparsity"] == pytest.approx(math.log10(float(a["density"][i])))


def test_top_examples_are_the_corpus_tokens_around_the_cached_peak(exported):
    release, _, cache, out, _ = exported
    vocab = _shown_vocab(cache, release)
    corpus = _corpus_tokens(release)
    before = COMPUTE["context_before"]
    for spec in release.saes():
        a = _arrays(cache, release, spec)
        top_rows: dict[int, list] = {}
        for row in _rows(_source(out, spec) / "activations"):
            if row["binMin"] == -1:
                top_rows.setdefault(int(row["index"]), []).append(row)
        assert top_rows
        for i, rows in top_rows.items():
            used = [k for k in range(COMPUTE["top_k"]) if a["top_prompt"][i, k] >= 0]
            assert len(rows) == len(used)
            for k, row in zip(used, rows):
                p, q = int(a["top_prompt"][i, k]), int(a["top_position"][i, k])
                start, stop = max(0, q - before), min(corpus.shape[1], q + COMPUTE["context_after"] + 1)
                assert row["dataIndex"] == str(p)
                assert row["tokens"] == [vocab[t] for t in corpus[p, start:stop]]
                assert row["qualifyingTokenIndex"] == q - start
                assert row["values"][q - start] == float(a["top_value"][i, k])
                assert len(row["values"]) == len(row["tokens"])
                assert row["binMax"] == float(a["max_activation"][i]) and row["binContains"] == -1
                assert row["maxValue"] == max(row["values"]) == row["values"][row["maxValueTokenIndex"]]
                assert row["minValue"] == min(row["values"])
            assert rows[0]["maxValue"] == float(a["max_activation"][i])
            for k, row in zip(used, rows):  # direct feature attribution to the peak, on attention SAEs only
                p, q = int(a["top_prompt"][i, k]), int(a["top_position"][i, k])
                start = max(0, q - before)
                if "top_dfa" in a:
                    window = a["top_dfa"][i, k, start - (q - before) :][: len(row["tokens"])]
                    assert row["dfaValues"] == [float(v) for v in window] and row["dfaTargetIndex"] == q - start
                    assert row["dfaMaxValue"] == max(row["dfaValues"])
                else:
                    assert (row["dfaValues"], row["dfaTargetIndex"], row["dfaMaxValue"]) == ([], None, None)
        assert ("top_dfa" in a) == spec.hook.endswith("attn.hook_z")


def test_interval_samples_carry_their_bounds_and_the_brute_force_share_of_tokens(exported, brute):
    release, _, cache, out, _ = exported
    n_intervals = COMPUTE["intervals"]
    for spec in release.saes():
        a = _arrays(cache, release, spec)
        acts = brute[spec.id].reshape(-1, D_SAE)
        n_tokens = acts.shape[0]
        seen = 0
        for row in _rows(_source(out, spec) / "activations"):
            if row["binMin"] == -1:
                continue
            i = int(row["index"])
            top = float(a["max_activation"][i])
            j = round(row["binMin"] / top * n_intervals)
            assert row["binMin"] == pytest.approx(top * j / n_intervals) and row["binMax"] == pytest.approx(top * (j + 1) / n_intervals)
            assert row["binMin"] < row["values"][row["qualifyingTokenIndex"]] <= row["binMax"] * (1 + 1e-6)
            col = acts[:, i]
            inside = int(((col > row["binMin"]) & (col <= row["binMax"])).sum())
            assert row["binContains"] * n_tokens == pytest.approx(inside, abs=1e-6), (spec.id, i, j)
            seen += 1
        assert seen > 0


def test_dead_features_are_listed_in_skipped_indexes_and_get_no_rows(exported, brute):
    release, _, cache, out, report = exported
    n_dead = 0
    for spec in release.saes():
        a = _arrays(cache, release, spec)
        dead = np.flatnonzero(a["nonzero_count"] == 0).tolist()
        assert dead == np.flatnonzero(brute[spec.id].reshape(-1, D_SAE).max(0) <= 0).tolist()
        n_dead += len(dead)
        source = _source(out, spec)
        skipped = json.loads((source / "skipped_indexes.json").read_text())
        assert skipped == {"model_id": "tiny-2l", "layer": str(spec.layer), "sae_set": spec.set_id, "skipped_indexes": dead}
        features = [int(r["index"]) for r in _rows(source / "features")]
        assert features == [i for i in range(D_SAE) if i not in dead]
        assert {int(r["index"]) for r in _rows(source / "activations")} == set(features)
    assert report.skipped == n_dead and report.features == 2 * D_SAE - n_dead


def test_batches_split_every_batch_size_features(exported, tmp_path):
    release, _, cache, out, _ = exported
    spec = release.saes()[0]
    for folder in ("features", "activations"):
        files = sorted((_source(out, spec) / folder).glob("*.gz"))
        assert [f.name for f in files] == [f"batch-{n}.jsonl.gz" for n in range(D_SAE // BATCH)]
        for n, f in enumerate(files):
            assert {int(r["index"]) // BATCH for r in _lines(f)} == {n}
    pooled = tmp_path / "pooled"  # the batches as picklable tasks in two worker processes
    export_neuronpedia([release], cache, pooled, quiet=True, batch_size=BATCH, workers=2)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(pooled) for p in pooled.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (pooled / f).read_bytes() for f in files)
    whole = tmp_path / "whole"
    export_neuronpedia([release], cache, whole, quiet=True)
    assert [f.name for f in (_source(whole, spec) / "features").glob("*.gz")] == ["batch-0.jsonl.gz"]
    assert _rows(_source(whole, spec) / "features") == _rows(_source(out, spec) / "features")


def test_explanations_are_rows_of_their_features(exported):
    release, _, _, out, _ = exported
    spec = release.saes()[0]  # the fixture explains features 1 and 2 of the first SAE
    rows = _rows(_source(out, spec) / "explanations")
    assert [(r["index"], r["description"]) for r in rows] == [("1", "fires on animals"), ("2", "punctuation")]
    # The fixture's author and score: the explainer's name and scoreV1 (Neuronpedia's 0 where it has no score).
    assert [(r["explanationModelName"], r["scoreV1"]) for r in rows] == [("tester", 0.5), ("tester", 0.0)]
    neurons = {r["index"]: r for r in _rows(_source(out, spec) / "features")}
    assert all(r["umap_x"] == neurons[r["index"]]["umap_x"] for r in rows)
    assert len({r["id"] for r in rows}) == 2
    assert not (_source(out, release.saes()[1]) / "explanations").exists()


def test_cli_export_is_byte_identical_and_a_bad_release_is_an_error(exported, tmp_path):
    release, content, cache, out, _ = exported
    done = sae_atlas("export", "neuronpedia", "--content", content, "--cache", cache, "--out", tmp_path / "cli", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = tmp_path / "api"
    export_neuronpedia([release], cache, again, quiet=True)
    files = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert all((again / f).read_bytes() == (tmp_path / "cli" / f).read_bytes() for f in files)

    bad = sae_atlas("export", "neuronpedia", "--content", content, "--cache", cache, "--out", tmp_path / "bad", "--release", "nope", cwd=tmp_path)
    assert bad.returncode == 1
    assert "unknown release nope; known: tiny-demo" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_out_is_replaced_only_when_it_is_new_or_a_previous_export(exported, tmp_path):
    release, _, cache, out, _ = exported
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(AtlasError, match="is not a Neuronpedia export"):
        export_neuronpedia([release], cache, mine, quiet=True)
    assert (mine / "notes" / "keep.txt").read_text() == "mine"
    again = tmp_path / "again"
    export_neuronpedia([release], cache, again, quiet=True, batch_size=BATCH)
    export_neuronpedia([release], cache, again, quiet=True, batch_size=BATCH)  # a previous export is replaced
    assert _rows(_source(again, release.saes()[0]) / "features") == _rows(_source(out, release.saes()[0]) / "features")


def test_model_id_is_the_transformer_lens_name(exported):
    release = exported[0]
    named = dataclasses.replace(release, model=dataclasses.replace(release.model, transformer_lens="gpt2-small"))
    assert model_id(named) == "gpt2-small" and model_id(release) == "tiny-2l"
    slashed = dataclasses.replace(release, model=dataclasses.replace(release.model, transformer_lens="org/model"))
    with pytest.raises(AtlasError, match="cannot be a Neuronpedia model id"):
        model_id(slashed)


def test_interval_fractions_count_each_histogram_bin_in_the_intervals_it_overlaps():
    assert interval_fractions(np.array([1, 2, 3, 4]), 2, 10) == pytest.approx([0.3, 0.7])
    assert interval_fractions(np.array([3, 6, 9]), 2, 100) == pytest.approx([0.06, 0.12])
    assert interval_fractions(np.array([5]), 1, 0) == [0.0]

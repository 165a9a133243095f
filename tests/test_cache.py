"""Cache entries: atomic write, verified read, keys, and the feature record of `sae-atlas dump`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sae_atlas.cache import CacheStore, CorruptEntry, read_entry, sae_key, set_key, write_entry
from sae_atlas.export.dump import feature_record
from sae_atlas.errors import AtlasError
from sae_atlas.manifest import ComputeSettings, CorpusSpec, ModelSpec, Release, SaeSpec, SetSpec


def _release(tmp_path: Path, settings: ComputeSettings = ComputeSettings()) -> Release:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello\n")
    saes = []
    for layer in (0, 1):
        d = tmp_path / f"sae{layer}"
        d.mkdir(exist_ok=True)
        (d / "cfg.json").write_text(f'{{"layer": {layer}}}')
        saes.append(SaeSpec("m", "res", layer, f"blocks.{layer}.hook_resid_post", path=d))
    set_spec = SetSpec("res", "Residual", "blocks.{layer}.hook_resid_post", tuple(saes))
    return Release("r", "R", ModelSpec("m", path=model), CorpusSpec(path=corpus), (set_spec,), tmp_path / "r.yaml", compute=settings)


def test_entry_round_trips_and_detects_corruption(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.float32(3.5)}
    write_entry(tmp_path / "e", {"x": 1}, arrays, {"vocab.json": b'["a"]'})
    entry = read_entry(tmp_path / "e")
    assert entry.meta["x"] == 1 and set(entry.meta["files"]) == {"a.npy", "b.npy", "vocab.json"}
    np.testing.assert_array_equal(entry["a"], arrays["a"])
    assert not [p for p in tmp_path.iterdir() if p.name != "e"]  # no temporary dirs left
    (tmp_path / "e" / "vocab.json").write_bytes(b'["b"]')
    with pytest.raises(CorruptEntry, match="checksum"):
        read_entry(tmp_path / "e")
    assert read_entry(tmp_path / "missing") is None


def test_store_drops_a_corrupt_entry(tmp_path, capsys):
    store = CacheStore(tmp_path)
    write_entry(store.sae_dir("k"), {}, {"a": np.zeros(3)})
    (store.sae_dir("k") / "a.npy").write_bytes(b"garbage")
    assert store.sae_entry("k") is None
    assert "corrupt cache entry" in capsys.readouterr().err
    assert not store.sae_dir("k").exists()


def test_keys_follow_settings_and_weights(tmp_path):
    release = _release(tmp_path)
    a, b = release.saes()
    assert sae_key(release, a) != sae_key(release, b)
    other = dataclasses.replace(release, compute=ComputeSettings(top_k=5))
    assert sae_key(other, a) != sae_key(release, a)
    before_set, before_b = set_key(release, release.sets[0]), sae_key(release, b)
    key_a = sae_key(release, a)
    (tmp_path / "sae1" / "cfg.json").write_text('{"layer": 1, "changed": true}')
    from sae_atlas import cache

    cache._digest_memo.clear()
    assert set_key(release, release.sets[0]) != before_set
    assert sae_key(release, b) != before_b
    assert sae_key(release, a) == key_a


def test_an_mlp_out_saes_key_covers_its_neuron_basis_and_no_other_key_changes(tmp_path):
    """An SAE on blocks.L.hook_mlp_out correlates with the MLP's neurons (mlp.hook_post) since that
    basis replaced its hook's dimensions: its key differs from the key formula as it was before (so
    its old entries are recomputed); every other SAE's key is that formula, unchanged."""
    from sae_atlas import cache, stats

    release = _release(tmp_path)
    resid = release.saes()[0]
    mlp = dataclasses.replace(resid, set_id="mlp", hook="blocks.0.hook_mlp_out")
    mlp_in = dataclasses.replace(resid, set_id="mlp-in", hook="blocks.0.hook_mlp_in")

    def before(spec: SaeSpec) -> str:  # sae_key's parts, written out as they were
        return cache._key(
            "sae", cache.CACHE_FORMAT, cache.model_identity(release), cache.sae_identity(spec), cache.corpus_key(release),
            spec.hook, stats.corpus_settings(release.compute), stats.corpus_signature(), cache.DEFAULT_DTYPE,
        )

    assert sae_key(release, resid) == before(resid)
    assert sae_key(release, mlp_in) == before(mlp_in)
    assert sae_key(release, mlp) != before(mlp)
    assert sae_key(release, mlp) != sae_key(release, dataclasses.replace(mlp, hook="blocks.1.hook_mlp_out"))


def _fake_entry(tmp_path: Path) -> tuple:
    """A one-feature entry with a top example at the start of a prompt (window clipped on the left)."""
    k, i, s, w, before = 2, 2, 1, 5, 2
    settings = {"context_before": before, "context_after": 2, "intervals": i}
    window = np.array([0, 0, 1.5, 0.25, 0], np.float16)
    arrays = {
        "max_activation": np.array([1.5], np.float32),
        "nonzero_count": np.array([2]),
        "density": np.array([0.25], np.float32),
        "top_value": np.array([[1.5, 0]], np.float32),
        "top_prompt": np.array([[1, -1]], np.int32),
        "top_position": np.array([[0, -1]], np.int32),
        "top_window": np.stack([window, np.zeros(w, np.float16)])[None],
        "interval_value": np.array([[[0.25], [1.5]]], np.float32),
        "interval_prompt": np.array([[[1], [1]]], np.int32),
        "interval_position": np.array([[[1], [0]]], np.int32),
        "interval_window": np.array([[[[0, 1.5, 0.25, 0, 0]], [window]]], np.float16),
        "histogram": np.array([[1, 1]]),
        "pos_logit_token": np.array([[2, -1]], np.int32),
        "pos_logit_value": np.array([[0.5, 0]], np.float32),
        "neg_logit_token": np.array([[0, 1]], np.int32),
        "neg_logit_value": np.array([[-0.5, -0.1]], np.float32),
        "neighbour_index": np.array([[-1]], np.int32),
        "neighbour_cosine": np.array([[0]], np.float32),
        "umap": np.array([[0.5, -1]], np.float32),
        "cluster": np.array([0], np.int32),
    }
    write_entry(tmp_path / "e", {"sae_id": "m@0-res", "d_sae": 1, "settings": settings}, arrays)
    tokens = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.int32)
    return read_entry(tmp_path / "e"), tokens, ["<s>", "a", "b", "c"]


def test_feature_record_clips_windows_to_the_prompt(tmp_path):
    entry, tokens, vocab = _fake_entry(tmp_path)
    record = feature_record(entry, tokens, vocab, 0)
    assert record["top_examples"] == [
        {"prompt": 1, "position": 0, "activation": 1.5, "tokens": [3, 2, 1], "token_strings": ["c", "b", "a"], "activations": [1.5, 0.25, 0.0]}
    ]
    first, second = record["interval_examples"]
    assert (first["lo"], first["hi"], second["hi"]) == (0.0, 0.75, 1.5)
    assert first["examples"][0]["tokens"] == [3, 2, 1, 0] and first["examples"][0]["activations"] == [1.5, 0.25, 0.0, 0.0]
    assert record["histogram"] == {"edges": [0.0, 0.75, 1.5], "counts": [1, 1]}
    assert record["positive_logits"] == [{"token": 2, "token_string": "b", "value": 0.5}]
    assert [x["token_string"] for x in record["negative_logits"]] == ["<s>", "a"]
    assert record["neighbours"] == [] and record["umap"] == {"x": 0.5, "y": -1.0, "cluster": 0}
    with pytest.raises(AtlasError, match="out of range"):
        feature_record(entry, tokens, vocab, 1)


def test_dump_rejects_malformed_and_unknown_ids(tmp_path):
    from sae_atlas.export.dump import dump_feature

    release = _release(tmp_path)
    with pytest.raises(AtlasError, match="not a feature id"):
        dump_feature([release], tmp_path / "cache", "m@0-res")
    with pytest.raises(AtlasError, match="unknown SAE m@7-res; known: m@0-res, m@1-res"):
        dump_feature([release], tmp_path / "cache", "m@7-res:1")
    with pytest.raises(AtlasError, match="not computed"):
        dump_feature([release], tmp_path / "cache", "m@1-res:1")

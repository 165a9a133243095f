"""The per-example statistics end to end: the engine's `top_dfa` and `top_loss_effect` of a fixture
release against brute force (tests/brute.py: attention-weighted values from run_with_cache, one
ablation forward per example with run_with_hooks), which SAEs and settings get them, turning loss
effects on and off for a computed release without the corpus passes, their site columns and dumps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from sae_atlas import stats as statistics
from sae_atlas.cache import CacheStore, corpus_key, sae_key
from sae_atlas.export.dump import feature_record
from sae_atlas.compute import ComputeOptions, compute_releases
from sae_atlas.manifest import ComputeSettings, load_content
from tests.brute import brute_dfa, brute_loss_effect, window_of
from tests.fixtures import FIXTURE_COMPUTE, build_fixture_content, load_reference_model, load_reference_sae

SETS = (
    ("res-st", "blocks.{layer}.hook_resid_post", "standard", (0,)),
    ("att-st", "blocks.{layer}.attn.hook_z", "standard", (1,)),
)
N_PROMPTS, CONTEXT, D_SAE = 8, 8, 16
BEFORE, AFTER = FIXTURE_COMPUTE["context_before"], FIXTURE_COMPUTE["context_after"]


def _options(**kw) -> ComputeOptions:
    return ComputeOptions(device="cpu", quiet=True, pca_map=True, batch_size=3, **kw)


def _set_compute(content, **changes) -> None:
    (manifest,) = content.glob("releases/*.yaml")
    doc = yaml.safe_load(manifest.read_text())
    doc["compute"] = {**doc["compute"], **changes}
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))


def _entries(cache, releases) -> dict:
    store = CacheStore(cache)
    return {s.set_id: store.sae_entry(sae_key(r, s)) for r in releases for s in r.saes()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture release computed on the CPU with the default `loss_effects: auto`."""
    root = tmp_path_factory.mktemp("model-stats")
    content = build_fixture_content(root, n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, corpus="tokens", sets=SETS, explanations=False)
    releases = load_content(content)
    compute_releases(releases, root / "cache", _options())
    return root, content, releases


@pytest.fixture(scope="module")
def reference(built):
    """The corpus tokens, the model and the SAEs (by set id) loaded by TransformerLens and SAELens."""
    root, _, releases = built
    release = releases[0]
    tokens = np.array(CacheStore(root / "cache").corpus(corpus_key(release))["tokens"])
    model = load_reference_model(release.model.path)
    return tokens, model, {s.set_id: load_reference_sae(s.path) for s in release.saes()}


@pytest.fixture(scope="module")
def with_loss_effects(built, tmp_path_factory):
    """`loss_effects: true` turned on for the computed release: (content, cache, report, entries)."""
    root, content, _ = built
    dest = tmp_path_factory.mktemp("loss-on")
    shutil.copytree(content, dest / "content")
    shutil.copytree(root / "cache", dest / "cache")
    _set_compute(dest / "content", loss_effects=True)
    releases = load_content(dest / "content")
    import sae_atlas.compute.engine as engine

    def no_pass(*a, **k):
        raise AssertionError("the corpus passes ran to add loss effects")

    saved, engine._run_pass = engine._run_pass, no_pass
    try:
        report = compute_releases(releases, dest / "cache", _options())
    finally:
        engine._run_pass = saved
    return dest / "content", dest / "cache", report, _entries(dest / "cache", releases)


def _examples(entry):
    prompt, position = np.asarray(entry["top_prompt"]), np.asarray(entry["top_position"])
    return [(f, s, int(prompt[f, s]), int(position[f, s])) for f, s in zip(*np.nonzero(prompt >= 0))]


def test_dfa_of_the_hook_z_sae_matches_brute_force(built, reference):
    tokens, model, saes = reference
    entry = _entries(built[0] / "cache", built[2])["att-st"]
    got = np.asarray(entry["top_dfa"])
    assert got.dtype == np.float16 and got.shape == (D_SAE, FIXTURE_COMPUTE["top_k"], BEFORE + 1 + AFTER)
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens).long())
    examples = _examples(entry)
    assert len(examples) > 2 * D_SAE
    for f, s, p, q in examples:
        want = window_of(brute_dfa(cache, saes["att-st"], 1, f, p, q), q, BEFORE, AFTER)
        np.testing.assert_allclose(got[f, s].astype(np.float64), want, rtol=2e-3, atol=2e-4, err_msg=f"feature {f} slot {s}")
    empty = np.asarray(entry["top_prompt"]) < 0
    assert not got[empty].any()
    assert np.abs(got).max() > 0.05


def test_dfa_is_only_for_hook_z_saes_and_loss_effects_off_by_default_on_a_cpu(built):
    entries = _entries(built[0] / "cache", built[2])
    assert "top_dfa" not in entries["res-st"].arrays and "top_dfa" in entries["att-st"].arrays
    for entry in entries.values():
        assert entry.meta["device"] == "cpu"
        assert "top_loss_effect" not in entry.arrays
        assert "loss_effects" not in entry.meta["statistics"]
    assert "dfa" not in entries["res-st"].meta["statistics"] and "dfa" in entries["att-st"].meta["statistics"]


def test_loss_effects_apply_by_setting_and_by_the_device_the_entry_was_computed_on():
    stat = statistics.BY_NAME["loss_effects"]
    auto, on, off = ComputeSettings(), ComputeSettings(loss_effects=True), ComputeSettings(loss_effects=False)
    assert auto.loss_effects == "auto"
    assert stat.applies({"device": "cuda"}, auto) and not stat.applies({"device": "cpu"}, auto) and not stat.applies({}, auto)
    assert stat.applies({"device": "cpu"}, on) and not stat.applies({"device": "cuda"}, off)
    # The setting is not part of an entry's key: turning it on or off keeps the corpus passes.
    assert "loss_effects" not in statistics.corpus_settings(on)


def test_turning_loss_effects_on_computes_only_them_and_they_match_brute_force(built, reference, with_loss_effects):
    tokens, model, saes = reference
    _, _, report, after = with_loss_effects
    before = _entries(built[0] / "cache", built[2])
    assert sorted(report.computed) == sorted(s.id for s in built[2][0].saes())
    spliced: dict = {}
    for set_id, entry in after.items():
        got = np.asarray(entry["top_loss_effect"])
        assert got.dtype == np.float16 and got.shape == (D_SAE, FIXTURE_COMPUTE["top_k"], BEFORE + 1 + AFTER)
        spliced.clear()
        for f, s, p, q in _examples(entry):
            want = window_of(brute_loss_effect(model, saes[set_id], tokens, f, p, spliced=spliced), q, BEFORE, AFTER)
            np.testing.assert_allclose(got[f, s].astype(np.float64), want, rtol=2e-3, atol=2e-4, err_msg=f"{set_id} feature {f} slot {s}")
        assert np.abs(got).max() > 0.01
        assert entry.meta["statistics"]["loss_effects"] == {"version": 1, "settings": {}}
        # Everything else is the entry as it was.
        old = before[set_id]
        for name in old.arrays:
            np.testing.assert_array_equal(entry[name], old[name], err_msg=f"{set_id} {name}")
        assert entry.meta["stats"] == old.meta["stats"]


def test_turning_loss_effects_off_drops_them_without_the_corpus_passes(built, with_loss_effects, tmp_path, monkeypatch):
    content, cache, _, _ = with_loss_effects
    shutil.copytree(content, tmp_path / "content")
    shutil.copytree(cache, tmp_path / "cache")
    _set_compute(tmp_path / "content", loss_effects=False)
    releases = load_content(tmp_path / "content")
    import sae_atlas.compute.engine as engine

    monkeypatch.setattr(engine, "_run_pass", lambda *a, **k: pytest.fail("the corpus passes ran to drop loss effects"))
    report = compute_releases(releases, tmp_path / "cache", _options())
    assert sorted(report.computed) == sorted(s.id for s in releases[0].saes())
    for entry in _entries(tmp_path / "cache", releases).values():
        assert "top_loss_effect" not in entry.arrays and "loss_effects" not in entry.meta["statistics"]
    assert compute_releases(releases, tmp_path / "cache", _options()).computed == []


def test_site_columns_follow_the_top_examples(built, with_loss_effects):
    _, _, _, entries = with_loss_effects
    entry = entries["att-st"]
    ctx = statistics.RecordContext(tuple(f"t{i}" for i in range(1000)), BEFORE)
    records = statistics.records(entry.arrays, 0, D_SAE, ctx)
    dfa, loss = np.asarray(entry["top_dfa"], np.float64), np.asarray(entry["top_loss_effect"], np.float64)
    checked = 0
    shown = 10  # top examples with values in the site (docs/ARCHITECTURE.md "Site")
    for f, rec in enumerate(records):
        assert len(rec["dfa"]) == len(rec["loss"]) == min(len(rec["top"]), shown)
        for k, ex in enumerate(rec["top"][:shown]):
            prompt, position = ex[:2]
            start = max(0, position - BEFORE)  # the decoded example's window start (docs/ARCHITECTURE.md)
            slot = np.nonzero(np.asarray(entry["top_prompt"][f]) >= 0)[0][k]  # `top` lists the filled slots in order
            assert (entry["top_prompt"][f, slot], entry["top_position"][f, slot]) == (prompt, position)
            for column, full in (("dfa", dfa), ("loss", loss)):
                offsets, q = rec[column][k]
                scale = np.abs(full[f]).max()
                assert rec[column + "_s"] == pytest.approx(scale, rel=6e-4)
                want = {}
                for j in range(full.shape[2]):
                    t = position - BEFORE + j
                    if full[f, slot, j] != 0 and abs(full[f, slot, j]) >= 0.05 * scale * (1 + 1e-3):
                        want[t] = full[f, slot, j]
                got = {start + o: v / 100 * rec[column + "_s"] for o, v in zip(offsets, q)}
                assert set(want) <= set(got), (column, f, k)
                assert all(abs(full[f, slot, t - position + BEFORE]) >= 0.05 * scale * (1 - 1e-3) for t in got)
                for t in want:
                    assert got[t] == pytest.approx(want[t], abs=0.005 * scale + 1e-9), (column, f, k, t)
                checked += len(want)
    assert checked > 100
    (res,) = statistics.records(entries["res-st"].arrays, 0, 1, ctx)
    assert "dfa" not in res and "loss" in res


def test_dump_adds_the_values_to_each_top_example(with_loss_effects):
    _, cache, _, entries = with_loss_effects
    store = CacheStore(cache)
    for set_id, entry in entries.items():
        tokens = np.asarray(store.corpus(entry.meta["corpus_key"])["tokens"])
        vocab = [f"t{i}" for i in range(int(tokens.max()) + 1)]
        feature = int(np.argmax(np.asarray(entry["top_prompt"])[:, 0] >= 0))
        record = feature_record(entry, tokens, vocab, feature)
        keys = {"loss_effects"} | ({"dfa"} if set_id == "att-st" else set())
        assert record["top_examples"]
        for j, example in enumerate(record["top_examples"]):
            assert keys <= set(example) and not ({"dfa", "loss_effects"} - keys) & set(example)
            p, q = example["prompt"], example["position"]
            start = max(0, q - BEFORE)
            slot = np.nonzero(np.asarray(entry["top_prompt"][feature]) >= 0)[0][j]  # the filled slots, in order
            assert (int(entry["top_prompt"][feature, slot]), int(entry["top_position"][feature, slot])) == (p, q)
            for key, name in (("loss_effects", "top_loss_effect"), ("dfa", "top_dfa")):
                if key in keys:
                    window = np.asarray(entry[name][feature, slot], np.float64)
                    assert len(example[key]) == len(example["activations"])
                    np.testing.assert_array_equal(example[key], window[start - (q - BEFORE) : start - (q - BEFORE) + len(example[key])])


def test_fakes_apply_as_the_statistics_do():
    rng = np.random.default_rng(0)
    settings = ComputeSettings(top_k=4, context_before=3, context_after=2, loss_effects=True)
    made = statistics.fake_arrays(statistics.FakeContext(rng, 10, settings, 6, 12, 50, sae_meta={"hook": "blocks.0.attn.hook_z"}))
    assert made["top_dfa"].shape == made["top_loss_effect"].shape == (10, 4, 6)
    empty = made["top_prompt"] < 0
    assert not made["top_dfa"][empty].any() and not made["top_loss_effect"][empty].any()
    assert not made["top_dfa"][..., 4:].any()  # causal: nothing after the peak
    plain = statistics.fake_arrays(statistics.FakeContext(np.random.default_rng(0), 10, ComputeSettings(top_k=4), 6, 12, 50, sae_meta={"hook": "blocks.0.hook_resid_pre"}))
    assert "top_dfa" not in plain and "top_loss_effect" not in plain

"""The statistics registry: per-statistic versions in the cache, weights-only statistics computed
on their own, fakes with the arrays of a real entry, site records and dumps made of its parts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from sae_atlas import stats as statistics
from sae_atlas.cache import CacheStore, sae_key
from sae_atlas.compute import ComputeOptions, compute_releases
from sae_atlas.errors import AtlasError
from sae_atlas.manifest import load_content
from tests.fixtures import FIXTURE_COMPUTE, build_fixture_content, load_reference_model, load_reference_sae, residual_directions

SETS = (("res-st", "blocks.{layer}.hook_resid_post", "standard", (0, 1)),)
N_PROMPTS, CONTEXT, D_SAE = 8, 8, 24


def _options(**kw) -> ComputeOptions:
    return ComputeOptions(device="cpu", quiet=True, pca_map=True, **kw)


def _entries(cache: Path, releases) -> dict:
    store = CacheStore(cache)
    return {s.id: store.sae_entry(sae_key(r, s)) for r in releases for s in r.saes()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    content = build_fixture_content(root, n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, corpus="tokens", sets=SETS)
    releases = load_content(content)
    compute_releases(releases, root / "cache", _options())
    return root, content, releases


def _with_compute(content: Path, dest: Path, **changes) -> Path:
    """A copy of the content dir whose manifest's compute settings have `changes`."""
    shutil.copytree(content, dest)
    (manifest,) = [p for p in dest.rglob("*.yaml") if "compute" in p.read_text()]
    doc = yaml.safe_load(manifest.read_text())
    doc["compute"] = {**doc["compute"], **changes}
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def test_a_new_weights_only_setting_recomputes_that_statistic_without_the_corpus(built, tmp_path, monkeypatch):
    _, content, releases = built
    before = _entries(built[0] / "cache", releases)
    changed_content = _with_compute(content, tmp_path / "content", logits=FIXTURE_COMPUTE["logits"] + 3)
    changed = load_content(changed_content)
    cache = tmp_path / "cache"
    shutil.copytree(built[0] / "cache", cache)
    # The corpus passes' key is unchanged: the entries are found, and render says they are outdated.
    assert [sae_key(r, s) for r in changed for s in r.saes()] == [sae_key(r, s) for r in releases for s in r.saes()]
    from sae_atlas.render.site import render_site

    with pytest.raises(AtlasError, match="its logits predate"):
        render_site(changed, cache, tmp_path / "site", quiet=True)

    import sae_atlas.compute.engine as engine

    def no_pass(*a, **k):
        raise AssertionError("the corpus passes ran for a weights-only statistic")

    monkeypatch.setattr(engine, "_run_pass", no_pass)
    report = compute_releases(changed, cache, _options())
    assert sorted(report.computed) == sorted(s.id for r in changed for s in r.saes())
    after = _entries(cache, changed)
    k = FIXTURE_COMPUTE["logits"] + 3
    model = load_reference_model(changed[0].model.path)
    w_u = model.W_U.detach().double().numpy()
    for spec in changed[0].saes():
        entry, old = after[spec.id], before[spec.id]
        sae = load_reference_sae(spec.path)
        logits = residual_directions(model, spec.hook, sae.W_dec.detach().float().numpy()) @ w_u
        pos = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(entry["pos_logit_token"], pos)
        np.testing.assert_allclose(entry["pos_logit_value"], np.take_along_axis(logits, pos, 1), rtol=1e-5, atol=1e-5)
        assert entry.meta["statistics"]["logits"] == {"version": 1, "settings": {"logits": k}}
        assert entry.meta["settings"]["logits"] == k
        for name in ("top_value", "top_prompt", "top_window", "histogram", "interval_prompt", "neighbour_index", "umap"):
            np.testing.assert_array_equal(entry[name], old[name], err_msg=name)
        assert entry.meta["stats"] == old.meta["stats"]
    # Now current: nothing is recomputed and the site renders.
    assert compute_releases(changed, cache, _options()).computed == []
    render_site(changed, cache, tmp_path / "site", quiet=True)


def test_a_changed_corpus_setting_gets_a_new_entry(built):
    _, _, releases = built
    release = releases[0]
    import dataclasses

    other = dataclasses.replace(release, compute=dataclasses.replace(release.compute, top_k=release.compute.top_k + 1))
    spec = release.saes()[0]
    assert sae_key(other, spec) != sae_key(release, spec)
    same = dataclasses.replace(release, compute=dataclasses.replace(release.compute, neighbours=7, umap_epochs=50))
    assert sae_key(same, spec) == sae_key(release, spec)


def test_fakes_have_exactly_the_arrays_of_a_computed_entry(built):
    _, _, releases = built
    release = releases[0]
    entry = _entries(built[0] / "cache", releases)[release.saes()[0].id]
    rng = np.random.default_rng(0)
    fake = statistics.fake_arrays(statistics.FakeContext(rng, D_SAE, release.compute, N_PROMPTS, CONTEXT, 50))
    real = {name: a for name, a in entry.arrays.items() if name in statistics.ALL_ARRAYS}
    assert sorted(fake) == sorted(real)
    for name in real:
        assert (fake[name].dtype, fake[name].shape) == (real[name].dtype, real[name].shape), name
    assert set(entry.meta["statistics"]) == {s.name for s in statistics.wanted(entry.meta, release.compute)}


def test_records_and_dumps_are_the_statistics_columns_in_registry_order(built):
    _, _, releases = built
    release = releases[0]
    entry = _entries(built[0] / "cache", releases)[release.saes()[0].id]
    vocab = tuple(f"t{i}" for i in range(int(entry["pos_logit_token"].max()) + 1))
    ctx = statistics.RecordContext(vocab, release.compute.context_before)
    (record,) = statistics.records(entry.arrays, 3, 4, ctx)
    present = [s for s in statistics.REGISTRY if all(name in entry.arrays for name in s.arrays)]
    expected = ["i"] + [k for s in present for k in s.record(entry.arrays, 3, 4, ctx)]
    assert list(record) == expected
    assert record["i"] == 3 and record["hist"] == [int(c) for c in entry["histogram"][3]]
    # An entry without a statistic's arrays renders without its columns.
    partial = {k: v for k, v in entry.arrays.items() if k not in statistics.BY_NAME["histogram"].arrays}
    (record,) = statistics.records(partial, 3, 4, ctx)
    assert "hist" not in record and "max" in record

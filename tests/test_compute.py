"""The compute engine against brute force: the whole corpus through the model and each SAE at once.

Every expected value is computed here, with TransformerLens, SAELens and numpy directly (the model
and SAEs loaded from their files, the corpus read from its pre-tokenized file), never with functions
of the engine: a bug in the engine cannot also be in its expectation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sae_atlas.cache import CacheStore, corpus_key, sae_key, set_key
from sae_atlas.export.dump import dump_feature
from sae_atlas.compute import ComputeOptions, compute_releases
from sae_atlas.backends.saelens import SaeLensSae
from sae_atlas.errors import AtlasError
from sae_atlas.manifest import load_content
from tests.fixtures import (
    FIXTURE_COMPUTE,
    build_fixture_content,
    build_wide_content,
    load_reference_model,
    load_reference_sae,
    residual_directions,
)

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS, CONTEXT, D_SAE = 12, 8, 32
SETS = (
    ("res-st", "blocks.{layer}.hook_resid_post", "standard", (0, 1)),
    ("res-tk", "blocks.{layer}.hook_resid_post", "topk", (1,)),
    ("mlp-jr", "blocks.{layer}.hook_mlp_out", "jumprelu", (0,)),
    ("att-st", "blocks.{layer}.attn.hook_z", "standard", (1,)),
)
# The wide release samples intervals with a seed other than 0 (seed 0 zeroes terms of the hash).
WIDE_COMPUTE = dict(FIXTURE_COMPUTE, seed=7, prompt_view=5, prompt_features=2)
# Only hooks that end at block 2's input: the capturing forward stops there and blocks.2.hook_resid_pre
# is what it returns (that hook never fires).
PRE_SETS = (
    ("res-pre", "blocks.{layer}.hook_resid_pre", "jumprelu", ((0, 24), (2, 32))),
    ("mlp-out", "blocks.{layer}.hook_mlp_out", "topk", ((1, 16),)),
)
BRUTE_RELEASES = ("built", "wide", "pre")
# Activations closer than this (in units of a bin or interval width) to an inner edge would make an
# exact comparison depend on float rounding; the fixtures have none, and the tests say so if one appears.
EDGE_MARGIN = 1e-5


def _options(**kw) -> ComputeOptions:
    return ComputeOptions(device="cpu", quiet=True, pca_map=True, **kw)


def _entries(cache: Path, release) -> dict:
    store = CacheStore(cache)
    return {s.id: store.sae_entry(sae_key(release, s)) for s in release.saes()}


def _assert_same_entries(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for sae_id in a:
        assert a[sae_id].meta == b[sae_id].meta, sae_id
        for name in a[sae_id].arrays:
            np.testing.assert_array_equal(a[sae_id][name], b[sae_id][name], err_msg=f"{sae_id} {name}")


def _computed(root: Path, content: Path, batch_size: int):
    """(root, content, releases, cache, report) after computing `content` into root/cache."""
    releases = load_content(content)
    cache = root / "cache"
    report = compute_releases(releases, cache, _options(batch_size=batch_size))
    return root, content, releases, cache, report


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("compute")
    return _computed(root, build_fixture_content(root, n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, corpus="tokens", sets=SETS), 3)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A 3-layer release with SAEs of several widths, on mlp.hook_post among others (see WIDE_SETS)."""
    root = tmp_path_factory.mktemp("wide")
    return _computed(root, build_wide_content(root, n_prompts=N_PROMPTS, context=CONTEXT, compute=WIDE_COMPUTE), 5)


@pytest.fixture(scope="module")
def pre(tmp_path_factory):
    """A release whose forward stops before the last block (see PRE_SETS)."""
    root = tmp_path_factory.mktemp("pre")
    return _computed(root, build_wide_content(root, n_prompts=N_PROMPTS, context=CONTEXT, sets=PRE_SETS, compute=WIDE_COMPUTE), 4)


# -- the brute-force reference ----------------------------------------------------------------------


def _corpus_tokens(release) -> np.ndarray:
    """The pre-tokenized corpus file, read here: int64 [prompts, context]."""
    lines = release.corpus.path.read_text(encoding="utf-8").splitlines()
    return np.array([json.loads(line)["tokens"] for line in lines if line.strip()], dtype=np.int64)


def _reference(release):
    """(model, tokens, {SAE id: (acts f32 [P, T, F], x, sae, hook)}) over the whole corpus in one forward."""
    tokens = torch.from_numpy(_corpus_tokens(release))
    model = load_reference_model(release.model.path)
    out = {}
    with torch.no_grad():
        _, acts_cache = model.run_with_cache(tokens, names_filter=sorted({s.hook for s in release.saes()}))
        for spec in release.saes():
            sae = load_reference_sae(spec.path)
            x = acts_cache[spec.hook].float()
            out[spec.id] = (sae.encode(x).float(), x, sae, spec.hook)
    return model, tokens, out


@pytest.fixture(scope="module")
def brute(built):
    return _reference(built[2][0])


@pytest.fixture(scope="module")
def wide_brute(wide):
    return _reference(wide[2][0])


@pytest.fixture(scope="module")
def pre_brute(pre):
    return _reference(pre[2][0])


@dataclass
class Case:
    """One computed release and its brute-force reference."""

    release: object
    cache: Path
    model: object
    acts: dict  # SAE id -> (acts, x, sae, hook)

    @property
    def entries(self) -> dict:
        return _entries(self.cache, self.release)


@pytest.fixture(params=BRUTE_RELEASES)
def case(request) -> Case:
    _, _, releases, cache, _ = request.getfixturevalue(request.param)
    model, _, acts = request.getfixturevalue(f"{request.param}_brute" if request.param != "built" else "brute")
    return Case(releases[0], cache, model, acts)


def _near_edges(values: np.ndarray, maximum: float, n: int) -> np.ndarray:
    """Activations within EDGE_MARGIN of an inner edge of n equal parts of (0, max] (the max itself is not)."""
    t = values.astype(np.float64) * n / maximum
    return (np.abs(t - np.round(t)) < EDGE_MARGIN) & (np.round(t) > 0) & (np.round(t) < n)


def _mix32(x: int) -> int:
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def _sample_priority(g: int, feature: int, seed: int) -> int:
    """The 31-bit pseudo-random priority of (token g, feature) that orders interval samples, written
    out with Python integers (no fixed-width arithmetic)."""
    token_part = _mix32((g ^ (seed * 0x9E3779B1)) & 0xFFFFFFFF)
    feature_part = _mix32((feature * 0x27D4EB2D + seed) & 0xFFFFFFFF)
    return _mix32(token_part ^ feature_part) >> 1


def test_the_cached_corpus_is_the_pre_tokenized_file(built, wide, pre):
    for _, _, releases, cache, _ in (built, wide, pre):
        cached = np.asarray(CacheStore(cache).corpus(corpus_key(releases[0]))["tokens"])
        np.testing.assert_array_equal(cached, _corpus_tokens(releases[0]))


def test_every_sae_is_computed_with_its_set_entry(built):
    _, _, releases, cache, report = built
    assert sorted(report.computed) == sorted(s.id for s in releases[0].saes())
    store = CacheStore(cache)
    res = next(s for s in releases[0].sets if s.id == "res-st")
    entry = store.set_entry(set_key(releases[0], res))
    assert entry.meta["sae_ids"] == [s.id for s in res.saes]
    assert entry["index_0"].shape == (D_SAE, 2, 3)
    assert (entry["index_0"][:, 0] == -1).all() and (entry["index_0"][:, 1] >= 0).all()
    assert not list((cache / "sae").glob("*.partial"))


def test_max_density_and_reconstruction_stats_match_brute_force(case):
    for sae_id, entry in case.entries.items():
        acts, x, sae, _ = case.acts[sae_id]
        flat = acts.reshape(-1, acts.shape[-1]).numpy()
        n, d_sae = flat.shape
        np.testing.assert_array_equal(entry["max_activation"], np.maximum(flat.max(0), 0))
        np.testing.assert_array_equal(entry["nonzero_count"], (flat > 0).sum(0))
        np.testing.assert_allclose(entry["density"], (flat > 0).mean(0), rtol=1e-6)
        assert entry["density"].dtype == np.float32
        stats = entry.meta["stats"]
        xf = x.reshape(n, -1).double().numpy()
        with torch.no_grad():
            x_hat = sae.decode(acts).reshape(n, -1).double().numpy()
        sse = np.square(xf - x_hat).sum()
        sst = np.square(xf - xf.mean(0)).sum()
        assert stats["l0"] == pytest.approx((flat > 0).sum() / n)
        assert stats["mse"] == pytest.approx(sse / xf.size, rel=1e-5)
        assert stats["explained_variance"] == pytest.approx(1 - sse / sst, rel=1e-5, abs=1e-6)
        assert stats["dead"] == int(((flat > 0).sum(0) == 0).sum())
        assert entry.meta["n_tokens"] == N_PROMPTS * CONTEXT == n
        assert (entry.meta["d_in"], entry.meta["d_sae"]) == (xf.shape[1], d_sae)


def test_top_examples_follow_the_documented_order_with_windows(case):
    s = case.release.compute
    k, before, after = s.top_k, s.context_before, s.context_after
    ties_seen = 0
    for sae_id, entry in case.entries.items():
        acts = case.acts[sae_id][0].numpy()
        p_count, t_count, f_count = acts.shape
        for f in range(f_count):
            a = acts[:, :, f].reshape(-1)
            order = sorted((i for i in range(a.size) if a[i] > 0), key=lambda i: (-a[i], i))[:k]
            n = len(order)
            np.testing.assert_array_equal(entry["top_value"][f, :n], a[order])
            np.testing.assert_array_equal(entry["top_prompt"][f, :n], [i // t_count for i in order])
            np.testing.assert_array_equal(entry["top_position"][f, :n], [i % t_count for i in order])
            assert (entry["top_prompt"][f, n:] == -1).all() and (entry["top_value"][f, n:] == 0).all()
            ties_seen += len(order) - len(set(a[order].tolist()))
            for j, i in enumerate(order):
                p, t = divmod(i, t_count)
                padded = np.concatenate([np.zeros(before), acts[p, :, f], np.zeros(after)])
                expected = padded[t : t + before + 1 + after].astype(np.float16)
                np.testing.assert_array_equal(entry["top_window"][f, j], expected)
    assert ties_seen > 0  # the fixture corpus repeats prompts, so exact ties occur


def test_prompt_view_keeps_each_tokens_strongest_features(case):
    s = case.release.compute
    for sae_id, entry in case.entries.items():
        acts = case.acts[sae_id][0].numpy()
        p_count, t_count, _ = acts.shape
        n_view = min(s.prompt_view, p_count)
        assert entry["prompt_feature"].shape == entry["prompt_value"].shape == (n_view, t_count, s.prompt_features)
        for p in range(n_view):
            for t in range(t_count):
                a = acts[p, t]
                order = sorted((f for f in range(a.size) if a[f] > 0), key=lambda f: (-a[f], f))[: s.prompt_features]
                n = len(order)
                np.testing.assert_array_equal(entry["prompt_feature"][p, t, :n], order, err_msg=f"{sae_id} {p} {t}")
                np.testing.assert_array_equal(entry["prompt_value"][p, t, :n], a[order])
                assert (entry["prompt_feature"][p, t, n:] == -1).all() and (entry["prompt_value"][p, t, n:] == 0).all()


def test_histogram_counts_the_firing_activations_in_equal_bins_up_to_the_max(case):
    bins = case.release.compute.histogram_bins
    for sae_id, entry in case.entries.items():
        flat = case.acts[sae_id][0].reshape(-1, entry["histogram"].shape[0]).numpy()
        assert entry["histogram"].shape == (flat.shape[1], bins)
        for f in range(flat.shape[1]):
            firing = flat[:, f][flat[:, f] > 0]
            if firing.size == 0:
                assert not entry["histogram"][f].any(), f"{sae_id}:{f}"
                continue
            top = float(firing.max())
            assert not _near_edges(firing, top, bins).any(), f"{sae_id}:{f}: an activation on a bin edge"
            expected, _ = np.histogram(firing.astype(np.float64), bins=bins, range=(0.0, top))  # last bin closed
            np.testing.assert_array_equal(entry["histogram"][f], expected, err_msg=f"{sae_id}:{f}")


def test_interval_samples_are_the_highest_priority_members_of_each_interval(case):
    s = case.release.compute
    n_int, per = s.intervals, s.per_interval
    sampled = 0
    for sae_id, entry in case.entries.items():
        acts = case.acts[sae_id][0]
        t_count, f_count = acts.shape[1], acts.shape[2]
        flat = acts.reshape(-1, f_count).numpy()
        for f in range(f_count):
            a = flat[:, f]
            firing = np.flatnonzero(a > 0)
            top = float(a.max()) if firing.size else 0.0
            if firing.size:
                assert not _near_edges(a[firing], top, n_int).any(), f"{sae_id}:{f}: an activation on an interval edge"
            for i in range(n_int):
                lo, hi = top * i / n_int, top * (i + 1) / n_int
                members = [int(g) for g in firing if lo < float(a[g]) <= hi]  # interval i is (lo, hi]
                chosen = sorted(members, key=lambda g: (-_sample_priority(g, f, s.seed), g))[:per]
                sampled += len(members) > per
                n = len(chosen)
                where = f"{sae_id}:{f} interval {i}"
                np.testing.assert_array_equal(entry["interval_prompt"][f, i, :n], [g // t_count for g in chosen], err_msg=where)
                np.testing.assert_array_equal(entry["interval_position"][f, i, :n], [g % t_count for g in chosen], err_msg=where)
                np.testing.assert_array_equal(entry["interval_value"][f, i, :n], a[chosen], err_msg=where)
                assert (entry["interval_prompt"][f, i, n:] == -1).all() and (entry["interval_value"][f, i, n:] == 0).all(), where
    assert sampled > 0  # some intervals have more members than samples: the priority decides


def test_logits_neighbours_and_map_match_explicit_products(case):
    s = case.release.compute
    w_u = case.model.W_U.detach().double().numpy()
    for sae_id, entry in case.entries.items():
        _, _, sae, hook = case.acts[sae_id]
        w_dec = sae.W_dec.detach().float().numpy()
        logits = residual_directions(case.model, hook, w_dec) @ w_u
        where = f"{sae_id} ({hook})"
        pos = np.argsort(-logits, axis=1, kind="stable")[:, : s.logits]
        neg = np.argsort(logits, axis=1, kind="stable")[:, : s.logits]
        np.testing.assert_array_equal(entry["pos_logit_token"], pos, err_msg=where)
        np.testing.assert_allclose(entry["pos_logit_value"], np.take_along_axis(logits, pos, 1), rtol=1e-5, atol=1e-5, err_msg=where)
        np.testing.assert_array_equal(entry["neg_logit_token"], neg, err_msg=where)
        np.testing.assert_allclose(entry["neg_logit_value"], np.take_along_axis(logits, neg, 1), rtol=1e-5, atol=1e-5, err_msg=where)

        unit = w_dec.astype(np.float64) / np.linalg.norm(w_dec.astype(np.float64), axis=1, keepdims=True)
        cos = unit @ unit.T
        np.fill_diagonal(cos, -np.inf)
        nb = np.argsort(-cos, axis=1, kind="stable")[:, : s.neighbours]
        np.testing.assert_array_equal(entry["neighbour_index"], nb, err_msg=where)
        np.testing.assert_allclose(entry["neighbour_cosine"], np.take_along_axis(cos, nb, 1), atol=1e-6, err_msg=where)
        d_sae = w_dec.shape[0]
        assert entry["umap"].shape == (d_sae, 2) and np.isfinite(entry["umap"]).all()
        assert entry["cluster"].shape == (d_sae,) and entry["cluster"].min() == 0
        stats = entry.meta["stats"]
        assert stats["ce_loss_delta"] == pytest.approx(stats["ce_loss_spliced"] - stats["ce_loss_clean"])


def test_mlp_post_saes_read_the_mlp_hidden_width(wide):
    """The mlp.hook_post SAEs read d_mlp-wide activations: the W_out path is what the brute force checks."""
    _, _, releases, cache, report = wide
    release = releases[0]
    model = load_reference_model(release.model.path)
    post = [s for s in release.saes() if s.hook.endswith("mlp.hook_post")]
    assert len(post) == 3 and sorted(report.computed) == sorted(s.id for s in release.saes())
    for spec in post:
        entry = _entries(cache, release)[spec.id]
        assert entry.meta["d_in"] == model.cfg.d_mlp != model.cfg.d_model
        assert entry.meta["hook"] == spec.hook
        assert (entry["pos_logit_token"] >= 0).all()  # W_out maps it to the residual stream: logits exist


def test_results_do_not_depend_on_batch_size(built, tmp_path):
    _, _, releases, cache, _ = built
    base = _entries(cache, releases[0])
    for batch_size in (1, 7):
        compute_releases(releases, tmp_path / str(batch_size), _options(batch_size=batch_size))
        _assert_same_entries(base, _entries(tmp_path / str(batch_size), releases[0]))


def _count_forwards(monkeypatch) -> tuple[list[int], list[int]]:
    """(forwards of the two passes, forwards of the correlated features' scans after them)."""
    import sae_atlas.compute.engine as engine

    passes, scans, in_pass = [], [], []
    real_forward, real_pass = engine._forward_capture, engine._run_pass

    def run_pass(*a, **k):
        in_pass.append(1)
        try:
            return real_pass(*a, **k)
        finally:
            in_pass.pop()

    monkeypatch.setattr(engine, "_run_pass", run_pass)
    monkeypatch.setattr(engine, "_forward_capture", lambda *a, **k: ((passes if in_pass else scans).append(1), real_forward(*a, **k))[1])
    return passes, scans


@pytest.mark.parametrize("replay_memory", [0, "first batch", None])
def test_pass_two_replays_kept_batches_and_recomputes_the_rest_with_identical_results(built, brute, tmp_path, monkeypatch, replay_memory):
    _, _, releases, cache, _ = built
    if replay_memory == "first batch":  # room for the first batch of every SAE (12 bytes per firing entry), not two
        replay_memory = int(1.5 * 12 * sum(int((acts[:3] > 0).sum()) for acts, *_ in brute[2].values()))
    forwards, scans = _count_forwards(monkeypatch)
    report = compute_releases(releases, tmp_path, _options(batch_size=3, replay_memory=replay_memory))
    n_batches, n_saes = -(-N_PROMPTS // 3), len(releases[0].saes())
    assert report.replayed + report.recomputed == n_batches * n_saes
    # The correlated features scan the corpus once per SAE (one block of features each) after pass 2,
    # recomputing, SAE by SAE, the batches pass 1 did not keep.
    if replay_memory is None:
        assert len(forwards) == n_batches  # everything kept: one pass over the model
        assert report.replayed == n_batches * n_saes
        assert not scans
    elif replay_memory == 0:
        assert len(forwards) == 2 * n_batches  # nothing kept: the model runs again in pass 2
        assert report.replayed == 0
        assert len(scans) == n_saes * n_batches
    else:
        assert len(forwards) == 2 * n_batches - 1  # the first batch kept, the rest recomputed
        assert n_saes <= report.replayed < 2 * n_saes  # the first batch, perhaps part of the second
        assert len(scans) == n_saes * n_batches - report.replayed
    _assert_same_entries(_entries(cache, releases[0]), _entries(tmp_path, releases[0]))


@pytest.mark.parametrize("replay_memory", [0, None])
def test_encoding_a_batch_in_parts_gives_identical_results(built, tmp_path, monkeypatch, replay_memory):
    import sae_atlas.compute.engine as engine

    _, _, releases, cache, _ = built
    monkeypatch.setattr(engine, "chunk_elements", lambda device: 2 * CONTEXT * D_SAE)  # 2 prompts per encoder call
    compute_releases(releases, tmp_path, _options(batch_size=5, replay_memory=replay_memory))
    _assert_same_entries(_entries(cache, releases[0]), _entries(tmp_path, releases[0]))


def test_sparse_windows_equal_the_dense_activations_around_each_token():
    from sae_atlas.compute.stats import SparseActs

    g = torch.Generator().manual_seed(3)
    acts = torch.rand(4, 10, 7, generator=g)
    acts = torch.where(acts > 0.6, acts, torch.zeros(()))
    sparse = SparseActs.from_dense(acts.reshape(-1, 7), first_prompt=5, context=10)
    token = torch.arange(40).repeat_interleave(7)
    feature = torch.arange(7).repeat(40)
    for before, after in ((0, 0), (3, 2), (12, 12)):
        got = sparse.windows(token, feature, before, after)
        for m in range(token.shape[0]):
            b, t = divmod(int(token[m]), 10)
            for j in range(before + 1 + after):
                pos = t - before + j
                want = float(acts[b, pos, feature[m]]) if 0 <= pos < 10 else 0.0
                assert float(got[m, j]) == want, (m, j)
    empty = SparseActs.from_dense(torch.zeros(20, 7), 0, 10)
    assert not empty.windows(token[:5], feature[:5], 2, 2).any()


@pytest.mark.parametrize("compiled", [True, False])
def test_feature_major_order_is_by_feature_then_token(compiled, monkeypatch):
    from sae_atlas.compute import stats
    from sae_atlas.compute.stats import SparseActs

    if compiled:
        assert stats.compiled(stats._feature_sort) is not None, "numba is part of the compute extra"
    else:
        monkeypatch.setattr(stats, "compiled", lambda fn: None)  # the argsort elsewhere than on a CPU
    g = torch.Generator().manual_seed(4)
    for shape in ((60, 9), (1, 1), (30, 1), (0, 5)):
        acts = torch.rand(shape, generator=g)
        acts = torch.where(acts > 0.7, acts, torch.zeros(()))
        sparse = SparseActs.from_dense(acts, first_prompt=2, context=max(shape[0], 1))
        fkey, fvalue = sparse._feature_major()
        want = sorted((f, t, float(acts[t, f])) for t in range(shape[0]) for f in range(shape[1]) if acts[t, f] > 0)
        assert fkey.tolist() == [f * shape[0] + t for f, t, _ in want]
        assert fvalue.tolist() == [v for _, _, v in want]
        assert fkey.dtype == torch.int64 and fvalue.dtype == torch.float32


@pytest.mark.parametrize("compiled", [True, False])
def test_firing_entries_are_the_positive_values_in_row_major_order(compiled, monkeypatch):
    from sae_atlas.compute import stats
    from sae_atlas.compute.stats import SparseActs

    if compiled:
        assert stats.compiled(stats._count_firing) is not None, "numba is part of the compute extra"
    else:
        monkeypatch.setattr(stats, "compiled", lambda fn: None)  # the mask and nonzero elsewhere
    g = torch.Generator().manual_seed(6)
    odd = torch.randn(12, 5, generator=g)
    odd[0, :4] = torch.tensor([float("nan"), -0.0, float("inf"), 1e-45])  # NaN and -0 do not fire
    cases = [torch.randn(40, 9, generator=g), torch.zeros(6, 3), torch.zeros(0, 4), odd, torch.randn(7, 16, generator=g).t()]
    for acts in cases:
        sparse = SparseActs.from_dense(acts, first_prompt=3, context=max(1, acts.shape[0] // 2))
        dense = acts.numpy()
        want = [(t * dense.shape[1] + f, dense[t, f]) for t in range(dense.shape[0]) for f in range(dense.shape[1]) if dense[t, f] > 0]
        assert sparse.key.tolist() == [k for k, _ in want]
        np.testing.assert_array_equal(sparse.value.numpy(), np.array([v for _, v in want], np.float32))
        assert sparse.key.dtype == torch.int64 and sparse.value.dtype == torch.float32
        assert (sparse.first_prompt, sparse.n_features) == (3, acts.shape[1])


def test_merge_examples_keeps_the_k_largest_keys_with_their_windows():
    from sae_atlas.compute.stats import merge_examples

    rng = np.random.default_rng(8)
    groups, k, width = 6, 4, 3
    state_keys = torch.full((groups, k), -1, dtype=torch.int64)
    state_windows = torch.zeros((groups, k, width))
    seen: dict[int, dict[int, int]] = {g: {} for g in range(groups)}  # group -> key -> token

    def windows(token, feature):
        return (token[:, None] * 10 + feature[:, None] + torch.arange(width)[None, :]).float()

    keys_used = set()
    for _ in range(12):
        m = int(rng.integers(0, 15))
        group = rng.integers(0, groups - 1, m)  # the last group never gets a candidate: stays empty
        keys = []
        for _ in range(m):
            key = int(rng.integers(0, 1000))
            while key in keys_used:  # keys are unique
                key = int(rng.integers(0, 1000))
            keys_used.add(key)
            keys.append(key)
        token = rng.integers(0, 50, m)
        for gg, key, t in zip(group, keys, token):
            seen[int(gg)][key] = int(t)
        as_t = lambda a: torch.tensor(np.asarray(a, np.int64).reshape(-1), dtype=torch.int64)  # noqa: E731
        merge_examples(state_keys, state_windows, as_t(group), as_t(keys), windows, as_t(token), as_t(group))
        for gg in range(groups):
            best = sorted(seen[gg], reverse=True)[:k]
            want_keys = best + [-1] * (k - len(best))
            assert state_keys[gg].tolist() == want_keys
            for j in range(k):
                want = [seen[gg][best[j]] * 10 + gg + w for w in range(width)] if j < len(best) else [0] * width
                assert state_windows[gg, j].tolist() == want, (gg, j)


def test_sparse_decode_is_used_when_it_equals_the_dense_decode(brute):
    import sae_atlas.compute.engine as engine

    _, _, per_sae = brute
    for sae_id, (acts, x, sae, hook) in per_sae.items():
        for sparse_ok in (True, False):
            if not sparse_ok:  # an SAE whose decode takes no sparse input falls back to the dense one

                def dense_only(a, real=type(sae).decode, sae=sae):
                    if a.layout != torch.strided:
                        raise NotImplementedError("dense input only")
                    return real(sae, a)

                sae.decode = dense_only
            r = engine._Running(None, SaeLensSae(sae, hook), None)
            with torch.inference_mode():
                (acts_b, sparse), = engine._encode(r, {hook: x}, 0, 0)  # one part: the fixture is small
                engine._check_sparse_decode(r, acts_b, sparse)
                got = engine._decode(r, sparse, x)
                want = type(sae).decode(sae, acts_b).float().reshape(got.shape)
            assert r.sparse_decode is sparse_ok, sae_id
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
            if not sparse_ok:
                del sae.decode


def test_one_forward_for_several_saes_equals_running_each_alone(built, tmp_path):
    _, content, releases, cache, _ = built
    manifest = yaml.safe_load((content / "releases" / "tiny-demo.yaml").read_text())
    base = _entries(cache, releases[0])
    for s in manifest["sets"]:
        single = dict(manifest, sets=[dict(s, saes=s["saes"][:1])], explanations=None)
        single.pop("explanations")
        (content / "releases" / "tiny-demo.yaml").write_text(yaml.safe_dump(single))
        try:
            alone = load_content(content)
        finally:
            (content / "releases" / "tiny-demo.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        out = tmp_path / s["id"]
        report = compute_releases(alone, out, _options(batch_size=5))
        assert len(report.computed) == 1
        got = _entries(out, alone[0])
        _assert_same_entries({k: base[k] for k in got}, got)


def test_exact_ties_prefer_the_earlier_prompt(tmp_path):
    content = build_fixture_content(tmp_path, n_prompts=6, context=8, d_sae=16, corpus="tokens", sets=SETS[:1], explanations=False)
    row = [5, 9, 3, 17, 40, 2, 8, 11]
    (content / "corpus" / "tokens.jsonl").write_text("".join(json.dumps({"tokens": row}) + "\n" for _ in range(6)))
    releases = load_content(content)
    compute_releases(releases, tmp_path / "cache", _options(batch_size=4))
    for entry in _entries(tmp_path / "cache", releases[0]).values():
        for f in np.flatnonzero(entry["max_activation"] > 0):
            best = entry["top_position"][f, 0]
            top = entry["top_value"][f]
            # every prompt is the same: the best token of prompt 0, 1, 2 ... in prompt order
            assert list(entry["top_prompt"][f, :6]) == [0, 1, 2, 3, 4, 5]
            assert (entry["top_position"][f, :6] == best).all() and (top[:6] == top[0]).all()


def test_the_saes_load_before_the_corpus_which_a_cached_group_reads_only_when_the_cache_lacks_it(tmp_path, monkeypatch):
    from sae_atlas.compute import engine

    content = build_fixture_content(tmp_path, n_prompts=6, context=8, d_sae=16, corpus="tokens", sets=SETS[:1], explanations=False)
    releases = load_content(content)
    calls: list[str] = []
    load_sae, load_corpus = engine.load_sae, engine.load_corpus
    monkeypatch.setattr(engine, "load_sae", lambda *a, **k: calls.append("sae") or load_sae(*a, **k))
    monkeypatch.setattr(engine, "load_corpus", lambda *a, **k: calls.append("corpus") or load_corpus(*a, **k))
    cache = tmp_path / "cache"
    report = compute_releases(releases, cache, _options())
    n = len(releases[0].saes())
    # The maps go out before the corpus loads (the Set's cross-layer neighbours load the SAEs again).
    assert len(report.computed) == n and calls[: n + 1] == ["sae"] * n + ["corpus"] and calls.count("corpus") == 1
    calls.clear()
    assert compute_releases(releases, cache, _options()).cached and calls == []  # every SAE cached: nothing read
    corpus_dir = CacheStore(cache).corpus_dir(corpus_key(releases[0]))
    tokens = np.load(corpus_dir / "tokens.npy")
    shutil.rmtree(corpus_dir)
    compute_releases(releases, cache, _options())
    assert calls == ["corpus"]  # the site reads the corpus too: made again, the SAEs left alone
    np.testing.assert_array_equal(np.load(corpus_dir / "tokens.npy"), tokens)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_in_pass", [1, 2])
def test_resume_after_interruption_gives_identical_entries(built, tmp_path, stop_in_pass, capsys):
    _, _, releases, cache, _ = built

    def interrupt(pass_no, first_prompt):
        if pass_no == stop_in_pass and first_prompt >= 6:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        compute_releases(releases, tmp_path, _options(batch_size=3, checkpoint_every=1, on_batch=interrupt))
    partials = list((tmp_path / "sae").glob("*.partial"))
    assert len(partials) == len(releases[0].saes())
    assert not [p for p in (tmp_path / "sae").iterdir() if not p.name.endswith(".partial")]
    for p in partials:
        meta = json.loads((p / "meta.json").read_text())
        assert (meta["pass"], meta["prompts_done"]) == (stop_in_pass, 9)  # checkpoint after the batch at 6
    capsys.readouterr()
    first = []
    compute_releases(releases, tmp_path, _options(batch_size=3, on_batch=lambda p, q: first.append((p, q))))
    assert first[0] == (stop_in_pass, 9)  # resumed where the checkpoint left off
    assert "discarding" not in capsys.readouterr().err
    _assert_same_entries(_entries(cache, releases[0]), _entries(tmp_path, releases[0]))
    for key_dir in (tmp_path / "sae").iterdir():
        base = cache / "sae" / key_dir.name
        for f in key_dir.iterdir():
            assert f.read_bytes() == (base / f.name).read_bytes(), f


def test_corrupt_entry_is_detected_and_recomputed(built, tmp_path, capsys):
    _, _, releases, cache, _ = built
    shutil.copytree(cache, tmp_path / "cache")
    release = releases[0]
    spec = release.saes()[0]
    array = tmp_path / "cache" / "sae" / sae_key(release, spec) / "top_value.npy"
    data = bytearray(array.read_bytes())
    data[-1] ^= 0xFF
    array.write_bytes(bytes(data))
    report = compute_releases(releases, tmp_path / "cache", _options(batch_size=4))
    assert report.computed == [spec.id]
    assert "corrupt cache entry" in capsys.readouterr().err
    _assert_same_entries(_entries(cache, release), _entries(tmp_path / "cache", release))


def test_cached_models_are_not_loaded_and_shards_are_disjoint(built, monkeypatch, tmp_path):
    _, _, releases, cache, _ = built
    import sae_atlas.compute.engine as engine

    def no_load(*a, **k):
        raise AssertionError("model loaded although every SAE is cached")

    monkeypatch.setattr(engine, "load_model", no_load)
    report = compute_releases(releases, cache, _options())
    assert report.computed == [] and len(report.cached) == len(releases[0].saes())
    monkeypatch.undo()

    seen = []
    for i in range(3):
        seen.append(compute_releases(releases, tmp_path, _options(shard=(i, 3))).computed)
    flat = [s for part in seen for s in part]
    assert sorted(flat) == sorted(s.id for s in releases[0].saes()) and len(set(flat)) == len(flat)
    ids = sorted(s.id for s in releases[0].saes())  # one work unit each: shard i is the i-th contiguous third
    assert seen == [ids[i * len(ids) // 3 : (i + 1) * len(ids) // 3] for i in range(3)]


def test_changing_one_sae_recomputes_only_that_one(built, tmp_path):
    root, content, releases, cache, _ = built
    copy = tmp_path / "content"
    shutil.copytree(content, copy)
    shutil.copytree(cache, tmp_path / "cache")
    from tests.fixtures import make_sae_dir

    make_sae_dir(copy / "saes" / "mlp-jr" / "0", 16, D_SAE, "jumprelu", "blocks.0.hook_mlp_out", seed=99)
    changed = load_content(copy)
    report = compute_releases(changed, tmp_path / "cache", _options(batch_size=4))
    assert report.computed == ["tiny-2l@0-mlp-jr"]


def test_dump_prints_the_feature_record(built):
    _, content, releases, cache, _ = built
    sae_id = "tiny-2l@1-res-st"
    entry = _entries(cache, releases[0])[sae_id]
    f = int(np.argmax(entry["nonzero_count"]))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "sae_atlas", "dump", f"{sae_id}:{f}", "--content", str(content), "--cache", str(cache)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=True,
    )
    record = json.loads(out.stdout)
    assert list(record) == ["sae", "index", "max_activation", "density", "histogram", "positive_logits",
                            "negative_logits", "logit_histogram", "neighbours", "correlated_features",
                            "correlated_neurons", "aligned_neurons", "top_examples", "interval_examples", "umap"]
    assert record["sae"] == sae_id and record["index"] == f
    assert record["max_activation"] == pytest.approx(float(entry["max_activation"][f]))
    tokens = np.asarray(CacheStore(cache).corpus(corpus_key(releases[0]))["tokens"])
    s = FIXTURE_COMPUTE
    for ex in record["top_examples"]:
        p, t = ex["prompt"], ex["position"]
        start = max(0, t - s["context_before"])
        assert ex["tokens"] == tokens[p, start : t + s["context_after"] + 1].tolist()
        assert len(ex["activations"]) == len(ex["tokens"]) == len(ex["token_strings"])
        assert ex["activations"][t - start] == pytest.approx(ex["activation"], rel=1e-3)
    assert record["top_examples"][0]["activation"] == record["max_activation"]
    assert sum(record["histogram"]["counts"]) == int(entry["nonzero_count"][f])
    assert len(record["neighbours"]) == s["neighbours"]
    assert all(ex["activation"] > 0 for iv in record["interval_examples"] for ex in iv["examples"])

    bad = subprocess.run(
        [sys.executable, "-m", "sae_atlas", "dump", "tiny-2l@1-nope:0", "--content", str(content), "--cache", str(cache)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert bad.returncode == 1 and "unknown SAE tiny-2l@1-nope" in bad.stderr


def test_dump_of_an_uncomputed_sae_says_so(built, tmp_path):
    _, _, releases, _, _ = built
    with pytest.raises(AtlasError, match="not computed"):
        dump_feature(releases, tmp_path, "tiny-2l@1-res-st:0")


def test_out_of_memory_names_the_batch_size_option(built, monkeypatch, tmp_path):
    _, _, releases, _, _ = built
    import sae_atlas.compute.stats as stats

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(stats.FeatureStats, "update_pass1", oom)
    with pytest.raises(AtlasError, match="--batch-size"):
        compute_releases(releases, tmp_path, _options(batch_size=4))


def test_a_local_model_holds_the_files_weights_and_one_missing_is_an_error(tmp_path):
    """The model is built without drawing its weights (every one comes from the file): each
    parameter is the file's, and a file that lacks one is refused, not filled with whatever memory held."""
    from safetensors.torch import load_file, save_file

    from sae_atlas.backends.transformer_lens import TransformerLensBackend
    from sae_atlas.errors import InputError
    from sae_atlas.manifest import ModelSpec
    from tests.fixtures import make_model_dir

    make_model_dir(tmp_path / "model")
    state = load_file(str(tmp_path / "model" / "model.safetensors"))
    model = TransformerLensBackend.load(ModelSpec(id="m", path=tmp_path / "model"), "cpu", "float32", quiet=True).model
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), state[name]), name
    del state["blocks.1.mlp.W_in"]
    save_file(state, str(tmp_path / "model" / "model.safetensors"))
    with pytest.raises(InputError, match="missing"):
        TransformerLensBackend.load(ModelSpec(id="m", path=tmp_path / "model"), "cpu", "float32", quiet=True)

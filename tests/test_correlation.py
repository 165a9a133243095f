"""Correlated neurons and features, aligned neurons and the logit histogram against brute force
in dense float64 numpy, across batch sizes, feature blocks and a checkpoint."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from sae_atlas.compute import correlation, weights
from sae_atlas.compute.correlation import NeuronCorrelation, aligned_neurons, correlated_features
from sae_atlas.compute.stats import SparseActs
from sae_atlas.compute.weights import logit_effects

PROMPTS, CONTEXT, F, D, K = 30, 10, 40, 12, 5
DEAD = (7, 23)
SPLITS = ([30], [1] * 30, [7, 7, 7, 9], [4, 11, 2, 13])


@pytest.fixture(scope="module")
def data():
    """Activations f32 [300, 40] (about 10% firing, two features never) and the basis f32 [300, 12]
    (its last dimension constant, so it correlates with nothing)."""
    rng = np.random.default_rng(10)
    acts = np.where(rng.random((PROMPTS * CONTEXT, F)) < 0.1, rng.uniform(0.1, 5.0, (PROMPTS * CONTEXT, F)), 0.0)
    acts[:, DEAD] = 0.0
    x = rng.normal(0.0, 1.0, (PROMPTS * CONTEXT, D)) + 0.3 * acts[:, :D]
    x[:, -1] = 1.5
    return acts.astype(np.float32), x.astype(np.float32)


def batches(acts: np.ndarray, sizes: list[int]) -> list[SparseActs]:
    out, p0 = [], 0
    for nb in sizes:
        dense = torch.from_numpy(acts[p0 * CONTEXT : (p0 + nb) * CONTEXT])
        out.append(SparseActs.from_dense(dense, p0, CONTEXT))
        p0 += nb
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r f64 [columns of a, columns of b] over the rows, and where it is defined."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = np.sqrt((ac**2).sum(0)), np.sqrt((bc**2).sum(0))
    defined = (na[:, None] > 1e-9) & (nb[None, :] > 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ac.T @ bc) / (na[:, None] * nb[None, :])
    return np.where(defined, r, 0.0), defined


def brute_top(r: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.full((r.shape[0], k), -1, np.int32)
    value = np.zeros((r.shape[0], k), np.float64)
    for i in range(r.shape[0]):
        cols = np.flatnonzero(valid[i])
        order = cols[np.argsort(-r[i, cols], kind="stable")][:k]
        ranked = np.sort(r[i, cols])[::-1][: k + 1]
        assert np.all(np.diff(ranked) < -1e-4), f"fixture has near-ties in row {i}"
        index[i, : len(order)], value[i, : len(order)] = order, r[i, order]
    return index, value


def neuron_result(acts, x, sizes, k=K):
    nc = NeuronCorrelation(F, D)
    p0 = 0
    for b in batches(acts, sizes):
        nc.update(b, torch.from_numpy(x[p0 * CONTEXT : p0 * CONTEXT + b.n_tokens]))
        p0 += b.n_prompts
    return nc.result(k)


def test_correlated_neurons_match_brute_force(data):
    acts, x = data
    r, defined = pearson(acts, x)
    want_index, want_value = brute_top(r, defined, K)
    index, value = neuron_result(acts, x, SPLITS[2])
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_allclose(value, want_value, atol=1e-5)
    assert (index[list(DEAD)] == -1).all() and (value[list(DEAD)] == 0).all()
    assert not (index == D - 1).any()  # the constant dimension
    assert (index[np.setdiff1d(np.arange(F), DEAD)] >= 0).all()


def test_correlated_neurons_identical_across_batch_sizes(data):
    acts, x = data
    results = [neuron_result(acts, x, sizes) for sizes in SPLITS]
    for index, value in results[1:]:
        np.testing.assert_array_equal(index, results[0][0])
        np.testing.assert_array_equal(value, results[0][1])


def test_correlated_neurons_more_slots_than_dimensions_are_empty(data):
    acts, x = data
    index, value = neuron_result(acts, x, [30], k=D + 3)
    live = np.setdiff1d(np.arange(F), DEAD)
    assert (index[live, : D - 1] >= 0).all()  # every non-constant dimension ranks
    assert (index[:, D - 1 :] == -1).all() and (value[:, D - 1 :] == 0).all()


def test_neuron_correlation_resumes_from_a_checkpoint(data):
    acts, x = data
    parts = batches(acts, [7, 7, 7, 9])
    first = NeuronCorrelation(F, D)
    for b in parts[:2]:
        first.update(b, torch.from_numpy(x[b.first_prompt * CONTEXT : b.first_prompt * CONTEXT + b.n_tokens]))
    resumed = NeuronCorrelation(F, D)
    resumed.load_state(first.state_arrays())
    for b in parts[2:]:
        resumed.update(b, torch.from_numpy(x[b.first_prompt * CONTEXT : b.first_prompt * CONTEXT + b.n_tokens]))
    index, value = resumed.result(K)
    want_index, want_value = neuron_result(acts, x, [30])
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(value, want_value)
    with pytest.raises(ValueError, match="sum_x has shape"):
        NeuronCorrelation(F, D + 1).load_state(first.state_arrays())


def feature_result(acts, sizes, budget):
    parts = batches(acts, sizes)
    return correlated_features(lambda: iter(parts), F, K, budget)


def test_correlated_features_match_brute_force(data):
    acts, _ = data
    r, defined = pearson(acts, acts)
    valid = defined & (r > 0) & ~np.eye(F, dtype=bool)
    want_index, want_value = brute_top(r, valid, K)
    index, value = feature_result(acts, [30], 1 << 20)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_allclose(value, want_value, atol=1e-5)
    assert (index[list(DEAD)] == -1).all()
    assert not (index == np.arange(F)[:, None]).any()
    assert (value[index >= 0] > 0).all()
    # Positive r needs co-firing: every ranked pair fired together on some token.
    rows, slots = np.nonzero(index >= 0)
    assert ((acts[:, rows] > 0) & (acts[:, index[rows, slots]] > 0)).any(0).all()


@pytest.mark.parametrize("budget", [correlation.BYTES_PER_CELL * F * 3, 1])  # 14 blocks of 3 features, then one scan per feature
def test_correlated_features_identical_across_batches_and_blocks(data, budget):
    acts, _ = data
    want_index, want_value = feature_result(acts, [30], 1 << 20)
    assert len(correlation.feature_blocks(F, budget)) == (14 if budget > 1 else F)
    for sizes in SPLITS:
        index, value = feature_result(acts, sizes, budget)
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_array_equal(value, want_value)


def exact_co_firing(acts: np.ndarray) -> np.ndarray:
    """sum_t q_ti q_tj of the quantized activations in Python integers (object array [F, F])."""
    q = np.round(acts.astype(np.float64) * correlation.FACTOR_SCALE).astype(np.int64).astype(object)
    return q.T.dot(q)


@pytest.mark.parametrize("scale", [1.0, 1500.0])  # 1500: products near 2**62, the row buffers' two-word sums
@pytest.mark.parametrize("threads", [1, 3])
# the compiled kernel's buffer: all rows at once, or 3 rows a block
@pytest.mark.parametrize("path, cache_rows", [("compiled", None), ("compiled", 3), ("pairs", None), ("dense", None)])
@pytest.mark.parametrize("upper", [False, True])
def test_co_firing_sums_are_exact(data, scale, threads, path, cache_rows, upper, monkeypatch):
    acts = (data[0] * scale).astype(np.float32)
    want = exact_co_firing(acts)
    if upper:  # only the cells j >= i
        want = np.where(np.triu(np.ones((F, F), bool)), want, 0)
    add = {"compiled": correlation._add_co_firing, "pairs": correlation._add_co_firing_pairs, "dense": correlation._add_co_firing_dense}[path]
    if path == "compiled":
        assert correlation.compiled(correlation._co_fire_blocks) is not None, "numba is part of the compute extra"
    if cache_rows is not None:
        # 3 rows of 8-byte cells a block (the split sums at scale 1500 take two buffers: 1 row)
        monkeypatch.setattr(correlation, "CO_FIRE_CACHE", 8 * F * cache_rows)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for lo, hi in ((0, F), (5, 17), (39, 40)):
            low = torch.zeros((hi - lo) * F, dtype=torch.int64)
            high = torch.zeros_like(low)
            for b in batches(acts, SPLITS[3]):
                add((low, high), b, lo, hi, upper=upper)
            got = high.numpy().astype(object) * (1 << 32) + low.numpy().astype(object)
            assert (got.reshape(hi - lo, F) == want[lo:hi]).all(), (lo, hi)
    finally:
        torch.set_num_threads(before)


def test_mirror_fills_the_lower_half_from_the_upper(monkeypatch):
    rng = np.random.default_rng(3)
    full = rng.integers(-(1 << 40), 1 << 40, (F, F))
    full = np.triu(full) + np.triu(full, 1).T  # symmetric
    monkeypatch.setattr(correlation, "chunk_elements", lambda device: 4 * F * 7)  # 7 rows a chunk
    acc = tuple(torch.from_numpy(np.triu(w).reshape(-1).copy()) for w in (full, full // 3))
    correlation._mirror(acc, F)
    np.testing.assert_array_equal(acc[0].numpy().reshape(F, F), full)
    np.testing.assert_array_equal(acc[1].numpy().reshape(F, F), np.triu(full // 3) + np.triu(full // 3, 1).T)


def assert_features_equal(acts, want_index, want_value, sizes):
    """The correlated features over batches of `sizes`, all features at once and in blocks of 3
    rows, equal the expected ones."""
    for batch_sizes, budget in ((sizes, 1 << 20), (SPLITS[3], correlation.BYTES_PER_CELL * F * 3)):
        index, value = feature_result(acts, batch_sizes, budget)
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_array_equal(value, want_value)


@pytest.mark.parametrize("scan_entries", [1, 150, 1 << 30])  # each batch alone; a few batches per call; all at once
def test_correlated_features_identical_whatever_the_batches_joined(data, monkeypatch, scan_entries):
    acts, _ = data
    want_index, want_value = feature_result(acts, [30], 1 << 20)
    monkeypatch.setattr(correlation, "SCAN_ENTRIES", scan_entries)
    assert_features_equal(acts, want_index, want_value, SPLITS[1])


def test_joined_batches_are_the_batches_concatenated(data):
    acts, _ = data
    parts = batches(acts, SPLITS[3])
    sizes = [p.key.numel() for p in parts]
    runs = list(correlation._joined(iter(parts), sizes[0] + sizes[1]))  # the first two together, then one each
    assert [r.n_prompts for r in runs] == [15, 2, 13]
    whole = batches(acts, [30])[0]
    assert torch.equal(torch.cat([r.key + r.first_prompt * CONTEXT * F for r in runs]), whole.key)
    assert torch.equal(torch.cat([r.value for r in runs]), whole.value)
    gap = [parts[0], parts[2]]  # not consecutive: never joined
    assert [r.first_prompt for r in correlation._joined(iter(gap), 1 << 30)] == [0, 15]


def test_correlated_features_rejects_batches_that_change_between_scans(data):
    acts, _ = data
    scans = iter([batches(acts, [30]), batches(acts, [29])])
    with pytest.raises(ValueError, match="later scan"):
        correlated_features(lambda: iter(next(scans)), F, K, 8 * F * 20)


@pytest.mark.parametrize("n", [5, 11])
def test_aligned_neurons_match_brute_force(n):
    w = np.random.default_rng(5).normal(size=(9, 8)).astype(np.float32)
    index, value, share = aligned_neurons(torch.from_numpy(w), n)
    k = min(n, w.shape[1])
    order = np.argsort(-np.abs(w), 1, kind="stable")[:, :k]
    np.testing.assert_array_equal(index[:, :k], order)
    np.testing.assert_array_equal(value[:, :k], np.take_along_axis(w, order, 1))
    want_share = np.abs(np.take_along_axis(w, order, 1)) / np.abs(w.astype(np.float64)).sum(1, keepdims=True)
    np.testing.assert_allclose(share[:, :k], want_share, rtol=1e-6)
    assert (index[:, k:] == -1).all() and (value[:, k:] == 0).all() and (share[:, k:] == 0).all()


@pytest.fixture
def logit_weights():
    """Small integers (and quarters) so that the float32 logits equal the float64 ones exactly and
    many land on bin edges; feature 2's decoder row is zero (constant logits)."""
    rng = np.random.default_rng(11)
    w_dec = rng.integers(-4, 5, (7, 6)).astype(np.float32) / 4
    w_dec[2] = 0
    out_map = rng.integers(-2, 3, (6, 5)).astype(np.float32)
    w_u = rng.integers(-3, 4, (5, 301)).astype(np.float32)
    return w_dec, out_map, w_u


@pytest.fixture(params=["compiled", "elementwise"])
def histogram_path(request, monkeypatch):
    """The logit histogram's compiled CPU kernel, or its elementwise version (other devices)."""
    if request.param == "compiled":
        assert weights.compiled(weights._logit_rows) is not None, "numba is part of the compute extra"
    else:
        monkeypatch.setattr(weights, "compiled", lambda fn: None)
    return request.param


@pytest.mark.parametrize("chunk", [None, 2 * 301])  # one chunk; two features per chunk
def test_logit_histogram_matches_numpy(logit_weights, monkeypatch, chunk, histogram_path):
    w_dec, out_map, w_u = logit_weights
    if chunk is not None:
        monkeypatch.setattr(weights, "chunk_elements", lambda device: chunk)
    args = (torch.from_numpy(w_dec), torch.from_numpy(out_map), torch.from_numpy(w_u), 10)
    pos_t, pos_v, neg_t, neg_v, counts, value_range = logit_effects(*args, histogram_bins=50)
    logits = w_dec.astype(np.float64) @ out_map.astype(np.float64) @ w_u.astype(np.float64)
    assert counts.dtype == np.int32 and counts.shape == (7, 50) and value_range.dtype == np.float32
    for f, row in enumerate(logits):
        want, _ = np.histogram(row, bins=50)
        np.testing.assert_array_equal(counts[f], want, err_msg=f"feature {f}")
        np.testing.assert_array_equal(value_range[f], [row.min(), row.max()])
    assert counts[2, 25] == 301  # a constant row: the middle bin, as numpy puts it
    for got, want in zip((pos_t, pos_v, neg_t, neg_v), logit_effects(*args)):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("threads", [1, 3])
def test_logit_histogram_of_random_rows_matches_numpy(histogram_path, threads):
    rng = np.random.default_rng(12)
    logits = rng.normal(0.0, 3.0, (9, 1000)).astype(np.float32)
    logits[4] = 1.25  # constant
    logits[5, ::3] = logits[5, 0]  # repeated values, some at the minimum
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        counts, value_range = weights.logit_histogram(torch.from_numpy(logits), 17)
    finally:
        torch.set_num_threads(before)
    for f, row in enumerate(logits):
        want, _ = np.histogram(row.astype(np.float64), bins=17)
        np.testing.assert_array_equal(counts[f].numpy(), want, err_msg=f"row {f}")
        np.testing.assert_array_equal(value_range[f].numpy(), [row.min(), row.max()])


def test_logit_histogram_of_huge_constant_and_nan_rows(histogram_path):
    """A constant row too large to widen by 0.5 (numpy divides by zero there) lands in the middle
    bin, as any constant row does; NaN values are in no bin and the bins span the other values; an
    all-NaN row has no counts. On both paths, without an error."""
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 2.0, (5, 400)).astype(np.float32)
    logits[0] = 2.0**53
    logits[1] = -(2.0**60)
    logits[2, ::7] = np.nan
    logits[3, 0] = np.nan  # NaN first: the range still comes from the rest
    logits[4] = np.nan
    counts = weights.logit_histogram(torch.from_numpy(logits), 9)[0].numpy()
    for f in (0, 1):
        np.testing.assert_array_equal(counts[f], np.eye(9, dtype=np.int64)[4] * 400, err_msg=f"row {f}")
    for f in (2, 3):
        finite = logits[f][~np.isnan(logits[f])].astype(np.float64)
        np.testing.assert_array_equal(counts[f], np.histogram(finite, bins=9)[0], err_msg=f"row {f}")
    np.testing.assert_array_equal(counts[4], np.zeros(9))


def test_logit_histogram_without_output_map_is_zero(logit_weights):
    w_dec, _, w_u = logit_weights
    *_, counts, value_range = logit_effects(torch.from_numpy(w_dec), None, torch.from_numpy(w_u), 10, histogram_bins=50)
    assert counts.shape == (7, 50) and not counts.any() and not value_range.any()


@pytest.mark.parametrize("pair_cost", [0, 10**9])  # every batch by co-firing pairs; every batch dense
def test_correlated_features_identical_on_the_sparse_and_the_dense_path(data, monkeypatch, pair_cost):
    acts, _ = data
    want_index, want_value = feature_result(acts, [30], 1 << 20)
    monkeypatch.setattr(correlation, "DENSE_PAIR_COST", pair_cost)
    assert_features_equal(acts, want_index, want_value, SPLITS[2])


def test_single_threaded_runs_torch_in_one_thread_and_restores_the_count():
    from sae_atlas.compute.stats import single_threaded

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with single_threaded() as threads:
            assert threads == 3 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
        with pytest.raises(RuntimeError, match="inside"):
            with single_threaded():
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("load, want", [(0.5, 3), (2.0, 3), (3.0, 1), (9.0, 1)])  # on 2 cores: busy from 3
def test_bookkeeping_runs_in_one_thread_only_on_a_busy_machine(monkeypatch, load, want):
    from sae_atlas.compute import stats

    monkeypatch.setattr(stats.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(stats.os, "getloadavg", lambda: (load, load, load))
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with stats.bookkeeping_threads() as threads:
            assert threads == 3 and torch.get_num_threads() == want
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("budget", [1 << 20, correlation.BYTES_PER_CELL * F * 3])  # the whole S (upper half, mirrored), or blocks
@pytest.mark.parametrize("threads", [1, 3])
def test_the_compiled_ranking_is_the_torch_ranking_with_ties(data, budget, threads, monkeypatch):
    """The compiled ranking of S's rows (`_rank_rows`, which reads the lower half from the upper
    rather than mirroring it) gives the torch ranking's indices and values to the bit, ties (equal
    and proportional features) to the lower column."""
    acts, _ = data
    acts = acts.copy()
    acts[:, 3] = acts[:, 30]
    acts[:, 31] = acts[:, 30]
    acts[:, 12] = 2.0 * acts[:, 30]
    @contextlib.contextmanager
    def bookkeeping():
        yield threads

    monkeypatch.setattr(correlation, "bookkeeping_threads", bookkeeping)
    monkeypatch.setattr(correlation, "RANK_ROWS_PER_THREAD", 1)
    index, value = feature_result(acts, [7, 7, 7, 9], budget)
    plain = correlation.compiled
    monkeypatch.setattr(correlation, "compiled", lambda fn: None if fn is correlation._rank_rows else plain(fn))
    want_index, want_value = feature_result(acts, [7, 7, 7, 9], budget)
    np.testing.assert_array_equal(index, want_index)
    assert value.tobytes() == want_value.tobytes()
    assert list(index[30, :3]) == [3, 12, 31] and (value[30, :3] == 1.0).all()

"""The correlated features and neurons, the neuron alignment and the logit histogram of computed
cache entries against numpy over the whole fixture corpus (the releases and brute-force references
of test_compute), identical whatever the batch size and with pass 2 and the correlation scans
recomputing every batch."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sae_atlas.export.dump import dump_feature
from sae_atlas.compute import compute_releases
from tests.fixtures import residual_directions
from tests.test_compute import (  # noqa: F401 (fixtures)
    Case, _assert_same_entries, _corpus_tokens, _entries, _options, brute, built, case, pre, pre_brute, wide, wide_brute,
)

K = 5


def _pearson(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r f64 [columns of a, columns of b] over the rows, and where it is defined."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = np.sqrt((ac**2).sum(0)), np.sqrt((bc**2).sum(0))
    defined = (na[:, None] > 1e-9) & (nb[None, :] > 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ac.T @ bc) / (na[:, None] * nb[None, :])
    return np.where(defined, r, 0.0), defined


def _assert_top(index: np.ndarray, value: np.ndarray, r: np.ndarray, valid: np.ndarray, where: str) -> int:
    """index/value are each row's K highest valid r (higher first, the lower index on ties):
    values to 1e-5, indices exactly where no other candidate is within 1e-5. Returns the rows checked."""
    rows = 0
    for i in range(r.shape[0]):
        cols = np.flatnonzero(valid[i])
        order = cols[np.lexsort((cols, -r[i, cols]))][:K]
        n = len(order)
        np.testing.assert_allclose(value[i, :n], r[i, order], atol=1e-5, err_msg=f"{where} row {i}")
        np.testing.assert_allclose(r[i, index[i, :n]], r[i, order], atol=1e-5, err_msg=f"{where} row {i}")
        assert valid[i, index[i, :n]].all(), f"{where} row {i}"
        assert (index[i, n:] == -1).all() and (value[i, n:] == 0).all(), f"{where} row {i}"
        for slot, j in enumerate(order):
            if np.sum(np.abs(r[i, cols] - r[i, j]) < 1e-5) == 1:
                assert index[i, slot] == j, f"{where} row {i} slot {slot}"
        rows += n > 0
    return rows


def _mlp_layer(hook: str) -> int | None:
    """L for an SAE on blocks.L.hook_mlp_out, whose neurons are the MLP's (blocks.L.mlp.hook_post)."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_mlp_out", hook)
    return int(m.group(1)) if m else None


def _mlp_neurons(case: Case, layer: int) -> np.ndarray:
    """f32 [tokens, d_mlp]: the MLP's post-activations at every corpus token, from one forward of
    the reference model (TransformerLens's run_with_cache)."""
    tokens = torch.from_numpy(_corpus_tokens(case.release))
    hook = f"blocks.{layer}.mlp.hook_post"
    with torch.no_grad():
        _, cache = case.model.run_with_cache(tokens, names_filter=[hook])
    post = cache[hook].float().numpy()
    return post.reshape(-1, post.shape[-1])


def test_correlated_neurons_are_the_inputs_dimensions_or_mlp_neurons_of_highest_pearson_r(case: Case):
    checked, checked_mlp = 0, 0
    for sae_id, entry in case.entries.items():
        acts, x, _, hook = case.acts[sae_id]
        flat = acts.reshape(-1, acts.shape[-1]).numpy()
        layer = _mlp_layer(hook)
        basis = x.reshape(flat.shape[0], -1).numpy() if layer is None else _mlp_neurons(case, layer)
        if layer is not None:
            assert basis.shape[1] == case.model.cfg.d_mlp != x.shape[-1]
        r, defined = _pearson(flat, basis)
        assert entry["corr_neuron_index"].shape == (flat.shape[1], K) and entry["corr_neuron_value"].dtype == np.float32
        rows = _assert_top(entry["corr_neuron_index"], entry["corr_neuron_value"], r, defined, f"{sae_id} ({hook})")
        checked += rows
        checked_mlp += rows if layer is not None else 0
    assert checked > 0
    if any(_mlp_layer(spec.hook) is not None for spec in case.release.saes()):
        assert checked_mlp > 0


def test_correlated_features_are_the_other_features_of_highest_positive_r(case: Case):
    checked = 0
    for sae_id, entry in case.entries.items():
        flat = case.acts[sae_id][0].reshape(-1, case.acts[sae_id][0].shape[-1]).numpy()
        r, defined = _pearson(flat, flat)
        valid = defined & (r > 0) & ~np.eye(flat.shape[1], dtype=bool)
        checked += _assert_top(entry["corr_feature_index"], entry["corr_feature_value"], r, valid, sae_id)
        assert (entry["corr_feature_index"] != np.arange(flat.shape[1])[:, None]).all()
    assert checked > 0


def test_aligned_neurons_are_the_largest_decoder_weights_or_mlp_neuron_dot_products(case: Case):
    for sae_id, entry in case.entries.items():
        w = case.acts[sae_id][2].W_dec.detach().double().numpy()
        layer = _mlp_layer(case.acts[sae_id][3])
        if layer is not None:  # each MLP neuron's output weights (a row of W_out) . the decoder direction
            w_out = case.model.blocks[layer].mlp.W_out.detach().double().numpy()  # [d_mlp, d_model]
            w = np.einsum("fd,nd->fn", w, w_out)
        order = np.lexsort((np.broadcast_to(np.arange(w.shape[1]), w.shape), -np.abs(w)))[:, :K]
        np.testing.assert_array_equal(entry["aligned_index"], order, err_msg=sae_id)
        np.testing.assert_allclose(entry["aligned_value"], np.take_along_axis(w, order, 1), rtol=1e-6, err_msg=sae_id)
        share = np.abs(np.take_along_axis(w, order, 1)) / np.abs(w).sum(1, keepdims=True)
        np.testing.assert_allclose(entry["aligned_l1"], share, rtol=1e-5, err_msg=sae_id)


def test_logit_histogram_bins_every_tokens_logit_effect(case: Case):
    bins = case.release.compute.logit_histogram_bins
    w_u = case.model.W_U.detach().double().numpy()
    for sae_id, entry in case.entries.items():
        _, _, sae, hook = case.acts[sae_id]
        logits = residual_directions(case.model, hook, sae.W_dec.detach().numpy()) @ w_u
        counts, value_range = entry["logit_hist_counts"], entry["logit_hist_range"]
        assert counts.shape == (logits.shape[0], bins) and counts.dtype == np.int32
        np.testing.assert_allclose(value_range, np.stack([logits.min(1), logits.max(1)], 1), rtol=1e-5, atol=1e-6, err_msg=sae_id)
        for f, row in enumerate(logits):
            want, edges = np.histogram(row, bins=bins)
            # The engine bins float32 logits: a value within float32 rounding of an inner edge may
            # fall on its other side, moving one count between neighbouring bins.
            near = (np.abs(row[:, None] - edges[None, 1:-1]) < 1e-5 * max(1.0, np.abs(row).max())).sum(0)
            drift = np.abs(np.cumsum(counts[f].astype(np.int64) - want))[:-1]
            assert counts[f].sum() == row.size and (drift <= near).all(), f"{sae_id}:{f}"


def test_dump_has_the_new_statistics(built):
    _, _, releases, cache, _ = built
    sae_id, entry = next(iter(_entries(cache, releases[0]).items()))
    i = int(np.flatnonzero(entry["corr_feature_index"][:, 0] >= 0)[0])
    out = dump_feature(releases, cache, f"{sae_id}:{i}")
    hist = out["logit_histogram"]
    assert len(hist["edges"]) == len(hist["counts"]) + 1 == releases[0].compute.logit_histogram_bins + 1
    assert hist["counts"] == entry["logit_hist_counts"][i].tolist()
    assert hist["edges"][0] == pytest.approx(float(entry["logit_hist_range"][i, 0]))
    assert [c["index"] for c in out["correlated_features"]] == [j for j in entry["corr_feature_index"][i].tolist() if j >= 0]
    assert [c["r"] for c in out["correlated_neurons"]] == pytest.approx([v for j, v in zip(entry["corr_neuron_index"][i], entry["corr_neuron_value"][i]) if j >= 0])
    assert [a["index"] for a in out["aligned_neurons"]] == entry["aligned_index"][i].tolist()
    assert set(out["aligned_neurons"][0]) == {"index", "value", "l1_share"}


@pytest.mark.parametrize("correlation_memory", [1, 24 * 32 * 5])  # one feature per scan; blocks of 5
def test_correlations_do_not_depend_on_batch_size_blocks_or_replay(built, tmp_path, correlation_memory):
    _, _, releases, cache, _ = built
    base = _entries(cache, releases[0])
    for batch_size, replay_memory in ((1, None), (5, 0)):
        out = tmp_path / f"{batch_size}-{replay_memory}"
        compute_releases(releases, out, _options(batch_size=batch_size, replay_memory=replay_memory, correlation_memory=correlation_memory))
        _assert_same_entries(base, _entries(out, releases[0]))


def test_the_logit_histogram_kernel_counts_as_numpy_does_on_edges_ties_and_constant_rows():
    """Values exactly on bin edges (a linspace over the row's range, rounded grids), a constant row,
    a row of two values and random rows, in chunks of one row and of many: np.histogram's counts."""
    import torch

    from sae_atlas.compute import weights

    g = torch.Generator().manual_seed(3)
    rows = [torch.linspace(-1.0, 1.0, 1001), torch.round(torch.randn(1001, generator=g) * 10) / 10,
            torch.full((1001,), 0.25), torch.tensor([0.0, 1.0] * 500 + [0.5]),
            torch.arange(1001, dtype=torch.float32) * 0.1 + 1000.0]
    rows += list(torch.randn(6, 1001, generator=g) * 3)
    x = torch.stack(rows)
    # float64 rows holding np.histogram's own edges and their neighbours: where the scaled value's
    # floor is on the wrong side of an edge, so that the kernel's comparison with the edges is needed
    exact = []
    for first, last in [(0.1, 0.7), (-2.123, 0.377), (1000.0, 1100.1)]:
        e = np.arange(51) * ((last - first) / 50) + first
        exact.append(np.concatenate([[first, last], e[1:-1], np.nextafter(e[1:-1], np.inf), np.nextafter(e[1:-1], -np.inf),
                                     np.full(1001 - 2 - 3 * 49, first)]))
    x64 = torch.tensor(np.stack(exact))
    naive = np.stack([np.bincount(np.clip(np.floor((r - r.min()) * (50 / (r.max() - r.min()))), 0, 49).astype(int), minlength=50)
                      for r in x64.numpy()])
    expected64 = np.stack([np.histogram(r, 50)[0] for r in x64.numpy()])
    assert (naive != expected64).any()  # the rows do exercise the edge comparison
    before = x64.clone()
    np.testing.assert_array_equal(weights.logit_histogram(x64, 50)[0].numpy(), expected64)
    assert torch.equal(x64, before)  # the input is left as it was
    expected = np.stack([np.histogram(r.astype(np.float64), 50)[0] for r in x.numpy()])
    counts, value_range = weights.logit_histogram(x, 50)
    np.testing.assert_array_equal(counts.numpy(), expected)
    np.testing.assert_array_equal(value_range.numpy(), np.stack([x.min(1).values.numpy(), x.max(1).values.numpy()], 1))
    small = weights.chunk_elements
    try:
        weights.chunk_elements = lambda device: 8 * 1001  # one row per chunk
        np.testing.assert_array_equal(weights.logit_histogram(x, 50)[0].numpy(), expected)
    finally:
        weights.chunk_elements = small


def test_the_compiled_logit_pass_gives_numpys_top_logits_range_and_histogram_and_torchs_on_ties(monkeypatch):
    """`logit_effects` on a CPU (one compiled pass per row of logits) against numpy on the same
    float32 logits: each row's top 4 both ways (distinct values: a single order), its (min, max) and
    np.histogram's counts. A chunk with a row whose top values tie (a duplicated unembedding
    column), a zero decoder row (a constant row of zeros) or a NaN row is left to torch: in one
    chunk and in chunks of one row, byte-identical to runs without the compiled pass."""
    from sae_atlas.compute import weights

    g = torch.Generator().manual_seed(5)
    d, vocab, n, bins = 16, 3001, 4, 7
    w_dec = torch.randn(24, d, generator=g)
    w_u = torch.randn(d, vocab, generator=g)
    w_u[:, 1] = w_u[:, 0] = w_dec[3]  # rows 3 and 4 have two equal top logits
    w_dec[4] = w_dec[3] * 1.25
    w_dec[7] = 0.0
    w_dec[9, 2] = float("nan")
    out_map = torch.eye(d)
    compiled_chunks = []

    def chunk(*a):
        compiled_chunks.append(done := real_chunk(*a))
        return done

    real_chunk = weights._logit_chunk
    monkeypatch.setattr(weights, "_logit_chunk", chunk)

    def run(rows_per_chunk=None, kernel=True):
        monkeypatch.setattr(weights, "chunk_elements", lambda device: (rows_per_chunk or 24) * vocab)
        if not kernel:  # torch's top-k, min and max throughout (and the histogram on its own)
            monkeypatch.setattr(weights, "_logit_chunk", lambda *a: compiled_chunks.append(False))
        compiled_chunks.clear()
        out = [np.asarray(a).copy() for a in weights.logit_effects(w_dec, out_map, w_u, n, histogram_bins=bins)]
        assert compiled_chunks  # a chunk at a time
        monkeypatch.undo()
        monkeypatch.setattr(weights, "_logit_chunk", chunk)
        return out, list(compiled_chunks)

    whole, whole_chunks = run()
    rows, row_chunks = run(1)
    assert whole_chunks == [False]  # the ties, zeros and NaN
    assert [r for r, done in enumerate(row_chunks) if not done] == [3, 4, 7, 9]

    def untied(row, order):  # distinct top n, none equal to the n-th outside them
        return len(set(row[order])) == n and (row == row[order[-1]]).sum() == 1

    directions = w_dec @ out_map
    for r in range(24):
        row = (directions[r : r + 1] @ w_u)[0].numpy()  # the logits of a one-row chunk
        top, bottom = np.argsort(-row, kind="stable")[:n], np.argsort(row, kind="stable")[:n]
        if r in (3, 4, 7, 9):
            continue
        assert untied(row, top) and untied(row, bottom)
        np.testing.assert_array_equal(rows[0][r], top)
        np.testing.assert_array_equal(rows[1][r], row[top])
        np.testing.assert_array_equal(rows[2][r], bottom)
        np.testing.assert_array_equal(rows[3][r], row[bottom])
        np.testing.assert_array_equal(rows[4][r], np.histogram(row.astype(np.float64), bins)[0])
        np.testing.assert_array_equal(rows[5][r], [row.min(), row.max()])
    for r in (3, 4):
        assert set(rows[0][r][:2]) == {0, 1} and rows[1][r][0] == rows[1][r][1] == rows[5][r][1]
    for compiled, plain in ((whole, run(kernel=False)[0]), (rows, run(1, kernel=False)[0])):
        for a, b in zip(compiled, plain):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    w_dec[[3, 4, 7, 9]] = w_dec[0].clone()
    for top, bins in ((n, 0), (0, bins), (0, 0)):  # without the histogram, without top logits
        out = [np.asarray(a) for a in weights.logit_effects(w_dec, out_map, w_u, top, histogram_bins=bins)]
        assert len(out) == (6 if bins else 4) and out[0].shape == (24, top)
        for a, b in zip(out, whole if top else whole[4:]):
            if a.size:
                np.testing.assert_array_equal(a[[0, 1, 2]], b[[0, 1, 2]])

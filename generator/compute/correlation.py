"""Per-feature alignments and correlations: the decoder's largest output dimensions, the input
dimensions (or neurons) and the other features whose activations correlate most with a feature.

Correlations are Pearson's r over every token of the corpus, a token where a feature does not fire
counting as activation 0. Their sums are exact and order-independent as in `stats.py`: each value
or product is rounded to a fixed-point int64 (float32 x float32 is exact in float64, so the
rounding is the only step) and integer sums do not depend on the order, so the results are the same
whatever the batch size, the number of feature blocks or a resume from a checkpoint.

Rankings use unique int64 keys: float32 bits of r (mapped to keep the order of negative values)
<< 32 | (2**32 - 1 - index): the higher r first, then the lower index. Empty slots: index -1, 0.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from sae_atlas.compute.options import chunk_elements
from sae_atlas.compute.stats import LOW, SCALE_SQ, SCALE_VEC, SparseActs

EMPTY = torch.iinfo(torch.int64).min
BLOCK_BUDGET = 1 << 30  # bytes of the co-occurrence accumulator of `correlated_features`
RANK_SHARE = 16  # the ranking's cells at once: chunk_elements / this (about 50 bytes of temporaries each)


def _ranked(r: torch.Tensor, valid: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of r f32 [R, C], the k highest valid entries: (column i32 [R, k], r f32 [R, k])."""
    bits = r.contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits, -1 - (bits & 0x7FFFFFFF))  # ascending like the floats
    column = torch.arange(r.shape[1], device=r.device)
    keys = torch.where(valid, ordered * (1 << 32) + (LOW - column), torch.full_like(bits, EMPTY))
    index = np.full((r.shape[0], k), -1, np.int32)
    value = np.zeros((r.shape[0], k), np.float32)
    kk = min(k, r.shape[1])
    if kk == 0:
        return index, value
    top = keys.topk(kk, dim=1).values
    found = top != EMPTY
    col = torch.where(found, LOW - (top & LOW), torch.zeros_like(top))
    index[:, :kk] = torch.where(found, col, -1).cpu().numpy()
    value[:, :kk] = torch.where(found, torch.take_along_dim(r, col, 1), torch.zeros_like(r[:, :1])).cpu().numpy()
    return index, value


def aligned_neurons(w_dec: torch.Tensor, n: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n largest-|w| weights of each decoder row (the output dimensions a feature writes to
    most): (index i32[F,n], signed value f32[F,n], |w| / the row's L1 norm f32[F,n])."""
    f, d = w_dec.shape
    k = min(n, d)
    index = np.full((f, n), -1, np.int32)
    value = np.zeros((f, n), np.float32)
    share = np.zeros((f, n), np.float32)
    step = max(1, chunk_elements(w_dec.device) // max(d, 1))
    for lo in range(0, f, step):
        rows = w_dec[lo : lo + step].float()
        magnitude, i = rows.abs().topk(k, dim=1)
        l1 = rows.abs().sum(1, keepdim=True)
        index[lo : lo + step, :k] = i.cpu().numpy()
        value[lo : lo + step, :k] = torch.take_along_dim(rows, i, 1).cpu().numpy()
        share[lo : lo + step, :k] = torch.where(l1 > 0, magnitude / l1.clamp_min(1e-30), 0.0).cpu().numpy()
    return index, value, share


def _moments(total: torch.Tensor, total_sq: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard deviation) f64 from fixed-point sums of values and of squares over n tokens."""
    mean = total.double() / SCALE_VEC / n
    var = total_sq.double() / SCALE_SQ / n - mean.square()
    return mean, var.clamp_min(0).sqrt()


class NeuronCorrelation:
    """Running sums for the Pearson correlation of each feature with each dimension of a basis
    (the SAE's input vectors, or a layer's neurons) over the corpus.

    Per batch: the features' firing entries and the basis activations X f32 [tokens, d]. The cross
    sums sum_t a_ti x_tj are the sparse product A^T X, computed entry by entry (each product a x_t
    rounded to fixed point, scattered into its feature's row): nnz * d work, like the sparse
    product, and exact. The state is F * d int64 (8 bytes per cell)."""

    STATE = ("n_tokens", "sum_a", "sum_a2", "sum_x", "sum_x2", "sum_ax")

    def __init__(self, n_features: int, d: int, device: str | torch.device = "cpu"):
        i64 = dict(dtype=torch.int64, device=device)
        self.n_features, self.d, self.device = n_features, d, device
        self.n_tokens = torch.zeros((), **i64)
        self.sum_a = torch.zeros(n_features, **i64)  # SCALE_VEC
        self.sum_a2 = torch.zeros(n_features, **i64)  # SCALE_SQ
        self.sum_x = torch.zeros(d, **i64)  # SCALE_VEC
        self.sum_x2 = torch.zeros(d, **i64)  # SCALE_SQ
        self.sum_ax = torch.zeros((n_features, d), **i64)  # SCALE_SQ

    def update(self, acts: SparseActs, x: torch.Tensor) -> None:
        """acts: a batch's firing entries; x f32 [B * T, d]: the basis at the same tokens."""
        x = x.reshape(acts.n_tokens, self.d).double()
        feature, value = acts.feature, acts.value.double()
        self.n_tokens += acts.n_tokens
        self.sum_a.index_add_(0, feature, (value * SCALE_VEC).round().to(torch.int64))
        self.sum_a2.index_add_(0, feature, (value.square() * SCALE_SQ).round().to(torch.int64))
        self.sum_x += (x * SCALE_VEC).round().to(torch.int64).sum(0)
        self.sum_x2 += (x.square() * SCALE_SQ).round().to(torch.int64).sum(0)
        x_scaled = x * SCALE_SQ  # a power of two: exact
        token = acts.token
        # Small chunks keep the products in cache between the multiply and the scatter.
        step = max(1, chunk_elements(x.device) // 4 // max(self.d, 1))
        for lo in range(0, value.shape[0], step):
            products = (x_scaled[token[lo : lo + step]] * value[lo : lo + step, None]).round_().to(torch.int64)
            self.sum_ax.index_add_(0, feature[lo : lo + step], products)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).cpu().numpy() for name in self.STATE}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name in self.STATE:
            ref = getattr(self, name)
            value = torch.from_numpy(np.array(arrays[name]))
            if value.numel() == ref.numel():
                value = value.reshape(ref.shape)  # memory-mapped 0-d arrays load as shape (1,)
            if value.shape != ref.shape or value.dtype != ref.dtype:
                raise ValueError(f"checkpoint array {name} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}")
            setattr(self, name, value.to(self.device))

    def result(self, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The k basis dimensions of highest r per feature: (corr_neuron_index i32[F,k],
        corr_neuron_value f32[F,k]); constant dimensions and features that never fire have none."""
        n = max(int(self.n_tokens), 1)
        mean_a, std_a = _moments(self.sum_a, self.sum_a2, n)
        mean_x, std_x = _moments(self.sum_x, self.sum_x2, n)
        index = np.full((self.n_features, k), -1, np.int32)
        value = np.zeros((self.n_features, k), np.float32)
        step = max(1, chunk_elements(self.sum_ax.device) // RANK_SHARE // max(self.d, 1))
        for lo in range(0, self.n_features, step):
            hi = min(lo + step, self.n_features)
            cov = self.sum_ax[lo:hi].double() / SCALE_SQ / n - mean_a[lo:hi, None] * mean_x
            scale = std_a[lo:hi, None] * std_x
            valid = scale > 0
            r = torch.where(valid, cov / torch.where(valid, scale, 1.0), 0.0).clamp(-1, 1).float()
            index[lo:hi], value[lo:hi] = _ranked(r, valid, k)
        return index, value


def feature_blocks(n_features: int, budget: int = BLOCK_BUDGET) -> list[tuple[int, int]]:
    """The [lo, hi) blocks of features whose co-occurrence rows (F int64 each) fit in `budget`
    bytes: one corpus scan each."""
    rows = max(1, budget // (8 * max(n_features, 1)))
    return [(lo, min(lo + rows, n_features)) for lo in range(0, n_features, rows)]


def _add_co_firing(acc: torch.Tensor, acts: SparseActs, lo: int, hi: int) -> None:
    """acc int64 [(hi - lo) * F] += round(a_ti * a_tj * SCALE_SQ) for every token t and every
    pair of its firing features i in [lo, hi), j any: the block's rows of A^T A, one product per
    (entry of the block, entry of the same token)."""
    f = acts.n_features
    token, feature, value = acts.token, acts.feature, acts.value.double()
    per_token = torch.bincount(token, minlength=acts.n_tokens)
    row_start = torch.cumsum(per_token, 0) - per_token
    entry = torch.nonzero((feature >= lo) & (feature < hi)).squeeze(1)
    partners = per_token[token[entry]]
    pair_start = torch.cumsum(partners, 0) - partners
    # Runs of entries whose pairs start in the same chunk: at most chunk + one token's entries each.
    chunk = max(1, chunk_elements(acc.device) // 8)
    run = pair_start // chunk
    bounds = [0] + torch.cumsum(torch.unique_consecutive(run, return_counts=True)[1], 0).tolist()
    row = (feature[entry] - lo) * f
    scaled = value[entry] * SCALE_SQ
    # Each entry's partners: its token's entries, a contiguous run from the token's first.
    first_partner = row_start[token[entry]] - pair_start
    for s, e in zip(bounds[:-1], bounds[1:]):
        count = partners[s:e]
        n_pairs = int(count.sum())
        other = torch.repeat_interleave(first_partner[s:e], count, output_size=n_pairs)
        other += torch.arange(int(pair_start[s]), int(pair_start[s]) + n_pairs, device=acc.device)
        index = torch.repeat_interleave(row[s:e], count, output_size=n_pairs) + feature[other]
        product = torch.repeat_interleave(scaled[s:e], count, output_size=n_pairs) * value[other]
        acc.index_add_(0, index, product.round_().to(torch.int64))


def correlated_features(
    batches: Callable[[], Iterable[SparseActs]], n_features: int, k: int = 5, budget: int = BLOCK_BUDGET,
) -> tuple[np.ndarray, np.ndarray]:
    """The k other features of the same SAE most positively correlated with each feature:
    (corr_feature_index i32[F,k], corr_feature_value f32[F,k]), r > 0 only.

    Only co-firing features can have r > 0: activations are >= 0, so if i and j never fire on the
    same token, sum_t a_ti a_tj = 0 and cov(i, j) = -mean_i * mean_j <= 0. The co-occurrence sums
    S_ij are therefore sparse products over firing pairs, never a dense F x F matrix: features are
    taken in blocks [lo, hi) whose rows of S (8 bytes per cell) fit in `budget`, and each block
    scans the corpus once (`batches()` must give the same batches each time, e.g. the replayed
    pass-1 entries). Cost: ceil(F / block) scans; work sum over tokens of nnz_t * nnz_t(block),
    summed over the blocks: sum_t nnz_t ** 2 pair products in all, whatever the budget."""
    index = np.full((n_features, k), -1, np.int32)
    value = np.zeros((n_features, k), np.float32)
    sums: tuple[torch.Tensor, torch.Tensor] | None = None
    n_tokens = 0
    for lo, hi in feature_blocks(n_features, budget):
        acc = None
        scan_tokens = 0
        for acts in batches():
            if acc is None:
                acc = torch.zeros((hi - lo) * n_features, dtype=torch.int64, device=acts.value.device)
                if sums is None:
                    sums = (torch.zeros_like(acc[:n_features]), torch.zeros_like(acc[:n_features]))
            if lo == 0:
                v = acts.value.double()
                sums[0].index_add_(0, acts.feature, (v * SCALE_VEC).round().to(torch.int64))
                sums[1].index_add_(0, acts.feature, (v.square() * SCALE_SQ).round().to(torch.int64))
                n_tokens += acts.n_tokens
            scan_tokens += acts.n_tokens
            _add_co_firing(acc, acts, lo, hi)
        if acc is None:
            return index, value
        if scan_tokens != n_tokens:
            raise ValueError(f"batches() gave {scan_tokens} tokens on a later scan, {n_tokens} on the first")
        index[lo:hi], value[lo:hi] = _rank_block(acc.view(hi - lo, n_features), lo, sums, n_tokens, k)
    return index, value


def _rank_block(acc: torch.Tensor, lo: int, sums: tuple[torch.Tensor, torch.Tensor], n_tokens: int, k: int):
    """Top-k positive r of the block's rows of S (int64 [rows, F], SCALE_SQ), excluding i == j."""
    n = max(n_tokens, 1)
    mean, std = _moments(sums[0], sums[1], n)
    rows, f = acc.shape
    index = np.full((rows, k), -1, np.int32)
    value = np.zeros((rows, k), np.float32)
    step = max(1, chunk_elements(acc.device) // RANK_SHARE // max(f, 1))
    column = torch.arange(f, device=acc.device)
    for s in range(0, rows, step):
        e = min(s + step, rows)
        i = torch.arange(lo + s, lo + e, device=acc.device)
        scale = std[i, None] * std
        cov = acc[s:e].double() / SCALE_SQ / n - mean[i, None] * mean
        r = (cov / torch.where(scale > 0, scale, 1.0)).clamp(-1, 1).float()
        valid = (scale > 0) & (r > 0) & (column != i[:, None])
        index[s:e], value[s:e] = _ranked(r, valid, k)
    return index, value

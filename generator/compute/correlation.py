"""Per-feature alignments and correlations: the decoder's largest output dimensions, the input
dimensions (or neurons) and the other features whose activations correlate most with a feature.

Correlations are Pearson's r over every token of the corpus, a token where a feature does not fire
counting as activation 0, of the activations and the basis quantized to multiples of 2**-18
(FACTOR_SCALE; r differs from that of the float32 values by about 1e-6 on a hundred tokens, less
on more). Every sum is exact and order-independent, so the results are the same whatever the
batch size, the number of feature blocks or a resume from a checkpoint: the quantized values are
integers (in quanta), their products integers in units of 2**-36, and the cross sums
sum_t a_ti x_tj are float64 sparse matrix products over runs of tokens whose sums stay below
2**53 (`exact_parts`), exact in any summation order, at the speed of a float64 CSR @ dense
product, not of one rounding and scatter per (entry, dimension); the co-occurrence sums
sum_t a_ti a_tj are int64 products per co-firing pair. Both add to two-word int64 sums
(`add_wide`) that no corpus overflows.

Rankings use unique int64 keys: float32 bits of r (mapped to keep the order of negative values)
<< 32 | (2**32 - 1 - index): the higher r first, then the lower index. Empty slots: index -1, 0.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import warnings

import numpy as np
import torch

from sae_atlas.compute.options import chunk_elements
from sae_atlas.compute.stats import LOW, SparseActs, bookkeeping_threads
from sae_atlas.compute.weights import compiled, run_jobs

EMPTY = torch.iinfo(torch.int64).min
BLOCK_BUDGET = 1 << 30  # bytes of the co-occurrence accumulator of `correlated_features`
FACTOR_SCALE = float(1 << 18)  # the quantum of a value: 2**-18
SCALE_CROSS = FACTOR_SCALE * FACTOR_SCALE  # ... and of a product or square: 2**-36
WORD = (1 << 32) - 1
EXACT = float(1 << 53)  # float64 holds every integer up to this
BYTES_PER_CELL = 16  # of the co-occurrence accumulator: two int64 words
# A co-firing pair costs about this many multiply-adds of a dense product: a batch where most
# features fire takes the dense path (`_add_co_firing_dense`), the same exact sums.
DENSE_PAIR_COST = 64
# Firing entries the co-occurrence scan takes at once (`_joined`): the kernel's row sums are added to
# the accumulator once per call, a pass over all of it where features co-fire much (256 MiB at 4,096
# features), so batches are joined into calls of about this many entries (about 90 bytes of
# temporaries an entry: within the scan's share of `replay.working_set`, 40 * chunk_elements).
SCAN_ENTRIES = 1 << 20
CO_FIRE_CACHE = 1 << 19  # bytes of `_co_fire_blocks`' buffer: half a core's L2 cache
RANK_ROWS_PER_THREAD = 64  # the compiled ranking's rows a thread at least (`_rank_block_compiled`)
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


def aligned_neurons(w_dec: torch.Tensor, n: int = 5, w_out: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n largest-|w| weights of each decoder row (the output dimensions a feature writes to
    most): (index i32[F,n], signed value f32[F,n], |w| / the row's L1 norm f32[F,n]).

    With `w_out` [neurons, d] (an MLP's output weights, for an SAE on its output), the row is the
    decoder direction's dot product with each neuron's output weights, w_dec @ w_out.T."""
    f = w_dec.shape[0]
    d = w_dec.shape[1] if w_out is None else w_out.shape[0]
    k = min(n, d)
    index = np.full((f, n), -1, np.int32)
    value = np.zeros((f, n), np.float32)
    share = np.zeros((f, n), np.float32)
    step = max(1, chunk_elements(w_dec.device) // max(d, 1))
    for lo in range(0, f, step):
        rows = w_dec[lo : lo + step].float()
        if w_out is not None:
            rows = rows @ w_out.float().T
        magnitude, i = rows.abs().topk(k, dim=1)
        l1 = rows.abs().sum(1, keepdim=True)
        index[lo : lo + step, :k] = i.cpu().numpy()
        value[lo : lo + step, :k] = torch.take_along_dim(rows, i, 1).cpu().numpy()
        share[lo : lo + step, :k] = torch.where(l1 > 0, magnitude / l1.clamp_min(1e-30), 0.0).cpu().numpy()
    return index, value, share


def _moments(total: torch.Tensor, squares: tuple[torch.Tensor, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard deviation) f64 from the sums of quantized values and (two-word) of their
    squares over n tokens."""
    mean = total.double() / FACTOR_SCALE / n
    var = wide_value(*squares) / n - mean.square()
    return mean, var.clamp_min(0).sqrt()


def quantized(values: torch.Tensor) -> torch.Tensor:
    """float64 integers round(v * FACTOR_SCALE): the values as the cross sums use them."""
    return (values.double() * FACTOR_SCALE).round_()


def exact_parts(bound: torch.Tensor) -> list[int]:
    """Token boundaries [0, ..., n] of runs whose sum of `bound` (per token, an upper bound of the
    magnitude of its products, in quanta) stays below 2**53: runs over which a float64 sum of
    the products is exact (one run for any realistic batch). Exact while every product is below
    2**52 quanta (|a x| < 2**16); larger ones are rounded to float64 (relative error 1e-16)."""
    n = bound.shape[0]
    if n == 0:
        return [0, 0]
    run = torch.div(torch.cumsum(bound, 0), EXACT / 2, rounding_mode="floor").to(torch.int64)
    return [0] + torch.cumsum(torch.unique_consecutive(run, return_counts=True)[1], 0).tolist()


def add_wide(low: torch.Tensor, high: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """Two-word sums of int64 `values` (in quanta of SCALE_CROSS) at `index` (repeats allowed):
    `high` sums their upper bits (floor(v / 2**32)), `low` their lower 32 bits (each under 2**32,
    so 2**31 additions per cell before `low` could overflow)."""
    high.index_add_(0, index, values >> 32)
    low.index_add_(0, index, values & WORD)


def wide_value(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The real value of two-word sums, f64."""
    return (high.double() * float(1 << 32) + low.double()) / SCALE_CROSS


def _squares(q: torch.Tensor) -> torch.Tensor:
    """int64 squares of quantized values (quanta of SCALE_CROSS; exact below |v| = 2**13.5)."""
    qi = q.to(torch.int64)
    return qi * qi


def _csr(crow: torch.Tensor, col: torch.Tensor, value: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, value, shape, check_invariants=False)


def _entry_starts(acts: SparseActs, bounds: list[int]) -> list[int]:
    """The first entry of each token boundary (entries are in token order)."""
    at = torch.tensor(bounds, dtype=torch.int64, device=acts.key.device) * acts.n_features
    return torch.searchsorted(acts.key, at).tolist()


class NeuronCorrelation:
    """Running sums for the Pearson correlation of each feature with each dimension of a basis
    (the SAE's input vectors, or a layer's neurons) over the corpus.

    Per batch: the features' firing entries and the basis activations X f32 [tokens, d]. The cross
    sums sum_t a_ti x_tj are A^T X of the quantized values (see the module's docstring), one exact
    float64 CSR @ dense product per block of the batch's firing features. The state is F * d
    int64 (8 bytes per cell)."""

    STATE = ("n_tokens", "sum_a", "sum_a2", "sum_a2_high", "sum_x", "sum_x2", "sum_x2_high", "sum_ax", "sum_ax_high")

    def __init__(self, n_features: int, d: int, device: str | torch.device = "cpu"):
        i64 = dict(dtype=torch.int64, device=device)
        self.n_features, self.d, self.device = n_features, d, device
        self.n_tokens = torch.zeros((), **i64)
        # Quantized values (units of 2**-18); squares and products as two words (`add_wide`).
        self.sum_a = torch.zeros(n_features, **i64)
        self.sum_a2, self.sum_a2_high = torch.zeros(n_features, **i64), torch.zeros(n_features, **i64)
        self.sum_x = torch.zeros(d, **i64)
        self.sum_x2, self.sum_x2_high = torch.zeros(d, **i64), torch.zeros(d, **i64)
        self.sum_ax, self.sum_ax_high = torch.zeros((n_features, d), **i64), torch.zeros((n_features, d), **i64)

    def update(self, acts: SparseActs, x: torch.Tensor) -> None:
        """acts: a batch's firing entries; x f32 [B * T, d]: the basis at the same tokens."""
        n, f = acts.n_tokens, self.n_features
        x_q = quantized(x.reshape(n, self.d))
        # The entries feature-major (tokens ascending within a feature; the order the example
        # windows use too): the rows of A^T as a CSR matrix without a sort of its own.
        fkey, fvalue = acts._feature_major()
        feature = torch.div(fkey, max(n, 1), rounding_mode="floor")
        token = fkey - feature * n
        a_q = quantized(fvalue)
        self.n_tokens += n
        self.sum_a.index_add_(0, feature, a_q.to(torch.int64))
        add_wide(self.sum_a2, self.sum_a2_high, feature, _squares(a_q))
        self.sum_x += x_q.to(torch.int64).sum(0)
        x2 = _squares(x_q)
        self.sum_x2 += (x2 & WORD).sum(0)
        self.sum_x2_high += (x2 >> 32).sum(0)
        if a_q.numel() == 0:
            return
        largest_a = torch.zeros(n, dtype=torch.float64, device=x_q.device)
        largest_a.scatter_reduce_(0, token, a_q.abs(), "amax")
        bounds = exact_parts(largest_a * x_q.abs().amax(1))
        rows_per_block = max(1, chunk_elements(x_q.device) // max(self.d, 1))
        for t0, t1 in zip(bounds[:-1], bounds[1:]):
            if len(bounds) > 2:  # several runs (huge values): the run's entries, still feature-major
                mine = (token >= t0) & (token < t1)
                feat, col, a = feature[mine], token[mine] - t0, a_q[mine]
            else:
                feat, col, a = feature, token, a_q
            if feat.numel() == 0:
                continue
            crow = torch.zeros(f + 1, dtype=torch.int64, device=x_q.device)
            crow[1:] = torch.cumsum(torch.bincount(feat, minlength=f), 0)
            xp = x_q[t0:t1]
            for r0 in range(0, f, rows_per_block):
                r1 = min(r0 + rows_per_block, f)
                c0, c1 = int(crow[r0]), int(crow[r1])
                if c0 == c1:
                    continue
                block = _csr(crow[r0 : r1 + 1] - c0, col[c0:c1], a[c0:c1], (r1 - r0, t1 - t0))
                product = (block @ xp).to(torch.int64)
                self.sum_ax_high[r0:r1] += product >> 32
                self.sum_ax[r0:r1] += product & WORD

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).cpu().numpy() for name in self.STATE}

    def merge(self, other: "NeuronCorrelation") -> None:
        """Add the sums of `other` (the same features and basis over other tokens): integer sums,
        so the result is that of one pass over both (the two words of a sum add word by word)."""
        for name in self.STATE:
            getattr(self, name).add_(getattr(other, name).to(self.device))

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
        mean_a, std_a = _moments(self.sum_a, (self.sum_a2, self.sum_a2_high), n)
        mean_x, std_x = _moments(self.sum_x, (self.sum_x2, self.sum_x2_high), n)
        index = np.full((self.n_features, k), -1, np.int32)
        value = np.zeros((self.n_features, k), np.float32)
        step = max(1, chunk_elements(self.sum_ax.device) // RANK_SHARE // max(self.d, 1))
        for lo in range(0, self.n_features, step):
            hi = min(lo + step, self.n_features)
            cov = wide_value(self.sum_ax[lo:hi], self.sum_ax_high[lo:hi]) / n - mean_a[lo:hi, None] * mean_x
            scale = std_a[lo:hi, None] * std_x
            valid = scale > 0
            r = torch.where(valid, cov / torch.where(valid, scale, 1.0), 0.0).clamp(-1, 1).float()
            index[lo:hi], value[lo:hi] = _ranked(r, valid, k)
        return index, value


def feature_blocks(n_features: int, budget: int = BLOCK_BUDGET) -> list[tuple[int, int]]:
    """The [lo, hi) blocks of features whose co-occurrence rows (F cells of two int64 each, plus
    their float64 sums when ranked) fit in `budget` bytes: one corpus scan each."""
    rows = max(1, budget // (BYTES_PER_CELL * max(n_features, 1)))
    return [(lo, min(lo + rows, n_features)) for lo in range(0, n_features, rows)]


def _add_co_firing_dense(acc: tuple[torch.Tensor, torch.Tensor], acts: SparseActs, lo: int, hi: int, upper: bool = False) -> None:
    """As `_add_co_firing`, for batches where most features fire: a float64 dense product
    A[:, lo:hi]^T A of the quantized values per run of tokens (exact, see `exact_parts`)."""
    f, device = acts.n_features, acts.value.device
    a_q = quantized(acts.value)
    largest = torch.zeros(acts.n_tokens, dtype=torch.float64, device=device)
    largest.scatter_reduce_(0, acts.token, a_q.abs(), "amax")
    step = max(1, chunk_elements(device) // max(f, 1))
    bounds = sorted(set(exact_parts(largest.square())) | set(range(0, acts.n_tokens, step)) | {acts.n_tokens})
    starts = _entry_starts(acts, bounds)
    for t0, t1, e0, e1 in zip(bounds[:-1], bounds[1:], starts[:-1], starts[1:]):
        if e0 == e1:
            continue
        dense = torch.zeros((t1 - t0) * f, dtype=torch.float64, device=device)
        dense[acts.key[e0:e1] - t0 * f] = a_q[e0:e1]
        dense = dense.view(t1 - t0, f)
        for r0 in range(lo, hi, step):  # rows of the block a chunk at a time: the product's temporaries stay small
            r1 = min(r0 + step, hi)
            product = dense[:, r0:r1].T @ dense
            if upper:
                product = product.triu(r0)  # row k is feature r0 + k: the cells j >= i
            product = product.to(torch.int64).view(-1)
            cells = slice((r0 - lo) * f, (r1 - lo) * f)
            acc[1][cells].add_(product >> 32)
            acc[0][cells].add_(product & WORD)


def load_kernels(device: str) -> None:
    """On a CPU, load the corpus passes' compiled kernels now (numba, its compiler and their code
    from numba's on-disk cache: about 130 MiB of resident set, which the passes' first batch would
    otherwise add), so that the memory in use when the bound is stated includes them: the firing
    scan and the feature sort (`SparseActs`) and the co-firing sums, run on a batch of two tokens."""
    if str(device).split(":")[0] != "cpu" or compiled(_co_fire_blocks) is None:
        return
    acts = SparseActs.from_dense(torch.tensor([[1.0, 0.0], [0.5, 2.0]]), 0, 1)
    acts._feature_major()
    acc = torch.zeros(4, dtype=torch.int64)
    _add_co_firing((acc, torch.zeros_like(acc)), acts, 0, 2, workers=1)


def _add_co_firing(acc: tuple[torch.Tensor, torch.Tensor], acts: SparseActs, lo: int, hi: int, upper: bool = False, workers: int | None = None) -> None:
    """acc (two words, int64 [(hi - lo) * F] each) += a_ti * a_tj (quantized) for every token t
    and every pair of its firing features i in [lo, hi), j any (j >= i only when `upper`: the
    other half of a symmetric A^T A is `_mirror`ed): the block's rows of A^T A, exact
    int64 products. On a CPU a compiled sparse product (`_co_fire_blocks`: a few rows at a time, their
    sums in a buffer that stays in cache, added to acc once), on other devices one product per pair
    added in place (`_add_co_firing_pairs`). workers: the kernel's threads (torch's thread count when None)."""
    kernel = compiled(_co_fire_blocks) if acts.value.device.type == "cpu" else None
    if kernel is None:
        _add_co_firing_pairs(acc, acts, lo, hi, upper)
        return
    n, f = acts.n_tokens, acts.n_features
    if acts.key.numel() == 0:
        return
    # The entries token-major (A's rows, as they come) and t_ptr, each token's first entry.
    token = torch.div(acts.key, f, rounding_mode="floor")
    t_feat = acts.key - token * f
    t_val = quantized(acts.value).to(torch.int64)
    per_token = torch.bincount(token, minlength=n)
    t_ptr = torch.zeros(n + 1, dtype=torch.int64)
    t_ptr[1:] = torch.cumsum(per_token, 0)
    # A cell's sum over the batch stays below 2**62 unless the largest value is huge: then the
    # buffers hold the products' two words apart.
    split = float(t_val.max()) ** 2 * n >= 2.0**62
    # Blocks of rows whose buffer (8 bytes a cell, twice when split) fits in a core's cache, and
    # the block's entries in token order (a counting sort of the token-major entries by block).
    rows = max(1, CO_FIRE_CACHE // (8 * f * (2 if split else 1)))
    n_blocks = -(-(hi - lo) // rows)
    mine = torch.nonzero((t_feat >= lo) & (t_feat < hi)).squeeze(1)
    if mine.numel() == 0:
        return
    block = torch.div(t_feat[mine] - lo, rows, rounding_mode="floor")
    b_ptr = torch.zeros(n_blocks + 1, dtype=torch.int64)
    b_ptr[1:] = torch.cumsum(torch.bincount(block, minlength=n_blocks), 0)
    order = torch.empty_like(mine)
    compiled(_bucket)(block.numpy(), b_ptr.numpy(), mine.numpy(), order.numpy())
    # Blocks in parallel (disjoint rows of acc), split where the co-firing pairs are shared evenly.
    workers = max(1, min(torch.get_num_threads() if workers is None else workers, n_blocks))
    cuts = [0, n_blocks]
    if workers > 1:
        cost = torch.cumsum(per_token[token[order]], 0)
        at = torch.searchsorted(cost, torch.arange(1, workers) * int(cost[-1]) // workers).clamp_max(order.numel() - 1)
        cuts = sorted({0, n_blocks, *(torch.searchsorted(b_ptr, at, right=True) - 1).tolist()})
    # Each token's (feature, value) pairs interleaved, in int32 where the values allow: what every
    # co-firing pair reads (the kernel's memory traffic), in one stream of 8 bytes a pair.
    narrow = int(t_val.abs().max()) < (1 << 31) and f < (1 << 31)
    t_entries = torch.stack([t_feat, t_val], 1).reshape(-1)
    t_entries = t_entries.to(torch.int32) if narrow else t_entries
    args = [a.numpy() for a in (b_ptr, order, token, t_ptr, t_entries)]
    low, high = acc[0].numpy(), acc[1].numpy()
    run_jobs(kernel, [(low, high, b0, b1, rows, lo, hi, f, *args, split, upper) for b0, b1 in zip(cuts[:-1], cuts[1:]) if b1 > b0])


def _bucket(block, b_ptr, entries, out):  # pragma: no cover (compiled)
    """out[b_ptr[b]:b_ptr[b + 1]] = the entries of block b, in their order (a stable counting sort)."""
    at = b_ptr[:-1].copy()
    for m in range(block.shape[0]):
        b = block[m]
        out[at[b]] = entries[m]
        at[b] += 1


def _co_fire_blocks(low, high, b0, b1, rows, lo, hi, f, b_ptr, order, token, t_ptr, t_entries, split, upper):  # pragma: no cover (compiled)
    """low/high[(i - lo) * f + j] += sum_t a_ti a_tj for the features i of the blocks [b0, b1) of
    `rows` rows from lo: block b's entries order[b_ptr[b]:b_ptr[b + 1]] (token-major indices, in
    token order), token t's entries p in [t_ptr[t], t_ptr[t + 1]): feature t_entries[2 p], value
    t_entries[2 p + 1] (quantized). A block's sums gather in
    a buffer of rows * f cells (in cache: random adds into it are cheap, the tokens' entries are
    read in order), added to acc once. split: the products' low and high 32 bits summed apart
    (when a cell's sum could reach 2**63). upper: only the pairs j >= i (a token's entries are in
    feature order: those from the entry itself on)."""
    buf = np.zeros(rows * f, np.int64)
    buf_high = np.zeros(rows * f if split else 1, np.int64)
    for b in range(b0, b1):
        q0, q1 = b_ptr[b], b_ptr[b + 1]
        if q0 == q1:
            continue
        r0 = lo + b * rows
        r1 = min(r0 + rows, hi)
        for q in range(q0, q1):
            e = order[q]
            t = token[e]
            base = (np.int64(t_entries[2 * e]) - r0) * f
            ai = np.int64(t_entries[2 * e + 1])
            for p in range(e if upper else t_ptr[t], t_ptr[t + 1]):
                v = ai * np.int64(t_entries[2 * p + 1])
                c = base + np.int64(t_entries[2 * p])
                if split:
                    buf[c] += v & 0xFFFFFFFF
                    buf_high[c] += v >> 32
                else:
                    buf[c] += v
        out = (r0 - lo) * f
        for c in range((r1 - r0) * f):
            if split:
                low[out + c] += buf[c]
                high[out + c] += buf_high[c]
                buf_high[c] = 0
            else:
                low[out + c] += buf[c] & 0xFFFFFFFF
                high[out + c] += buf[c] >> 32
            buf[c] = 0


def _add_co_firing_pairs(acc: tuple[torch.Tensor, torch.Tensor], acts: SparseActs, lo: int, hi: int, upper: bool = False) -> None:
    """As `_add_co_firing`: one exact int64 product per (entry of the block, entry of the same
    token), added in place. (A float64 sparse x sparse product of torch's was 3-10x slower on a
    CPU: it builds the whole batch's matrix once per block.)"""
    f = acts.n_features
    token, feature, a_q = acts.token, acts.feature, quantized(acts.value).to(torch.int64)
    per_token = torch.bincount(token, minlength=acts.n_tokens)
    row_start = torch.cumsum(per_token, 0) - per_token
    entry = torch.nonzero((feature >= lo) & (feature < hi)).squeeze(1)
    # Each entry's partners: a contiguous run of its token's entries, from the token's first (from
    # the entry itself when `upper`: a token's entries are in feature order).
    start = entry if upper else row_start[token[entry]]
    partners = row_start[token[entry]] + per_token[token[entry]] - start
    pair_start = torch.cumsum(partners, 0) - partners
    # Runs of entries whose pairs start in the same chunk: at most chunk + one token's entries each.
    chunk = max(1, chunk_elements(acc[0].device) // 8)
    run = pair_start // chunk
    bounds = [0] + torch.cumsum(torch.unique_consecutive(run, return_counts=True)[1], 0).tolist()
    row = (feature[entry] - lo) * f
    mine = a_q[entry]
    first_partner = start - pair_start
    for s, e in zip(bounds[:-1], bounds[1:]):
        count = partners[s:e]
        n_pairs = int(count.sum())
        other = torch.repeat_interleave(first_partner[s:e], count, output_size=n_pairs)
        other += torch.arange(int(pair_start[s]), int(pair_start[s]) + n_pairs, device=other.device)
        index = torch.repeat_interleave(row[s:e], count, output_size=n_pairs) + feature[other]
        product = torch.repeat_interleave(mine[s:e], count, output_size=n_pairs) * a_q[other]
        add_wide(acc[0], acc[1], index, product)


def _joined(batches: Iterable[SparseActs], max_entries: int) -> Iterator[SparseActs]:
    """Runs of consecutive batches (each starting where the previous one ends) joined into one of
    at most `max_entries` entries (a batch with more is a run of its own). The co-occurrence sums
    are exact, so they do not depend on how the tokens are grouped; the kernel adds each row's
    sums to the accumulator once per call, so the fewer calls, the fewer passes over it."""
    group: list[SparseActs] = []
    size = 0
    for acts in batches:
        n = acts.key.numel()
        if group:
            last = group[-1]
            follows = acts.first_prompt == last.first_prompt + last.n_prompts and (acts.context, acts.n_features) == (last.context, last.n_features)
            if not follows or size + n > max_entries:
                yield SparseActs.concat(group)
                group, size = [], 0
        group.append(acts)
        size += n
    if group:
        yield SparseActs.concat(group)


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
        upper = (lo, hi) == (0, n_features)  # all of the symmetric S at once: half of it, mirrored
        for acts in _joined(batches(), SCAN_ENTRIES):  # (batches recomputed by the model keep every thread)
            with bookkeeping_threads() as threads:  # the bookkeeping's torch ops; the kernel has its own threads
                if acc is None:
                    low = torch.zeros((hi - lo) * n_features, dtype=torch.int64, device=acts.value.device)
                    acc = (low, torch.zeros_like(low))
                    if sums is None:
                        sums = tuple(torch.zeros_like(low[:n_features]) for _ in range(3))  # a, a^2 (two words)
                if lo == 0:
                    a_q = quantized(acts.value)
                    sums[0].index_add_(0, acts.feature, a_q.to(torch.int64))
                    add_wide(sums[1], sums[2], acts.feature, _squares(a_q))
                    n_tokens += acts.n_tokens
                scan_tokens += acts.n_tokens
                pairs = int((torch.bincount(acts.token, minlength=acts.n_tokens) * torch.bincount(
                    acts.token[(acts.feature >= lo) & (acts.feature < hi)], minlength=acts.n_tokens)).sum())
                if pairs * DENSE_PAIR_COST > acts.n_tokens * (hi - lo) * n_features:
                    torch.set_num_threads(threads)  # a dense matrix product: every thread
                    _add_co_firing_dense(acc, acts, lo, hi, upper)
                else:
                    _add_co_firing(acc, acts, lo, hi, upper, workers=threads)
        if acc is None:
            return index, value
        if scan_tokens != n_tokens:
            raise ValueError(f"batches() gave {scan_tokens} tokens on a later scan, {n_tokens} on the first")
        with bookkeeping_threads() as threads:
            kernel = compiled(_rank_rows) if acc[0].device.type == "cpu" else None
            if kernel is not None:
                _rank_block_compiled(kernel, acc, lo, hi, n_features, upper, sums, n_tokens, k, index, value, threads)
                continue
            if upper:
                _mirror(acc, n_features)
            index[lo:hi], value[lo:hi] = _rank_block((acc[0].view(hi - lo, n_features), acc[1].view(hi - lo, n_features)), lo, sums, n_tokens, k)
    return index, value


def _rank_block_compiled(kernel, acc, lo: int, hi: int, f: int, upper: bool, sums: tuple, n_tokens: int, k: int, index: np.ndarray, value: np.ndarray, threads: int) -> None:
    """`_rank_block` (after `_mirror` when `upper`) as one compiled pass over the block's rows of S,
    each row's cells j < i read from row j when `upper` (nothing is mirrored): the same r, in the
    same float64 operations, and the same top k (ties to the lower column), into index[lo:hi] and
    value[lo:hi]; its rows shared among `threads` threads in runs of consecutive rows (whose mirrored
    reads share cache lines)."""
    n = max(n_tokens, 1)
    mean, std = _moments(sums[0], sums[1:], n)
    rows = hi - lo
    kk = min(k, f)
    out_index = np.full((rows, k), -1, np.int32)
    out_value = np.zeros((rows, k), np.float32)
    low, high = acc[0].numpy(), acc[1].numpy()
    m, sd = mean.numpy(), std.numpy()
    parts = max(1, min(threads, rows // RANK_ROWS_PER_THREAD))
    bounds = [rows * p // parts for p in range(parts + 1)]
    run_jobs(kernel, [(low, high, f, lo, bounds[p], bounds[p + 1], upper, m, sd, n, kk, out_index, out_value) for p in range(parts)])
    index[lo:hi], value[lo:hi] = out_index, out_value


def _rank_rows(low, high, f, lo, r0, r1, upper, mean, std, n, k, out_index, out_value):  # pragma: no cover (compiled)
    """Rows r0..r1 of `_rank_block_compiled`: per row (feature lo + r), r against every feature j
    as `_rank_block` computes it, and the k highest valid in descending order of r, then column."""
    best_r = np.zeros(k, np.float32)
    best_j = np.zeros(k, np.int64)
    for r in range(r0, r1):
        i = lo + r
        found = 0
        for j in range(f):
            if j == i:
                continue
            scale = std[i] * std[j]
            if not scale > 0:
                continue
            cell = j * f + i if upper and j < i else r * f + j
            cov = (float(high[cell]) * 4294967296.0 + float(low[cell])) / 68719476736.0 / n - mean[i] * mean[j]
            q = cov / scale
            if q > 1.0:
                q = 1.0
            v = np.float32(q)
            if not v > 0:
                continue
            if found == k and not v > best_r[k - 1]:
                continue
            # v enters the top k: after every kept value >= v (an equal one has the lower column)
            at = found if found < k else k - 1
            while at > 0 and best_r[at - 1] < v:
                best_r[at] = best_r[at - 1]
                best_j[at] = best_j[at - 1]
                at -= 1
            best_r[at] = v
            best_j[at] = j
            if found < k:
                found += 1
        for t in range(found):
            out_index[r, t] = best_j[t]
            out_value[r, t] = best_r[t]


def _mirror(acc: tuple[torch.Tensor, torch.Tensor], f: int) -> None:
    """The cells j < i of S (two words, int64 [F * F] each) from the cells j > i (S is symmetric),
    a chunk of rows at a time."""
    step = max(1, chunk_elements(acc[0].device) // 4 // max(f, 1))
    for word in acc:
        m = word.view(f, f)
        for r0 in range(0, f, step):
            r1 = min(r0 + step, f)
            m[r0:r1, :r1] = m[r0:r1, :r1].triu(r0) + m[:r1, r0:r1].T.tril(r0 - 1)


def _rank_block(acc: tuple[torch.Tensor, torch.Tensor], lo: int, sums: tuple, n_tokens: int, k: int):
    """Top-k positive r of the block's rows of S (two words, int64 [rows, F] each), excluding i == j."""
    n = max(n_tokens, 1)
    mean, std = _moments(sums[0], sums[1:], n)
    rows, f = acc[0].shape
    device = acc[0].device
    index = np.full((rows, k), -1, np.int32)
    value = np.zeros((rows, k), np.float32)
    step = max(1, chunk_elements(device) // RANK_SHARE // max(f, 1))
    column = torch.arange(f, device=device)
    for s in range(0, rows, step):
        e = min(s + step, rows)
        i = torch.arange(lo + s, lo + e, device=device)
        scale = std[i, None] * std
        cov = wide_value(acc[0][s:e], acc[1][s:e]) / n - mean[i, None] * mean
        r = (cov / torch.where(scale > 0, scale, 1.0)).clamp(-1, 1).float()
        valid = (scale > 0) & (r > 0) & (column != i[:, None])
        index[s:e], value[s:e] = _ranked(r, valid, k)
    return index, value

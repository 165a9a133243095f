"""Running per-feature statistics over batches of SAE activations, all in batched tensor ops.

Pass 1 (per batch): max, non-zero count, top-k examples with their windows, reconstruction sums,
the sums of the features' correlations with the SAE input's dimensions (`correlation.NeuronCorrelation`).
Pass 2 (needs the final max): histogram of non-zero activations and interval samples.
Both take a batch as its firing entries (`SparseActs`), and the example windows come from them.

Every reduction is exact and order-independent (integer counts, fixed-point sums, max, top-k over
unique int64 keys), so results do not depend on the batch size and a resumed run is identical.

Keys: a token's global index is g = prompt * context + position (< 2**32).
- top-k key   = float32 bits of the activation << 32 | (2**32 - 1 - g): higher activation first,
  then the earlier token. Positive float32 bit patterns order like the values.
- interval key = 31-bit hash(g, feature, seed) << 32 | (2**32 - 1 - g): a deterministic
  pseudo-random priority; the S highest per (feature, interval) are the samples.
Empty slots hold key -1. Both are kept per group with one sort of the batch's firing entries
(`segmented_top`), after dropping entries below the group's current k-th key.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from sae_atlas.compute.maps import usable_cores
from sae_atlas.compute.weights import compiled
from sae_atlas.manifest import ComputeSettings

LOW = (1 << 32) - 1
# Fixed-point scales for order-independent sums (integer addition is associative).
SCALE_VEC = float(1 << 20)
SCALE_SQ = float(1 << 16)

# (in-batch token, feature) [M] -> their activation windows f32 [M, W]
Windows = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (on int64 tensors holding values < 2**32)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & LOW
    x = (((x >> 16) ^ x) * 0x45D9F3B) & LOW
    return (x >> 16) ^ x


def priority(g: torch.Tensor, feature: torch.Tensor, seed: int) -> torch.Tensor:
    """31-bit pseudo-random priority of (token g, feature), elementwise with broadcasting (int64)."""
    token_part = _mix32((g ^ (seed * 0x9E3779B1)) & LOW)
    feature_part = _mix32((feature * 0x27D4EB2D + seed) & LOW)
    return _mix32(token_part ^ feature_part) >> 1


def activation_keys(values: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """int64 top-k keys of positive float32 activations at global tokens g (same shape)."""
    return (values.contiguous().view(torch.int32).to(torch.int64) << 32) | (LOW - g)


def key_token(keys: torch.Tensor) -> torch.Tensor:
    return LOW - (keys & LOW)


def key_value(keys: torch.Tensor) -> torch.Tensor:
    return (keys >> 32).to(torch.int32).view(torch.float32)


def histogram_bin(values: torch.Tensor, max_activation: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each activation among `bins` equal-width bins over [0, max]: floor(a * (bins / max)).
    `max_activation` broadcasts against `values` (per feature)."""
    scale = torch.where(max_activation > 0, bins / max_activation, torch.zeros_like(max_activation))
    return (values * scale).floor().to(torch.int64).clamp_(0, bins - 1)


def interval_index(values: torch.Tensor, max_activation: torch.Tensor, intervals: int) -> torch.Tensor:
    """Interval i covers (i * max / I, (i + 1) * max / I]: ceil(a * (I / max)) - 1."""
    scale = torch.where(max_activation > 0, intervals / max_activation, torch.zeros_like(max_activation))
    return ((values * scale).ceil().to(torch.int64) - 1).clamp_(0, intervals - 1)


class SparseActs:
    """The firing (token, feature) pairs of a batch of SAE activations, in row-major order.

    key = token * F + feature (int64, ascending), token being the in-batch index b * T + t of a
    batch of B prompts of T tokens starting at prompt `first_prompt`; value f32 > 0. Holding 12
    bytes per firing pair, it is what pass 2 replays instead of running the model again."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, first_prompt: int, n_prompts: int, context: int, n_features: int):
        self.key, self.value = key, value
        self.first_prompt, self.n_prompts, self.context, self.n_features = first_prompt, n_prompts, context, n_features
        self._by_feature: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_dense(cls, flat: torch.Tensor, first_prompt: int, context: int) -> "SparseActs":
        """flat f32 [B * T, F] -> the entries with a > 0. On a CPU a compiled scan counts them, then
        writes keys and values in a second pass (3.6x less time than a mask, `nonzero` and a gather
        over a 4M-element chunk); the same entries."""
        n, f = flat.shape
        values = flat.reshape(-1)
        count, fill = (compiled(_count_firing), compiled(_fill_firing)) if values.device.type == "cpu" and values.dtype == torch.float32 else (None, None)
        if count is not None and fill is not None:
            dense = values.detach().contiguous().numpy()
            key = torch.empty(count(dense), dtype=torch.int64)
            value = torch.empty(key.shape[0], dtype=torch.float32)
            fill(dense, key.numpy(), value.numpy())
            return cls(key, value, first_prompt, n // max(context, 1), context, f)
        key = torch.nonzero(values > 0).squeeze(1)
        return cls(key, values[key], first_prompt, n // max(context, 1), context, f)

    @classmethod
    def concat(cls, parts: list["SparseActs"]) -> "SparseActs":
        """Consecutive parts of a batch (each starting where the previous one ends) as one."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        per_prompt = first.context * first.n_features
        total = sum(p.key.numel() for p in parts)
        key = torch.empty(total, dtype=first.key.dtype, device=first.key.device)  # filled in place: no temporaries
        value = torch.empty(total, dtype=first.value.dtype, device=first.value.device)
        at = 0
        for p in parts:
            n = p.key.numel()
            torch.add(p.key, (p.first_prompt - first.first_prompt) * per_prompt, out=key[at : at + n])
            value[at : at + n] = p.value
            at += n
        return cls(key, value, first.first_prompt, sum(p.n_prompts for p in parts), first.context, first.n_features)

    def split(self, max_entries: int) -> list["SparseActs"]:
        """The batch as runs of consecutive whole prompts of at most `max_entries` entries each (a
        prompt with more is a run of its own): what a batch where features fire densely is handled
        in, so that the statistics' temporaries stay within a bound. Every statistic is exact and
        order-independent, so the runs give the results of the whole batch."""
        if self.key.numel() <= max_entries or self.n_prompts <= 1:
            return [self]
        per_prompt = self.context * self.n_features
        at = torch.arange(self.n_prompts + 1, dtype=torch.int64, device=self.key.device) * per_prompt
        ends = torch.searchsorted(self.key, at).tolist()  # the first entry of each prompt, and the end
        runs, p0 = [], 0
        for p in range(1, self.n_prompts + 1):
            if p == self.n_prompts or ends[p + 1] - ends[p0] > max_entries:
                e0, e1 = ends[p0], ends[p]
                key = self.key[e0:e1] - p0 * per_prompt
                runs.append(SparseActs(key, self.value[e0:e1], self.first_prompt + p0, p - p0, self.context, self.n_features))
                p0 = p
        return runs

    def to_dense(self) -> torch.Tensor:
        """f32 [B * T, F]."""
        out = torch.zeros(self.n_tokens * self.n_features, dtype=torch.float32, device=self.value.device)
        out[self.key] = self.value
        return out.reshape(self.n_tokens, self.n_features)

    @property
    def token(self) -> torch.Tensor:
        return self.key // self.n_features

    @property
    def feature(self) -> torch.Tensor:
        return self.key % self.n_features

    @property
    def n_tokens(self) -> int:
        return self.n_prompts * self.context

    @property
    def nbytes(self) -> int:
        return self.key.numel() * self.key.element_size() + self.value.numel() * self.value.element_size()

    def csr(self) -> torch.Tensor:
        """The batch as a sparse CSR matrix [B * T, F]."""
        n = self.n_tokens
        crow = torch.zeros(n + 1, dtype=torch.int64, device=self.key.device)
        crow[1:] = torch.cumsum(torch.bincount(self.token, minlength=n), 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(crow, self.feature, self.value, (n, self.n_features), check_invariants=False)

    def _feature_major(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature * B*T + token ascending, the matching values), built once per batch: on a CPU
        a compiled counting sort by feature (one pass over the entries, single-threaded; a parallel
        argsort was the largest cost of pass 2 and competes with other threads on a busy machine),
        elsewhere a stable argsort (within a feature, tokens stay ascending)."""
        if self._by_feature is None:
            kernel = compiled(_feature_sort) if self.key.device.type == "cpu" else None
            if kernel is not None and self.key.numel():
                starts = torch.zeros(self.n_features + 1, dtype=torch.int64)
                feature = self.feature
                starts[1:] = torch.cumsum(torch.bincount(feature, minlength=self.n_features), 0)
                fkey, fvalue = torch.empty_like(self.key), torch.empty_like(self.value)
                kernel(self.key.numpy(), self.value.numpy(), self.n_features, self.n_tokens, starts.numpy(), fkey.numpy(), fvalue.numpy())
                self._by_feature = (fkey, fvalue)
            else:
                feature = self.feature
                order = torch.argsort(feature, stable=True)  # within a feature, tokens stay ascending
                self._by_feature = (feature[order] * self.n_tokens + self.token[order], self.value[order])
        return self._by_feature

    def windows(self, token: torch.Tensor, feature: torch.Tensor, before: int, after: int) -> torch.Tensor:
        """f32 [M, W] activations of `feature` around in-batch `token`: slot j is position
        t - before + j of the token's prompt, 0 outside it. A window's entries are one contiguous
        run of the feature-major order, found by two binary searches."""
        out = torch.zeros((token.shape[0], before + 1 + after), dtype=torch.float32, device=token.device)
        if self.key.numel() == 0 or token.numel() == 0:
            return out
        fkey, fvalue = self._feature_major()
        t = token % self.context
        prompt_start = token - t
        first = prompt_start + (t - before).clamp_min(0)
        last = prompt_start + (t + after).clamp_max(self.context - 1)
        base = feature * self.n_tokens
        lo = torch.searchsorted(fkey, base + first)
        hi = torch.searchsorted(fkey, base + last, right=True)
        counts = hi - lo
        row = torch.repeat_interleave(torch.arange(token.shape[0], device=token.device), counts)
        starts = torch.cumsum(counts, 0) - counts
        entry = lo[row] + torch.arange(row.shape[0], device=token.device) - starts[row]
        slot = fkey[entry] - base[row] - (token[row] - before)
        out[row, slot] = fvalue[entry]
        return out


@contextmanager
def single_threaded() -> Iterator[int]:
    """torch's CPU ops in this thread only (gives the thread count before)."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield before
    finally:
        if before != 1:
            torch.set_num_threads(before)


def machine_busy() -> bool:
    """Whether other work competes for this process's cores: the 1-minute load average at least
    one more than the cores it may run on (its own threads count in the load)."""
    cores = usable_cores()
    try:
        return os.getloadavg()[0] >= cores + 1
    except (AttributeError, OSError):
        return False


@contextmanager
def bookkeeping_threads() -> Iterator[int]:
    """The threads of the statistics' bookkeeping (gives torch's thread count): every thread on a
    machine to itself, one (`single_threaded`) on a busy one. Its many small, memory-bound ops gain
    a little from a second core that is free (pass 1's statistics 0.8-0.9 s at 2 threads against
    1.2 s at 1, 262,144 tokens x 4,096 features, idle 2-core CPU), but on a busy machine every
    parallel op waits for its slowest thread, often descheduled: at 2 threads under load, pass 2
    took 12x and pass 1 4x as long as at 1 (bench/pass_cost.py). The model's and the encoder's
    matrix products keep every thread either way."""
    if machine_busy():
        with single_threaded() as before:
            yield before
    else:
        yield torch.get_num_threads()


def _feature_sort(key, value, n_features, n_tokens, starts, out_key, out_value):  # pragma: no cover (compiled)
    """Counting sort of token-major entries (key = token * F + feature ascending) by feature: out_key
    = feature * n_tokens + token, tokens ascending within a feature (the sort is stable), out_value
    the matching values; starts[f]: feature f's first slot (the counts' exclusive prefix sums)."""
    at = starts[:-1].copy()
    for m in range(key.shape[0]):
        token = key[m] // n_features
        feature = key[m] - token * n_features
        slot = at[feature]
        at[feature] = slot + 1
        out_key[slot] = feature * n_tokens + token
        out_value[slot] = value[m]


def _count_firing(dense):  # pragma: no cover (compiled)
    """How many of the values are > 0 (NaN is not)."""
    count = 0
    for i in range(dense.shape[0]):
        if dense[i] > 0:
            count += 1
    return count


def _fill_firing(dense, out_key, out_value):  # pragma: no cover (compiled)
    """The indices of the values > 0, ascending, and those values (out_*: `_count_firing`'s count)."""
    at = 0
    for i in range(dense.shape[0]):
        a = dense[i]
        if a > 0:
            out_key[at] = i
            out_value[at] = a
            at += 1


def segmented_top(group: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries among the k largest keys of their group: (entry indices, rank within group)."""
    order = torch.argsort(keys, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    g = group[order]
    pos = torch.arange(g.shape[0], device=g.device)
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    rank = pos - torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    keep = rank < k
    return order[keep], rank[keep]


def merge_examples(
    state_keys: torch.Tensor, state_windows: torch.Tensor, group: torch.Tensor, keys: torch.Tensor,
    windows: Windows, token: torch.Tensor, feature: torch.Tensor,
) -> None:
    """Keep, per group g, the k = state_keys.shape[1] largest keys seen so far (in place).
    state_keys int64 [G, k] (descending, -1 = empty), state_windows f32 [G, k, W] (zero in empty
    slots); candidates: group, keys, token, feature [M]; windows(token, feature) gives their
    windows, asked only for the candidates that enter the top k."""
    k = state_keys.shape[1]
    better = keys > state_keys[group, k - 1]  # cannot enter otherwise (keys are unique per group)
    group, keys, token, feature = group[better], keys[better], token[better], feature[better]
    if group.numel() == 0:
        return
    entry, rank = segmented_top(group, keys, k)
    rows, row_of = torch.unique(group[entry], sorted=True, return_inverse=True)
    cand_keys = torch.full((rows.shape[0], k), -1, dtype=torch.int64, device=keys.device)
    cand_keys[row_of, rank] = keys[entry]
    cand_entry = torch.zeros((rows.shape[0], k), dtype=torch.int64, device=keys.device)
    cand_entry[row_of, rank] = entry
    top, sel = torch.cat([state_keys[rows], cand_keys], 1).topk(k, dim=1)
    # Slots kept from the state move with their windows, in place: only the slots whose source is
    # another slot are copied (all sources read before any is written); a candidate's window is made
    # only if it enters. An empty slot (key -1) keeps its zero window: a slot empty after the
    # merge was empty before it.
    slot = torch.arange(k, device=sel.device)
    base = rows[:, None] * k
    moved = (sel < k) & (sel != slot)
    fresh = (sel >= k) & (top >= 0)
    flat = state_windows.view(-1, state_windows.shape[-1])
    if bool(moved.any()):
        flat[(base + slot)[moved]] = flat[(base + sel)[moved]]
    picked = torch.take_along_dim(cand_entry, (sel - k).clamp_min(0), dim=1)[fresh]
    flat[(base + slot)[fresh]] = windows(token[picked], feature[picked])
    state_keys[rows] = top


def merge_top(keys: torch.Tensor, windows: torch.Tensor | None, other_keys: torch.Tensor, other_windows: torch.Tensor | None) -> tuple:
    """Per row, the k largest of two top-k key states (int64 [G, k], descending, -1 = empty) with
    their windows f32 [G, k, W] (or None): the state one pass over both sets of candidates keeps."""
    k = keys.shape[1]
    top, sel = torch.cat([keys, other_keys.to(keys.device)], 1).topk(k, dim=1)
    if windows is None:
        return top, None
    both = torch.cat([windows, other_windows.to(windows.device)], 1)
    return top, torch.take_along_dim(both, sel[..., None], dim=1)


class FeatureStats:
    """Running state of one SAE over the corpus (feature-major tensors on the compute device).
    Activations are handled sparsely: only the (token, feature) pairs with a > 0."""

    STATE = (
        "max_activation", "nonzero_count", "top_key", "top_window", "histogram", "interval_key",
        "interval_window", "sum_x", "sum_sq_x", "sum_sq_err", "sum_l0", "n_tokens", "prompt_top_key",
    )

    CORRELATED_NEURONS = 5
    NEURON_PREFIX = "neuron_corr_"  # checkpoint names of the NeuronCorrelation's state

    def __init__(self, n_features: int, d_in: int, context: int, settings: ComputeSettings, device: str, basis_dim: int | None = None):
        """d_in: the width of what the SAE writes (reconstruction sums); basis_dim: the width of
        its input (the correlated neurons' basis), d_in when None."""
        from sae_atlas.compute.correlation import NeuronCorrelation

        s = settings
        self.settings, self.context, self.n_features, self.d_in, self.device = s, context, n_features, d_in, device
        w = s.window
        f = n_features
        i64 = dict(dtype=torch.int64, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        self.max_activation = torch.zeros(f, **f32)
        self.nonzero_count = torch.zeros(f, **i64)
        self.top_key = torch.full((f, s.top_k), -1, **i64)
        self.top_window = torch.zeros((f, s.top_k, w), **f32)
        self.histogram = torch.zeros(f * s.histogram_bins, **i64)
        self.interval_key = torch.full((f * s.intervals, s.per_interval), -1, **i64)  # row = f * I + i
        self.interval_window = torch.zeros((f * s.intervals, s.per_interval, w), **f32)
        self.sum_x = torch.zeros(d_in, **i64)  # fixed point, SCALE_VEC
        self.sum_sq_x = torch.zeros((), **i64)  # fixed point, SCALE_SQ
        self.sum_sq_err = torch.zeros((), **i64)  # fixed point, SCALE_SQ
        self.sum_l0 = torch.zeros((), **i64)
        self.n_tokens = torch.zeros((), **i64)
        # The prompt view: per token of the first `prompt_view` prompts, its strongest features (key
        # = activation bits << 32 | (2**32 - 1 - feature): the lower feature first on ties).
        self.view_tokens = max(0, s.prompt_view) * context
        self.prompt_top_key = torch.full((self.view_tokens, s.prompt_features), -1, **i64)
        self.neurons = NeuronCorrelation(f, d_in if basis_dim is None else basis_dim, device)
        self.pass_no = 1
        self.prompts_done = 0

    # -- pass 1 ------------------------------------------------------------------------------
    def update_pass1(self, acts: SparseActs, windows: Windows, x: torch.Tensor, x_hat: torch.Tensor, basis: torch.Tensor | None = None) -> None:
        """acts: the batch's firing entries; x, x_hat f32 [B * T, d_in] (what the SAE reconstructs and
        its reconstruction); basis f32 [B * T, basis_dim]: the SAE's input (x when None).
        Batches must come in increasing prompt order (a later token never wins a tie)."""
        self.neurons.update(acts, x if basis is None else basis)
        token, feature, value = acts.token, acts.feature, acts.value
        g = acts.first_prompt * acts.context + token
        self.max_activation.scatter_reduce_(0, feature, value, "amax")
        self.nonzero_count += torch.bincount(feature, minlength=self.n_features)
        self.sum_l0 += value.numel()
        self.n_tokens += acts.n_tokens

        x = x.reshape(acts.n_tokens, -1).double()
        err = (x - x_hat.reshape(acts.n_tokens, -1).double()).square().sum(-1)
        self.sum_x += (x * SCALE_VEC).round().to(torch.int64).sum(0)
        self.sum_sq_x += (x.square().sum(-1) * SCALE_SQ).round().to(torch.int64).sum()
        self.sum_sq_err += (err * SCALE_SQ).round().to(torch.int64).sum()

        # Only activations above a full top-k's smallest value can enter (ties go to earlier tokens).
        last = self.top_key[:, -1]
        threshold = torch.where(last >= 0, key_value(last.clamp_min(0)), torch.zeros_like(self.max_activation))
        enter = value > threshold[feature]
        keys = activation_keys(value[enter], g[enter])
        merge_examples(self.top_key, self.top_window, feature[enter], keys, windows, token[enter], feature[enter])
        self._update_prompt_view(g, feature, value)

    def _update_prompt_view(self, g: torch.Tensor, feature: torch.Tensor, value: torch.Tensor) -> None:
        """Each token of the viewed prompts is in one batch only: its top features are final here.
        Entries come in token order; a token's best k are taken in k rounds of a per-token max
        (its keys are unique: one per feature), cheaper than sorting the batch's entries."""
        k = self.prompt_top_key.shape[1]
        if k == 0 or g.numel() == 0 or int(g[0]) >= self.view_tokens:
            return
        viewed = g < self.view_tokens
        g, feature, value = g[viewed], feature[viewed], value[viewed]
        keys = activation_keys(value, feature)
        first = int(g[0])
        local = g - first
        n = int(local[-1]) + 1
        rows = self.prompt_top_key[first : first + n]
        best = torch.empty(n, dtype=torch.int64, device=keys.device)
        for rank in range(k):
            best.fill_(-1).scatter_reduce_(0, local, keys, "amax")
            found = best >= 0
            rows[found, rank] = best[found]
            if rank + 1 < k:
                keys = torch.where(keys == best[local], -1, keys)

    # -- pass 2 ------------------------------------------------------------------------------
    def update_pass2(self, acts: SparseActs, windows: Windows) -> None:
        s = self.settings
        token, feature, value = acts.token, acts.feature, acts.value
        g = acts.first_prompt * acts.context + token
        mx = self.max_activation[feature]
        bins = histogram_bin(value, mx, s.histogram_bins)
        self.histogram += torch.bincount(feature * s.histogram_bins + bins, minlength=self.n_features * s.histogram_bins)
        group = feature * s.intervals + interval_index(value, mx, s.intervals)
        keys = (priority(g, feature, s.seed) << 32) | (LOW - g)
        merge_examples(self.interval_key, self.interval_window, group, keys, windows, token, feature)

    # -- merging the states of work units -------------------------------------------------------
    def merge(self, other: "FeatureStats") -> None:
        """Add the state of `other`, the same SAE over other tokens (a work unit of the corpus), in
        place. Every reduction is exact, so the merged state is the one a single pass over both
        token ranges gives, bit for bit: counts and fixed-point sums add, maxima take the larger,
        top-k keys (unique per row) keep the k largest of both with their windows. Pass 2's state
        (histogram, interval samples) merges the same way when both units binned against the
        same (global) max."""
        self.max_activation = torch.maximum(self.max_activation, other.max_activation.to(self.device))
        for name in ("nonzero_count", "histogram", "sum_x", "sum_sq_x", "sum_sq_err", "sum_l0", "n_tokens"):
            getattr(self, name).add_(getattr(other, name).to(self.device))
        self.top_key, self.top_window = merge_top(self.top_key, self.top_window, other.top_key, other.top_window)
        self.interval_key, self.interval_window = merge_top(self.interval_key, self.interval_window, other.interval_key, other.interval_window)
        self.prompt_top_key, _ = merge_top(self.prompt_top_key, None, other.prompt_top_key, None)
        self.neurons.merge(other.neurons)

    # -- checkpoint ----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name).cpu().numpy() for name in self.STATE}
        out.update({self.NEURON_PREFIX + k: v for k, v in self.neurons.state_arrays().items()})
        return out

    def load_state(self, arrays: dict[str, np.ndarray], pass_no: int, prompts_done: int) -> None:
        for name in self.STATE:
            ref = getattr(self, name)
            value = torch.from_numpy(np.array(arrays[name]))
            if value.numel() == ref.numel():
                value = value.reshape(ref.shape)  # memory-mapped 0-d arrays load as shape (1,)
            value = value.to(self.device)
            if value.shape != ref.shape or value.dtype != ref.dtype:
                raise ValueError(f"checkpoint array {name} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}")
            setattr(self, name, value)
        n = len(self.NEURON_PREFIX)
        self.neurons.load_state({k[n:]: v for k, v in arrays.items() if k.startswith(self.NEURON_PREFIX)})
        self.pass_no, self.prompts_done = pass_no, prompts_done

    # -- results -------------------------------------------------------------------------------
    def feature_arrays(self) -> dict[str, np.ndarray]:
        """The feature-major arrays of a cache entry (see docs/ARCHITECTURE.md)."""
        s, t, f = self.settings, self.context, self.n_features
        n_tokens = max(int(self.n_tokens), 1)

        def examples(keys: torch.Tensor, windows: torch.Tensor, values: torch.Tensor):
            valid = keys >= 0
            g = key_token(keys)
            minus = torch.full_like(g, -1)
            prompt = torch.where(valid, g // t, minus).to(torch.int32).cpu().numpy()
            position = torch.where(valid, g % t, minus).to(torch.int32).cpu().numpy()
            values = torch.where(valid, values, torch.zeros_like(values)).cpu().numpy().astype(np.float32)
            windows = torch.where(valid[..., None], windows, torch.zeros_like(windows)).cpu().numpy().astype(np.float16)
            return values, prompt, position, windows

        top = examples(self.top_key, self.top_window, key_value(self.top_key))
        n_view = min(self.view_tokens // max(t, 1), int(self.n_tokens) // max(t, 1))
        view = self.prompt_top_key[: n_view * t]
        view_valid = view >= 0
        iv = examples(self.interval_key, self.interval_window, self.interval_window[..., s.context_before])
        i_s = (f, s.intervals, s.per_interval)
        corr_index, corr_value = self.neurons.result(self.CORRELATED_NEURONS)
        return {
            "corr_neuron_index": corr_index,
            "corr_neuron_value": corr_value,
            "max_activation": self.max_activation.cpu().numpy().astype(np.float32),
            "nonzero_count": self.nonzero_count.cpu().numpy().astype(np.int64),
            "density": (self.nonzero_count.cpu().numpy() / n_tokens).astype(np.float32),
            "top_value": top[0],
            "top_prompt": top[1],
            "top_position": top[2],
            "top_window": top[3],
            "interval_value": iv[0].reshape(i_s),
            "interval_prompt": iv[1].reshape(i_s),
            "interval_position": iv[2].reshape(i_s),
            "interval_window": iv[3].reshape(i_s + (s.window,)),
            "histogram": self.histogram.reshape(f, s.histogram_bins).cpu().numpy().astype(np.int64),
            "prompt_feature": torch.where(view_valid, key_token(view), -1).to(torch.int32).reshape(n_view, t, -1).cpu().numpy(),
            "prompt_value": torch.where(view_valid, key_value(view.clamp_min(0)), 0.0).reshape(n_view, t, -1).cpu().numpy().astype(np.float32),
        }

    def reconstruction_stats(self) -> dict[str, float]:
        n = max(int(self.n_tokens), 1)
        sum_x = self.sum_x.cpu().numpy().astype(np.float64) / SCALE_VEC
        sse = int(self.sum_sq_err) / SCALE_SQ
        total = int(self.sum_sq_x) / SCALE_SQ - float(np.dot(sum_x, sum_x)) / n
        return {
            "l0": int(self.sum_l0) / n,
            "mse": sse / (n * self.d_in),
            "explained_variance": 1.0 - sse / total if total > 0 else 0.0,
        }

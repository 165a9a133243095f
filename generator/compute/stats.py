"""Running per-feature statistics over batches of SAE activations, all in batched tensor ops.

Pass 1 (per batch): max, non-zero count, top-k examples with their windows, reconstruction sums.
Pass 2 (needs the final max): histogram of non-zero activations and interval samples.

Every reduction is exact and order-independent (integer counts, fixed-point sums, max, top-k over
unique int64 keys), so results do not depend on the batch size and a resumed run is identical.

Keys: a token's global index is g = prompt * context + position (< 2**32).
- top-k key   = float32 bits of the activation << 32 | (2**32 - 1 - g): higher activation first,
  then the earlier token. Positive float32 bit patterns order like the values.
- interval key = 31-bit hash(g, feature, seed) << 32 | (2**32 - 1 - g): a deterministic
  pseudo-random priority; the S highest per (feature, interval) are the samples.
Empty slots hold key -1.
"""

from __future__ import annotations

import numpy as np
import torch

from generator.manifest import ComputeSettings

LOW = (1 << 32) - 1
# Fixed-point scales for order-independent sums (integer addition is associative).
SCALE_VEC = float(1 << 20)
SCALE_SQ = float(1 << 16)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (on int64 tensors holding values < 2**32)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & LOW
    x = (((x >> 16) ^ x) * 0x45D9F3B) & LOW
    return (x >> 16) ^ x


def priority(g: torch.Tensor, n_features: int, seed: int) -> torch.Tensor:
    """31-bit pseudo-random priority per (token, feature): int64 [N, F]."""
    token_part = _mix32((g ^ (seed * 0x9E3779B1)) & LOW)
    feature_part = _mix32((torch.arange(n_features, device=g.device, dtype=torch.int64) * 0x27D4EB2D + seed) & LOW)
    return _mix32(token_part[:, None] ^ feature_part[None, :]) >> 1


def activation_keys(values: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """int64 [N, F] top-k keys for float32 activations [N, F] at global tokens g [N]; -1 where <= 0."""
    bits = values.contiguous().view(torch.int32).to(torch.int64)
    keys = (bits << 32) | (LOW - g)[:, None]
    return torch.where(values > 0, keys, torch.full_like(keys, -1))


def key_token(keys: torch.Tensor) -> torch.Tensor:
    return LOW - (keys & LOW)


def key_value(keys: torch.Tensor) -> torch.Tensor:
    return (keys >> 32).to(torch.int32).view(torch.float32)


def histogram_bin(values: torch.Tensor, max_activation: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin of each activation among `bins` equal-width bins over [0, max]: floor(a * (bins / max))."""
    scale = torch.where(max_activation > 0, bins / max_activation, torch.zeros_like(max_activation))
    return (values * scale).floor().to(torch.int64).clamp_(0, bins - 1)


def interval_index(values: torch.Tensor, max_activation: torch.Tensor, intervals: int) -> torch.Tensor:
    """Interval i covers (i * max / I, (i + 1) * max / I]: ceil(a * (I / max)) - 1."""
    scale = torch.where(max_activation > 0, intervals / max_activation, torch.zeros_like(max_activation))
    return ((values * scale).ceil().to(torch.int64) - 1).clamp_(0, intervals - 1)


def gather_windows(acts: torch.Tensor, token: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Windows of activations around in-batch tokens.
    acts: [B, T, F]; token: int64 [k, F] in-batch flat token index of each (slot, feature).
    Returns float32 [k, F, W]; slot j is position - before + j, 0 outside the prompt."""
    b_count, t_count, n_features = acts.shape
    w = before + 1 + after
    b = token // t_count
    t = token % t_count
    pos = t[..., None] + torch.arange(-before, after + 1, device=acts.device)  # [k, F, W]
    valid = (pos >= 0) & (pos < t_count)
    flat_index = (b[..., None] * t_count + pos.clamp(0, t_count - 1)) * n_features
    flat_index = flat_index + torch.arange(n_features, device=acts.device)[None, :, None]
    out = acts.reshape(-1)[flat_index.reshape(-1)].reshape(token.shape + (w,))
    return torch.where(valid, out, torch.zeros_like(out))


def _merge_top(keys: torch.Tensor, windows: torch.Tensor, new_keys: torch.Tensor, new_windows: torch.Tensor):
    """Keep the len(keys) largest keys of both sets (dim 0) with their windows."""
    all_keys = torch.cat([keys, new_keys], 0)
    top, sel = all_keys.topk(keys.shape[0], dim=0)
    all_windows = torch.cat([windows, new_windows], 0)
    return top, torch.take_along_dim(all_windows, sel[..., None], dim=0)


class FeatureStats:
    """Running state of one SAE over the corpus (feature-minor tensors on the compute device)."""

    STATE = (
        "max_activation", "nonzero_count", "top_key", "top_window", "histogram", "interval_key",
        "interval_window", "sum_x", "sum_sq_x", "sum_sq_err", "sum_l0", "n_tokens",
    )

    def __init__(self, n_features: int, d_in: int, context: int, settings: ComputeSettings, device: str):
        s = settings
        self.settings, self.context, self.n_features, self.d_in, self.device = s, context, n_features, d_in, device
        w = s.window
        f = n_features
        i64 = dict(dtype=torch.int64, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        self.max_activation = torch.zeros(f, **f32)
        self.nonzero_count = torch.zeros(f, **i64)
        self.top_key = torch.full((s.top_k, f), -1, **i64)
        self.top_window = torch.zeros((s.top_k, f, w), **f32)
        self.histogram = torch.zeros(f * s.histogram_bins, **i64)
        self.interval_key = torch.full((s.intervals, s.per_interval, f), -1, **i64)
        self.interval_window = torch.zeros((s.intervals, s.per_interval, f, w), **f32)
        self.sum_x = torch.zeros(d_in, **i64)  # fixed point, SCALE_VEC
        self.sum_sq_x = torch.zeros((), **i64)  # fixed point, SCALE_SQ
        self.sum_sq_err = torch.zeros((), **i64)  # fixed point, SCALE_SQ
        self.sum_l0 = torch.zeros((), **i64)
        self.n_tokens = torch.zeros((), **i64)
        self.pass_no = 1
        self.prompts_done = 0

    # -- pass 1 ------------------------------------------------------------------------------
    def update_pass1(self, acts: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor, first_prompt: int) -> None:
        """acts f32 [B, T, F]; x, x_hat f32 [B, T, d_in] (SAE input and reconstruction)."""
        s = self.settings
        b_count, t_count, f = acts.shape
        flat = acts.reshape(-1, f)
        n = flat.shape[0]
        g = first_prompt * t_count + torch.arange(n, device=acts.device, dtype=torch.int64)
        self.max_activation = torch.maximum(self.max_activation, flat.max(0).values)
        firing = flat > 0
        self.nonzero_count += firing.sum(0)
        self.sum_l0 += firing.sum()
        self.n_tokens += n

        x = x.reshape(n, -1).double()
        err = (x - x_hat.reshape(n, -1).double()).square().sum(-1)
        self.sum_x += (x * SCALE_VEC).round().to(torch.int64).sum(0)
        self.sum_sq_x += (x.square().sum(-1) * SCALE_SQ).round().to(torch.int64).sum()
        self.sum_sq_err += (err * SCALE_SQ).round().to(torch.int64).sum()

        keys = activation_keys(flat, g)
        cand_keys, cand_token = keys.topk(min(s.top_k, n), dim=0)
        windows = gather_windows(acts, cand_token, s.context_before, s.context_after)
        self.top_key, self.top_window = _merge_top(self.top_key, self.top_window, cand_keys, windows)

    # -- pass 2 ------------------------------------------------------------------------------
    def update_pass2(self, acts: torch.Tensor, first_prompt: int) -> None:
        s = self.settings
        b_count, t_count, f = acts.shape
        flat = acts.reshape(-1, f)
        n = flat.shape[0]
        g = first_prompt * t_count + torch.arange(n, device=acts.device, dtype=torch.int64)
        firing = flat > 0

        bins = histogram_bin(flat, self.max_activation, s.histogram_bins)
        flat_bin = torch.arange(f, device=acts.device)[None, :] * s.histogram_bins + bins
        self.histogram += torch.bincount(flat_bin[firing], minlength=f * s.histogram_bins)

        interval = interval_index(flat, self.max_activation, s.intervals)
        keys = (priority(g, f, s.seed) << 32) | (LOW - g)[:, None]
        keys = torch.where(firing, keys, torch.full_like(keys, -1))
        for i in range(s.intervals):
            k_i = torch.where(interval == i, keys, torch.full_like(keys, -1))
            cand_keys, cand_token = k_i.topk(min(s.per_interval, n), dim=0)
            windows = gather_windows(acts, cand_token, s.context_before, s.context_after)
            self.interval_key[i], self.interval_window[i] = _merge_top(
                self.interval_key[i], self.interval_window[i], cand_keys, windows
            )

    # -- checkpoint ----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).cpu().numpy() for name in self.STATE}

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
        self.pass_no, self.prompts_done = pass_no, prompts_done

    # -- results -------------------------------------------------------------------------------
    def feature_arrays(self) -> dict[str, np.ndarray]:
        """The feature-major arrays of a cache entry (see docs/ARCHITECTURE.md)."""
        s, t = self.settings, self.context
        n_tokens = max(int(self.n_tokens), 1)

        def examples(keys: torch.Tensor, windows: torch.Tensor, values: torch.Tensor):
            valid = keys >= 0
            g = key_token(keys)
            prompt = torch.where(valid, g // t, torch.full_like(g, -1)).to(torch.int32)
            position = torch.where(valid, g % t, torch.full_like(g, -1)).to(torch.int32)
            values = torch.where(valid, values, torch.zeros_like(values))
            windows = torch.where(valid[..., None], windows, torch.zeros_like(windows))
            return values, prompt, position, windows

        top_value, top_prompt, top_position, top_window = examples(self.top_key, self.top_window, key_value(self.top_key))
        iv_value, iv_prompt, iv_position, iv_window = examples(
            self.interval_key, self.interval_window, self.interval_window[..., s.context_before]
        )
        f = self.n_features
        np_ = lambda x: x.cpu().numpy()  # noqa: E731
        return {
            "max_activation": np_(self.max_activation).astype(np.float32),
            "nonzero_count": np_(self.nonzero_count).astype(np.int64),
            "density": (np_(self.nonzero_count) / n_tokens).astype(np.float32),
            "top_value": np_(top_value.T).astype(np.float32),
            "top_prompt": np_(top_prompt.T),
            "top_position": np_(top_position.T),
            "top_window": np_(top_window.permute(1, 0, 2)).astype(np.float16),
            "interval_value": np_(iv_value.permute(2, 0, 1)).astype(np.float32),
            "interval_prompt": np_(iv_prompt.permute(2, 0, 1)),
            "interval_position": np_(iv_position.permute(2, 0, 1)),
            "interval_window": np_(iv_window.permute(2, 0, 1, 3)).astype(np.float16),
            "histogram": np_(self.histogram.reshape(f, s.histogram_bins)).astype(np.int64),
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

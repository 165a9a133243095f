"""The distribution of a feature's logit effects over the whole vocabulary: W_dec @ M @ W_U binned
into `logit_histogram_bins` equal bins between the row's min and max (weights only; computed in
the same chunks of logits as the `logits` statistic, one product for both)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import round_sig


class LogitHistogram(Statistic):
    name = "logit_histogram"
    stage = "weights"
    settings = ("logit_histogram_bins",)
    arrays = {
        "logit_hist_counts": Array("int32", ("F", "logit_histogram_bins")),
        "logit_hist_range": Array("float32", ("F", 2)),
    }

    def compute(self, ctx):
        counts, value_range = ctx.logit_effects()[4:]
        return {"logit_hist_counts": counts, "logit_hist_range": value_range}

    def record(self, arrays, lo, hi, ctx):
        counts = np.asarray(arrays["logit_hist_counts"][lo:hi]).tolist()
        ranges = round_sig(arrays["logit_hist_range"][lo:hi]).tolist()
        return {"lh": [[r[0], r[1], c] if any(c) else None for c, r in zip(counts, ranges)]}

    def dump(self, arrays, i, ctx):
        counts = [int(c) for c in arrays["logit_hist_counts"][i]]
        lo, hi = (float(v) for v in arrays["logit_hist_range"][i])
        bins = len(counts)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5  # as np.histogram bins a constant row
        return {"logit_histogram": {"edges": [lo + (hi - lo) * b / bins for b in range(bins + 1)], "counts": counts}}

    def fake(self, ctx):
        f, bins, v = ctx.n_features, ctx.settings.logit_histogram_bins, ctx.vocab_size
        rng = ctx.rng.spawn(1)[0]  # a child stream: the other fakes stay as they were
        centre = np.exp(-0.5 * ((np.arange(bins) - bins / 2 + 0.5) / (bins / 7)) ** 2)
        weights = centre[None, :] * rng.uniform(0.7, 1.3, (f, bins))
        counts = np.floor(weights / weights.sum(1, keepdims=True) * v).astype(np.int32)
        counts[:, bins // 2] += v - counts.sum(1).astype(np.int32)
        lo = -rng.uniform(0.3, 1.5, f)
        hi = rng.uniform(0.3, 1.5, f)
        return {"logit_hist_counts": counts, "logit_hist_range": np.stack([lo, hi], 1).astype(np.float32)}

"""The distribution of a feature's non-zero activations: `histogram_bins` equal bins over [0, max]
(pass 2, once the max is known)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic


class Histogram(Statistic):
    name = "histogram"
    stage = "pass2"
    settings = ("histogram_bins",)
    arrays = {"histogram": Array("int64", ("F", "histogram_bins"))}

    def record(self, arrays, lo, hi, ctx):
        return {"hist": np.asarray(arrays["histogram"][lo:hi]).tolist()}

    def dump(self, arrays, i, ctx):
        counts = [int(c) for c in arrays["histogram"][i]]
        mx, bins = float(arrays["max_activation"][i]), len(counts)
        return {"histogram": {"edges": [mx * b / bins for b in range(bins + 1)], "counts": counts}}

    def fake(self, ctx):
        bins = ctx.settings.histogram_bins
        dead = ctx.arrays["nonzero_count"] == 0
        counts = ctx.rng.poisson(200, (ctx.n_features, bins)) * np.exp(-np.arange(bins) / 8)
        return {"histogram": np.where(dead[:, None], 0, counts).astype(np.int64)}

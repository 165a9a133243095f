"""The other features of the same SAE whose activations correlate most with a feature: the N
highest positive Pearson r over every corpus token (after pass 2, from the replayed pass-1
batches, one scan per block of features; `compute.correlation.correlated_features`)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.correlated_neurons import dump_pairs, pairs

N = 5
SHAPE = ("F", N)


class CorrelatedFeatures(Statistic):
    name = "correlated_features"
    stage = "pass2"
    arrays = {"corr_feature_index": Array("int32", SHAPE), "corr_feature_value": Array("float32", SHAPE)}

    def record(self, arrays, lo, hi, ctx):
        return {"cf": pairs(arrays["corr_feature_index"], arrays["corr_feature_value"], lo, hi)}

    def dump(self, arrays, i, ctx):
        return {"correlated_features": dump_pairs(arrays["corr_feature_index"][i], arrays["corr_feature_value"][i])}

    def fake(self, ctx):
        rng, f = ctx.rng.spawn(1)[0], ctx.n_features  # a child stream: the other fakes stay as they were
        dead = ctx.arrays["nonzero_count"] == 0
        index = np.where(dead[:, None], -1, rng.integers(0, f, (f, N))).astype(np.int32)
        value = np.sort(rng.uniform(0.05, 0.9, (f, N)), axis=1)[:, ::-1]
        return {"corr_feature_index": index, "corr_feature_value": np.where(dead[:, None], 0, value).astype(np.float32)}

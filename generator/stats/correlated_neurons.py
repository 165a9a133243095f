"""The dimensions of the SAE's input (its hook's own basis) whose values correlate most with a
feature's activation: Pearson's r over every corpus token (pass 1, `compute.correlation`). For an
SAE on an MLP's output (`blocks.L.hook_mlp_out`) they are the MLP's neurons instead: its
post-activations `blocks.L.mlp.hook_post`, d_mlp wide (the entry's meta["neurons"] names the hook)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import round_sig

N = 5
SHAPE = ("F", N)


def pairs(index, value, lo: int, hi: int) -> list:
    """[[index, r], ...] per feature, the empty slots left out."""
    idx = np.asarray(index[lo:hi]).tolist()
    r = round_sig(value[lo:hi]).tolist()
    return [[[j, v] for j, v in zip(js, vs) if j >= 0] for js, vs in zip(idx, r)]


def dump_pairs(index, value) -> list[dict]:
    return [{"index": int(j), "r": float(v)} for j, v in zip(index, value) if j >= 0]


class CorrelatedNeurons(Statistic):
    name = "correlated_neurons"
    stage = "pass1"
    arrays = {"corr_neuron_index": Array("int32", SHAPE), "corr_neuron_value": Array("float32", SHAPE)}

    def record(self, arrays, lo, hi, ctx):
        return {"cn": pairs(arrays["corr_neuron_index"], arrays["corr_neuron_value"], lo, hi)}

    def dump(self, arrays, i, ctx):
        return {"correlated_neurons": dump_pairs(arrays["corr_neuron_index"][i], arrays["corr_neuron_value"][i])}

    def fake(self, ctx):
        rng, f = ctx.rng.spawn(1)[0], ctx.n_features  # a child stream: the other fakes stay as they were
        dead = ctx.arrays["nonzero_count"] == 0
        index = np.where(dead[:, None], -1, rng.integers(0, 768, (f, N))).astype(np.int32)
        value = np.sort(rng.uniform(-0.2, 0.8, (f, N)), axis=1)[:, ::-1]
        return {"corr_neuron_index": index, "corr_neuron_value": np.where(dead[:, None], 0, value).astype(np.float32)}

"""The dimensions of the SAE's output basis a feature writes to most: its decoder row's N largest
weights by magnitude, signed, with each one's share of the row's L1 norm (weights only).

For an SAE on an MLP's output (`blocks.L.hook_mlp_out`; the entry's meta["neurons"] is then
`blocks.L.mlp.hook_post`) the neurons are the MLP's: the row is the decoder direction's dot
product with each neuron's output weights, W_dec[f] . W_out[n], with the same columns (value,
share of the row's L1 norm). A dot product, not a cosine: it is the feature direction read in the
neurons' output basis, as a decoder weight is in a hook's own basis (the value and % of L1 that
SAEDashboard's and Neuronpedia's neuron alignment table shows), so a neuron that writes little
counts for little; a cosine would rank a neuron whose output weights are tiny but point along
the feature as high as one that writes it strongly."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import round_sig

N = 5
SHAPE = ("F", N)


class AlignedNeurons(Statistic):
    name = "aligned_neurons"
    stage = "weights"
    arrays = {
        "aligned_index": Array("int32", SHAPE),
        "aligned_value": Array("float32", SHAPE),
        "aligned_l1": Array("float32", SHAPE),
    }

    def compute(self, ctx):
        from sae_atlas.compute.correlation import aligned_neurons

        index, value, share = aligned_neurons(ctx.w_dec, N, ctx.neuron_weights())
        return {"aligned_index": index, "aligned_value": value, "aligned_l1": share}

    def record(self, arrays, lo, hi, ctx):
        index = np.asarray(arrays["aligned_index"][lo:hi]).tolist()
        value = round_sig(arrays["aligned_value"][lo:hi]).tolist()
        share = round_sig(arrays["aligned_l1"][lo:hi]).tolist()
        return {"al": [[[j, v, s] for j, v, s in zip(js, vs, ss) if j >= 0] for js, vs, ss in zip(index, value, share)]}

    def dump(self, arrays, i, ctx):
        return {
            "aligned_neurons": [
                {"index": int(j), "value": float(v), "l1_share": float(s)}
                for j, v, s in zip(arrays["aligned_index"][i], arrays["aligned_value"][i], arrays["aligned_l1"][i])
                if j >= 0
            ]
        }

    def fake(self, ctx):
        rng, f = ctx.rng.spawn(1)[0], ctx.n_features  # a child stream: the other fakes stay as they were
        d = 768
        index = np.stack([rng.choice(d, N, replace=False) for _ in range(f)]).astype(np.int32)
        magnitude = np.sort(rng.uniform(0.02, 0.3, (f, N)), axis=1)[:, ::-1]
        value = (magnitude * rng.choice([-1.0, 1.0], (f, N))).astype(np.float32)
        return {"aligned_index": index, "aligned_value": value, "aligned_l1": (magnitude / 12).astype(np.float32)}

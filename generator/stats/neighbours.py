"""A feature's nearest features by decoder cosine in its own SAE (weights only); its site column
`xnb` adds the nearest decoder directions in the other SAEs of its Set (the Set's cache entry)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import round_sig

SHAPE = ("F", "neighbours")


class Neighbours(Statistic):
    name = "neighbours"
    stage = "weights"
    # One decoder-cosine search serves these neighbours and the map's neighbour graph.
    settings = ("neighbours", "umap_neighbours")
    arrays = {"neighbour_index": Array("int32", SHAPE), "neighbour_cosine": Array("float32", SHAPE)}

    def compute(self, ctx):
        index, cosine = ctx.decoder_knn()
        n = ctx.settings.neighbours
        return {"neighbour_index": np.ascontiguousarray(index[:, :n]), "neighbour_cosine": np.ascontiguousarray(cosine[:, :n])}

    def record(self, arrays, lo, hi, ctx):
        index = np.asarray(arrays["neighbour_index"][lo:hi]).tolist()
        cosine = round_sig(arrays["neighbour_cosine"][lo:hi]).tolist()
        cross = getattr(ctx.job, "cross", None)
        return {
            "nb": [[[j, c] for j, c in zip(js, cs) if j >= 0] for js, cs in zip(index, cosine)],
            "xnb": _cross_records(cross, ctx.job.layers, lo, hi) if cross is not None else [[] for _ in range(hi - lo)],
        }

    def dump(self, arrays, i, ctx):
        return {
            "neighbours": [
                {"index": int(j), "cosine": float(c)}
                for j, c in zip(arrays["neighbour_index"][i], arrays["neighbour_cosine"][i])
                if j >= 0
            ]
        }

    def fake(self, ctx):
        rng, f, n = ctx.rng, ctx.n_features, ctx.settings.neighbours
        return {
            "neighbour_index": rng.integers(0, f, (f, n)).astype(np.int32),
            "neighbour_cosine": np.sort(rng.uniform(0.05, 0.7, (f, n)), axis=1)[:, ::-1].astype(np.float32),
        }


def _cross_records(cross, layers, lo: int, hi: int) -> list:
    """[[layer, index, cosine], ...]: `layer` indexes the summary's `layers` (the Set's SAEs), which
    give the SAE's id and page."""
    index = np.asarray(cross.index[lo:hi]).tolist()
    cosine = round_sig(cross.cosine[lo:hi]).tolist()
    position = {sae: k for k, (sae, _) in enumerate(layers)}
    targets = [position[sae] for sae, _ in cross.targets]
    return [[[k, j, c] for k, j, c in zip(targets, js, cs) if j >= 0] for js, cs in zip(index, cosine)]

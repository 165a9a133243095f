"""The SAE's 2-D map: UMAP of the decoder directions (cosine metric; PCA for tiny SAEs or with
--pca-map) and k-means clusters on it (weights only). Shown by the map, not in feature records."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic


def map_call(w_dec, settings, method: str, knn: tuple[np.ndarray, np.ndarray]) -> tuple[tuple, dict]:
    """The arguments of `weights.umap_coords` for this SAE's map: its decoder, the map's settings
    and its neighbour graph (the first neighbours of `knn`, the decoder-cosine search)."""
    from sae_atlas.compute.weights import umap_neighbour_count

    k_map = umap_neighbour_count(w_dec.shape[0], settings.umap_neighbours)
    index, cosine = knn
    knn = (index[:, : k_map - 1], cosine[:, : k_map - 1])
    return (w_dec, settings.umap_neighbours, settings.seed, method), {"epochs": settings.umap_epochs, "knn": knn}


class FeatureMap(Statistic):
    name = "feature_map"
    stage = "weights"
    settings = ("umap_neighbours", "umap_epochs", "seed")
    arrays = {"umap": Array("float32", ("F", 2)), "cluster": Array("int32", ("F",))}

    def compute(self, ctx):
        from sae_atlas.compute.weights import cluster_ids, map_method, umap_coords

        s, w_dec = ctx.settings, ctx.w_dec
        method = map_method(w_dec.shape[0], ctx.pca_map)
        coords = ctx.background_map()  # fitted by the map worker beside the corpus passes, if it was sent there
        if coords is None:
            args, kwargs = map_call(w_dec, s, method, ctx.decoder_knn())
            coords = umap_coords(*args, **kwargs)
        ctx.meta["map"] = method
        return {"umap": coords, "cluster": cluster_ids(coords, s.seed)}

    def dump(self, arrays, i, ctx):
        return {"umap": {"x": float(arrays["umap"][i, 0]), "y": float(arrays["umap"][i, 1]), "cluster": int(arrays["cluster"][i])}}

    def fake(self, ctx):
        rng, f = ctx.rng, ctx.n_features
        centres = rng.normal(0, 6, (40, 2))
        cluster = rng.integers(0, 40, f).astype(np.int32)
        return {"umap": (centres[cluster] + rng.normal(0, 1, (f, 2))).astype(np.float32), "cluster": cluster}

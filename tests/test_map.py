"""The feature map with umap-learn itself (the other compute tests use the PCA map, which needs no
JIT compilation): exact cosine neighbours handed to UMAP give a deterministic map that keeps
clusters of decoder directions together."""

from __future__ import annotations

import numpy as np
import torch

from sae_atlas.compute.weights import cluster_ids, umap_coords


def _clustered_directions(n_clusters: int = 4, per_cluster: int = 40, d: int = 32, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, d, generator=g)
    rows = centres.repeat_interleave(per_cluster, 0) + 0.15 * torch.randn(n_clusters * per_cluster, d, generator=g)
    return rows, np.repeat(np.arange(n_clusters), per_cluster)


def test_umap_map_is_deterministic_and_keeps_clusters_apart():
    w_dec, label = _clustered_directions()
    coords = umap_coords(w_dec, 15, seed=0)
    assert coords.shape == (w_dec.shape[0], 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    np.testing.assert_array_equal(coords, umap_coords(w_dec, 15, seed=0))
    # each point's nearest point on the map belongs to its own cluster
    d2 = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    assert (label[d2.argmin(1)] == label).mean() > 0.97
    # and k-means on the map finds the clusters (up to their numbering)
    found = cluster_ids(coords, seed=0, max_clusters=4)
    pairs = {(int(a), int(b)) for a, b in zip(label, found)}
    assert len(pairs) == 4


def test_umap_map_of_few_features_uses_all_of_them_as_neighbours():
    w_dec, _ = _clustered_directions(n_clusters=2, per_cluster=9)
    coords = umap_coords(w_dec, 50, seed=1)  # more neighbours asked for than there are other features
    assert coords.shape == (18, 2) and np.isfinite(coords).all()


def test_umap_map_from_a_shared_neighbour_search_is_the_same_map():
    from sae_atlas.compute.weights import cosine_neighbours

    w_dec, _ = _clustered_directions(n_clusters=3, per_cluster=30)
    wide = cosine_neighbours(w_dec, w_dec, 20, exclude_self=True)  # more than the map needs: the first 14 are used
    exact = cosine_neighbours(w_dec, w_dec, 14, exclude_self=True)
    np.testing.assert_array_equal(wide[0][:, :14], exact[0])
    coords = umap_coords(w_dec, 15, seed=2, knn=wide)
    np.testing.assert_array_equal(coords, umap_coords(w_dec, 15, seed=2, knn=exact))
    assert np.isfinite(coords).all()

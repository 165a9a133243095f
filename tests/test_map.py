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


def _in_threads(n: int):
    """A context that runs its body at torch.set_num_threads(n) and gives the caller's count back."""
    from contextlib import contextmanager

    @contextmanager
    def scope():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return scope()


def test_umap_map_leaves_torch_thread_count_as_it_found_it():
    # umap-learn's parallel numba loops go through OpenMP, which torch shares: numba's OpenMP layer
    # set OpenMP's count to numba's own (the machine's cores), so --threads 1 stopped holding after
    # the first map. The map now runs in torch's count and gives it back.
    w_dec, _ = _clustered_directions(n_clusters=2, per_cluster=20)
    with _in_threads(1):
        one = umap_coords(w_dec, 15, seed=3)
        assert torch.get_num_threads() == 1
    # and the map is the same map whatever the thread count
    with _in_threads(2):
        two = umap_coords(w_dec, 15, seed=3)
        assert torch.get_num_threads() == 2
    np.testing.assert_array_equal(one, two)


def test_compute_releases_with_a_umap_map_keeps_one_thread(tmp_path):
    from sae_atlas.compute import ComputeOptions, compute_releases
    from sae_atlas.manifest import load_content
    from tests.fixtures import build_fixture_content

    sets = (("res-st", "blocks.{layer}.hook_resid_post", "standard", (0,)),)
    content = build_fixture_content(tmp_path, n_prompts=4, context=8, d_sae=32, corpus="tokens", sets=sets)
    with _in_threads(1):
        compute_releases(load_content(content), tmp_path / "cache", ComputeOptions(device="cpu", quiet=True))
        assert torch.get_num_threads() == 1

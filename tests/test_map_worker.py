"""The map worker (`compute.maps.MapWorker`): UMAP maps fitted in a child process beside the compute,
byte-identical to the maps the compute fits itself and to umap-learn's own build of its layout
epoch; a failed or vanished worker leaves each map to the compute, which fits it the same."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
import torch

from sae_atlas.cache import CacheStore, sae_key
from sae_atlas.compute import ComputeOptions, compute_releases, maps, weights
from sae_atlas.compute.maps import NOGIL_EPOCH, MapWorker, load_umap
from sae_atlas.compute.weights import umap_coords, umap_request
from sae_atlas.manifest import load_content
from tests.conftest import ROOT
from tests.fixtures import build_fixture_content


def _decoder(seed: int, f: int = 240, d: int = 24) -> torch.Tensor:
    return torch.randn(f, d, generator=torch.Generator().manual_seed(seed))


def test_worker_maps_equal_umap_learns_own_in_process(monkeypatch):
    decoders = [_decoder(seed) for seed in range(3)]
    worker = MapWorker(2)  # two fits at once: the nogil layout epochs run side by side
    try:
        for i, w in enumerate(decoders):
            worker.start(f"map {i}", umap_request(w, 10, seed=i, epochs=40))
        got = [worker.take(f"map {i}") for i in range(len(decoders))]
    finally:
        worker.close()
    assert all(g is not None and g.shape == (240, 2) for g in got)

    load_umap()
    from umap import layouts

    nogil = layouts._nb_optimize_layout_euclidean_single_epoch
    assert nogil.py_func.__name__ == NOGIL_EPOCH and nogil.targetoptions["nogil"]
    # umap-learn's own build of the epoch (it holds the GIL), as umap/layouts.py defines it
    own = numba.njit(layouts._optimize_layout_euclidean_single_epoch, fastmath=True, parallel=False)
    monkeypatch.setattr(layouts, "_nb_optimize_layout_euclidean_single_epoch", own)
    monkeypatch.setattr(maps, "_nogil_layout_epoch", lambda: None)
    want = [umap_coords(w, 10, seed=i, epochs=40) for i, w in enumerate(decoders)]
    assert not own.targetoptions.get("nogil") and own.signatures  # it ran
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g, w, err_msg=f"map {i}")
    assert not np.array_equal(got[0], got[1])


def test_failed_or_vanished_worker_leaves_the_map_to_the_caller():
    worker = MapWorker(1)
    try:
        bad = umap_request(_decoder(0), 10, seed=0, epochs=5)
        bad["knn_index"] = bad["knn_index"][:7]  # a neighbour graph of other points: the fit raises
        worker.start("bad", bad)
        assert worker.take("bad") is None
        assert worker.take("never sent") is None
        worker.start("good", umap_request(_decoder(1), 10, seed=0, epochs=5))
        assert worker.take("good") is not None
        worker._proc.kill()
        worker._proc.wait()
        worker.start("after", umap_request(_decoder(2), 10, seed=0, epochs=5))
        assert worker.take("after") is None
    finally:
        worker.close()


def test_the_worker_holds_one_request_per_thread_and_one_more():
    built: list[int] = []

    def request(i: int):
        def build():
            built.append(i)
            return umap_request(_decoder(i, f=120), 8, seed=i, epochs=10)

        return build

    worker = MapWorker(1)  # a window of two requests
    try:
        for i in range(5):
            worker.start(f"map {i}", request(i))
        assert built == [0, 1]  # the rest wait here, unbuilt, until a map comes back
        got = [worker.take(f"map {i}") for i in range(5)]
    finally:
        worker.close()
    assert built == [0, 1, 2, 3, 4]
    for i, g in enumerate(got):
        np.testing.assert_array_equal(g, umap_coords(_decoder(i, f=120), 8, seed=i, epochs=10), err_msg=f"map {i}")


@pytest.fixture(scope="module")
def three_saes(tmp_path_factory):
    root = tmp_path_factory.mktemp("map-worker")
    # three SAEs: with a one-thread worker (a window of two) the third request is built and sent
    # from the thread that reads the worker's maps, outside the compute's inference mode
    sets = (("res-st", "blocks.{layer}.hook_resid_post", "standard", (0, 1)), ("res-tk", "blocks.{layer}.hook_resid_post", "topk", (1,)))
    content = build_fixture_content(root, n_prompts=8, context=8, d_sae=48, corpus="tokens", sets=sets, explanations=False)
    releases = load_content(content)
    alone = root / "alone"
    compute_releases(releases, alone, ComputeOptions(device="cpu", quiet=True))
    return root, content, releases, alone


def _umaps(cache, releases) -> dict:
    store = CacheStore(cache)
    out = {}
    for release in releases:
        for s in release.saes():
            entry = store.sae_entry(sae_key(release, s))
            assert entry.meta["map"] == "umap"
            out[s.id] = (entry.meta, {name: entry[name] for name in entry.arrays})
    return out


def test_compute_with_the_worker_writes_the_entries_it_writes_alone(three_saes, monkeypatch):
    root, _, releases, alone = three_saes

    def not_here(*args, **kwargs):
        raise AssertionError("a map was fitted in the compute's own process")

    monkeypatch.setattr(weights, "umap_coords", not_here)
    worker = MapWorker(1)
    try:
        compute_releases(releases, root / "worker", ComputeOptions(device="cpu", quiet=True, map_worker=worker))
    finally:
        worker.close()
    want, got = _umaps(alone, releases), _umaps(root / "worker", releases)
    assert got.keys() == want.keys() and len(got) == 3
    for sae_id in want:
        assert got[sae_id][0] == want[sae_id][0], sae_id
        for name, array in want[sae_id][1].items():
            np.testing.assert_array_equal(got[sae_id][1][name], array, err_msg=f"{sae_id} {name}")


def test_compute_with_a_dead_worker_fits_the_maps_itself(three_saes):
    root, _, releases, alone = three_saes
    worker = MapWorker(1)
    worker._proc.kill()
    worker._proc.wait()
    try:
        compute_releases(releases, root / "dead", ComputeOptions(device="cpu", quiet=True, map_worker=worker))
    finally:
        worker.close()
    want, got = _umaps(alone, releases), _umaps(root / "dead", releases)
    for sae_id in want:
        np.testing.assert_array_equal(got[sae_id][1]["umap"], want[sae_id][1]["umap"], err_msg=sae_id)


SPY = """
import sys
from sae_atlas import api

started = api._map_worker

def spy(threads, pca_map):
    worker = started(threads, pca_map)
    print("worker", worker is not None, "torch imported", "torch" in sys.modules, flush=True)
    return worker

api._map_worker = spy
api.compute(sys.argv[1], sys.argv[2], device="cpu", quiet=True)
print("umap in the compute's process", "umap" in sys.modules)
"""


def test_api_compute_starts_the_worker_before_torch_and_writes_the_same_entries(three_saes):
    root, content, releases, alone = three_saes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(maps.numba_cache_dir())}
    done = subprocess.run([sys.executable, "-c", SPY, str(content), str(root / "api")], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker True torch imported False" in done.stdout, done.stdout
    assert "umap in the compute's process False" in done.stdout, done.stdout  # every map came from the worker
    want, got = _umaps(alone, releases), _umaps(root / "api", releases)
    for sae_id in want:
        np.testing.assert_array_equal(got[sae_id][1]["umap"], want[sae_id][1]["umap"], err_msg=sae_id)

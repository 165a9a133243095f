"""Cross-layer and within-SAE decoder neighbours, by value, against a brute-force cosine search.

A 3-layer release whose Sets have SAEs of different widths, listed out of layer order in the
manifest: the Set's cache entry (`set/<key>/index_a`, `cosine_a`, a in manifest order), the site's
`xnb` (closest direction in the previous and next SAE by layer) and `nb`, and the dump record, are
each compared with cosines computed here in numpy over the decoders as SAELens loads them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sae_atlas.export.dump import dump_feature
from sae_atlas.compute import ComputeOptions, compute_releases
from sae_atlas.manifest import load_content
from tests.conftest import sae_atlas
from tests.fixtures import WIDE_MODEL_ID, build_wide_content, load_reference_sae
from tests.test_e2e import data_call

N_NEIGHBOURS = 3  # cross-layer neighbours kept per (feature, other SAE) in the Set entry
SHARD_REL = 6e-4  # shard numbers carry 4 significant digits
# Manifest order differs from layer order, and widths differ per layer.
SETS = (
    ("res-x", "blocks.{layer}.hook_resid_post", "standard", ((2, 32), (0, 24), (1, 40))),
    ("mlp-post", "blocks.{layer}.mlp.hook_post", "topk", ((2, 40), (0, 48))),
    ("att-z", "blocks.{layer}.attn.hook_z", "standard", ((1, 16),)),
)


def _sae_id(set_id: str, layer: int) -> str:
    return f"{WIDE_MODEL_ID}@{layer}-{set_id}"


def _page(set_id: str, layer: int) -> str:
    return f"{WIDE_MODEL_ID}/{layer}-{set_id}/index.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(content, cache, site) of the release: computed in process, rendered by `sae-atlas render`."""
    root = tmp_path_factory.mktemp("cross")
    content = build_wide_content(root, n_prompts=6, context=8, sets=SETS)
    cache, out = root / "cache", root / "site"
    compute_releases(load_content(content), cache, ComputeOptions(device="cpu", quiet=True, pca_map=True))
    run = sae_atlas("render", "--quiet", "--content", content, "--cache", cache, "--out", out, cwd=root)
    assert run.returncode == 0, run.stderr
    return content, cache, out


@pytest.fixture(scope="module")
def decoders(site) -> dict[str, np.ndarray]:
    """SAE id -> unit decoder rows f64 [F, d_in], from the SAE dirs the manifest names."""
    content = site[0]
    (path,) = (content / "releases").glob("*.yaml")
    manifest = yaml.safe_load(path.read_text())
    out = {}
    for s in manifest["sets"]:
        for e in s["saes"]:
            w = load_reference_sae((path.parent / e["path"]).resolve()).W_dec.detach().double().numpy()
            out[_sae_id(s["id"], e["layer"])] = w / np.linalg.norm(w, axis=1, keepdims=True)
    return out


def _set_entries(cache: Path) -> dict[str, tuple[dict, Path]]:
    """Set id -> (meta, entry dir) of every Set entry in the cache."""
    found = {}
    for meta_path in (cache / "set").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        assert meta["set"] not in found, f"two entries for Set {meta['set']}"
        found[meta["set"]] = (meta, meta_path.parent)
    return found


def _top(cos: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-cos, axis=1, kind="stable")[:, :n]


def test_each_set_of_several_saes_has_one_entry_in_manifest_order(site):
    entries = _set_entries(site[1])
    assert sorted(entries) == ["mlp-post", "res-x"]  # a Set of one SAE has no cross-layer neighbours
    for set_id, _, _, layers in SETS[:2]:
        meta, _ = entries[set_id]
        assert meta["sae_ids"] == [_sae_id(set_id, layer) for layer, _ in layers]


def test_set_entry_neighbours_equal_a_brute_force_cosine_search(site, decoders):
    entries = _set_entries(site[1])
    checked = 0
    for set_id, _, _, layers in SETS[:2]:
        _, directory = entries[set_id]
        ids = [_sae_id(set_id, layer) for layer, _ in layers]
        for a, id_a in enumerate(ids):
            index = np.load(directory / f"index_{a}.npy")
            cosine = np.load(directory / f"cosine_{a}.npy")
            f_a = decoders[id_a].shape[0]
            assert index.shape == cosine.shape == (f_a, len(ids), N_NEIGHBOURS), id_a
            for b, id_b in enumerate(ids):
                where = f"{set_id}: {id_a} -> {id_b}"
                if a == b:
                    assert (index[:, b] == -1).all() and (cosine[:, b] == 0).all(), where
                    continue
                cos = decoders[id_a] @ decoders[id_b].T
                expected = _top(cos, N_NEIGHBOURS)
                np.testing.assert_array_equal(index[:, b], expected, err_msg=where)
                np.testing.assert_allclose(cosine[:, b], np.take_along_axis(cos, expected, 1), atol=1e-6, err_msg=where)
                assert index[:, b].max() < decoders[id_b].shape[0], where
                checked += 1
    assert checked == 3 * 2 + 2 * 1


def _records(site_dir: Path, set_id: str, layer: int) -> dict[int, dict]:
    page = site_dir / _page(set_id, layer)
    records = {}
    for shard in sorted((page.parent / "data" / "f").glob("*.js")):
        name, (_, rows) = data_call(shard)
        assert name == "features"
        records.update({r["i"]: r for r in rows})
    return records


def test_site_cross_layer_neighbours_are_the_closest_direction_in_the_adjacent_layers(site, decoders):
    site_dir = site[2]
    for set_id, _, _, layers in SETS:
        by_layer = sorted(layer for layer, _ in layers)
        for n, layer in enumerate(by_layer):
            sae_id = _sae_id(set_id, layer)
            adjacent = [by_layer[m] for m in (n - 1, n + 1) if 0 <= m < len(by_layer)]
            records = _records(site_dir, set_id, layer)
            assert sorted(records) == list(range(decoders[sae_id].shape[0]))
            expected = {}
            for other in adjacent:
                cos = decoders[sae_id] @ decoders[_sae_id(set_id, other)].T
                best = cos.argmax(1)
                expected[other] = (best, cos[np.arange(len(best)), best])
            page = site_dir / _page(set_id, layer)
            _, (summary,) = data_call(page.parent / "data" / "summary.js")
            for f, record in records.items():
                where = f"{sae_id}:{f}"
                assert len(record["xnb"]) == len(adjacent), where
                # [layer, index, cosine]: layer indexes summary.layers ({sae, href})
                for (k, j, c), other in zip(record["xnb"], adjacent):
                    other_id, href = summary["layers"][k]["sae"], summary["layers"][k]["href"]
                    assert other_id == _sae_id(set_id, other), where
                    assert (page.parent / href).resolve() == (site_dir / _page(set_id, other)).resolve(), where
                    assert j == expected[other][0][f], f"{where} -> {other_id}: {j} != brute force {expected[other][0][f]}"
                    assert math.isclose(c, expected[other][1][f], rel_tol=SHARD_REL, abs_tol=1e-4), where


def test_site_and_dump_decoder_neighbours_equal_a_brute_force_cosine_search(site, decoders):
    content, cache, site_dir = site
    releases = load_content(content)
    for set_id, _, _, layers in SETS:
        for layer, _ in layers:
            sae_id = _sae_id(set_id, layer)
            cos = decoders[sae_id] @ decoders[sae_id].T
            np.fill_diagonal(cos, -np.inf)
            records = _records(site_dir, set_id, layer)
            n = len(records[0]["nb"])
            assert n == 3  # FIXTURE_COMPUTE neighbours
            expected = _top(cos, n)
            for f, record in records.items():
                assert [j for j, _ in record["nb"]] == expected[f].tolist(), f"{sae_id}:{f}"
                for (_, c), j in zip(record["nb"], expected[f]):
                    assert math.isclose(c, cos[f, j], rel_tol=SHARD_REL, abs_tol=1e-4), f"{sae_id}:{f}"
            f = int(decoders[sae_id].shape[0] - 1)
            dumped = dump_feature(releases, cache, f"{sae_id}:{f}")["neighbours"]
            assert [d["index"] for d in dumped] == expected[f].tolist(), sae_id
            np.testing.assert_allclose([d["cosine"] for d in dumped], cos[f, expected[f]], atol=1e-6)

"""`--dtype bfloat16|float16` runs the model in that dtype (SAEs and statistics stay float32): its
results agree with float32 within the tolerances below, and they are not the float32 results.

Tolerances (half precision keeps 8 / 11 significant bits): per-feature density within 0.03 (an
activation near a threshold may flip), max activation within 5% of the largest one, explained
variance within 0.03, logit effects within 2% of the largest, and at least 80% of live features
keep their top example."""

from __future__ import annotations

import numpy as np
import pytest

from sae_atlas.cache import CacheStore, sae_key
from sae_atlas.compute import ComputeOptions, compute_releases
from sae_atlas.manifest import load_content
from tests.fixtures import build_fixture_content

SETS = (
    ("res-st", "blocks.{layer}.hook_resid_post", "standard", (1,)),
    ("mlp-jr", "blocks.{layer}.hook_mlp_out", "jumprelu", (0,)),
)


def _compute(content, cache, dtype: str) -> dict:
    releases = load_content(content)
    compute_releases(releases, cache, ComputeOptions(device="cpu", dtype=dtype, quiet=True, pca_map=True, batch_size=4))
    store = CacheStore(cache)
    return {spec.id: store.sae_entry(sae_key(releases[0], spec, dtype)) for spec in releases[0].saes()}


@pytest.fixture(scope="module")
def float32(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtype")
    content = build_fixture_content(root, n_prompts=16, context=12, d_sae=32, corpus="tokens", sets=SETS, explanations=False)
    return content, root, _compute(content, root / "cache-float32", "float32")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_agrees_with_float32_within_tolerance(float32, dtype):
    content, root, want = float32
    got = _compute(content, root / f"cache-{dtype}", dtype)
    for sae_id, w in want.items():
        g = got[sae_id]
        assert (g.meta["dtype"], w.meta["dtype"]) == (dtype, "float32")
        assert not np.array_equal(g["max_activation"], w["max_activation"]), f"{sae_id}: {dtype} gave the float32 numbers"
        assert np.abs(g["density"] - w["density"]).max() <= 0.03, sae_id
        scale = float(np.max(w["max_activation"]))
        assert np.abs(g["max_activation"] - w["max_activation"]).max() <= 0.05 * scale, sae_id
        assert abs(g.meta["stats"]["explained_variance"] - w.meta["stats"]["explained_variance"]) <= 0.03, sae_id
        logit_scale = float(np.abs(w["pos_logit_value"]).max())
        assert np.abs(g["pos_logit_value"] - w["pos_logit_value"]).max() <= 0.02 * logit_scale, sae_id
        live = w["top_prompt"][:, 0] >= 0
        same = (g["top_prompt"][live, 0] == w["top_prompt"][live, 0]) & (g["top_position"][live, 0] == w["top_position"][live, 0])
        assert live.sum() > 10 and same.mean() >= 0.8, (sae_id, same.mean())

"""Comparing a computed SAE cache entry with a brute-force recomputation done with TransformerLens
and SAELens directly (the tests compute `want`; nothing here comes from the engine)."""

from __future__ import annotations

import numpy as np


def assert_entry_matches_brute_force(entry, want: dict, context: int, label: str) -> None:
    """`want`: {"acts" f32 [tokens, F] over the corpus in prompt order, "mse", "explained_variance",
    "ce" (clean, spliced), "logits" f32 [F, d_vocab]}. Checks density, max, top examples (value,
    prompt, position), the reconstruction and CE statistics and the top logits."""
    acts = want["acts"]
    assert (acts > 0).any(), label  # the fixture fires
    np.testing.assert_allclose(entry["density"], (acts > 0).mean(0), rtol=1e-6, err_msg=label)
    np.testing.assert_allclose(entry["max_activation"], np.maximum(acts.max(0), 0), rtol=1e-5, atol=1e-6, err_msg=label)
    k = entry["top_value"].shape[1]
    for feature in range(acts.shape[1]):
        col = acts[:, feature]
        order = np.argsort(-col, kind="stable")[:k]
        order = order[col[order] > 0]
        n = len(order)
        np.testing.assert_allclose(entry["top_value"][feature, :n], col[order], rtol=1e-5, err_msg=label)
        np.testing.assert_array_equal(entry["top_prompt"][feature, :n], order // context, err_msg=label)
        np.testing.assert_array_equal(entry["top_position"][feature, :n], order % context, err_msg=label)
        assert (entry["top_prompt"][feature, n:] == -1).all(), label
    stats = entry.meta["stats"]
    np.testing.assert_allclose(stats["mse"], want["mse"], rtol=1e-4, err_msg=label)
    np.testing.assert_allclose(stats["explained_variance"], want["explained_variance"], rtol=1e-4, atol=1e-6, err_msg=label)
    np.testing.assert_allclose((stats["ce_loss_clean"], stats["ce_loss_spliced"]), want["ce"], rtol=1e-5, err_msg=label)
    logits = want["logits"]
    n = entry["pos_logit_token"].shape[1]
    np.testing.assert_array_equal(entry["pos_logit_token"], np.argsort(-logits, 1, kind="stable")[:, :n], err_msg=label)
    np.testing.assert_allclose(entry["pos_logit_value"], -np.sort(-logits, 1)[:, :n], rtol=1e-4, atol=1e-5, err_msg=label)
    np.testing.assert_array_equal(entry["neg_logit_token"], np.argsort(logits, 1, kind="stable")[:, :n], err_msg=label)


def compute_and_read(content, cache) -> tuple:
    """Compute `content` (one release) into `cache` as the engine does in tests (CPU, PCA map,
    batches of 4) and read back (the corpus tokens [prompts, context] as a torch tensor, {set id: entry})."""
    import torch

    from sae_atlas.cache import CacheStore, corpus_key, sae_key
    from sae_atlas.compute import ComputeOptions, compute_releases
    from sae_atlas.manifest import load_content

    releases = load_content(content)
    compute_releases(releases, cache, ComputeOptions(device="cpu", quiet=True, pca_map=True, batch_size=4))
    store, release = CacheStore(cache), releases[0]
    tokens = torch.from_numpy(np.array(store.corpus(corpus_key(release))["tokens"])).long()
    return tokens, {spec.set_id: store.sae_entry(sae_key(release, spec)) for spec in release.saes()}


def brute_force_result(acts, target, recon, logits, ce: tuple) -> dict:
    """The `want` of `assert_entry_matches_brute_force` from torch tensors computed directly:
    acts [..., F], the activation the SAE writes `target` and its reconstruction `recon` [..., d],
    logits [F, d_vocab], ce = (clean, spliced) mean losses."""
    t = target.reshape(-1, target.shape[-1]).double()
    r = recon.reshape(t.shape).double()
    sse = float(((t - r) ** 2).sum())
    return {
        "acts": acts.reshape(-1, acts.shape[-1]).numpy(),
        "mse": sse / t.numel(),
        "explained_variance": 1.0 - sse / float(((t - t.mean(0)) ** 2).sum()),
        "logits": logits.numpy(),
        "ce": (float(ce[0]), float(ce[1])),
    }

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


# -- per-example statistics (direct feature attribution, loss effects) ------------------------------


def read_head(act, head):
    """The activation of one head of a per-head hook ([..., head, d_head]), or all of it."""
    return act[:, :, head] if head is not None else act


def window_of(full: np.ndarray, q: int, before: int, after: int) -> np.ndarray:
    """A [context] per-position array -> the window around q (0 outside the prompt)."""
    out = np.zeros(before + 1 + after)
    for j in range(out.shape[0]):
        t = q - before + j
        if 0 <= t < full.shape[0]:
            out[j] = full[t]
    return out


def brute_dfa(cache, sae, layer: int, f: int, p: int, q: int, head=None) -> np.ndarray:
    """dfa [context] of feature f at (p, q), by loops over heads and source positions of the
    pattern and values in `cache` (run_with_cache's, of all prompts)."""
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][p].double()  # [head, q, k]
    v = cache[f"blocks.{layer}.attn.hook_v"][p].double()  # [k, kv_head, d_head]
    w = sae.W_enc.detach().double()
    n_heads, d_head = pattern.shape[0], v.shape[-1]
    group = n_heads // v.shape[1]
    heads = [head] if head is not None else range(n_heads)
    out = np.zeros(pattern.shape[-1])
    for k in range(pattern.shape[-1]):
        total = 0.0
        for h in heads:
            rows = w[:, f] if head is not None else w[h * d_head : (h + 1) * d_head, f]
            total += float(pattern[h, q, k]) * float(v[k, h // group] @ rows)
        out[k] = total
    return out


def brute_loss_effect(model, sae, tokens: np.ndarray, f: int, p: int, head=None, spliced: dict | None = None) -> np.ndarray:
    """loss_ablated - loss_spliced [context] of prompt p (0 at the last position): one forward
    ablating feature f from the SAE's reconstruction, and one splicing the reconstruction (kept in
    `spliced` per prompt)."""
    import torch

    hook_in, hook_out = sae.cfg.metadata.hook_name, getattr(sae.cfg.metadata, "hook_name_out", None) or sae.cfg.metadata.hook_name
    w_skip = getattr(sae, "W_skip", None)
    saved = {}

    def keep(act, hook):
        saved["x"] = read_head(act, head)

    def splice(ablate: bool):
        def fn(act, hook):
            x = saved["x"] if hook_in != hook_out else read_head(act, head)
            acts = sae.encode(x)
            recon = sae.decode(acts).reshape(*acts.shape[:-1], -1)  # a hook_z SAE decodes to [..., heads, d_head]
            if w_skip is not None:
                recon = recon + x @ w_skip.T
            if ablate:
                recon = recon - acts[..., f : f + 1] * sae.W_dec[f]
            if head is None:
                return recon.reshape(act.shape)
            act = act.clone()
            act[:, :, head] = recon
            return act

        return fn

    def loss(ablate: bool) -> np.ndarray:
        hooks = [(hook_out, splice(ablate))]
        if hook_in != hook_out:
            hooks.insert(0, (hook_in, keep))
        with torch.inference_mode():
            t = torch.from_numpy(np.asarray(tokens[p : p + 1])).long()
            return model.run_with_hooks(t, return_type="loss", loss_per_token=True, fwd_hooks=hooks)[0].double().numpy()

    spliced = {} if spliced is None else spliced
    if p not in spliced:
        spliced[p] = loss(False)
    return np.append(loss(True) - spliced[p], 0.0)

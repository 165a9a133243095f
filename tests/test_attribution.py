"""Direct feature attribution and loss effects of top examples against brute force (tests/brute.py):
DFA from `run_with_cache`'s pattern and values with explicit loops over heads and source
positions, loss effects from one `run_with_hooks` ablation forward per example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_atlas.backends.saelens import SaeLensSae
from sae_atlas.backends.transformer_lens import TransformerLensBackend
from sae_atlas.compute.attribution import direct_feature_attribution, loss_effects
from sae_atlas.errors import AtlasError
from tests.brute import brute_dfa, brute_loss_effect, read_head, window_of
from tests.fixtures import make_sae, model_config

D_VOCAB, N_PROMPTS, CONTEXT, D_SAE, TOP_K = 50, 5, 9, 8, 5
BEFORE, AFTER = 3, 2
HEAD = 2


def _model(**cfg):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**{**model_config(D_VOCAB, n_ctx=16), **cfg}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.ndim >= 2 else 0.2)
    return model.eval()


def _tokens(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, D_VOCAB, size=(N_PROMPTS, CONTEXT)).astype(np.int32)


def _sae(model, hook: str, head: int | None = None, seed: int = 1, **cfg):
    """A random SAELens SAE on `hook` (one head of it when `head` is set)."""
    hook_z = hook.endswith("hook_z")
    d_in = model.cfg.d_head if head is not None else (model.cfg.n_heads * model.cfg.d_head if hook_z else model.cfg.d_model)
    sae = make_sae(d_in, D_SAE, "standard", hook, seed=seed, hook_z=hook_z and head is None)
    with torch.no_grad():
        sae.b_enc.mul_(0.3)  # fire often
    if head is not None:
        sae.cfg.metadata.hook_head_index = head
    for k, v in cfg.items():
        setattr(sae.cfg, k, v)
    sae._setup_activation_normalization()
    return sae.eval()


def _skip_transcoder(model, seed: int = 7):
    from sae_lens.registry import SAE_CLASS_REGISTRY

    cls, cfg_cls = SAE_CLASS_REGISTRY["skip_transcoder"]
    d = model.cfg.d_model
    tc = cls(cfg_cls(d_in=d, d_sae=D_SAE, d_out=d, apply_b_dec_to_input=False))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tc.named_parameters():
            scale = 1 / p.shape[0] ** 0.5 if p.ndim == 2 else 0.05
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    tc.cfg.metadata.hook_name = "blocks.0.ln2.hook_normalized"
    tc.cfg.metadata.hook_name_out = "blocks.0.hook_mlp_out"
    return tc.eval()


def _acts(model, sae, tokens: np.ndarray, head=None) -> np.ndarray:
    """SAELens's activations [prompts, context, F] on the model's clean activations."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens).long())
        return sae.encode(read_head(cache[sae.cfg.metadata.hook_name], head)).float().numpy()


def _top_examples(acts: np.ndarray):
    """[F, TOP_K] prompt/position: each feature's 2 largest activations, a prompt's first and last
    position (window edges), an empty slot; the second largest may share the first's prompt."""
    n_prompts, context, n_features = acts.shape
    prompt = np.full((n_features, TOP_K), -1, np.int32)
    position = np.full((n_features, TOP_K), -1, np.int32)
    for f in range(n_features):
        best = np.argsort(-acts[:, :, f].reshape(-1), kind="stable")[:2]
        prompt[f, :2], position[f, :2] = best // context, best % context
        prompt[f, 2], position[f, 2] = f % n_prompts, 0
        prompt[f, 3], position[f, 3] = (f + 1) % n_prompts, context - 1
    return prompt, position


def _windows_of(full: np.ndarray, q: int) -> np.ndarray:
    return window_of(full, q, BEFORE, AFTER)


# -- direct feature attribution -------------------------------------------------------------------


def _check_dfa(model, sae_module, layer: int, head=None, batch_size: int = 2):
    tokens = _tokens()
    sae = SaeLensSae(sae_module)
    backend = TransformerLensBackend(model)
    prompt, position = _top_examples(_acts(model, sae_module, tokens, head))
    got = direct_feature_attribution(backend, sae, tokens, prompt, position, BEFORE, AFTER, batch_size)
    assert got.dtype == np.float16 and got.shape == (D_SAE, TOP_K, BEFORE + 1 + AFTER)
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens).long())
    z = read_head(cache[f"blocks.{layer}.attn.hook_z"], head).reshape(N_PROMPTS, CONTEXT, -1).double()
    for f in range(D_SAE):
        for s in range(TOP_K):
            p, q = int(prompt[f, s]), int(position[f, s])
            if p < 0:
                assert not got[f, s].any()
                continue
            full = brute_dfa(cache, sae_module, layer, f, p, q, head)
            assert not full[q + 1 :].any()  # causal
            # The sanity property: over all source positions, the bias-free pre-activation at q.
            np.testing.assert_allclose(full.sum(), float(z[p, q] @ sae_module.W_enc[:, f].detach().double()), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got[f, s].astype(np.float64), _windows_of(full, q), rtol=2e-3, atol=2e-4, err_msg=f"feature {f} slot {s}")
    assert np.abs(got).max() > 0.05
    return got


def test_dfa_all_heads_matches_brute_force():
    model = _model()
    _check_dfa(model, _sae(model, "blocks.1.attn.hook_z"), layer=1)


def test_dfa_one_head_matches_brute_force():
    model = _model()
    _check_dfa(model, _sae(model, "blocks.0.attn.hook_z", head=HEAD, seed=3), layer=0, head=HEAD, batch_size=3)


def test_dfa_grouped_query_attention_matches_brute_force():
    model = _model(n_key_value_heads=2)
    assert model.run_with_cache(torch.zeros((1, 3), dtype=torch.long))[1]["blocks.1.attn.hook_v"].shape[2] == 2
    _check_dfa(model, _sae(model, "blocks.1.attn.hook_z", seed=4), layer=1, batch_size=10)


def test_dfa_sums_to_the_rescaled_pre_activation():
    """With SAELens's constant_norm_rescale the input is scaled per token before W_enc: over a
    window holding every source position, DFA sums to SAELens's own pre-activation less its biases."""
    model = _model()
    sae_module = _sae(model, "blocks.1.attn.hook_z", seed=5, normalize_activations="constant_norm_rescale")
    tokens = _tokens(1)
    prompt, position = _top_examples(_acts(model, sae_module, tokens))
    got = direct_feature_attribution(TransformerLensBackend(model), SaeLensSae(sae_module), tokens, prompt, position, CONTEXT - 1, 0, 4)
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens).long())
        _, sae_cache = sae_module.run_with_cache(cache["blocks.1.attn.hook_z"])
        pre = sae_cache["hook_sae_acts_pre"]
        bias = sae_module.b_enc - sae_module.b_dec @ sae_module.W_enc  # apply_b_dec_to_input: (x - b_dec) @ W + b_enc
    checked = 0
    for f, s in zip(*np.nonzero(prompt >= 0)):
        want = float(pre[prompt[f, s], position[f, s], f] - bias[f])
        np.testing.assert_allclose(got[f, s].astype(np.float64).sum(), want, rtol=5e-3, atol=5e-3)
        checked += 1
    assert checked > 3 * D_SAE


def test_dfa_refuses_other_hooks():
    model = _model()
    sae = SaeLensSae(_sae(model, "blocks.1.hook_resid_post"))
    with pytest.raises(AtlasError, match="hook_z"):
        direct_feature_attribution(TransformerLensBackend(model), sae, _tokens(), np.zeros((D_SAE, 1), np.int32), np.zeros((D_SAE, 1), np.int32), 2, 1, 2)


# -- loss effects ---------------------------------------------------------------------------------


def _check_loss_effects(model, sae_module, head=None, batch_size: int = 3):
    tokens = _tokens(2)
    sae = SaeLensSae(sae_module)
    backend = TransformerLensBackend(model)
    backend.enable_hooks(list(sae.hooks))
    prompt, position = _top_examples(_acts(model, sae_module, tokens, head))
    got = loss_effects(backend, sae, tokens, prompt, position, BEFORE, AFTER, batch_size)
    assert got.dtype == np.float16 and got.shape == (D_SAE, TOP_K, BEFORE + 1 + AFTER)
    spliced = {}
    for f in range(D_SAE):
        for s in range(TOP_K):
            p, q = int(prompt[f, s]), int(position[f, s])
            if p < 0:
                assert not got[f, s].any()
                continue
            want = _windows_of(brute_loss_effect(model, sae_module, tokens, f, p, head, spliced), q)
            np.testing.assert_allclose(got[f, s].astype(np.float64), want, rtol=2e-3, atol=2e-4, err_msg=f"feature {f} slot {s}")
    assert np.abs(got).max() > 0.01
    return got


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z"])
def test_loss_effects_match_brute_force(hook):
    model = _model()
    _check_loss_effects(model, _sae(model, hook, seed=11))


def test_loss_effects_one_head_match_brute_force():
    model = _model()
    _check_loss_effects(model, _sae(model, "blocks.0.attn.hook_z", head=HEAD, seed=12), head=HEAD, batch_size=2)


def test_loss_effects_skip_transcoder_match_brute_force():
    model = _model()
    _check_loss_effects(model, _skip_transcoder(model), batch_size=4)

"""The fused CE loss against TransformerLens's own `return_type="loss"`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sae_atlas.backends import transformer_lens_ce as ce
from sae_atlas.backends.saelens import SaeLensSae
from sae_atlas.backends import CeSae
from sae_atlas.backends.transformer_lens_ce import ce_losses
from sae_atlas.sources.corpus import Corpus
from tests.fixtures import make_sae, model_config

D_VOCAB, N_CTX, D_MODEL, N_PROMPTS, CONTEXT, D_SAE = 2000, 24, 32, 7, 20, 48
HOOKS = (
    "blocks.0.hook_resid_pre",
    "blocks.0.hook_resid_post",  # spliced forward from block 1
    "blocks.1.hook_resid_post",  # the last block's output: the spliced forward runs no block
    "blocks.0.hook_mlp_out",
    "blocks.1.attn.hook_z",
)


def _Corpus(tokens: np.ndarray) -> Corpus:
    return Corpus("test", tokens, [])


def _model(cls=None, seed: int = 0, **cfg):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    model = (cls or HookedTransformer)(HookedTransformerConfig(**{**model_config(D_VOCAB, N_CTX, D_MODEL), **cfg}))
    with torch.no_grad():
        # Every parameter random (the unembedding bias and ln_final too), large enough that the
        # logits are far from uniform and the soft cap bites.
        for p in model.parameters():
            p.normal_(0.0, 0.3 if p.ndim >= 2 else 0.5)
    return model.eval()


def _saes(model) -> list[CeSae]:
    out = []
    for i, hook in enumerate(HOOKS):
        hook_z = hook.endswith("hook_z")
        d_in = model.cfg.n_heads * model.cfg.d_head if hook_z else model.cfg.d_model
        out.append(CeSae(f"sae{i}", SaeLensSae(make_sae(d_in, D_SAE, "standard", hook, seed=i + 1, hook_z=hook_z)), N_PROMPTS))
    return out


def _tokens(seed: int = 0, n: int = N_PROMPTS, context: int = CONTEXT) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, D_VOCAB, size=(n, context), dtype=np.int32)


def _splice(sae):
    return lambda act, hook=None: sae.decode(sae.encode(act.float())).to(act.dtype).reshape(act.shape)


def _reference(model, tokens: np.ndarray, saes: list[CeSae]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TransformerLens's per-token loss [prompts, context - 1], clean and per SAE (full forward
    with a splicing hook)."""
    t = torch.from_numpy(tokens).long()
    with torch.inference_mode():
        clean = model(t, return_type="loss", loss_per_token=True)
        spliced = {
            r.id: model.run_with_hooks(t, return_type="loss", loss_per_token=True, fwd_hooks=[(r.hook, _splice(r.sae.module))])
            for r in saes
        }
    return clean, spliced


def _means(clean: torch.Tensor, spliced: dict[str, torch.Tensor], n: int) -> dict[str, tuple[float, float]]:
    def mean(loss: torch.Tensor) -> float:
        return float(loss[:n].double().sum() / loss[:n].numel())

    return {k: (mean(clean), mean(v)) for k, v in spliced.items()}


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def saes(model):
    return _saes(model)


@pytest.mark.parametrize("soft_cap", [-1.0, 3.0])
def test_fused_loss_per_token_equals_transformer_lens(soft_cap):
    model = _model(output_logits_soft_cap=soft_cap)
    assert ce._fused(model)
    t = torch.from_numpy(_tokens()).long()
    with torch.inference_mode():
        want = model(t, return_type="loss", loss_per_token=True)
        final = model(t, stop_at_layer=model.cfg.n_layers)
        got = ce._next_token_loss(model, final, t, None)
        if soft_cap > 0:  # the cap changes the loss: the test would see it missing
            uncapped = -torch.log_softmax(model.unembed(model.ln_final(final)), -1)[:, :-1].gather(-1, t[:, 1:, None])[..., 0]
            assert (uncapped - want).abs().max() > 0.1
    assert got.dtype == torch.float32 and got.shape == (N_PROMPTS, CONTEXT - 1)
    # On a CPU the fused loss (its log_softmax written over the logits) is TransformerLens's to the bit.
    assert torch.equal(got, want), (got - want).abs().max()


@pytest.mark.parametrize("soft_cap", [-1.0, 3.0])
def test_ce_losses_equal_transformer_lens(soft_cap, monkeypatch):
    model = _model(output_logits_soft_cap=soft_cap)
    saes = _saes(model)
    tokens = _tokens(1)
    clean, spliced = _reference(model, tokens, saes)
    monkeypatch.setattr(ce, "chunk_elements", lambda device, n=16 * D_VOCAB // ce.CE_CPU_CHUNK_FACTOR: n)  # 16 rows: chunks that straddle prompts
    got = ce_losses(model, _Corpus(tokens), saes, batch_size=3, device="cpu")
    want = _means(clean, spliced, N_PROMPTS)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
        assert abs(want[k][1] - want[k][0]) > 1e-3, k  # the splice changes the loss


def test_clean_and_spliced_per_prompt_sums(model, saes):
    tokens = _tokens(2)
    clean, spliced = _reference(model, tokens, saes)
    t = torch.from_numpy(tokens).long()
    with torch.inference_mode():
        sums, chunk = ce._ce_clean(model, t, [r.hook for r in saes if ce._ce_start(r.hook, model.cfg.n_layers) is not None])
        assert sorted(chunk.resid) == sorted(HOOKS[:3])
        np.testing.assert_allclose(sums, clean.double().sum(1).numpy(), rtol=1e-5)
        for r in saes:
            np.testing.assert_allclose(ce._ce_spliced(model, chunk, r), spliced[r.id].double().sum(1).numpy(), rtol=1e-5, err_msg=r.hook)


def test_one_clean_forward_shared_and_resid_hooks_start_at_their_block(model, saes):
    embeds = []
    model.add_hook("hook_embed", lambda act, hook: embeds.append(act.shape[0]))
    try:
        ce_losses(model, _Corpus(_tokens()), saes, batch_size=4, device="cpu")
    finally:
        model.reset_hooks(including_permanent=True)
    # Per chunk of 4 and 3 prompts: the clean forward, and the full spliced forwards of mlp_out and
    # hook_z; the three resid SAEs start from the clean residual stream.
    assert embeds == [4, 4, 4, 3, 3, 3]


def test_results_do_not_depend_on_chunking(model, saes, monkeypatch):
    corpus = _Corpus(_tokens(3))
    runs = []
    for batch_size, rows in ((N_PROMPTS, 10_000), (1, 16), (2, 16), (3, 32), (5, 48), (4, 1)):
        monkeypatch.setattr(ce, "chunk_elements", lambda device, n=rows * D_VOCAB // ce.CE_CPU_CHUNK_FACTOR: n)  # `rows` rows
        runs.append(ce_losses(model, corpus, saes, batch_size, "cpu"))
    # Per-prompt float64 sums added in prompt order, unembedding calls of whole multiples of
    # CE_ROW_ALIGN rows: the same numbers, to the last bit.
    assert all(run == runs[0] for run in runs[1:]), runs


def test_prompts_per_sae(model, saes):
    tokens = _tokens(4)
    clean, spliced = _reference(model, tokens, saes[:2])
    few = [CeSae(saes[0].id, saes[0].sae, 2), CeSae(saes[1].id, saes[1].sae, 100), CeSae("none", saes[3].sae, 0)]
    got = ce_losses(model, _Corpus(tokens), few, batch_size=3, device="cpu")
    np.testing.assert_allclose(got[saes[0].id], _means(clean, spliced, 2)[saes[0].id], rtol=1e-5)
    np.testing.assert_allclose(got[saes[1].id], _means(clean, spliced, N_PROMPTS)[saes[1].id], rtol=1e-5)
    assert got["none"] == (None, None)


def test_no_loss_without_prompts_or_next_tokens(model, saes):
    assert ce_losses(model, _Corpus(_tokens(context=1)), saes, 4, "cpu") == {r.id: (None, None) for r in saes}
    zero = [CeSae(r.id, r.sae, 0) for r in saes]
    assert ce_losses(model, _Corpus(_tokens()), zero, 4, "cpu") == {r.id: (None, None) for r in saes}
    assert ce_losses(model, _Corpus(_tokens()), [], 4, "cpu") == {}


def test_left_padding_mask_as_transformer_lens(monkeypatch):
    """With a left-padding tokenizer TransformerLens masks leading pad tokens out of attention and
    out of the loss; the fused loss does the same."""
    model = _model()
    pad = 7
    model.tokenizer = SimpleNamespace(padding_side="left", pad_token_id=pad, bos_token_id=pad + 1)
    tokens = _tokens(5)
    tokens[tokens == pad] = pad + 2
    tokens[0, :3] = pad
    tokens[2, :1] = pad
    saes = _saes(model)
    clean, spliced = _reference(model, tokens, saes)
    assert (clean[0, :3] == 0).all() and (clean[2, :1] == 0).all() and (clean[1] != 0).all()
    monkeypatch.setattr(ce, "chunk_elements", lambda device, n=32 * D_VOCAB // ce.CE_CPU_CHUNK_FACTOR: n)
    got = ce_losses(model, _Corpus(tokens), saes, batch_size=4, device="cpu")
    want = _means(clean, spliced, N_PROMPTS)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)


def test_a_model_with_its_own_forward_uses_transformer_lens_loss(model, saes, monkeypatch):
    from transformer_lens import HookedTransformer

    class Custom(HookedTransformer):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    custom = _model(Custom)
    custom.load_state_dict(model.state_dict())
    assert ce._fused(model) and not ce._fused(custom)

    def no_fused(*a, **k):
        raise AssertionError("fused loss on a model with its own forward")

    corpus = _Corpus(_tokens(6))
    want = ce_losses(model, corpus, saes, 3, "cpu")
    monkeypatch.setattr(ce, "_next_token_loss", no_fused)
    got = ce_losses(custom, corpus, saes, 3, "cpu")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)

"""Per-token next-token losses of a HookedTransformer with an SAE's reconstruction spliced in, and
with one feature ablated from that reconstruction: the kernel of `sae_atlas.compute.attribution`'s
loss effects.

A chunk of prompts runs clean once, up to the block of the SAE's output hook, keeping the SAE's
input, the output hook's activation and the residual stream entering that block. The spliced and
ablated forwards start there (`start_at_layer`), with a hook at the output hook that swaps in the
patched activation; a row of an ablated forward is one (prompt, feature) pair. The loss is the
fused one of `transformer_lens_ce` (TransformerLens's `loss_per_token`).
"""

from __future__ import annotations

from typing import Callable

import torch

from sae_atlas.backends.transformer_lens import hook_layer
from sae_atlas.backends.transformer_lens_ce import _fused, _next_token_loss


def _losses(model, start: int | None, resid, tokens, shortformer, mask, hook: str, patch: Callable, positions) -> torch.Tensor:
    """float32 [rows, pos - 1]: next-token losses of `tokens` with the activation at `hook` replaced
    by patch(activation); from the residual stream `resid` entering block `start`, or (start None)
    from the tokens. Only `positions` (bool [rows, pos - 1]) are computed; the others are 0."""
    n_layers = model.cfg.n_layers
    fused = _fused(model)
    with model.hooks(fwd_hooks=[(hook, lambda act, hook: patch(act))]):
        if start is None:
            if not fused:
                return model(tokens, return_type="loss", loss_per_token=True).float() * positions
            final = model(tokens, stop_at_layer=n_layers)
        else:
            kw = dict(start_at_layer=start, shortformer_pos_embed=shortformer, attention_mask=mask)
            if not fused:
                return model(resid, tokens=tokens, return_type="loss", loss_per_token=True, **kw).float() * positions
            final = model(resid, stop_at_layer=n_layers, **kw)
    return _next_token_loss(model, final, tokens, mask, positions)


def _rows(t, index: torch.Tensor):
    return None if t is None else t[index]


@torch.inference_mode()
def ablation_losses(
    backend, tokens: torch.Tensor, sae, row_prompt: torch.Tensor, row_feature: torch.Tensor, batch_size: int, row_positions: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(spliced f32 [prompts, pos - 1], ablated f32 [rows, pos - 1]) for `tokens` [prompts, pos].

    Spliced: the activation at the SAE's output hook replaced by its reconstruction of the input
    hook's clean activation (decode + skip, as the CE loss splices it). Ablated, row r: the same
    with feature row_feature[r] removed at every position t of prompt row_prompt[r], i.e. the
    reconstruction minus a_f(t) * W_dec[f] (divided by the SAE's input scale where `decode` divides
    by it). Rows run `batch_size` at a time, one (prompt, feature) pair each. `row_positions` (bool
    [rows, pos - 1], default all): the positions whose loss a row needs; only they (and for the
    spliced loss their union over a prompt's rows) are unembedded, the others are 0."""
    model = backend.model
    if row_positions is None:
        row_positions = torch.ones((row_prompt.shape[0], tokens.shape[1] - 1), dtype=torch.bool, device=row_prompt.device)
    prompt_positions = torch.zeros((tokens.shape[0], tokens.shape[1] - 1), dtype=torch.int32, device=row_positions.device)
    prompt_positions = prompt_positions.index_add_(0, row_prompt.to(row_positions.device), row_positions.int()) > 0
    layer = hook_layer(sae.hook_out)
    start_hook = None if layer is None else f"blocks.{layer}.hook_resid_pre"
    got = backend.capture(tokens, list(dict.fromkeys([*sae.hooks, *([start_hook] if start_hook else [])])))
    x = sae.read(got[sae.hook_in]).float()
    b, pos = tokens.shape
    acts = sae.encode(x)
    acts = (acts.to_dense() if acts.layout != torch.strided else acts).float().reshape(b, pos, -1)
    recon = sae.decode(acts).float().reshape(b, pos, -1)
    skip = sae.skip(x)
    if skip is not None:
        recon = recon + skip.float().reshape(recon.shape)
    scale = sae.input_scale(x)
    w_dec = sae.W_dec.detach().float()
    resid = got.get(start_hook)
    _, embed_tokens, shortformer, mask = model.input_to_embed(tokens)
    spliced = _losses(model, layer, resid, embed_tokens, shortformer, mask, sae.hook_out, lambda act: sae.write(act, recon), prompt_positions)
    ablated = torch.empty((row_prompt.shape[0], pos - 1), dtype=torch.float32, device=spliced.device)
    for lo in range(0, row_prompt.shape[0], max(1, batch_size)):
        u, f = row_prompt[lo : lo + batch_size], row_feature[lo : lo + batch_size]
        removed = acts[u, :, f][..., None] * w_dec[f][:, None, :]  # [rows, pos, d_out]
        if scale is not None:
            removed = removed / scale[u][..., None]
        patched = recon[u] - removed
        ablated[lo : lo + batch_size] = _losses(
            model, layer, _rows(resid, u), embed_tokens[u], _rows(shortformer, u), _rows(mask, u), sae.hook_out,
            lambda act: sae.write(act, patched), row_positions[lo : lo + batch_size],
        )
    return spliced, ablated

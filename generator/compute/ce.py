"""The CE loss of each SAE: mean next-token loss of the model over the first prompts of the corpus,
clean and with the SAE's reconstruction spliced into its hook."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from generator.compute.weights import hook_layer
from generator.sources.corpus import Corpus


@dataclass(frozen=True)
class CeSae:
    id: str
    hook: str
    sae: object
    prompts: int  # the first `prompts` prompts of the corpus (0: no CE loss)


CE_CHUNK_ELEMENTS = 1 << 24  # logits per CE forward chunk (prompts * context * d_vocab) stay near this


def _ce_chunk(model, context: int, batch_size: int) -> int:
    """Prompts per CE forward: at most batch_size, and few enough that the float32 logits of a chunk
    stay around CE_CHUNK_ELEMENTS elements."""
    return max(1, min(batch_size, CE_CHUNK_ELEMENTS // max(1, context * int(model.cfg.d_vocab))))


def _ce_start(hook: str, n_layers: int) -> int | None:
    """The block a spliced CE forward can start at when the hook is the residual stream entering it
    (`blocks.L.hook_resid_pre` -> L, `blocks.L.hook_resid_post` -> L + 1); None otherwise."""
    layer = hook_layer(hook)
    if layer is None:
        return None
    if hook == f"blocks.{layer}.hook_resid_pre":
        return layer
    if hook == f"blocks.{layer}.hook_resid_post" and layer + 1 <= n_layers:
        return layer + 1
    return None


def ce_losses(model, corpus: Corpus, saes: list[CeSae], batch_size: int, device: str) -> dict[str, tuple[float | None, float | None]]:
    """Per SAE id: (clean, spliced) mean next-token loss over its first ce_prompts prompts.

    Per-prompt float64 loss sums are added in prompt order, so the result does not depend on the
    chunking. The clean forward runs once per chunk for every SAE of the model; it keeps the
    residual stream at each SAE's hook, and an SAE on a resid_pre/resid_post hook runs its spliced
    forward from there (`start_at_layer`), others run the full forward with a splicing hook."""
    wanted = {r.id: min(r.prompts, corpus.n_prompts) for r in saes}
    if corpus.context < 2:
        return {k: (None, None) for k in wanted}
    n_total = max(wanted.values(), default=0)
    if n_total <= 0:
        return {k: (None, None) for k in wanted}
    starts = {r.id: _ce_start(r.hook, model.cfg.n_layers) for r in saes}
    resid_hooks = sorted({r.hook for r in saes if starts[r.id] is not None})
    chunk = _ce_chunk(model, corpus.context, batch_size)
    clean_sums: list[float] = []
    spliced_sums: dict[str, list[float]] = {r.id: [] for r in saes}

    def per_prompt(loss: torch.Tensor) -> list[float]:
        return loss.double().sum(1).cpu().tolist()

    for lo in range(0, n_total, chunk):
        tokens = torch.from_numpy(np.array(corpus.tokens[lo : min(lo + chunk, n_total)])).long().to(device)
        captured: dict[str, torch.Tensor] = {}

        def save(act, hook):
            captured[hook.name] = act.clone()

        loss = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(h, save) for h in resid_hooks])
        clean_sums.extend(per_prompt(loss))
        embedded = None
        for r in saes:
            if lo >= wanted[r.id]:
                continue
            sae = r.sae

            def splice(act, hook=None, sae=sae):
                return sae.decode(sae.encode(act.float())).to(act.dtype).reshape(act.shape)

            start = starts[r.id]
            if start is None:
                loss = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(r.hook, splice)])
            else:
                if embedded is None:
                    embedded = model.input_to_embed(tokens)
                _, embed_tokens, shortformer, mask = embedded
                loss = model(
                    splice(captured[r.hook]), start_at_layer=start, tokens=embed_tokens,
                    shortformer_pos_embed=shortformer, attention_mask=mask, return_type="loss", loss_per_token=True,
                )
            spliced_sums[r.id].extend(per_prompt(loss))

    def mean(sums: list[float], n: int) -> float:
        return float(np.sum(np.asarray(sums[:n], np.float64)) / (n * (corpus.context - 1)))

    return {k: (None, None) if n <= 0 else (mean(clean_sums, n), mean(spliced_sums[k], n)) for k, n in wanted.items()}

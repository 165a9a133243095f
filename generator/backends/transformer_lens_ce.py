"""The CE loss of each SAE: mean next-token loss of the model over the first prompts of the corpus,
clean and with the SAE's reconstruction spliced into the hook it writes (for a transcoder, its
reconstruction of the input hook's activation replaces the output hook's).

The loss is fused: the model body runs to the final residual stream (`stop_at_layer`), then
`ln_final`, the unembedding, the output logit soft cap and the next-token loss run on chunks of
tokens, so the [tokens, d_vocab] logits and their log-softmax never exist whole. Per token this is
TransformerLens's `return_type="loss", loss_per_token=True` (`lm_cross_entropy_loss`), computed as
`-log_softmax(logits)[target]` in float32. A model whose forward is not HookedTransformer's
own runs TransformerLens's loss instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sae_atlas.compute.options import chunk_elements
from sae_atlas.backends import CeSae
from sae_atlas.backends.transformer_lens import hook_layer, import_transformer_lens
from sae_atlas.sources.corpus import Corpus


# Rows per unembedding call are a multiple of this (the last chunk is padded with zero rows): a BLAS
# matmul of a few rows can take another path whose results differ in the last bits, which would make
# a prompt's loss depend on the batch it was computed in.
CE_ROW_ALIGN = 16
# Each unembedding call reads the whole unembedding (d_model x d_vocab): on a CPU the loss takes
# this many times the engine's chunk of logits at once (32 MB of float32 logits), which reads it half
# as often (the unembedding and loss ran 15-20% faster than at 1x, and slower again at 4x).
CE_CPU_CHUNK_FACTOR = 2
# TransformerLens's loss materialises [prompts, context, d_vocab] logits and their log-softmax; its
# forwards take few enough prompts that the logits stay around this many elements.
CE_CHUNK_ELEMENTS = 1 << 24


def _fused(model) -> bool:
    """Whether the forward of `model` is HookedTransformer's own (body, ln_final, unembed, soft cap,
    lm_cross_entropy_loss), which the fused loss replicates."""
    try:
        import_transformer_lens()
        from transformer_lens import HookedTransformer
    except ImportError:  # pragma: no cover - transformer_lens is a dependency
        return False
    cls = type(model)
    return (
        isinstance(model, HookedTransformer)
        and cls.forward is HookedTransformer.forward
        and cls.loss_fn is HookedTransformer.loss_fn
        and cls.input_to_embed is HookedTransformer.input_to_embed
        and hasattr(model, "unembed")
        and (model.cfg.normalization_type is None or hasattr(model, "ln_final"))
    )


def _ce_chunk(model, context: int, batch_size: int) -> int:
    """Prompts per CE forward: batch_size for the fused loss; for TransformerLens's loss at most
    batch_size, and few enough that the float32 logits of a chunk stay around CE_CHUNK_ELEMENTS."""
    if _fused(model):
        return max(1, batch_size)
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


def _softcap(cfg) -> float | None:
    """TransformerLens's output logit soft cap (`cap * tanh(logits / cap)`), active when > 0."""
    cap = getattr(cfg, "output_logits_soft_cap", None)
    return float(cap) if cap is not None and cap > 0 else None


def _next_token_loss(model, resid: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [batch, pos - 1]: the loss of predicting tokens[:, 1:] from the final residual stream
    `resid` [batch, pos, d_model] (before ln_final), as TransformerLens's forward computes it after
    its last block, `chunk_elements` logits at a time (on a CPU a few MB, which stay in cache).
    With `positions` (bool [batch, pos - 1]) only those positions are unembedded; the others are 0."""
    import_transformer_lens()
    from transformer_lens.components import Unembed

    batch, pos = tokens.shape
    x = resid[:, :-1]  # the last position predicts nothing
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    targets = tokens[:, 1:].to(x.device)
    if positions is not None:
        positions = positions.to(x.device)
        x, targets = x[positions], targets[positions]
    x = x.reshape(-1, x.shape[-1])
    targets = targets.reshape(-1)
    unembed = model.unembed
    buffer: list[torch.Tensor] = []
    if type(unembed) is Unembed and not unembed.hook_in._forward_hooks and not unembed.hook_out._forward_hooks:
        # Unembed.forward is F.linear(x, W_U.T.contiguous(), b_U), which is addmm(b_U, x, W_U) with
        # W_U.T.contiguous() transposed back: the same call, with the weight transposed once rather
        # than once per chunk, written into one buffer for every chunk (its last chunk's logits are
        # still partly in cache: 10% off a 160 x 50,257 product at 2 threads).
        w_t, b_u = unembed.W_U.T.contiguous(), unembed.b_U

        def logits_of(rows: torch.Tensor) -> torch.Tensor:
            if not buffer or buffer[0].shape[0] < rows.shape[0] or buffer[0].dtype != rows.dtype:
                buffer[:] = [torch.empty((rows.shape[0], w_t.shape[0]), dtype=rows.dtype, device=rows.device)]
            return torch.addmm(b_u, rows, w_t.t(), out=buffer[0][: rows.shape[0]])
    else:
        logits_of = unembed
    cap = _softcap(model.cfg)
    d_vocab = int(getattr(model.cfg, "d_vocab_out", -1) or -1)
    if d_vocab <= 0:
        d_vocab = int(model.cfg.d_vocab)
    elements = chunk_elements(x.device) * (CE_CPU_CHUNK_FACTOR if x.device.type == "cpu" else 1)
    step = max(1, elements // d_vocab // CE_ROW_ALIGN) * CE_ROW_ALIGN
    loss = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    in_place = x.device.type == "cpu"
    for lo in range(0, x.shape[0], step):
        rows = x[lo : lo + step]
        n = rows.shape[0]
        if n % CE_ROW_ALIGN:
            rows = F.pad(rows, (0, 0, 0, CE_ROW_ALIGN - n % CE_ROW_ALIGN))
        logits = logits_of(rows)[:n]
        if cap is not None:  # cap * tanh(logits / cap), as TransformerLens's apply_softcap
            logits = logits / cap
            logits.tanh_().mul_(cap)
        # -log_softmax(logits)[target], in float32: F.cross_entropy's log_softmax and nll_loss.
        logits = logits.float()
        if in_place:
            # On a CPU the same log_softmax written over the logits (each row is read, then its own
            # values overwritten): the same bits, without a second [rows, d_vocab] tensor to write
            # and read back (the unembedding and loss took 17% less time).
            torch.log_softmax(logits, -1, out=logits)
            loss[lo : lo + step] = logits.gather(1, targets[lo : lo + step, None])[:, 0].neg_()
        else:
            loss[lo : lo + step] = F.cross_entropy(logits, targets[lo : lo + step], reduction="none")
    if positions is not None:
        loss = torch.zeros((batch, pos - 1), dtype=torch.float32, device=x.device).masked_scatter_(positions, loss)
    loss = loss.reshape(batch, pos - 1)
    if mask is not None:  # as lm_cross_entropy_loss: 0 where a position or its next one is masked
        mask = mask.to(loss.device)
        loss = loss.masked_fill(~torch.logical_and(mask[:, :-1], mask[:, 1:]), 0.0)
    return loss


def _per_prompt(loss: torch.Tensor) -> list[float]:
    """Per-prompt float64 sums of a [batch, pos - 1] loss."""
    return loss.double().sum(1).cpu().tolist()


@dataclass
class _CeChunk:
    """One chunk of prompts after its clean forward: what the spliced forwards reuse."""

    tokens: torch.Tensor  # [batch, pos], as the model's input
    fused: bool
    resid: dict[str, torch.Tensor] = field(default_factory=dict)  # the clean residual stream at resid hooks
    embedded: tuple | None = None  # input_to_embed's (residual, tokens, shortformer_pos_embed, attention_mask)


def _ce_clean(model, tokens: torch.Tensor, resid_hooks=()) -> tuple[list[float], _CeChunk]:
    """The clean forward of one chunk of prompts [batch, pos]: its per-prompt loss sums, and the
    chunk with the residual stream at each of `resid_hooks` for the spliced forwards."""
    chunk = _CeChunk(tokens, _fused(model))

    def save(act, hook):
        chunk.resid[hook.name] = act.clone()

    hooks = [(h, save) for h in resid_hooks]
    if not chunk.fused:
        loss = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=hooks)
        return _per_prompt(loss), chunk
    with model.hooks(fwd_hooks=hooks):
        chunk.embedded = model.input_to_embed(tokens)
        residual, embed_tokens, shortformer, mask = chunk.embedded
        final = model(
            residual, start_at_layer=0, stop_at_layer=model.cfg.n_layers,
            shortformer_pos_embed=shortformer, attention_mask=mask,
        )
    return _per_prompt(_next_token_loss(model, final, embed_tokens, mask)), chunk


def _ce_spliced(model, chunk: _CeChunk, r: CeSae) -> list[float]:
    """One SAE's spliced forward of a chunk after `_ce_clean`: per-prompt loss sums with the SAE's
    reconstruction in place of the activation at the hook it writes. From the clean residual stream
    (`start_at_layer`) when that hook is a resid_pre/resid_post one the clean forward kept and the
    SAE reads it whole, else a full forward with splicing hooks (a transcoder's input saved at its
    input hook, its reconstruction written at its output hook)."""
    sae, hook = r.sae, r.hook
    saved: dict[str, torch.Tensor] = {}

    def splice(act, hook=None):
        x = saved.pop("x") if "x" in saved else sae.read(act)
        return sae.write(act, sae.reconstruct(x.float()))

    def keep_input(act, hook=None):
        saved["x"] = sae.read(act)

    fwd_hooks = [(hook, splice)] if sae.hook_in == hook else [(sae.hook_in, keep_input), (hook, splice)]
    n_layers = model.cfg.n_layers
    start = _ce_start(hook, n_layers) if r.resid_start and hook in chunk.resid else None
    if chunk.embedded is None and start is not None:
        chunk.embedded = model.input_to_embed(chunk.tokens)
    if not chunk.fused:
        if start is None:
            loss = model.run_with_hooks(chunk.tokens, return_type="loss", loss_per_token=True, fwd_hooks=fwd_hooks)
        else:
            _, embed_tokens, shortformer, mask = chunk.embedded
            loss = model(
                splice(chunk.resid[hook]), start_at_layer=start, tokens=embed_tokens,
                shortformer_pos_embed=shortformer, attention_mask=mask, return_type="loss", loss_per_token=True,
            )
        return _per_prompt(loss)
    _, embed_tokens, shortformer, mask = chunk.embedded
    if start is None:
        with model.hooks(fwd_hooks=fwd_hooks):
            final = model(chunk.tokens, stop_at_layer=n_layers)
    else:
        final = model(
            splice(chunk.resid[hook]), start_at_layer=start, stop_at_layer=n_layers,
            shortformer_pos_embed=shortformer, attention_mask=mask,
        )
    return _per_prompt(_next_token_loss(model, final, embed_tokens, mask))


@torch.inference_mode()
def ce_losses(
    model, corpus: Corpus, saes: list[CeSae], batch_size: int, device: str, progress: str | None = None
) -> dict[str, tuple[float | None, float | None]]:
    """Per SAE id: (clean, spliced) mean next-token loss over its first ce_prompts prompts.

    Per-prompt float64 loss sums are added in prompt order, so the result does not depend on the
    chunking. The clean forward runs once per chunk for every SAE of the model; it keeps the
    residual stream at each SAE's hook, and an SAE on a resid_pre/resid_post hook runs its spliced
    forward from there (`start_at_layer`), others run the full forward with a splicing hook.
    `progress`: the label of a progress bar over the prompts' forwards (None: no bar)."""
    wanted = {r.id: min(r.prompts, corpus.n_prompts) for r in saes}
    if corpus.context < 2:
        return {k: (None, None) for k in wanted}
    n_total = max(wanted.values(), default=0)
    if n_total <= 0:
        return {k: (None, None) for k in wanted}
    resid_hooks = sorted({r.hook for r in saes if r.resid_start and _ce_start(r.hook, model.cfg.n_layers) is not None})
    chunk = _ce_chunk(model, corpus.context, batch_size)
    clean_sums: list[float] = []
    spliced_sums: dict[str, list[float]] = {r.id: [] for r in saes}
    forwards = n_total + sum(wanted.values())  # prompts through the model: clean, then each SAE's spliced
    with tqdm(total=forwards, desc=progress, unit="prompt", disable=progress is None, file=sys.stderr) as bar:
        for lo in range(0, n_total, chunk):
            tokens = torch.from_numpy(np.array(corpus.tokens[lo : min(lo + chunk, n_total)])).long().to(device)
            sums, state = _ce_clean(model, tokens, resid_hooks)
            clean_sums.extend(sums)
            bar.update(len(sums))
            for r in saes:
                if lo < wanted[r.id]:
                    spliced_sums[r.id].extend(_ce_spliced(model, state, r))
                    bar.update(min(len(sums), wanted[r.id] - lo))

    def mean(sums: list[float], n: int) -> float:
        return float(np.sum(np.asarray(sums[:n], np.float64)) / (n * (corpus.context - 1)))

    return {k: (None, None) if n <= 0 else (mean(clean_sums, n), mean(spliced_sums[k], n)) for k, n in wanted.items()}

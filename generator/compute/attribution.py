"""Per-example statistics of the top examples: direct feature attribution and loss effects.

Both take a feature's top examples as the engine stores them (`top_prompt`, `top_position` i32
[F, top_k], -1 for an empty slot) and give an f16 [F, top_k, W] array aligned to the example's
activation window: slot j is position q - context_before + j of the example's prompt (q its peak
position, W = context_before + 1 + context_after), 0 outside the prompt and in empty slots.
Examples are grouped by prompt: the model runs once per unique prompt (in batches), and the
examples of a prompt are evaluated together.

- `direct_feature_attribution` (attention-output SAEs, `blocks.L.attn.hook_z`): how much each
  source position k contributes to the feature's pre-activation at q through the attention
  pattern, dfa[k] = sum_h pattern[h, q, k] * (v[k, h] @ W_enc_h[:, f]) (W_enc split per head;
  one head's for an SAE with `hook_head_index`). The SAE's biases are excluded, as SAEDashboard
  and Neuronpedia do: the encoder bias and the decoder bias SAELens subtracts from the input (the
  attention's value bias b_V is part of v, so of dfa). Where the SAE scales its input per token before W_enc
  (`SaeModule.input_scale`, SAELens's `constant_norm_rescale`), the scale of the input at q
  multiplies dfa. So sum_k dfa[k] = (scale(q) z[q]) @ W_enc[:, f]: the pre-activation less its
  bias terms. Slots after q are 0 (the attention is causal).
- `loss_effects`: the change in next-token loss when feature f is ablated from the SAE's
  reconstruction spliced into the model, loss_ablated[t] - loss_spliced[t]. The spliced run
  replaces the output hook's activation by the reconstruction (decode + skip, as the CE loss does);
  the ablated run subtracts a_f(t) * W_dec[f] at every position t of the prompt. Position t's
  value is the loss of predicting token t + 1; a prompt's last position predicts nothing (0).
  A forward's rows are (prompt, feature) pairs (an example's pair, once however many of the
  feature's examples share the prompt); the clean forward and the spliced loss run once per
  unique prompt (`ModelBackend.ablation_losses`), and only the windows' positions are unembedded.
"""

from __future__ import annotations

import re

import sys

import numpy as np
import torch
from tqdm import tqdm

from sae_atlas.errors import AtlasError

_HOOK_Z = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")


def _examples(prompt: np.ndarray, position: np.ndarray):
    """The filled slots (feature, slot, prompt, position) [N] of [F, top_k] example arrays."""
    prompt, position = np.asarray(prompt), np.asarray(position)
    feature, slot = np.nonzero(prompt >= 0)
    return feature, slot, prompt[feature, slot].astype(np.int64), position[feature, slot].astype(np.int64)


def _window(values: torch.Tensor, q: torch.Tensor, before: int, after: int, last: torch.Tensor) -> torch.Tensor:
    """values [N, T] at positions q - before + j (j < before + 1 + after) -> [N, W]; 0 where the
    position is < 0 or > last [N]."""
    t = q[:, None] - before + torch.arange(before + 1 + after, device=values.device)
    keep = (t >= 0) & (t <= last[:, None])
    out = values.gather(1, t.clamp(0, values.shape[1] - 1))
    return torch.where(keep, out, torch.zeros_like(out))


def _device(model) -> torch.device:
    return model.unembedding().device


def _batches(unique: np.ndarray, batch_size: int, progress: str | None):
    """Chunks of `batch_size` prompts; with `progress`, a bar of that title counts the prompts."""
    with tqdm(total=len(unique), desc=progress, unit="prompt", disable=progress is None, leave=False, file=sys.stderr) as bar:
        for lo in range(0, len(unique), max(1, batch_size)):
            yield lo, unique[lo : lo + batch_size]
            bar.update(len(unique[lo : lo + batch_size]))


@torch.inference_mode()
def direct_feature_attribution(model, sae, tokens, prompt, position, before: int, after: int, batch_size: int, progress: str | None = None) -> np.ndarray:
    """f16 [F, top_k, W]: each top example's direct feature attribution over its window (see the
    module's docstring). `model` a ModelBackend, `sae` an SaeModule reading `blocks.L.attn.hook_z`,
    `tokens` [prompts, context] the corpus's tokens, `progress` a progress bar's title (None: none)."""
    m = _HOOK_Z.match(sae.hook_in)
    if m is None:
        raise AtlasError(f"direct feature attribution needs an SAE reading blocks.L.attn.hook_z; this one reads {sae.hook_in}")
    layer = int(m.group(1))
    prompt = np.asarray(prompt)
    out = np.zeros(prompt.shape + (before + 1 + after,), np.float16)
    feature, slot, p, q = _examples(prompt, position)
    if not len(p):
        return out
    device = _device(model)
    w_enc = sae.W_enc.detach().float().to(device)  # [d_in, d_sae]
    unique, inverse = np.unique(p, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
    for lo, chunk in _batches(unique, batch_size, progress):
        pattern, v = model.attention(torch.from_numpy(np.asarray(tokens[chunk])).long().to(device), layer)
        if sae.head_index is not None:
            pattern, v = pattern[:, [sae.head_index]], v[:, :, [sae.head_index]]
        heads, d_head = v.shape[2], v.shape[3]
        if heads * d_head != w_enc.shape[0]:
            raise AtlasError(f"SAE on {sae.hook_in} reads {w_enc.shape[0]} values per token; the hook has {heads} heads of {d_head}")
        w_heads = w_enc.reshape(heads, d_head, -1)
        for i in range(len(chunk)):
            e = order[bounds[lo + i] : bounds[lo + i + 1]]
            f = torch.from_numpy(feature[e]).to(device)
            qe = torch.from_numpy(q[e]).to(device)
            rows = pattern[i][:, qe, :]  # [heads, n, key]
            dfa = torch.einsum("hnk,khd,hdn->nk", rows, v[i], w_heads[:, :, f])
            z_q = torch.einsum("hnk,khd->nhd", rows, v[i]).reshape(len(e), -1)
            scale = sae.input_scale(z_q)
            if scale is not None:
                dfa = dfa * scale[:, None]
            window = _window(dfa, qe, before, after, qe)
            out[feature[e], slot[e]] = window.cpu().numpy().astype(np.float16)
    return out


@torch.inference_mode()
def loss_effects(model, sae, tokens, prompt, position, before: int, after: int, batch_size: int, progress: str | None = None) -> np.ndarray:
    """f16 [F, top_k, W]: for each top example, loss_ablated[t] - loss_spliced[t] over its window
    (see the module's docstring). `batch_size`: prompts per clean forward and rows per ablated one;
    `progress` a progress bar's title (None: none)."""
    prompt = np.asarray(prompt)
    n_features = prompt.shape[0]
    out = np.zeros(prompt.shape + (before + 1 + after,), np.float16)
    feature, slot, p, q = _examples(prompt, position)
    if not len(p):
        return out
    device = _device(model)
    pairs, pair_of = np.unique(p * n_features + feature, return_inverse=True)  # sorted by prompt, then feature
    pair_prompt, pair_feature = pairs // n_features, pairs % n_features
    unique = np.unique(pair_prompt)
    context = int(np.asarray(tokens[unique[:1]]).shape[1])
    for _, chunk in _batches(unique, batch_size, progress):
        r0, r1 = np.searchsorted(pair_prompt, [chunk[0], chunk[-1] + 1])
        local = np.searchsorted(chunk, pair_prompt[r0:r1])
        e = np.nonzero((pair_of >= r0) & (pair_of < r1))[0]
        row_of = torch.from_numpy(pair_of[e] - r0).to(device)
        qe = torch.from_numpy(q[e]).to(device)
        t = qe[:, None] - before + torch.arange(before + 1 + after, device=device)
        keep = (t >= 0) & (t <= context - 2)
        needed = torch.zeros((r1 - r0, context - 1), dtype=torch.bool, device=device)
        needed[row_of[:, None].expand_as(t)[keep], t[keep]] = True  # the rows' window positions
        spliced, ablated = model.ablation_losses(
            torch.from_numpy(np.asarray(tokens[chunk])).long().to(device), sae,
            torch.from_numpy(local).to(device), torch.from_numpy(pair_feature[r0:r1]).to(device), batch_size, needed,
        )
        effect = ablated - spliced[torch.from_numpy(local).to(spliced.device)]  # [rows, context - 1]
        effect = torch.nn.functional.pad(effect, (0, 1))  # the last position predicts nothing
        window = _window(effect[row_of.to(effect.device)], qe.to(effect.device), before, after, torch.full_like(qe, context - 2).to(effect.device))
        out[feature[e], slot[e]] = window.cpu().numpy().astype(np.float16)
    return out

"""Direct feature attribution of the top examples (SAEs reading `blocks.L.attn.hook_z`): how much
each source token contributes to the feature's pre-activation at the example's peak through the
attention pattern (`sae_atlas.compute.attribution.direct_feature_attribution`; model stage)."""

from __future__ import annotations

import re

import numpy as np

from sae_atlas.stats import Array
from sae_atlas.stats.example_values import SHAPE, ExampleValues, example_slots

HOOK_Z = re.compile(r"^blocks\.\d+\.attn\.hook_z$")


class Dfa(ExampleValues):
    name = "dfa"
    array, column, key = "top_dfa", "dfa", "dfa"
    arrays = {"top_dfa": Array("float16", SHAPE)}

    def applies(self, sae_meta, settings):
        return bool(HOOK_Z.match(str(sae_meta.get("hook") or "")))

    def compute(self, ctx):
        from sae_atlas.compute.attribution import direct_feature_attribution

        s, a = ctx.settings, ctx.arrays
        dfa = direct_feature_attribution(
            ctx.model, ctx.sae, ctx.corpus.tokens, a["top_prompt"], a["top_position"], s.context_before, s.context_after,
            ctx.batch_size, progress=ctx.progress("DFA"),
        )
        return {"top_dfa": dfa}

    def fake(self, ctx):
        s, rng = ctx.settings, ctx.rng
        _, token, inside = example_slots(ctx)
        # A few source tokens at or before the peak carry most of the activation, some against it.
        causal = inside & (np.arange(s.window) <= s.context_before)
        weight = (rng.random(token.shape) < 0.3) * rng.exponential(1.0, token.shape) * np.where(rng.random(token.shape) < 0.15, -0.4, 1.0)
        weight[..., s.context_before] += 1.0
        weight = np.where(causal, weight, 0)
        total = np.abs(weight).sum(axis=-1, keepdims=True)
        value = ctx.arrays["top_value"][..., None] * weight / np.where(total > 0, total, 1)
        return {"top_dfa": value.astype(np.float16)}

"""Loss effects of the top examples: per token of the example's window, the change in next-token
loss when the feature is ablated from the SAE's spliced reconstruction, loss_ablated - loss_spliced
(`sae_atlas.compute.attribution.loss_effects`; model stage). Positive: without the feature the
model predicts the next token worse, so the feature helped predict it.

It costs one forward from the SAE's layer per (prompt, feature) pair of the top examples, so the
compute setting `loss_effects` decides: `auto` (the default) computes it for entries whose corpus
passes ran on CUDA (the entry's meta["device"]), true and false always and never."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array
from sae_atlas.stats.example_values import SHAPE, ExampleValues, example_slots


class LossEffects(ExampleValues):
    name = "loss_effects"
    array, column, key = "top_loss_effect", "loss", "loss_effects"
    settings = ("loss_effects",)
    arrays = {"top_loss_effect": Array("float16", SHAPE)}

    def applies(self, sae_meta, settings):
        wanted = settings.loss_effects
        if wanted == "auto":
            return sae_meta.get("device") == "cuda"
        return bool(wanted)

    def signature(self, settings):
        # The setting decides whether the statistic applies, not what it computes: an entry's loss
        # effects stay current when `auto` becomes `true`.
        return {"version": self.version, "settings": {}}

    def compute(self, ctx):
        from sae_atlas.compute.attribution import loss_effects

        s, a = ctx.settings, ctx.arrays
        effect = loss_effects(
            ctx.model, ctx.sae, ctx.corpus.tokens, a["top_prompt"], a["top_position"], s.context_before, s.context_after,
            ctx.batch_size, progress=ctx.progress("loss effects"),
        )
        return {"top_loss_effect": effect}

    def fake(self, ctx):
        s, rng = ctx.settings, ctx.rng
        _, token, inside = example_slots(ctx)
        # Zero before the peak's neighbourhood, mostly small after it, the peak's next token helped most.
        effect = rng.normal(0.0, 0.03, token.shape) + (rng.random(token.shape) < 0.2) * rng.normal(0.05, 0.1, token.shape)
        effect[..., s.context_before] += rng.uniform(0.1, 0.8, token.shape[:-1])
        after = np.arange(s.window) >= s.context_before - 1
        predicts = inside & (token < ctx.context - 1) & after
        return {"top_loss_effect": np.where(predicts, effect, 0).astype(np.float16)}

"""The prompt view: for each token of the first `prompt_view` corpus prompts, the SAE's
`prompt_features` strongest features there (pass 1). Per prompt, not per feature: it has no
columns in the feature records; the site writes one file per prompt with every SAE of the model."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic

SHAPE = ("P", "T", "prompt_features")


class PromptView(Statistic):
    name = "prompt_view"
    stage = "pass1"
    settings = ("prompt_view", "prompt_features")
    # P = min(prompt_view, corpus prompts), T = context. Empty slots: feature -1, value 0; within a
    # token, the strongest first (the lower feature on ties).
    arrays = {"prompt_feature": Array("int32", SHAPE), "prompt_value": Array("float32", SHAPE)}

    def dump(self, arrays, i, ctx):
        return {}

    def fake(self, ctx):
        s, rng = ctx.settings, ctx.rng
        shape = (min(s.prompt_view, ctx.n_prompts), ctx.context, s.prompt_features)
        fires = rng.random(shape[:2]) < 0.9
        feature = np.where(fires[..., None], rng.integers(0, ctx.n_features, shape), -1).astype(np.int32)
        value = np.where(fires[..., None], np.sort(rng.lognormal(0.5, 0.8, shape), axis=2)[..., ::-1], 0).astype(np.float32)
        return {"prompt_feature": feature, "prompt_value": value}

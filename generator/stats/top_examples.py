"""A feature's highest activations over the corpus, each with its prompt, position and the
feature's activations in a window around it (pass 1)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import dump_examples, fake_windows, site_examples


class TopExamples(Statistic):
    name = "top_examples"
    stage = "pass1"
    settings = ("top_k", "context_before", "context_after")
    arrays = {
        "top_value": Array("float32", ("F", "top_k")),
        "top_prompt": Array("int32", ("F", "top_k")),
        "top_position": Array("int32", ("F", "top_k")),
        "top_window": Array("float16", ("F", "top_k", "W")),
    }

    def record(self, arrays, lo, hi, ctx):
        a = {name: arrays[name][lo:hi] for name in self.arrays}
        k = a["top_prompt"].shape[1]
        width = a["top_window"].shape[-1]
        flat = site_examples(
            np.asarray(a["top_value"]).reshape(-1), np.asarray(a["top_prompt"]).reshape(-1),
            np.asarray(a["top_position"]).reshape(-1), np.asarray(a["top_window"]).reshape(-1, width), ctx.context_before,
        )
        return {"top": [[e for e in flat[f * k : (f + 1) * k] if e is not None] for f in range(hi - lo)]}

    def dump(self, arrays, i, ctx):
        return {"top_examples": dump_examples(ctx, arrays["top_value"][i], arrays["top_prompt"][i], arrays["top_position"][i], arrays["top_window"][i])}

    def fake(self, ctx):
        s, rng, f = ctx.settings, ctx.rng, ctx.n_features
        max_act, nonzero = ctx.arrays["max_activation"], ctx.arrays["nonzero_count"]
        used = np.arange(s.top_k)[None, :] < np.minimum(nonzero, s.top_k)[:, None]
        value = np.sort(rng.uniform(0.4, 1.0, (f, s.top_k)), axis=1)[:, ::-1] * max_act[:, None]
        value[:, 0] = max_act
        value = np.where(used, value, 0).astype(np.float32)
        prompt = np.where(used, rng.integers(0, ctx.n_prompts, (f, s.top_k)), -1).astype(np.int32)
        position = np.where(used, rng.integers(0, ctx.context, (f, s.top_k)), -1).astype(np.int32)
        return {"top_value": value, "top_prompt": prompt, "top_position": position, "top_window": fake_windows(ctx, value, position, used)}

"""How strongly and how often a feature fires: max activation, non-zero count, density (pass 1)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import round_sig


class Activation(Statistic):
    name = "activation"
    stage = "pass1"
    arrays = {
        "max_activation": Array("float32", ("F",)),
        "nonzero_count": Array("int64", ("F",)),
        "density": Array("float32", ("F",)),
    }

    def record(self, arrays, lo, hi, ctx):
        # No log density: the front end takes log10 of `density`.
        return {
            "max": round_sig(arrays["max_activation"][lo:hi]).tolist(),
            "density": round_sig(arrays["density"][lo:hi]).tolist(),
        }

    def dump(self, arrays, i, ctx):
        return {"max_activation": float(arrays["max_activation"][i]), "density": float(arrays["density"][i])}

    def fake(self, ctx):
        rng, f = ctx.rng, ctx.n_features
        n_tokens = ctx.n_prompts * ctx.context
        dead = rng.random(f) < 0.02
        density = np.where(dead, 0.0, 10 ** rng.uniform(-5, -1, f))
        nonzero = np.round(density * n_tokens).astype(np.int64)
        max_act = np.where(nonzero == 0, 0, rng.lognormal(1.5, 0.8, f)).astype(np.float32)
        return {"max_activation": max_act, "nonzero_count": nonzero, "density": (nonzero / n_tokens).astype(np.float32)}

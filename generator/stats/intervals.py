"""Samples across the activation range: `intervals` equal intervals over (0, max], up to
`per_interval` pseudo-randomly chosen tokens in each (pass 2, once the max is known)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import dump_examples, fake_windows, site_examples

SHAPE = ("F", "intervals", "per_interval")


class Intervals(Statistic):
    name = "intervals"
    stage = "pass2"
    settings = ("intervals", "per_interval", "seed", "context_before", "context_after")
    arrays = {
        "interval_value": Array("float32", SHAPE),
        "interval_prompt": Array("int32", SHAPE),
        "interval_position": Array("int32", SHAPE),
        "interval_window": Array("float16", SHAPE + ("W",)),
    }

    def record(self, arrays, lo, hi, ctx):
        a = {name: arrays[name][lo:hi] for name in self.arrays}
        n_int, per = a["interval_prompt"].shape[1:3]
        width = a["interval_window"].shape[-1]
        flat = site_examples(
            np.asarray(a["interval_value"]).reshape(-1), np.asarray(a["interval_prompt"]).reshape(-1),
            np.asarray(a["interval_position"]).reshape(-1), np.asarray(a["interval_window"]).reshape(-1, width),
            ctx.context_before,
        )
        # Every interval in order (interval j covers (max * j / n, max * (j + 1) / n]), an empty one
        # as []; a feature with no samples at all gets [].
        column = []
        for base in range(0, (hi - lo) * n_int * per, n_int * per):
            groups = [[e for e in flat[base + i * per : base + (i + 1) * per] if e is not None] for i in range(n_int)]
            column.append(groups if any(groups) else [])
        return {"intervals": column}

    def dump(self, arrays, i, ctx):
        mx = float(arrays["max_activation"][i])
        n = arrays["interval_prompt"].shape[1]
        return {
            "interval_examples": [
                {
                    "lo": mx * j / n,
                    "hi": mx * (j + 1) / n,
                    "examples": dump_examples(
                        ctx, arrays["interval_value"][i, j], arrays["interval_prompt"][i, j],
                        arrays["interval_position"][i, j], arrays["interval_window"][i, j],
                    ),
                }
                for j in range(n)
            ]
        }

    def fake(self, ctx):
        s, rng = ctx.settings, ctx.rng
        shape = (ctx.n_features, s.intervals, s.per_interval)
        max_act = ctx.arrays["max_activation"]
        used = np.broadcast_to((ctx.arrays["nonzero_count"] > 0)[:, None, None], shape)
        frac = (np.arange(s.intervals)[None, :, None] + rng.random(shape)) / s.intervals
        value = np.where(used, frac * max_act[:, None, None], 0).astype(np.float32)
        prompt = np.where(used, rng.integers(0, ctx.n_prompts, shape), -1).astype(np.int32)
        position = np.where(used, rng.integers(0, ctx.context, shape), -1).astype(np.int32)
        return {
            "interval_value": value, "interval_prompt": prompt, "interval_position": position,
            "interval_window": fake_windows(ctx, value, position, used),
        }

"""What the per-example statistics share: one f16 [F, top_k, W] array aligned with the top
examples' activation windows (`sae_atlas.compute.attribution`), computed with the model after the
corpus passes, a site column aligned with the record's `top`, and a key on each dumped top example.

Site column, per feature, one entry per top example in the order of `top`, for the first
SITE_EXAMPLES of them: [offsets, q]; the example's token at position window_start + offset
(window_start = max(0, position - context_before)) has the value q[j] / 100 * scale, where scale
(the feature's largest |value| over its examples, 4 significant digits) is the record's `<column>_s`.
Values under NEGLIGIBLE of that scale are left out: the shading needs no finer steps, and at full
size (12 x 24,576 features) this keeps loss effects within the site's budget. `sae-atlas dump`
reads the cache and has every value of every top example.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import round_sig

SHAPE = ("F", "top_k", "W")
NEGLIGIBLE = 0.05  # of the feature's largest |value|: left out of the site column
SITE_EXAMPLES = 10  # top examples with values in the site column


class ExampleValues(Statistic):
    stage = "model"
    array: ClassVar[str]  # the [F, top_k, W] array
    column: ClassVar[str]  # the site column
    key: ClassVar[str]  # the key on each top example of a dump
    arrays: ClassVar[dict[str, Array]]

    def record(self, arrays, lo, hi, ctx):
        values = np.asarray(arrays[self.array][lo:hi], np.float32)
        columns, scales = site_values(values, np.asarray(arrays["top_prompt"][lo:hi]), np.asarray(arrays["top_position"][lo:hi]), ctx.context_before)
        return {self.column: columns, self.column + "_s": scales}

    def dump(self, arrays, i, ctx):
        examples = ctx.so_far.get("top_examples")
        if examples is None:
            return {}
        before = int(ctx.meta["settings"]["context_before"])
        context = ctx.tokens.shape[1]
        prompt, position, window = arrays["top_prompt"][i], arrays["top_position"][i], np.asarray(arrays[self.array][i], np.float32)
        rows = []
        for j in np.nonzero(np.asarray(prompt) >= 0)[0]:
            first = int(position[j]) - before  # token index of window slot 0
            lo, hi = max(0, first), min(context, first + window.shape[1])
            rows.append([float(v) for v in window[j, lo - first : hi - first]])
        return {"top_examples": [{**e, self.key: r} for e, r in zip(examples, rows)]}


def site_values(values: np.ndarray, prompt: np.ndarray, position: np.ndarray, context_before: int) -> list:
    """values f32 [n, top_k, W], prompt/position [n, top_k] -> (per feature, [offsets, q] per filled
    example slot among the first SITE_EXAMPLES; per feature, the scale) (see the module's docstring)."""
    n, k, width = values.shape
    scale = round_sig(np.abs(values).reshape(n, -1).max(axis=1, initial=0.0))
    shown = np.arange(k)[None, :] < SITE_EXAMPLES
    keep = (np.abs(values) >= (NEGLIGIBLE * scale)[:, None, None]) & (np.abs(values) > 0) & ((prompt >= 0) & shown)[..., None]
    first = position.astype(np.int64) - context_before
    shift = first - np.maximum(first, 0)  # slot j is offset j + shift from the window start
    feature, slot, j = np.nonzero(keep)
    offsets = (j + shift[feature, slot]).tolist()
    safe = np.where(scale > 0, scale, 1.0)
    rounded = np.rint(values[feature, slot, j] / safe[feature] * 100).astype(np.int64).tolist()
    flat = feature * k + slot
    counts = np.bincount(flat, minlength=n * k)
    ends = np.cumsum(counts)
    begins = (ends - counts).tolist()
    ends = ends.tolist()
    filled = (prompt >= 0).tolist()
    out = []
    for f in range(n):
        row = []
        for s in range(min(k, SITE_EXAMPLES)):
            if filled[f][s]:
                b, e = begins[f * k + s], ends[f * k + s]
                row.append([offsets[b:e], rounded[b:e]])
        out.append(row)
    return out, scale.tolist()


def example_slots(ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the fakes: (used [F, top_k], the token index of each window slot [F, top_k, W], inside
    the prompt [F, top_k, W])."""
    s = ctx.settings
    prompt, position = ctx.arrays["top_prompt"], ctx.arrays["top_position"]
    used = prompt >= 0
    token = position[..., None] - s.context_before + np.arange(s.window)
    inside = (token >= 0) & (token < ctx.context) & used[..., None]
    return used, token, inside

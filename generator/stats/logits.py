"""The tokens a feature promotes and suppresses most: the top `logits` positive and negative entries
of W_dec @ (the output hook's map into the residual stream) @ W_U (weights only)."""

from __future__ import annotations

import numpy as np

from sae_atlas.stats import Array, Statistic
from sae_atlas.stats.common import token_string, token_value_pairs

SHAPE = ("F", "logits")


class Logits(Statistic):
    name = "logits"
    stage = "weights"
    settings = ("logits",)
    token_arrays = ("pos_logit_token", "neg_logit_token")
    arrays = {
        "pos_logit_token": Array("int32", SHAPE),
        "pos_logit_value": Array("float32", SHAPE),
        "neg_logit_token": Array("int32", SHAPE),
        "neg_logit_value": Array("float32", SHAPE),
    }

    def compute(self, ctx):
        pos_t, pos_v, neg_t, neg_v = ctx.logit_effects()[:4]
        return {"pos_logit_token": pos_t, "pos_logit_value": pos_v, "neg_logit_token": neg_t, "neg_logit_value": neg_v}

    def record(self, arrays, lo, hi, ctx):
        return {
            "pos": token_value_pairs(ctx.vocab, arrays["pos_logit_token"][lo:hi], arrays["pos_logit_value"][lo:hi]),
            "neg": token_value_pairs(ctx.vocab, arrays["neg_logit_token"][lo:hi], arrays["neg_logit_value"][lo:hi]),
        }

    def dump(self, arrays, i, ctx):
        def rows(token, value):
            return [{"token": int(t), "token_string": token_string(ctx.vocab, int(t)), "value": float(v)} for t, v in zip(token, value) if t >= 0]

        return {
            "positive_logits": rows(arrays["pos_logit_token"][i], arrays["pos_logit_value"][i]),
            "negative_logits": rows(arrays["neg_logit_token"][i], arrays["neg_logit_value"][i]),
        }

    def fake(self, ctx):
        rng, shape = ctx.rng, (ctx.n_features, ctx.settings.logits)
        return {
            "pos_logit_token": rng.integers(0, ctx.vocab_size, shape).astype(np.int32),
            "pos_logit_value": np.sort(rng.uniform(0.2, 1.5, shape), axis=1)[:, ::-1].astype(np.float32),
            "neg_logit_token": rng.integers(0, ctx.vocab_size, shape).astype(np.int32),
            "neg_logit_value": np.sort(-rng.uniform(0.2, 1.5, shape), axis=1).astype(np.float32),
        }

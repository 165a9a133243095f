"""Encodings shared by statistics: numbers rounded for the site, examples for the site and for dump."""

from __future__ import annotations

import numpy as np

SIGNIFICANT_DIGITS = 4


def token_string(vocab, token: int) -> str:
    """Display string of a token id. A model's d_vocab may exceed its tokenizer (padded to a
    multiple of 64 or 128): ids past the tokenizer have no string and show as `<id N>`."""
    return vocab[token] if 0 <= token < len(vocab) else f"<id {token}>"


def vocab_covering(vocab, top: int) -> list[str]:
    """`vocab` extended so that every id up to `top` indexes it (padded ids as `token_string`)."""
    return list(vocab) + [token_string(vocab, t) for t in range(len(vocab), top + 1)]


def round_sig(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """float64 copy of `values` rounded to `digits` significant digits, computed so that each
    result is the float nearest its short decimal (so JSON prints `1.235`, not `1.2350000143`)."""
    x = np.asarray(values, dtype=np.float64)
    out = np.zeros_like(x)
    finite = np.isfinite(x) & (x != 0)
    if not finite.any():
        return np.where(np.isfinite(x), out, np.nan) if x.size else out
    v = x[finite]
    exponent = (digits - 1) - np.floor(np.log10(np.abs(v)))
    scale = 10.0 ** np.abs(exponent)
    up = exponent >= 0
    out[finite] = np.where(up, np.round(v * scale) / scale, np.round(v / scale) * scale)
    out[~np.isfinite(x)] = np.nan
    return out


WINDOW_SCALE = 100  # window activations are given in integer hundredths of the example's peak


def site_examples(values, prompts, positions, windows, context_before: int) -> list:
    """Compact examples for flat rows: [prompt, position, activation, slot, q, slot, q, ...] with
    the non-zero window activations other than the peak, each as its window slot (the token at
    position - context_before + slot) and q = its value / activation in integer hundredths (at least
    1 in magnitude, so a non-zero value stays non-zero); the token at `position` has `activation`,
    kept to 4 significant digits. None for unused slots (prompt -1)."""
    windows = np.asarray(windows, dtype=np.float64)
    prompts = np.asarray(prompts, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    peaks = np.asarray(values, dtype=np.float64)
    nonzero = windows != 0
    if context_before < nonzero.shape[1]:
        nonzero[:, context_before] = False  # the peak: already given as `activation`
    rows, slots = np.nonzero(nonzero)
    scale = np.where(peaks != 0, np.abs(peaks), 1.0)[rows]
    ratio = windows[rows, slots] / scale * WINDOW_SCALE
    q = np.where(np.abs(ratio) < 1, np.sign(ratio), np.round(ratio)).astype(np.int64)
    pairs = np.stack([slots, q], axis=1).reshape(-1).tolist()
    counts = np.bincount(rows, minlength=len(prompts))
    ends = np.cumsum(counts) * 2
    begins = (ends - counts * 2).tolist()
    return [
        [p, x, a, *pairs[b:e]] if p >= 0 else None
        for p, x, a, b, e in zip(prompts.tolist(), positions.tolist(), round_sig(peaks).tolist(), begins, ends.tolist())
    ]


def token_value_pairs(vocab, tokens: np.ndarray, values: np.ndarray) -> list:
    tokens = np.asarray(tokens).tolist()
    rounded = round_sig(values).tolist()
    return [[[vocab[t], v] for t, v in zip(ts, vs) if t >= 0] for ts, vs in zip(tokens, rounded)]


def dump_examples(ctx, value: np.ndarray, prompt: np.ndarray, position: np.ndarray, window: np.ndarray) -> list[dict]:
    """Examples as in `sae-atlas dump`: each stored window clipped to its prompt."""
    before = int(ctx.meta["settings"]["context_before"])
    tokens = ctx.tokens
    context = tokens.shape[1]
    out = []
    for j in range(len(prompt)):
        if prompt[j] < 0:
            continue
        p, q, w = int(prompt[j]), int(position[j]), np.asarray(window[j], np.float32)
        start = max(0, q - before)
        stop = min(context, q - before + len(w))
        ids = [int(t) for t in tokens[p, start:stop]]
        out.append(
            {
                "prompt": p,
                "position": q,
                "activation": float(value[j]),
                "tokens": ids,
                "token_strings": [token_string(ctx.vocab, t) for t in ids],
                "activations": [float(a) for a in w[start - (q - before) : stop - (q - before)]],
            }
        )
    return out


def fake_windows(ctx, values: np.ndarray, positions: np.ndarray, used: np.ndarray) -> np.ndarray:
    """f16 windows: the peak at the centre plus a few smaller activations nearby (~8% of slots)."""
    s, rng = ctx.settings, ctx.rng
    w = s.window
    shape = values.shape + (w,)
    extra = (rng.random(shape) < 0.08) * rng.random(shape) * values[..., None]
    extra[..., s.context_before] = values
    token = positions[..., None] - s.context_before + np.arange(w)
    extra[(token < 0) | (token >= ctx.context) | ~used[..., None]] = 0
    return extra.astype(np.float16)

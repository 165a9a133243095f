"""Work units finer than an SAE: (SAE, prompt range) pairs, so that one SAE's corpus passes spread
over many processes (`compute --shard I/N`), their partial statistics merging exactly.

    units of an SAE   [lo, hi) ranges of `unit_prompts` prompts (the last one shorter), fixed by
                      the corpus and the unit size alone: every process, however many there are,
                      cuts the corpus the same way, and a single process computes the same units
    shard I of N      a contiguous block of the (SAE, unit) pairs, SAEs sorted by id: the SAEs it
                      has a unit of are its own to see finished
    per unit          pass 1 (max, counts, top-k, sums), then, once every unit of the SAE has
                      finished pass 1, pass 2 against the global max (histogram, interval
                      samples): state in cache/sae/<key>.u<lo>-<hi>.partial, lock sae-<key>.u<lo>-<hi>
    per SAE           the merge of its units (in unit order; every reduction is exact), the
                      correlated features, CE loss and weights-only parts, under lock sae-<key>;
                      then the unit states are removed

A corpus of one unit is computed as before, the whole SAE under its lock (`engine._compute_whole`).
This module plans only (no torch): `sae-atlas slurm` sizes its array with it.
"""

from __future__ import annotations

DEFAULT_UNIT_TOKENS = 1 << 22  # about 4M tokens per unit (32,768 prompts of 128 tokens)


def unit_prompts(context: int, requested: int | None = None) -> int:
    """Prompts per work unit: `requested`, or DEFAULT_UNIT_TOKENS' worth of prompts."""
    if requested is not None:
        return max(1, int(requested))
    return max(1, DEFAULT_UNIT_TOKENS // max(1, context))


def unit_ranges(n_prompts: int, size: int) -> list[tuple[int, int]]:
    """The [lo, hi) prompt ranges of `n_prompts` prompts cut into units of `size` (at least one)."""
    return [(lo, min(lo + size, n_prompts)) for lo in range(0, n_prompts, size)] or [(0, 0)]


def planned_units(release, requested: int | None = None) -> list[tuple[int, int]]:
    """The units of a release's corpus as its manifest sizes it (a corpus may hold fewer prompts
    than asked for: `clip` drops the units past its end)."""
    c = release.corpus
    return unit_ranges(c.prompts, unit_prompts(c.context, requested))


def clip(units: list[tuple[int, int]], n_prompts: int) -> list[tuple[int, int]]:
    """`units` cut at the corpus's real length."""
    return [(lo, min(hi, n_prompts)) for lo, hi in units if lo < n_prompts] or [(0, n_prompts)]


def shard_pairs(jobs: list, shard: tuple[int, int] | None, units_of) -> dict[str, set[int]]:
    """{SAE id: first prompts of its units in shard I of N}: a contiguous block of every (SAE,
    unit) pair, SAEs in `jobs`' order (sorted by id), units in corpus order. `units_of(job)` gives
    the job's planned units. Without a shard, every unit of every SAE."""
    pairs = [(job.id, lo) for job in jobs for lo, _ in units_of(job)]
    if shard is not None:
        i, n = shard
        pairs = pairs[i * len(pairs) // n : (i + 1) * len(pairs) // n]
    mine: dict[str, set[int]] = {}
    for sae_id, lo in pairs:
        mine.setdefault(sae_id, set()).add(lo)
    return mine


def count_units(releases, requested: int | None = None) -> int:
    """The number of (SAE, unit) pairs of `releases`: the most shards that all get work."""
    seen: dict[str, int] = {}
    for release in releases:
        for spec in release.saes():
            seen.setdefault(spec.id, len(planned_units(release, requested)))
    return sum(seen.values())


def unit_lock(key: str, lo: int, hi: int) -> str:
    return f"sae-{key}.u{lo}-{hi}"

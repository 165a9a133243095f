"""Per-feature statistics, one module each, in one registry.

A statistic declares its name, version, stage, the compute settings it reads and its arrays
(name -> dtype and shape), and provides:

- `applies(sae_meta, settings)`: whether an SAE gets it (default: every SAE);
- `compute(ctx)`: its arrays (stages "weights" and "model": after the corpus passes, the model
  loaded; the corpus passes' statistics are reduced by the engine's fused fast path,
  `sae_atlas.compute.stats.FeatureStats`);
- `record(arrays, lo, hi, ctx)`: its columns of the site's feature records for features [lo, hi);
- `dump(arrays, i, ctx)`: its keys in `sae-atlas dump` (`ctx.so_far` holds the earlier statistics'
  keys, which a per-example statistic extends);
- `fake(ctx)`: plausible arrays for synthetic caches (tests, the size benchmark).

The registry's order is the order of the keys in a site record and in a dump. A cache entry
records, per statistic, the version and settings it was computed with (`meta["statistics"]`); the
entry's key covers only what the corpus passes depend on, so a weights-only statistic that is new,
has a new version or new settings is computed on its own, without running the corpus again, and
one no longer wanted is dropped from the entry.
This module imports neither torch nor the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

STAGES = ("pass1", "pass2", "model", "weights")
CORPUS_STAGES = ("pass1", "pass2")


@dataclass(frozen=True)
class Array:
    """An array of a cache entry: dtype and shape, each dimension an int, "F" (features), "W" (the
    example window, context_before + 1 + context_after), "P" (the prompts of the prompt view),
    "T" (the corpus context) or the name of a compute setting."""

    dtype: str
    shape: tuple[int | str, ...]

    def resolve(self, n_features: int, settings: Any, n_prompts: int = 0, context: int = 0) -> tuple[int, ...]:
        dims = []
        for d in self.shape:
            if isinstance(d, int):
                dims.append(d)
            elif d == "F":
                dims.append(n_features)
            elif d == "W":
                dims.append(settings.window)
            elif d == "P":
                dims.append(min(int(settings.prompt_view), n_prompts))
            elif d == "T":
                dims.append(context)
            else:
                dims.append(int(getattr(settings, d)))
        return tuple(dims)


@dataclass
class RecordContext:
    """What a statistic's site columns may use besides the arrays: the display vocabulary, the
    example window's offset, and the render job (cross-layer neighbours, explanations)."""

    vocab: tuple[str, ...]
    context_before: int
    job: Any = None


@dataclass
class DumpContext:
    """What a statistic's dump keys may use: the entry's meta, the corpus tokens, the vocabulary."""

    meta: dict
    tokens: np.ndarray
    vocab: Any
    so_far: dict = field(default_factory=dict)


@dataclass
class FakeContext:
    """Inputs of the fakes: `arrays` holds what earlier statistics of the registry produced;
    `sae_meta` (hook, device) decides which statistics apply."""

    rng: np.random.Generator
    n_features: int
    settings: Any
    n_prompts: int
    context: int
    vocab_size: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    sae_meta: dict = field(default_factory=dict)


class Statistic:
    name: ClassVar[str]
    version: ClassVar[int] = 1
    stage: ClassVar[str]
    settings: ClassVar[tuple[str, ...]] = ()
    arrays: ClassVar[dict[str, Array]]
    token_arrays: ClassVar[tuple[str, ...]] = ()  # arrays of token ids (the site's vocabulary must cover them)

    def applies(self, sae_meta: dict, settings: Any) -> bool:
        """Whether this SAE (its meta: hook, architecture...) with these settings gets it."""
        return True

    def compute(self, ctx: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{self.name} is reduced during the corpus passes")

    def record(self, arrays: dict[str, np.ndarray], lo: int, hi: int, ctx: RecordContext) -> dict[str, list]:
        return {}

    def dump(self, arrays: dict[str, np.ndarray], i: int, ctx: DumpContext) -> dict:
        return {}

    def fake(self, ctx: FakeContext) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def signature(self, settings: Any) -> dict:
        """What an entry records of this statistic: its version and the settings it read."""
        return {"version": self.version, "settings": {k: getattr(settings, k) for k in self.settings}}


def _registry() -> list[Statistic]:
    from sae_atlas.stats import (
        activation, aligned_neurons, correlated_features, correlated_neurons, dfa, feature_map, histogram, intervals,
        logit_histogram, logits, loss_effects, neighbours, prompt_view, top_examples,
    )

    return [
        activation.Activation(),
        histogram.Histogram(),
        logits.Logits(),
        logit_histogram.LogitHistogram(),
        neighbours.Neighbours(),
        correlated_features.CorrelatedFeatures(),
        correlated_neurons.CorrelatedNeurons(),
        aligned_neurons.AlignedNeurons(),
        top_examples.TopExamples(),
        intervals.Intervals(),
        feature_map.FeatureMap(),
        prompt_view.PromptView(),
        dfa.Dfa(),
        loss_effects.LossEffects(),
    ]


REGISTRY: list[Statistic] = _registry()
BY_NAME: dict[str, Statistic] = {s.name: s for s in REGISTRY}
ALL_ARRAYS: frozenset[str] = frozenset(name for s in REGISTRY for name in s.arrays)
TOKEN_ARRAYS: tuple[str, ...] = tuple(name for s in REGISTRY for name in s.token_arrays)


def corpus_settings(settings: Any) -> dict:
    """The compute settings an SAE entry's key covers: all but those read only by statistics that
    are computed after the corpus passes (so changing `logits` recomputes the logits alone)."""
    later = {k for s in REGISTRY if s.stage not in CORPUS_STAGES for k in s.settings}
    early = {k for s in REGISTRY if s.stage in CORPUS_STAGES for k in s.settings}
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in later - early}


def corpus_signature() -> list:
    """The versions of the corpus passes' statistics (part of an SAE entry's key)."""
    return sorted([s.name, s.version] for s in REGISTRY if s.stage in CORPUS_STAGES)


def wanted(sae_meta: dict, settings: Any) -> list[Statistic]:
    return [s for s in REGISTRY if s.applies(sae_meta, settings)]


def stale(sae_meta: dict, settings: Any) -> list[Statistic]:
    """The statistics this SAE should have with these settings that its entry lacks or holds from
    another version or other settings."""
    have = sae_meta.get("statistics") or {}
    return [s for s in wanted(sae_meta, settings) if have.get(s.name) != s.signature(settings)]


def surplus(sae_meta: dict, settings: Any) -> list[str]:
    """The statistics this SAE's entry holds that these settings no longer want (e.g. loss effects
    turned off)."""
    wanted_names = {s.name for s in wanted(sae_meta, settings)}
    return [name for name in sae_meta.get("statistics") or {} if name in BY_NAME and name not in wanted_names]


def arrays_of(stats: list[Statistic]) -> list[str]:
    return [name for s in stats for name in s.arrays]


def records(arrays: dict[str, np.ndarray], lo: int, hi: int, ctx: RecordContext) -> list[dict]:
    """The site records of features [lo, hi): {"i": index, <each statistic's columns>}, in registry
    order; a statistic whose arrays the entry lacks contributes nothing."""
    columns: dict[str, list] = {}
    for s in REGISTRY:
        if all(name in arrays for name in s.arrays):
            columns.update(s.record(arrays, lo, hi, ctx))
    keys = list(columns)
    return [{"i": lo + f, **{k: columns[k][f] for k in keys}} for f in range(hi - lo)]


def dump(arrays: dict[str, np.ndarray], i: int, ctx: DumpContext) -> dict:
    out: dict = {}
    ctx.so_far = out
    for s in REGISTRY:
        if all(name in arrays for name in s.arrays):
            out.update(s.dump(arrays, i, ctx))
    return out


def fake_arrays(ctx: FakeContext) -> dict[str, np.ndarray]:
    """The fake arrays of every statistic that applies, checked against its declared dtypes and shapes."""
    for s in wanted(ctx.sae_meta, ctx.settings):
        made = s.fake(ctx)
        for name, spec in s.arrays.items():
            a = made[name]
            shape = spec.resolve(ctx.n_features, ctx.settings, ctx.n_prompts, ctx.context)
            if a.dtype != np.dtype(spec.dtype) or a.shape != shape:
                raise AssertionError(f"fake {s.name}.{name}: {a.dtype}{a.shape}, declared {spec.dtype}{shape}")
        ctx.arrays.update(made)
    return ctx.arrays


def signatures(stats: list[Statistic], settings: Any) -> dict:
    return {s.name: s.signature(settings) for s in stats}

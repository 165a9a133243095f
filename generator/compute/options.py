"""Options of a compute run (device, dtype, batch size, shard) chosen on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Tokens per forward batch by device; the batch size in prompts is this // context.
TOKENS_PER_BATCH = {"cuda": 8192, "mps": 4096, "cpu": 4096}


@dataclass
class ComputeOptions:
    device: str = "auto"  # auto | cpu | cuda | mps (auto: cuda > mps > cpu)
    dtype: str = "float32"  # model dtype; SAEs and statistics stay float32
    batch_size: int | None = None  # prompts per batch; None: TOKENS_PER_BATCH[device] // context
    shard: tuple[int, int] | None = None  # (I, N): compute slice I of N of the (SAE, unit) pairs
    # Prompts per work unit (`compute.units`; None: about 4M tokens' worth). Every process sharing
    # a cache must use the same; results do not depend on it.
    unit_prompts: int | None = None
    quiet: bool = False
    # Bytes of pass 1's firing activations kept for pass 2 (None: 40% of the free memory; 0: none,
    # pass 2 runs the model again).
    replay_memory: int | None = None
    # Bytes of the co-occurrence accumulator of the correlated features: the features are taken in
    # blocks of this size, one scan of the corpus's pass-1 entries each (replayed, or recomputed).
    correlation_memory: int = 512 << 20
    checkpoint_every: int = 20  # batches between checkpoints of the running state
    # PCA instead of UMAP for the feature map (recorded in meta "map"): UMAP's JIT warm-up costs
    # tens of seconds per process, too slow for tests and quick previews.
    pca_map: bool = False
    on_batch: Callable[[int, int], None] | None = None  # called with (pass, first prompt) after each batch
    # A `maps.MapWorker` that fits the UMAP maps beside the passes (`api.compute` starts one before
    # torch's import); None: each map is fitted in this process when its SAE is finished.
    map_worker: object | None = None


# Elements of the dense intermediates (activations of an encoder call, logits of a chunk) the engine
# handles at once: on a CPU a few MB, so they stay in cache between the passes over them; on an
# accelerator large, so each kernel has enough work.
CHUNK_ELEMENTS = {"cpu": 1 << 22}
ACCELERATOR_CHUNK_ELEMENTS = 1 << 27


def chunk_elements(device) -> int:
    """For a torch.device or a name such as "cuda:1"."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    return CHUNK_ELEMENTS.get(kind, ACCELERATOR_CHUNK_ELEMENTS)


def default_batch_size(device, context: int) -> int:
    """For a torch.device or a name such as "cuda:1"."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    return max(1, TOKENS_PER_BATCH.get(kind, 4096) // max(1, context))


# Firing entries the statistics take at once (`SparseActs.split`): a batch where features fire densely
# is handled in runs of whole prompts of at most this many entries, so that the temporaries of its
# statistics stay bounded (a few hundred bytes an entry at most) whatever the density.
ENTRY_BUDGET = {"cpu": 1 << 21}
ACCELERATOR_ENTRY_BUDGET = 1 << 24


def entry_budget(device) -> int:
    """For a torch.device or a name such as "cuda:1"."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    return ENTRY_BUDGET.get(kind, ACCELERATOR_ENTRY_BUDGET)

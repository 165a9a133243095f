"""What pass 2 replays: the firing entries of pass 1's batches, kept in memory up to a budget.

Pass 2 needs every activation again (the histogram and the interval samples depend on the final
max), but only the ones above zero: a trained SAE fires a few dozen of its features per token, so
keeping them (12 bytes each) costs far less memory than the model's activations and saves running
the model and the SAE encoders a second time. When the budget runs out, the batches not kept are
recomputed; batches kept and recomputed give identical results.

The budget bounds what the store really holds: the bytes of the storages its tensors keep alive
(not the elements they show), and nothing else: a batch is kept as its key and value tensors alone,
and what the statistics derive from a kept batch (`SparseActs.windows`'s feature-major order, as
large again) lives on a copy handed out per use and dies with it. The process's peak is then the
memory in use when the passes start, plus the budget, plus a working set of one batch
(`working_set`) that depends on the batch size and the SAEs' widths, not on the corpus length or on
how densely the features fire. On CUDA the same holds for the device's memory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from typing import Iterator

import torch

from sae_atlas.compute.stats import SparseActs

BUDGET_FRACTION = 0.4  # of the memory available when the passes start, less the working set


def available_memory(device: str) -> int | None:
    """Bytes free on the device (the GPU's memory for cuda, otherwise the machine's), or None."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def replay_budget(device: str, requested: int | None, working_set: int = 0) -> int:
    """`requested` bytes (0: keep nothing, pass 2 runs the model again), or by default
    BUDGET_FRACTION of the memory available now less the `working_set` the passes and the scans
    after them need besides (1 GiB when the free memory cannot be read)."""
    if requested is not None:
        return max(0, int(requested))
    free = available_memory(device)
    return int(max(0, free - working_set) * BUDGET_FRACTION) if free is not None else 1 << 30


# Bytes of temporaries per firing entry of a run of statistics (`SparseActs.split`): pass 1's top-k
# merge and prompt view sort their candidates, about 160 bytes an entry measured at 4,096 features.
STATS_BYTES_PER_ENTRY = 256
# Bytes per token and model dimension of a forward's activations (blocks' intermediates, the
# captured hooks, the CE loss's residual streams), an upper bound for transformers' usual shapes.
FORWARD_BYTES_PER_DIM = 128


def working_set(batch_tokens: int, context: int, widths: list[tuple[int, int]], d_model: int, device, correlation_memory: int) -> int:
    """Bytes the corpus passes and the scans and the CE loss after them allocate, at most, besides
    the replay, the model's weights and the running statistics (allocated before the passes): the
    model's forward of a batch of `batch_tokens` (`FORWARD_BYTES_PER_DIM`, and the logits of a
    chunk) and, for the widest SAE (d_sae, d_out) with every (token, feature) pair firing at
    worst, the batch's entries (12 bytes each, twice while its encoder calls' parts are joined) and
    its dense decode (4 bytes each, where the SAE cannot decode sparsely), its reconstruction, and
    the larger of a run of statistics (`entry_budget` entries, or one prompt's) with an encoder call
    (`chunk_elements`) and a block of the correlated features' co-occurrence sums
    (`correlation_memory`, or all of an SAE's F x F) with its products' temporaries. It depends on
    the batch size and the widths, not on the corpus length or on how densely the features fire."""
    from sae_atlas.compute.options import chunk_elements, entry_budget

    chunk, runs = chunk_elements(device), entry_budget(device)
    forward = FORWARD_BYTES_PER_DIM * batch_tokens * d_model + 16 * chunk
    most = 0
    for d_sae, d_out in widths:
        cells = batch_tokens * d_sae
        batch = 28 * cells + 3 * 4 * batch_tokens * d_out
        stats = STATS_BYTES_PER_ENTRY * min(cells, max(runs, context * d_sae)) + 16 * chunk
        scan = min(correlation_memory, 16 * d_sae * d_sae) + 40 * chunk
        most = max(most, batch + max(stats, scan))
    return forward + most


def resident_bytes(device: str) -> int | None:
    """The memory the process uses now: allocated device memory for cuda, else the resident set."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated(torch.device(device)))
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def held_bytes(*tensors: torch.Tensor) -> int:
    """The bytes the tensors keep alive: their storages, each once (a view holds its whole base)."""
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def _bare(acts: SparseActs) -> SparseActs:
    """The batch's entries without what was derived from them (a fresh object sharing the tensors)."""
    return SparseActs(acts.key, acts.value, acts.first_prompt, acts.n_prompts, acts.context, acts.n_features)


class Replay:
    """Firing entries per (SAE id, first prompt of the batch), on the device that computed them."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0  # bytes held (`held_bytes`)
        self.full = False  # once a batch did not fit, no later batch is kept
        self.peak = 0  # most bytes kept at once
        self.replayed = 0  # (SAE, batch) pairs pass 2 took from here
        self.missed = 0  # (SAE, batch) pairs pass 2 asked for and had to recompute
        self._kept: dict[tuple[str, int], tuple[SparseActs, int]] = {}

    def add(self, sae_id: str, acts: SparseActs) -> None:
        size = held_bytes(acts.key, acts.value)
        if self.full or self.used + size > self.budget:
            self.full = True
            return
        self._kept[(sae_id, acts.first_prompt)] = (_bare(acts), size)
        self.used += size
        self.peak = max(self.peak, self.used)

    def take(self, sae_id: str, first_prompt: int, n_prompts: int, keep: bool = False) -> SparseActs | None:
        """The kept entries of exactly these prompts (removed from the store unless `keep`, for
        the scans after pass 2), or None."""
        item = self._kept.get((sae_id, first_prompt)) if keep else self._kept.pop((sae_id, first_prompt), None)
        if item is not None and not keep:
            self.used -= item[1]
        if item is None or item[0].n_prompts != n_prompts:
            self.missed += 1
            return None
        self.replayed += 1
        return _bare(item[0])

    def peek(self, sae_id: str, first_prompt: int, n_prompts: int) -> SparseActs | None:
        """The kept entries of exactly these prompts, left in the store and not counted."""
        item = self._kept.get((sae_id, first_prompt))
        return _bare(item[0]) if item is not None and item[0].n_prompts == n_prompts else None

    def clear(self) -> None:
        self._kept.clear()
        self.used = 0
        release_free_memory()


def release_free_memory() -> None:
    """Hand memory freed by the process back to the system: glibc keeps freed blocks below its mmap
    threshold in its heaps (`malloc_trim`), torch's CUDA allocator keeps freed blocks cached."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2): blocks below it come from a heap.
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of a heap beyond which glibc gives it back, within `retained_heap`.
TRIM_THRESHOLD = 1 << 30


@contextlib.contextmanager
def retained_heap() -> Iterator[None]:
    """Within: a freed block below 32 MiB stays in glibc's heap, for the next batch to reuse.

    torch allocates a CPU tensor with malloc and keeps no cache of its own. glibc gives a freed block
    back to the kernel when it was mapped on its own (at or above its mmap threshold, which it raises
    as such blocks are freed, to 32 MiB at most) or when the free memory at the top of its heap
    exceeds its trim threshold (twice that). The passes' temporaries are of that size (an encoder
    call's activations, a chunk of logits, a batch's statistics: a few to 32 MiB) and each batch
    asks for the same sizes again, which the kernel then maps, faults in and zeroes anew, page by
    page. Here both thresholds are fixed for the compute, the mmap one at its largest and the trim
    one high; `release_free_memory` still gives the free memory back between stages, so the bound
    on the process's memory is unchanged. After: glibc's thresholds are those it comes to itself
    once it has freed a 32 MiB block (it cannot be told to adjust them again), and the free memory
    is given back. Elsewhere than glibc this changes nothing."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
        release_free_memory()


_LIBC: list = []


def _libc():
    """glibc, with its malloc_trim and mallopt; None elsewhere (musl, macOS, Windows)."""
    if not _LIBC:
        libc = None
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            except (OSError, AttributeError):
                libc = None
        _LIBC.append(libc)
    return _LIBC[0]

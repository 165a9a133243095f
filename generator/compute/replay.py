"""What pass 2 replays: the firing entries of pass 1's batches, kept in memory up to a budget.

Pass 2 needs every activation again (the histogram and the interval samples depend on the final
max), but only the ones above zero: a trained SAE fires a few dozen of its features per token, so
keeping them (12 bytes each) costs far less memory than the model's activations and saves running
the model and the SAE encoders a second time. When the budget runs out, the batches not kept are
recomputed; batches kept and recomputed give identical results."""

from __future__ import annotations

import os

import torch

from sae_atlas.compute.stats import SparseActs

BUDGET_FRACTION = 0.4  # of the memory available when the passes start


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


def replay_budget(device: str, requested: int | None) -> int:
    """`requested` bytes (0: keep nothing, pass 2 runs the model again), or by default
    BUDGET_FRACTION of the memory available now (1 GiB when that cannot be read)."""
    if requested is not None:
        return max(0, int(requested))
    free = available_memory(device)
    return int(free * BUDGET_FRACTION) if free is not None else 1 << 30


class Replay:
    """Firing entries per (SAE id, first prompt of the batch), on the device that computed them."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.full = False  # once a batch did not fit, no later batch is kept
        self.peak = 0  # most bytes kept at once
        self.replayed = 0  # (SAE, batch) pairs pass 2 took from here
        self.missed = 0  # (SAE, batch) pairs pass 2 asked for and had to recompute
        self._kept: dict[tuple[str, int], SparseActs] = {}

    def add(self, sae_id: str, acts: SparseActs) -> None:
        if self.full or self.used + acts.nbytes > self.budget:
            self.full = True
            return
        self._kept[(sae_id, acts.first_prompt)] = acts
        self.used += acts.nbytes
        self.peak = max(self.peak, self.used)

    def take(self, sae_id: str, first_prompt: int, n_prompts: int, keep: bool = False) -> SparseActs | None:
        """The kept entries of exactly these prompts (removed from the store unless `keep`, for
        the scans after pass 2), or None."""
        acts = self._kept.get((sae_id, first_prompt)) if keep else self._kept.pop((sae_id, first_prompt), None)
        if acts is not None and not keep:
            self.used -= acts.nbytes
        if acts is None or acts.n_prompts != n_prompts:
            self.missed += 1
            return None
        self.replayed += 1
        return acts

    def peek(self, sae_id: str, first_prompt: int, n_prompts: int) -> SparseActs | None:
        """The kept entries of exactly these prompts, left in the store and not counted."""
        acts = self._kept.get((sae_id, first_prompt))
        return acts if acts is not None and acts.n_prompts == n_prompts else None

    def clear(self) -> None:
        self._kept.clear()
        self.used = 0

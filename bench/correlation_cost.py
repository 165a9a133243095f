"""Cost of the correlated-feature and correlated-neuron statistics on synthetic sparse activations.

65,536 tokens in 16 batches of 4,096 (32 prompts of 128), about 50 firing features per token drawn
from a Zipf-like density (a few features fire often, most rarely), basis width d = 768. For 4,096
and 24,576 features it prints the time and the peak memory of

- `correlated_features` at two block budgets (the number of corpus scans, the co-firing pair
  products sum_t nnz_t ** 2, and the accumulator's bytes: rows x F x BYTES_PER_CELL);
- `NeuronCorrelation.update` over the corpus and `result`, against the peer: the same A^T X as one
  plain float64 sparse CSR product per batch (torch/MKL; of the unquantized values, so not exact
  and not batch-size independent).

Peak memory is the process's resident high-water mark above what it held before each step
(Linux /proc/self/clear_refs). Run: python bench/correlation_cost.py [--features 4096 24576]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_atlas.compute.correlation import BYTES_PER_CELL, NeuronCorrelation, correlated_features, feature_blocks  # noqa: E402
from sae_atlas.compute.stats import SparseActs  # noqa: E402

TOKENS, BATCH, CONTEXT, L0, D = 65_536, 4_096, 128, 50, 768


def synthetic_batches(n_features: int, seed: int = 0) -> list[SparseActs]:
    g = torch.Generator().manual_seed(seed)
    density = 1.0 / torch.arange(1, n_features + 1, dtype=torch.float64) ** 0.8
    density = density[torch.randperm(n_features, generator=g)]
    out = []
    for first in range(0, TOKENS, BATCH):
        feature = torch.multinomial(density, BATCH * L0, replacement=True, generator=g)
        token = torch.arange(BATCH).repeat_interleave(L0)
        key = torch.unique(token * n_features + feature)  # sorted, distinct: slightly under L0 per token
        value = torch.empty(key.shape[0]).exponential_(1.0, generator=g) + 0.05
        out.append(SparseActs(key, value, first // CONTEXT, BATCH // CONTEXT, CONTEXT, n_features))
    return out


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def measured(fn):
    """(result, seconds, peak resident bytes above the start)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the high-water mark to the current resident size
    except OSError:
        pass
    before = _status_kib("VmRSS:")
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return result, seconds, max(0, _status_kib("VmHWM:") - before) * 1024


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def neuron_peer(batches: list[SparseActs], x: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((batches[0].n_features, D), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for b in batches:
            total += b.csr().to(torch.float64).t() @ x[: b.n_tokens].double()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=int, nargs="+", default=[4096, 24576])
    ap.add_argument("--budgets", type=int, nargs="+", default=[1 << 30, 1 << 28], help="block budgets in bytes")
    args = ap.parse_args()
    print(f"{TOKENS:,} tokens in batches of {BATCH:,}, L0 ~ {L0}, d = {D}, torch threads {torch.get_num_threads()}")
    x = torch.randn(BATCH, D, generator=torch.Generator().manual_seed(1))  # one batch's basis, reused
    for f in args.features:
        batches = synthetic_batches(f)
        nnz = sum(b.value.numel() for b in batches)
        pairs = sum(int((torch.bincount(b.token, minlength=b.n_tokens) ** 2).sum()) for b in batches)
        print(f"\nF = {f:,}: {nnz / TOKENS:.1f} firing per token, {pairs:,} co-firing pair products per scan of all features")
        for budget in args.budgets:
            blocks = feature_blocks(f, budget)
            rows = blocks[0][1] - blocks[0][0]
            _, seconds, peak = measured(lambda: correlated_features(lambda: iter(batches), f, 5, budget))
            print(
                f"  correlated_features budget {mib(budget)}: {len(blocks)} scans of {rows:,} rows, accumulator "
                f"{mib(rows * f * BYTES_PER_CELL)}, {seconds:.1f} s ({pairs / seconds / 1e6:.1f} M pairs/s), peak +{mib(peak)}"
            )

        def neurons():
            nc = NeuronCorrelation(f, D)
            for b in batches:
                nc.update(b, x)
            return nc

        nc, seconds, peak = measured(neurons)
        _, result_s, _ = measured(lambda: nc.result(5))
        _, peer_s, _ = measured(lambda: neuron_peer(batches, x))
        print(
            f"  NeuronCorrelation d = {D}: update {seconds:.1f} s ({nnz * D / seconds / 1e9:.2f} G products/s), "
            f"result {result_s:.1f} s, state {mib(f * D * 16)}, peak +{mib(peak)}; float64 sparse A^T X (peer) "
            f"{peer_s:.1f} s: exact update / peer = {seconds / peer_s:.2f}x"
        )


if __name__ == "__main__":
    main()

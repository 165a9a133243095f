"""Runs `sae-atlas ARGS` in this process with the engine's stages timed (exclusive times), for
`cold_compute.py`: `python _cold_driver.py STAGES_JSON compute ...` writes to STAGES_JSON how long the
process took from its launch (SAE_ATLAS_BENCH_LAUNCHED, a time.time()) to this script, the CLI's own seconds and each stage's seconds."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# (module, attribute, label); a label of None: "pass N" from the function's first argument.
TARGETS = (
    ("sae_atlas.compute.engine", "load_corpus", "load corpus"),
    ("sae_atlas.compute.engine", "load_model", "load model"),
    ("sae_atlas.compute.engine", "load_sae", "load SAEs"),
    ("sae_atlas.compute.engine", "_run_pass", None),
    ("sae_atlas.compute.engine", "_save_checkpoint", "checkpoints"),
    ("sae_atlas.compute.engine", "_correlate_features", "correlated features"),
    ("sae_atlas.compute.engine", "logit_effects", "logits"),
    ("sae_atlas.compute.engine", "cosine_neighbours", "neighbours"),
    # The map statistic imports these from weights when it runs (stats/feature_map.py).
    ("sae_atlas.compute.weights", "umap_coords", "map (UMAP)"),
    ("sae_atlas.compute.weights", "cluster_ids", "clusters"),
    ("sae_atlas.compute.engine", "write_entry", "write cache entry"),
    ("sae_atlas.compute.engine", "_compute_later_stats", "other statistics"),
    ("sae_atlas.backends.transformer_lens", "TransformerLensBackend.ce_losses", "CE loss"),
)


def main() -> int:
    started, started_pc = time.time(), time.perf_counter()
    out = Path(sys.argv[1])
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}  # the process's CPU seconds (every thread) in each stage, exclusive too
    stack: list[list[float]] = []

    def wrap(label, fn):
        def timed(*a, **kw):
            name = label or f"pass {a[0]}"
            stack.append([0.0, 0.0])
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
                inner, inner_cpu = stack.pop()
                times[name] = times.get(name, 0.0) + total - inner
                cpu[name] = cpu.get(name, 0.0) + total_cpu - inner_cpu
                if stack:
                    stack[-1][0] += total
                    stack[-1][1] += total_cpu

        return timed

    import importlib

    from sae_atlas import api, cli

    # `compute` starts its map worker before it imports torch (api.compute); the patching below
    # imports torch first, so the worker is started here, as early as the CLI starts it.
    argv = sys.argv[2:]
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else None
    worker = api._map_worker(threads, "--pca-map" in argv)
    api._map_worker = lambda threads, pca_map: worker

    # The engine's module is imported only when the command computes: patch it on first use.
    for module, attr, label in TARGETS:
        owner = importlib.import_module(module)
        for part in attr.split(".")[:-1]:
            owner = getattr(owner, part, None)
        name = attr.split(".")[-1]
        if owner is not None and callable(getattr(owner, name, None)):
            setattr(owner, name, wrap(label, getattr(owner, name)))
    t0 = time.perf_counter()
    rc = cli.main(sys.argv[2:])
    cli_seconds = time.perf_counter() - t0
    out.write_text(json.dumps({
        "cli_start": started - float(os.environ["SAE_ATLAS_BENCH_LAUNCHED"]), "patching": t0 - started_pc,
        "cli_seconds": cli_seconds, "stages": times, "stage_cpu": cpu,
    }))
    return rc or 0


if __name__ == "__main__":
    # The way the console script exits (cli.run), so that "process exit" is the user's.
    from sae_atlas import cli

    getattr(cli, "exit_now", sys.exit)(main())

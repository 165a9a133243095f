"""One full-size SAE on a GPU: how long SAE Atlas's compute takes for a GPT-2-small-sized job.

    python bench/gpu_full_sae.py            # needs CUDA; goal: under 3 minutes of compute
    python bench/gpu_full_sae.py --tiny     # shrunk, on the CPU: checks that the script works
    python bench/gpu_full_sae.py --device cpu --prompts 64   # full-size shapes, few tokens, on the CPU

A random GPT-2-small-shaped TransformerLens model (12 layers, d_model 768, vocab 50,257, n_ctx 128;
built from a HookedTransformerConfig, no download), one random 24,576-feature StandardSAE on
blocks.8.hook_resid_pre, and 24,576 random prompts of 128 tokens (3.1M tokens). The compute is the
project's own `compute_releases` with default settings (top-k, intervals, histograms, logits,
neighbours, UMAP, clusters, CE loss), fresh cache. Prints the time of every stage and the total;
loading the model and the corpus is shown but not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compute_vs_saedashboard import build_inputs, run_ours, warm_umap  # noqa: E402

GOAL_SECONDS = 180.0


def gpt2_small_config(tiny: bool) -> dict:
    if tiny:
        return {
            "n_layers": 3, "d_model": 64, "n_ctx": 32, "d_head": 16, "n_heads": 4, "d_mlp": 256,
            "d_vocab": 2048, "act_fn": "gelu_new", "normalization_type": "LN", "seed": 0,
        }
    return {
        "n_layers": 12, "d_model": 768, "n_ctx": 128, "d_head": 64, "n_heads": 12, "d_mlp": 3072,
        "d_vocab": 50257, "act_fn": "gelu_new", "normalization_type": "LN", "seed": 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="shrink everything and run on the CPU (a smoke test)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the full-size shapes on the CPU (use few --prompts)")
    ap.add_argument("--features", type=int, help="SAE width (default 24,576; --tiny: 512)")
    ap.add_argument("--prompts", type=int, help="prompts of n_ctx tokens (default 24,576; --tiny: 256)")
    ap.add_argument("--density", type=float, default=0.003, help="fraction of tokens each random feature fires on"
                    " (0.003: L0 about 74, like GPT-2-small residual SAEs)")
    ap.add_argument("--work", type=Path, help="keep the generated inputs and cache here (default: a temp dir)")
    args = ap.parse_args()

    import torch

    if args.tiny:
        device = "cpu"
        hook = "blocks.2.hook_resid_pre"
    elif args.device == "cpu":
        device = "cpu"
        hook = "blocks.8.hook_resid_pre"
    else:
        if not torch.cuda.is_available():
            sys.exit(
                "gpu_full_sae.py: no CUDA device here (torch.cuda.is_available() is False); run it on a machine"
                " with a GPU and a CUDA build of torch, or use --tiny for a CPU smoke test"
            )
        device = "cuda"
        hook = "blocks.8.hook_resid_pre"
    cfg = gpt2_small_config(args.tiny)
    n_features = args.features or (512 if args.tiny else 24_576)
    n_prompts = args.prompts or (256 if args.tiny else 24_576)
    context = cfg["n_ctx"]
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cpus)"
    print(
        f"device: {where}; torch {torch.__version__}\n"
        f"model: random, {cfg['n_layers']} layers, d_model {cfg['d_model']}, vocab {cfg['d_vocab']:,}, n_ctx {context};"
        f" SAE: random StandardSAE on {hook}, d_sae {n_features:,}; {n_prompts:,} prompts x {context} tokens"
        f" = {n_prompts * context:,} tokens",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = args.work or Path(tmp)
        t0 = time.perf_counter()
        inputs = build_inputs(
            work / "inputs", n_prompts, [n_features], cfg=cfg, hook=hook, context=context, device=device, density=args.density
        )
        print(f"inputs written in {time.perf_counter() - t0:.1f} s (not counted)", flush=True)
        # UMAP's numba functions compile on first use in a process (exact neighbours below 4,096 points,
        # NN-descent from 4,096 up); timed apart from the job.
        t0 = time.perf_counter()
        warm_umap(256)
        warm_umap(4096)
        jit_seconds = time.perf_counter() - t0
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        r = run_ours(inputs, n_features, n_prompts, work / "cache", device=device)

    stages = r["stages"]
    print("\nstage                                   seconds")
    for name, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<38} {sec:8.2f}")
    loading = r["wall"] - r["seconds"]
    print(f"  {'(loading model + corpus, not counted)':<38} {loading:8.2f}")
    print(f"  {'(UMAP JIT compile, once per process)':<38} {jit_seconds:8.2f}")
    n_tokens = n_prompts * context
    print(
        f"\ntotal compute: {r['seconds']:.1f} s for {n_tokens:,} tokens x {n_features:,} features"
        f" ({n_tokens / r['seconds']:,.0f} tokens/s); with loading and the UMAP JIT {r['wall'] + jit_seconds:.1f} s"
    )
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        verdict = "within" if r["seconds"] < GOAL_SECONDS else "OVER"
        print(f"goal: < {GOAL_SECONDS:.0f} s -> {verdict}")
    print(f"gpu_full_sae_seconds={r['seconds']:.1f}")


if __name__ == "__main__":
    main()

"""The corpus passes' bookkeeping against the encoder's bare matmul, and against an earlier version.

    python bench/pass_cost.py                                  # 512 prompts x 128 tokens, one 2,048-feature SAE
    python bench/pass_cost.py --baseline REV --repeat 3        # the same, alternating with the code at git REV

The fixture is `compute_vs_saedashboard.build_inputs`' (the random 2-layer model, a random
StandardSAE on blocks.1.hook_resid_pre whose features fire on about 1% of tokens, random prompts).
The model and the encoder run once; their batches (the firing entries, the SAE's input and its
reconstruction) are kept and fed to

- pass 1: `FeatureStats.update_pass1` (max, counts, top-k examples with windows, reconstruction
  sums, the correlated neurons' sums, the prompt view);
- pass 2: `FeatureStats.update_pass2` (histogram, interval samples);
- the correlated features: `correlation.correlated_features` over the kept batches;

each timed against the floor measured in the same run: the encoder's bare product x @ W_enc over
the same tokens, in the engine's row blocks. With --baseline, the modules `compute/stats.py` and
`compute/correlation.py` of that git revision run the same batches, alternating with the current
ones (other work on the machine moves both alike), and the results must be identical.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))


def load_at(rev: str, path: str, name: str) -> types.ModuleType:
    """The module at `path` as it was at git revision `rev` (imports resolve to the current package)."""
    src = subprocess.run(["git", "-C", str(BENCH.parent), "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(name)
    # A real file: numba's on-disk cache of a compiled kernel needs its source's path.
    folder = Path(tempfile.gettempdir()) / f"pass-cost-{rev}"
    folder.mkdir(exist_ok=True)
    module.__file__ = str(folder / f"{name}.py")
    Path(module.__file__).write_text(src)
    sys.modules[name] = module  # where numba's cache finds the module of a compiled kernel again
    exec(compile(src, module.__file__, "exec"), module.__dict__)
    return module


def capture(inputs: dict, n_sae: int, n_prompts: int) -> tuple[list[dict], object]:
    """The engine's pass-1 inputs of each batch, and the SAE's encoder weight."""
    import torch
    from compute_vs_saedashboard import write_release
    from sae_atlas.compute import engine
    from sae_atlas.compute.options import default_batch_size
    from sae_atlas.compute.stats import SparseActs
    from sae_atlas.manifest import load_release
    from sae_atlas.sources.model import load_model
    from sae_atlas.sources.sae import load_sae

    release = load_release(write_release(inputs, n_sae, n_prompts))
    spec = release.saes()[0]
    tokens = torch.from_numpy(np.load(inputs["tokens"])[:n_prompts].astype(np.int64))
    batch = default_batch_size("cpu", inputs["context"])
    out = []
    with torch.inference_mode():
        model = load_model(release.model, "cpu", "float32")
        sae = load_sae(spec, "cpu", "float32")
        r = engine._Running(None, sae, None)
        for p0 in range(0, n_prompts, batch):
            captured = engine._forward_capture(model, tokens[p0 : p0 + batch], sorted(set(sae.hooks)))
            sparse = SparseActs.concat([s for _, s in engine._encode(r, captured, 0, p0)])
            if r.sparse_decode is None:
                r.sparse_decode = False
            x_in = sae.read(captured[sae.hook_in])
            x_hat = engine._decode(r, sparse, x_in)
            out.append(dict(key=sparse.key, value=sparse.value, first=sparse.first_prompt, n=sparse.n_prompts,
                            context=sparse.context, f=sparse.n_features, x=x_in.float(), x_hat=x_hat))
    return out, sae.module.W_enc.detach()


def floor_seconds(batches: list[dict], w_enc) -> float:
    import torch
    from sae_atlas.compute.options import chunk_elements

    f, context = w_enc.shape[1], batches[0]["context"]
    rows = max(1, chunk_elements("cpu") // f // context) * context
    t0 = clock()
    with torch.inference_mode():
        for b in batches:
            x = b["x"].reshape(-1, b["x"].shape[-1])
            for r0 in range(0, x.shape[0], rows):
                x[r0 : r0 + rows] @ w_enc
    return clock() - t0


def run_version(stats_mod, corr_mod, batches: list[dict]) -> tuple[dict, dict]:
    """(seconds per stage, results) of one version over the batches."""
    import functools

    import torch
    from sae_atlas.manifest import ComputeSettings

    s = ComputeSettings()
    b0 = batches[0]
    mk = lambda b: stats_mod.SparseActs(b["key"], b["value"], b["first"], b["n"], b["context"], b["f"])  # noqa: E731
    seconds = {}
    with torch.inference_mode():
        st = stats_mod.FeatureStats(b0["f"], b0["x"].shape[-1], b0["context"], s, "cpu")
        st.neurons = corr_mod.NeuronCorrelation(b0["f"], b0["x"].shape[-1], "cpu")
        # Each pass and scan gets fresh objects, as the engine's replay hands out (nothing derived
        # from a batch, such as its feature-major order, carries over from pass 1).
        acts, acts2, acts3 = ([mk(b) for b in batches] for _ in range(3))
        # The engine runs the statistics in the threads its stats module gives (one on a busy machine).
        threads = getattr(stats_mod, "bookkeeping_threads", None) or getattr(stats_mod, "single_threaded", contextlib.nullcontext)
        t0 = clock()
        for b, a in zip(batches, acts):
            windows = functools.partial(a.windows, before=s.context_before, after=s.context_after)
            with threads():
                st.update_pass1(a, windows, b["x"], b["x_hat"], basis=b["x"])
        t1 = clock()
        for a in acts2:
            with threads():
                st.update_pass2(a, functools.partial(a.windows, before=s.context_before, after=s.context_after))
        t2 = clock()
        corr = corr_mod.correlated_features(lambda: iter(acts3), b0["f"], 5)
        t3 = clock()
        arrays = st.feature_arrays()
        arrays["corr_feature_index"], arrays["corr_feature_value"] = corr
    seconds = {"pass 1": t1 - t0, "pass 2": t2 - t1, "correlated features": t3 - t2}
    return seconds, arrays


def cpu_seconds() -> float:
    """The process's CPU time (user + system, all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


clock = time.perf_counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true", help="time by the process's CPU time (user + system) instead of the wall clock")
    ap.add_argument("--baseline", help="git revision to alternate with (its compute/stats.py and compute/correlation.py)")
    args = ap.parse_args()

    import torch

    global clock
    if args.cpu_time:
        clock = cpu_seconds
    torch.set_num_threads(args.threads)
    from compute_vs_saedashboard import build_inputs
    from sae_atlas.compute import correlation, stats

    versions = {"current": (stats, correlation)}
    if args.baseline:
        old_corr = load_at(args.baseline, "generator/compute/correlation.py", "baseline_correlation")
        versions = {"baseline": (load_at(args.baseline, "generator/compute/stats.py", "baseline_stats"), old_corr), **versions}
    with tempfile.TemporaryDirectory(prefix="bench-passes-") as tmp:
        inputs = build_inputs(Path(tmp) / "inputs", args.prompts, [args.features], density=args.density)
        batches, w_enc = capture(inputs, args.features, args.prompts)
    n_tok = sum(b["n"] * b["context"] for b in batches)
    entries = sum(b["key"].numel() for b in batches)
    print(
        f"{n_tok:,} tokens x {args.features:,} features, {entries / (n_tok * args.features):.2%} firing, {args.threads} threads,"
        f" {'CPU' if args.cpu_time else 'wall-clock'} seconds;"
        f" load average {os.getloadavg()[0]:.1f} at start"
    )
    run_version(*versions["current"], batches[:1])  # warm-up: the compiled co-firing kernel
    best: dict[str, dict[str, float]] = {}
    floors = []
    results = {}
    for rep in range(max(1, args.repeat)):
        floors.append(floor_seconds(batches, w_enc))
        for name, (s_mod, c_mod) in versions.items():
            sec, arrays = run_version(s_mod, c_mod, batches)
            results.setdefault(name, arrays)
            for k, v in sec.items():
                best.setdefault(name, {})[k] = min(best.get(name, {}).get(k, float("inf")), v)
            print(f"  run {rep + 1} {name:<8} " + ", ".join(f"{k} {v:.3f} s" for k, v in sec.items()) + f"  (floor {floors[-1]:.3f} s)", flush=True)
    floor = min(floors)
    print(f"floor: the encoder's bare matmul over the same tokens, best of {len(floors)}: {floor:.3f} s")
    for name, sec in best.items():
        total = sum(sec.values())
        print(f"{name:<8} best: " + ", ".join(f"{k} {v:.3f} s ({v / floor:.2f}x floor)" for k, v in sec.items()) + f"; all {total:.3f} s ({total / floor:.2f}x)")
    if "baseline" in results:
        same = all(np.array_equal(results["baseline"][k], results["current"][k]) for k in results["current"])
        print(f"results identical to the baseline's: {same}")
        for k, v in best["current"].items():
            print(f"  {k}: {best['baseline'][k] / v:.1f}x faster")
        if not same:
            sys.exit(1)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

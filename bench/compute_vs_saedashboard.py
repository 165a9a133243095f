"""Feature computation: SAE Atlas's engine against SAEDashboard on the same model, SAE and tokens.

    make bench-compute                       # full run (about 6 minutes on an idle 2-core CPU)
    make bench-compute ARGS=--quick          # smoke run (a minute or two)

Both sides get a random 2-layer TransformerLens model (d_model 128, GPT-2 vocabulary size), a random
SAELens StandardSAE on blocks.1.hook_resid_pre (d_in 128; d_sae 512 ... 4,096, the smaller SAEs
being the first features of the largest) and the same pre-tokenized random prompts of 128 tokens.
SAEDashboard 0.8.0 runs in its own venv (bench/.venv-saedashboard, created on first use) as a
subprocess driven like Neuronpedia's runner drives it (see _saedashboard_runner.py); ours runs in
this process. Only feature computation is timed on both sides (not model loading, not writing
JSON / cache files).

Fair both ways: SAEDashboard computes its correlation tables (FeatureTablesConfig: correlated
neurons and features) and so do we; --correlations off|both (default both) also times ours without
them against the floor (SAEDashboard 0.8.0 cannot leave its correlations out: it updates them
whatever its layout says). Each side gets an untimed warm-up in its process and the best of
--repeat runs at every size.

The script checks that both find the same top activations for the first 32 features, prints
tokens/s and features/s for both, how our time scales with tokens and with features, the floor
(one forward of the model to the hook plus the encoder's bare matmul, measured in the same run),
our time over the floor (whole, and like for like: without the CE loss, UMAP and clusters, which
SAEDashboard does not compute) and SAEDashboard's over ours per setting, and ends with
`ours_over_floor=X like_for_like_over_floor=Y` (262,144 tokens x 4,096 features) and
`speedup_vs_saedashboard=X` (32,768 tokens x 512 features; correlations on when measured).
--ours-only skips SAEDashboard (our times and the floor only).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the project, also when it is not pip-installed
DASHBOARD_VENV = BENCH / ".venv-saedashboard"
DASHBOARD_RUNNER = BENCH / "_saedashboard_runner.py"
DASHBOARD_PINS = ["torch==2.13.0", "pyarrow<19", "sae-dashboard==0.8.0"]
# Imported by sae-dashboard's dependencies but built against other torch versions; unused here.
DASHBOARD_REMOVE = ["torchvision", "torchaudio"]

CONTEXT = 128
D_MODEL = 128
D_VOCAB = 50257
HOOK = "blocks.1.hook_resid_pre"
CHECK_FEATURES = 32
REL_TOL = 1e-3


@dataclass(frozen=True)
class Plan:
    base_tokens: int
    base_features: int
    token_steps: tuple[int, ...]  # at base_features
    feature_steps: tuple[int, ...]  # at base_tokens
    big: tuple[int, int]  # (tokens, features) of the large comparison
    dashboard_big_features: int  # SAEDashboard runs this many features of the large case


FULL = Plan(
    base_tokens=32_768,
    base_features=512,
    token_steps=(32_768, 65_536, 131_072, 262_144),
    feature_steps=(512, 1_024, 2_048, 4_096),
    big=(262_144, 4_096),
    dashboard_big_features=256,
)
QUICK = Plan(
    base_tokens=4_096,
    base_features=128,
    token_steps=(4_096, 8_192),
    feature_steps=(128, 256),
    big=(8_192, 256),
    dashboard_big_features=128,
)


# ----------------------------------------------------------------------------- inputs


def tiny_model_config(seed: int = 0) -> dict:
    """HookedTransformerConfig fields of the benchmark's random 2-layer model."""
    return {
        "n_layers": 2,
        "d_model": D_MODEL,
        "n_ctx": CONTEXT,
        "d_head": 32,
        "n_heads": D_MODEL // 32,
        "d_mlp": 4 * D_MODEL,
        "d_vocab": D_VOCAB,
        "act_fn": "gelu",
        "normalization_type": "LN",
        "seed": seed,
    }


def build_inputs(
    root: Path,
    n_prompts: int,
    sae_sizes: list[int],
    seed: int = 0,
    cfg: dict | None = None,
    hook: str = HOOK,
    context: int = CONTEXT,
    device: str = "cpu",
    density: float = 0.01,
) -> dict:
    """Under root: a random model in the local model format (config.json, model.safetensors, a
    word-level tokenizer), random StandardSAE dirs on `hook` (the smaller ones are the first features
    of the largest), and the same random prompts as tokens.npy and as a pre-tokenized corpus.jsonl."""
    import warnings

    import torch
    from safetensors.torch import save_file
    from sae_lens import StandardSAE, StandardSAEConfig
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    cfg = cfg or tiny_model_config(seed)
    d_model, d_vocab = cfg["d_model"], cfg["d_vocab"]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(HookedTransformerConfig(**cfg, device=device))
    model.eval()
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, str(model_dir / "model.safetensors"))

    # A word-level tokenizer ("t0", "t1", ...) only gives the site its token strings: prompts are pre-tokenized.
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(d_vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0").save_pretrained(str(model_dir))

    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, d_vocab, size=(n_prompts, context), dtype=np.int64).astype(np.int32)
    np.save(root / "tokens.npy", tokens)
    with open(root / "corpus.jsonl", "w") as f:
        f.writelines('{"tokens": [' + ", ".join(map(str, row)) + "]}\n" for row in tokens.tolist())

    # Scale the encoder to the hook's activations so that each feature fires on about `density` of the
    # tokens (pre-activations are about unit normal; trained SAEs fire on well under 1% on average).
    with torch.no_grad():
        sample = torch.from_numpy(tokens[:16].astype(np.int64)).to(device)
        _, cache = model.run_with_cache(sample, names_filter=hook)
        acts = cache[hook].reshape(-1, d_model).float().cpu()
    del model, cache
    mean = acts.mean(0)
    rms = (acts - mean).pow(2).sum(-1).mean().sqrt()
    g = torch.Generator().manual_seed(seed + 1)
    d_max = max(sae_sizes)
    w_enc = torch.randn(d_model, d_max, generator=g) / rms
    threshold = float(torch.special.ndtri(torch.tensor(1.0 - density, dtype=torch.float64)))
    b_enc = -threshold + 0.2 * torch.randn(d_max, generator=g)
    w_dec = torch.randn(d_max, d_model, generator=g)
    # Unit-norm decoder rows: SAEDashboard folds the decoder norm into the encoder before encoding.
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
    sae_dirs = {}
    for n in sae_sizes:
        sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=n))
        sae.cfg.metadata.hook_name = hook
        with torch.no_grad():
            sae.W_enc.copy_(w_enc[:, :n])
            sae.b_enc.copy_(b_enc[:n])
            sae.W_dec.copy_(w_dec[:n])
            sae.b_dec.copy_(mean)
        sae_dirs[n] = root / "saes" / str(n)
        sae_dirs[n].mkdir(parents=True)
        sae.save_model(str(sae_dirs[n]))
    return {
        "root": root, "model": model_dir, "tokens": root / "tokens.npy", "saes": sae_dirs, "config": cfg,
        "hook": hook, "context": context,
    }


def add_layer0_sae(inputs: dict, d_sae: int, density: float = 0.01) -> Path:
    """A second random SAE of d_sae features on blocks.0.hook_resid_pre of `build_inputs`'s model
    (built again from the same seed, with a few prompts, then dropped), as inputs' saes/l0."""
    root = inputs["root"]
    other = build_inputs(root.parent / f"{root.name}-l0", 16, [d_sae], hook="blocks.0.hook_resid_pre", density=density)
    target = root / "saes" / "l0"
    shutil.move(str(other["saes"][d_sae]), str(target))
    shutil.rmtree(other["root"])
    return target


# ----------------------------------------------------------------------------- SAEDashboard


def ensure_dashboard_venv() -> Path:
    py = DASHBOARD_VENV / "bin" / "python"
    probe = [str(py), "-c", "import sae_dashboard.sae_vis_runner"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"installing SAEDashboard into {DASHBOARD_VENV.relative_to(BENCH.parent)} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(DASHBOARD_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    # torch first and pinned, so the resolver keeps the CPU build instead of pulling a newer one.
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + DASHBOARD_PINS, check=True)
    subprocess.run([str(py), "-m", "pip", "uninstall", "--quiet", "-y", *DASHBOARD_REMOVE], check=True)
    subprocess.run(probe, check=True)
    return py


def run_dashboard(
    py: Path, inputs: dict, n_sae: int, n_prompts: int, n_features: int, work: Path, threads: int,
    feature_tables: bool = True, warmup_prompts: int = 8, repeat: int = 1,
) -> dict:
    """SAEDashboard over the first n_features features; warm-up: its first batch on warmup_prompts
    prompts in the same process, untimed; the fastest of `repeat` runs (each with a fresh
    activation cache) counts."""
    out = work / f"dashboard-{n_prompts}-{n_sae}-{n_features}-{int(feature_tables)}.json"
    cmd = [
        str(py), str(DASHBOARD_RUNNER),
        "--model", str(inputs["model"]),
        "--sae", str(inputs["saes"][n_sae]),
        "--tokens", str(inputs["tokens"]),
        "--prompts", str(n_prompts),
        "--features", str(n_features),
        "--check", str(CHECK_FEATURES),
        "--out", str(out),
        "--warmup-prompts", str(warmup_prompts),
        "--repeat", str(repeat),
    ] + ([] if feature_tables else ["--no-feature-tables"])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"SAEDashboard runner failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    result["seconds"] = sum(result["batch_seconds"])
    return result


def extrapolate_dashboard(result: dict, all_features: int) -> float:
    """Seconds for all_features, from a run over the first result['features'] features.

    The first batch runs the forward passes and writes the activation cache; later batches read it,
    so the remaining batches are costed at the mean of the measured later batches."""
    batches = result["batch_seconds"]
    per_batch = result["features_per_batch"]
    n_batches = -(-all_features // per_batch)
    later = batches[1:] or batches
    return batches[0] + (n_batches - 1) * (sum(later) / len(later))


# ----------------------------------------------------------------------------- ours


# What the engine spends its time on: (module or class, attribute, label). Exclusive time: a stage's
# time excludes the stages it calls. Functions missing from the engine are skipped.
def _stage_targets() -> list[tuple[object, str, str]]:
    import sae_atlas.backends.transformer_lens_ce as ce
    import sae_atlas.compute.engine as engine
    import sae_atlas.compute.correlation as correlation
    import sae_atlas.compute.stats as stats
    import sae_atlas.compute.weights as weights
    from sae_atlas.backends.saelens_files import FileSae
    from sae_lens import StandardSAE

    targets = [
        (engine, "load_corpus", "load corpus"),
        (engine, "load_model", "load model"),
        (engine, "_start", "load SAE"),
        (engine, "_forward_capture", "model forward"),
        (StandardSAE, "encode", "SAE encode/decode"),
        (StandardSAE, "decode", "SAE encode/decode"),
        (FileSae, "encode", "SAE encode/decode"),  # what the engine runs a SAELens-format SAE with
        (FileSae, "decode", "SAE encode/decode"),
        (engine, "_encode", "SAE encode/decode"),
        (engine, "_decode", "SAE encode/decode"),
        (getattr(stats, "SparseActs", None), "from_dense", "firing entries"),
        (getattr(stats, "SparseActs", None), "concat", "firing entries"),
        (getattr(stats, "SparseActs", None), "split", "firing entries"),
        (getattr(engine, "FeatureStats", None), "update_pass1", "stats pass 1 (max, counts, top-k)"),
        (getattr(engine, "FeatureStats", None), "update_pass2", "stats pass 2 (histogram, intervals)"),
        (correlation.NeuronCorrelation, "update", "correlated neurons"),
        (engine, "_correlate_features", "correlated features"),
        (engine, "_run_pass", "pass loop (rest)"),
        (engine, "_save_checkpoint", "checkpoints"),
        (ce, "_ce_clean", "CE loss clean"),
        (ce, "_ce_spliced", "CE loss spliced"),
        (ce, "ce_losses", "CE loss (rest)"),
        (engine, "logit_effects", "logits"),
        (engine, "cosine_neighbours", "neighbours"),
        (weights, "umap_coords", "UMAP"),  # imported from weights when the map statistic runs
        (weights, "cluster_ids", "clusters"),
        (engine, "write_entry", "write cache entry"),
    ]
    return [(owner, attr, label) for owner, attr, label in targets if owner is not None and callable(getattr(owner, attr, None))]


LOADING = ("load corpus", "load model")  # not timed on either side
PASS_STAGES = (
    "model forward", "SAE encode/decode", "firing entries", "stats pass 1 (max, counts, top-k)",
    "correlated neurons", "stats pass 2 (histogram, intervals)", "pass loop (rest)",
)
CORRELATION_STAGES = ("correlated neurons", "correlated features")
CE_STAGES = ("CE loss clean", "CE loss spliced", "CE loss (rest)")
# What SAEDashboard does not compute: the like-for-like time leaves them out.
NOT_IN_DASHBOARD = (*CE_STAGES, "UMAP", "clusters")


@contextmanager
def stage_timers(sync: bool = False) -> Iterator[dict[str, float]]:
    """Patches the engine's stages with exclusive timers; sync: wait for the GPU at each boundary."""
    import torch

    clock = (lambda: (torch.cuda.synchronize(), time.perf_counter())[1]) if sync else time.perf_counter
    times: dict[str, float] = {}
    stack: list[float] = []  # time spent in timed callees of each open stage

    def wrap(label: str, fn):
        def timed(step):
            def one(*a, **kw):
                stack.append(0.0)
                t0 = clock()
                try:
                    return step(*a, **kw)
                finally:
                    total = clock() - t0
                    inner = stack.pop()
                    times[label] = times.get(label, 0.0) + total - inner
                    if stack:
                        stack[-1] += total

            return one

        if not inspect.isgeneratorfunction(fn):
            return timed(fn)

        def timed_steps(*a, **kw):  # a generator's body runs at each step, not at the call: time the steps
            steps = fn(*a, **kw)
            while True:
                try:
                    item = timed(steps.__next__)()
                except StopIteration:
                    return
                yield item

        return timed_steps

    patched = []  # (owner, attr, own value or None when inherited)
    for owner, attr, label in _stage_targets():
        patched.append((owner, attr, vars(owner).get(attr)))
        setattr(owner, attr, wrap(label, getattr(owner, attr)))
    try:
        yield times
    finally:
        for owner, attr, own in reversed(patched):
            if own is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, own)


def write_release(inputs: dict, n_sae: int, n_prompts: int) -> Path:
    """A one-SAE release manifest over the benchmark inputs, in the content format."""
    root = inputs["root"]
    name = f"bench-{n_prompts}-{n_sae}"
    from sae_atlas.backends.transformer_lens import hook_layer

    layer = hook_layer(inputs["hook"])
    site = inputs["hook"].removeprefix(f"blocks.{layer}.")
    path = root / "releases" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"release: {name}\n"
        f"title: Benchmark {n_prompts} prompts x {n_sae} features\n"
        f"model: {{id: bench-model, path: ../model}}\n"
        f"corpus: {{path: ../corpus.jsonl, prompts: {n_prompts}, context: {inputs['context']}}}\n"
        f"sets:\n"
        f"  - id: bench\n"
        f"    title: Benchmark SAEs\n"
        f"    hook: blocks.{{layer}}.{site}\n"
        f"    saes:\n"
        f"      - {{layer: {layer}, path: ../saes/{n_sae}}}\n"
    )
    return path


def measure_floor(inputs: dict, n_sae: int, n_prompts: int, repeat: int = 2) -> dict:
    """The least any engine must do here: one forward of the model to the hook over the tokens and
    the encoder's bare matrix product (x @ W_enc, no bias, no activation function, nothing kept),
    in the engine's CPU batches and row blocks. Best of `repeat`."""
    import torch
    from sae_atlas.compute.engine import _forward_capture
    from sae_atlas.compute.options import chunk_elements
    from sae_atlas.compute.options import default_batch_size
    from sae_atlas.manifest import load_release
    from sae_atlas.sources.model import load_model
    from sae_atlas.sources.sae import load_sae

    release = load_release(write_release(inputs, n_sae, n_prompts))
    spec = release.saes()[0]
    tokens = torch.from_numpy(np.load(inputs["tokens"])[:n_prompts].astype(np.int64))
    batch = default_batch_size("cpu", inputs["context"])
    # The product in row blocks as the engine encodes (its output stays in cache: faster than one
    # product per batch at 4,096 features).
    rows = max(1, chunk_elements("cpu") // n_sae // inputs["context"]) * inputs["context"]
    with torch.inference_mode():
        model = load_model(release.model, "cpu", "float32")
        w_enc = load_sae(spec, "cpu", "float32").module.W_enc.detach()
        best = {"forward": float("inf"), "encoder matmul": float("inf")}
        for _ in range(max(1, repeat)):
            fwd = mm = 0.0
            for lo in range(0, n_prompts, batch):
                t0 = time.perf_counter()
                x = _forward_capture(model, tokens[lo : lo + batch], [inputs["hook"]])[inputs["hook"]]
                t1 = time.perf_counter()
                x = x.reshape(-1, x.shape[-1])
                for r0 in range(0, x.shape[0], rows):
                    x[r0 : r0 + rows] @ w_enc
                t2 = time.perf_counter()
                fwd, mm = fwd + t1 - t0, mm + t2 - t1
            best = {"forward": min(best["forward"], fwd), "encoder matmul": min(best["encoder matmul"], mm)}
    best["total"] = best["forward"] + best["encoder matmul"]
    return best


def like_for_like(r: dict) -> float:
    """Our seconds without the stages SAEDashboard does not compute (CE loss, UMAP, clusters)."""
    return r["seconds"] - sum(r["stages"].get(k, 0.0) for k in NOT_IN_DASHBOARD)


@contextmanager
def correlations_off() -> Iterator[None]:
    """The engine without its correlated neurons and features (as SAEDashboard without
    FeatureTablesConfig): their updates and scans skipped, their arrays left empty."""
    import sae_atlas.compute.correlation as correlation
    import sae_atlas.compute.engine as engine

    def no_scan(r, *args, **kwargs):
        f = r.sae.d_sae
        r.extra.update(corr_feature_index=np.full((f, engine.CORRELATED_FEATURES), -1, np.int32),
                       corr_feature_value=np.zeros((f, engine.CORRELATED_FEATURES), np.float32))

    saved = engine._correlate_features, correlation.NeuronCorrelation.update
    engine._correlate_features, correlation.NeuronCorrelation.update = no_scan, lambda self, acts, x: None
    try:
        yield
    finally:
        engine._correlate_features, correlation.NeuronCorrelation.update = saved


def run_ours(inputs: dict, n_sae: int, n_prompts: int, cache: Path, device: str = "cpu", correlations: bool = True) -> dict:
    """compute_releases on a one-SAE release with a fresh cache; seconds exclude loading the model and
    the corpus (as on SAEDashboard's side) but include everything else, UMAP and writing the entry.
    correlations=False: without the correlated neurons and features (`correlations_off`)."""
    if not correlations:
        with correlations_off():
            return run_ours(inputs, n_sae, n_prompts, cache, device)
    from sae_atlas.cache import CacheStore, sae_key
    from sae_atlas.compute import ComputeOptions, compute_releases
    from sae_atlas.manifest import load_release

    release = load_release(write_release(inputs, n_sae, n_prompts))
    spec = release.saes()[0]
    if cache.exists():
        shutil.rmtree(cache)
    options = ComputeOptions(device=device, quiet=True)
    with stage_timers(sync=device == "cuda") as stages, contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        compute_releases([release], cache, options)
        wall = time.perf_counter() - t0
    seconds = wall - sum(stages.get(name, 0.0) for name in LOADING)
    entry = CacheStore(cache).sae_entry(sae_key(release, spec))
    if entry is None:
        raise SystemExit(f"SAE Atlas wrote no cache entry for {spec.id}")
    a = entry.arrays
    checked = {
        f: {
            "max_activation": float(a["max_activation"][f]),
            "density": float(a["density"][f]),
            "top_prompt": int(a["top_prompt"][f, 0]),
            "top_position": int(a["top_position"][f, 0]),
        }
        for f in range(min(CHECK_FEATURES, n_sae))
    }
    stages["other"] = max(0.0, wall - sum(stages.values()))
    return {"seconds": seconds, "wall": wall, "stages": stages, "checked": checked}


# ----------------------------------------------------------------------------- report


def compare_top(ours: dict, theirs: dict) -> list[str]:
    """Problems where the two disagree on the first CHECK_FEATURES features."""
    problems = []
    for key, t in theirs["checked"].items():
        f = int(key)
        o = ours["checked"][f]
        if t["max_activation"] <= 0 and o["max_activation"] <= 0:
            continue
        rel = abs(o["max_activation"] - t["max_activation"]) / max(abs(t["max_activation"]), 1e-12)
        if rel > REL_TOL:
            problems.append(f"feature {f}: max activation {o['max_activation']:.6g} vs {t['max_activation']:.6g}")
        if (o["top_prompt"], o["top_position"]) != (t["top_prompt"], t["top_position"]):
            problems.append(
                f"feature {f}: top example (prompt, position) {(o['top_prompt'], o['top_position'])}"
                f" vs {(t['top_prompt'], t['top_position'])}"
            )
    return problems


def line(label: str, tokens: int, features: int, seconds: float) -> str:
    return (
        f"  {label:<13} {tokens:>8,} tok x {features:>5,} feat  {seconds:9.2f} s"
        f"  {tokens / seconds:>12,.0f} tokens/s  {features / seconds:>9,.1f} features/s"
    )


def warm_umap(n_points: int) -> None:
    import torch
    from sae_atlas.compute.weights import umap_coords

    umap_coords(torch.randn(n_points, D_MODEL, generator=torch.Generator().manual_seed(0)), 15, 0)


def best_of(n: int, run) -> dict:
    return min((run() for _ in range(max(1, n))), key=lambda r: r["seconds"])


def stage_line(stages: dict[str, float]) -> str:
    total = sum(stages.values()) or 1.0
    parts = sorted(stages.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {sec:.2f} s ({sec / total:.0%})" for name, sec in parts if sec >= 0.005)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads on both sides")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement on both sides (the fastest counts)")
    ap.add_argument("--density", type=float, default=0.01, help="fraction of tokens each random feature fires on")
    ap.add_argument(
        "--correlations", choices=("both", "on", "off"), default="both",
        help="SAEDashboard's FeatureTablesConfig and our correlated neurons and features: on on both sides, off on both, or both settings",
    )
    ap.add_argument("--ours-only", action="store_true", help="skip SAEDashboard: our times and the floor only")
    ap.add_argument("--no-scaling", action="store_true", help="skip our scaling with tokens and features")
    ap.add_argument("--json", type=Path, help="also write all measurements here")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    settings = {"both": (True, False), "on": (True,), "off": (False,)}[args.correlations]

    import torch

    torch.set_num_threads(args.threads)
    big_tokens, big_features = plan.big
    sae_sizes = sorted({*plan.feature_steps, plan.base_features, big_features})
    max_prompts = max(*plan.token_steps, big_tokens) // CONTEXT
    base_prompts = plan.base_tokens // CONTEXT
    sizes = ((plan.base_tokens, plan.base_features), plan.big)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, {args.threads} threads,"
        f" cuda {'available' if torch.cuda.is_available() else 'absent'} (both sides run on the cpu);"
        f" {time.strftime('%Y-%m-%d')}; load average {os.getloadavg()[0]:.1f} at start"
    )
    dashboard_py = None if args.ours_only else ensure_dashboard_venv()
    label = {True: "correlations on", False: "correlations off"}

    with tempfile.TemporaryDirectory(prefix="bench-compute-") as tmp:
        work = Path(tmp)
        inputs = build_inputs(work / "inputs", max_prompts, sae_sizes, density=args.density)
        cache = work / "cache"
        print(
            f"model: random 2-layer TransformerLens, d_model {D_MODEL}, vocab {D_VOCAB:,}; SAE: random StandardSAE on"
            f" {HOOK}, d_sae {', '.join(map(str, sae_sizes))}, each feature firing on ~{args.density:.0%} of tokens;"
            f" random prompts of {CONTEXT} tokens; best of {args.repeat} runs on both sides, after a warm-up on both"
        )

        theirs: dict[tuple[bool, tuple[int, int]], dict] = {}
        n_sub = min(plan.dashboard_big_features, big_features)
        if dashboard_py is not None and False in settings:
            print(
                "\nSAEDashboard 0.8.0 cannot turn its correlations off: SaeVisRunner needs a FeatureTablesConfig and"
                " updates its RollingCorrCoef of neurons and features whatever the layout says (feature_data_generator);"
                " so SAEDashboard runs with its correlations only, and the correlations-off setting is ours against the floor."
            )
        if dashboard_py is not None:
            for corr in (c for c in settings if c):
                tables = "with" if corr else "without"
                print(f"\nSAEDashboard 0.8.0 (SaeVisRunner with Neuronpedia's layout and batching, {tables} FeatureTablesConfig):", flush=True)
                for n_tok, n_feat in sizes:
                    n_run = n_feat if (n_tok, n_feat) != plan.big else n_sub
                    r = run_dashboard(dashboard_py, inputs, n_feat, n_tok // CONTEXT, n_run, work, args.threads, corr, repeat=args.repeat)
                    r["total"] = extrapolate_dashboard(r, n_feat)
                    theirs[corr, (n_tok, n_feat)] = r
                    print(line("measured", n_tok, n_run, r["seconds"]), flush=True)
                    if n_run < n_feat:
                        n_batches = -(-n_feat // r["features_per_batch"])
                        print(line("extrapolated", n_tok, n_feat, r["total"]))
                        print(
                            f"    extrapolated, not measured: SAEDashboard ran the first {n_run} of {n_feat:,} features in"
                            f" batches of {r['features_per_batch']} ({', '.join(f'{x:.1f}' for x in r['batch_seconds'])} s);"
                            f" the estimate is the first batch (forward passes, activation cache) + {n_batches - 1} x the mean later batch",
                            flush=True,
                        )

        print("\nSAE Atlas (sae_atlas.compute.compute_releases, device cpu, default compute settings):", flush=True)
        # Warm-up: UMAP compiles its numba code on first use in a process (exact neighbours below 4,096
        # points, NN-descent from 4,096 up), the correlated features their kernel; that one-time cost
        # is shown, not charged to a size (SAEDashboard's runner warms up likewise, untimed).
        t0 = time.perf_counter()
        run_ours(inputs, min(sae_sizes), 8, cache)
        warm_umap(max(sae_sizes))
        print(f"  (one-time warm-up in this process, not counted: {time.perf_counter() - t0:.1f} s)", flush=True)
        ours: dict[tuple[bool, tuple[int, int]], dict] = {}
        for corr in settings:
            print(f"  {label[corr]}:")
            for n_tok, n_feat in sizes:
                r = best_of(args.repeat, lambda: run_ours(inputs, n_feat, n_tok // CONTEXT, cache, correlations=corr))
                ours[corr, (n_tok, n_feat)] = r
                print(line("measured", n_tok, n_feat, r["seconds"]))
                print(f"    stages: {stage_line(r['stages'])}", flush=True)
        print(
            f"    (best of {args.repeat}; times exclude loading the model and the corpus, as on SAEDashboard's side,"
            " and include everything else: both passes, CE loss, logits, neighbours, UMAP, clusters, cache writes)"
        )

        def scaling_row(label: str, r: dict, first: dict) -> str:
            st = r["stages"]
            return (
                f"  {label:<17} {r['seconds']:8.2f} s  x{r['seconds'] / first['seconds']:5.2f}"
                f"   passes {sum(st.get(k, 0.0) for k in PASS_STAGES):7.2f} s (model forward {st.get('model forward', 0.0):6.2f} s)"
                f"   fixed per SAE: CE loss {sum(st.get(k, 0.0) for k in CE_STAGES):5.2f} s,"
                f" UMAP {st.get('UMAP', 0.0):5.2f} s"
            )

        token_scaling, feature_scaling = [], []
        if not args.no_scaling:
            corr = settings[0]
            print(f"\nscaling of ours with tokens ({plan.base_features:,} features, {label[corr]}):")
            for n_tok in plan.token_steps:
                r = ours.get((corr, (n_tok, plan.base_features))) or best_of(
                    args.repeat, lambda: run_ours(inputs, plan.base_features, n_tok // CONTEXT, cache, correlations=corr)
                )
                token_scaling.append({"tokens": n_tok, **r})
                print(scaling_row(f"{n_tok:,} tokens", r, token_scaling[0]), flush=True)
            print(f"scaling of ours with features ({plan.base_tokens:,} tokens, {label[corr]}):")
            for n_feat in plan.feature_steps:
                r = ours.get((corr, (plan.base_tokens, n_feat))) or best_of(
                    args.repeat, lambda: run_ours(inputs, n_feat, base_prompts, cache, correlations=corr)
                )
                feature_scaling.append({"features": n_feat, **r})
                print(scaling_row(f"{n_feat:,} features", r, feature_scaling[0]), flush=True)

        problems: list[str] = []
        if theirs:
            for key, t in theirs.items():
                problems += compare_top(ours[key], t)
            if problems:
                print(f"\nMISMATCH in top activations ({len(problems)} problems):")
                for p in problems[:20]:
                    print("  " + p)
            else:
                print(
                    f"\ntop activations agree on {sum(len(t['checked']) for t in theirs.values())} checks (first {CHECK_FEATURES}"
                    f" features, both sizes): max activation within {REL_TOL:g} relative and the same top (prompt, position)"
                )

        floors = {}
        for n_tok, n_feat in sizes:
            fl = measure_floor(inputs, n_feat, n_tok // CONTEXT, repeat=args.repeat)
            floors[f"{n_tok}x{n_feat}"] = fl
            print(
                f"floor at {n_tok:,} x {n_feat:,}: one model forward to the hook {fl['forward']:.2f} s + the encoder's bare"
                f" matmul {fl['encoder matmul']:.2f} s = {fl['total']:.2f} s (best of {args.repeat})"
            )
        summary = {}
        print("\nratios (SAEDashboard / ours: how much faster we are; ours / floor: how far above the floor we are):")
        for corr in settings:
            for n_tok, n_feat in sizes:
                size = (n_tok, n_feat)
                r, fl = ours[corr, size], floors[f"{n_tok}x{n_feat}"]["total"]
                lfl = like_for_like(r)
                row = {"ours": r["seconds"], "like_for_like": lfl, "floor": fl, "ours_over_floor": r["seconds"] / fl, "like_for_like_over_floor": lfl / fl}
                text = (
                    f"  {label[corr]}, {n_tok:,} x {n_feat:,}: ours {r['seconds']:.2f} s = {r['seconds'] / fl:.2f}x the floor;"
                    f" like for like (without CE loss, UMAP, clusters) {lfl:.2f} s = {lfl / fl:.2f}x the floor"
                )
                if (corr, size) in theirs:
                    t = theirs[corr, size]["total"]
                    row.update(dashboard=t, speedup=t / r["seconds"], speedup_like_for_like=t / lfl, dashboard_over_floor=t / fl)
                    extra = " (SAEDashboard extrapolated)" if size == plan.big and n_sub < n_feat else ""
                    text += f"; SAEDashboard {t:.2f} s{extra} -> {t / r['seconds']:.1f}x, like for like {t / lfl:.1f}x, floor bound {t / fl:.0f}x"
                summary[f"{label[corr]} {n_tok}x{n_feat}"] = row
                print(text)
        big_key = f"{label[settings[0]]} {big_tokens}x{big_features}"
        print(f"ours_over_floor={summary[big_key]['ours_over_floor']:.2f} like_for_like_over_floor={summary[big_key]['like_for_like_over_floor']:.2f}"
              f" ({big_tokens:,} x {big_features:,}, {label[settings[0]]})")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "plan": plan.__dict__,
                        "dashboard": {f"{label[c]} {t}x{f}": v for (c, (t, f)), v in theirs.items()},
                        "ours": {f"{label[c]} {t}x{f}": v for (c, (t, f)), v in ours.items()},
                        "token_scaling": token_scaling,
                        "feature_scaling": feature_scaling,
                        "problems": problems,
                        "floors": floors,
                        "summary": summary,
                    },
                    indent=1,
                    default=str,
                )
            )
        print(f"load average {os.getloadavg()[0]:.1f} at the end (other work on the machine skews both sides)")
        base_key = f"{label[settings[0]]} {plan.base_tokens}x{plan.base_features}"
        if "speedup" in summary[base_key]:
            print(f"speedup_vs_saedashboard={summary[base_key]['speedup']:.1f}")
        if problems:
            sys.exit(1)


if __name__ == "__main__":
    main()

"""What the user waits for: `sae-atlas compute` from a cold process, against the work's floor.

    make bench-cold                          # 512 and 2,048 prompts (a few minutes on an idle 2-core CPU)
    make bench-cold ARGS="--prompts 512"     # one shape only

A random 2-layer TransformerLens model (d_model 128, GPT-2 vocabulary size), two random SAELens
StandardSAEs of 2,048 features on blocks.0 and blocks.1.hook_resid_pre (features fire on about 1%
of tokens) and random prompts of 128 tokens, built with `compute_vs_saedashboard.build_inputs`.
Each shape runs `python -X importtime -m sae_atlas compute` as a subprocess on a fresh cache, once to
warm the machine's caches (numba's on-disk JIT cache, the page cache) and once timed: the wall time
of the whole process is the headline. A driver (`_cold_driver.py`) inside the timed process records
when the CLI starts and patches the engine's stages with exclusive timers (wall and the process's CPU
time, so that a stage's cores in use show); `-X importtime` gives the
import time of the process and of its heavy packages.

The floor is measured in this process: one forward of the model to blocks.1 (the deeper hook) over
the tokens plus both encoders' bare matrix products, as `compute_vs_saedashboard.measure_floor`
measures it. The script ends with `cold_compute_ratio=X` (wall / floor at the first shape).

`--baseline DIR` also times another checkout of this project (DIR, with its virtual environment in
DIR/.venv) on the same inputs and this one, each as a user runs it (`python -m sae_atlas compute`, no
driver), alternately `--repeat` times after one warm-up each, and prints the wall times side by side
and `cold_compute_vs_baseline=X` (our median / the baseline's median at the first shape).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from compute_vs_saedashboard import add_layer0_sae, build_inputs, measure_floor  # noqa: E402

D_SAE = 2048
DRIVER = BENCH / "_cold_driver.py"
# Packages whose import time is reported (inclusive: they nest).
PACKAGES = ("sae_lens", "transformer_lens", "transformers", "umap", "torch")


def build(root: Path, n_prompts: int) -> Path:
    """The fixture under root: model, corpus, two SAEs (blocks.0 and blocks.1) and a content dir."""
    add_layer0_sae(build_inputs(root / "inputs", n_prompts, [D_SAE], hook="blocks.1.hook_resid_pre"), D_SAE)
    releases = root / "content" / "releases"
    releases.mkdir(parents=True)
    (releases / "cold.yaml").write_text(
        "release: cold\n"
        "title: Cold compute benchmark\n"
        "model: {id: bench-model, path: ../../inputs/model}\n"
        f"corpus: {{path: ../../inputs/corpus.jsonl, prompts: {n_prompts}, context: 128}}\n"
        "sets:\n"
        "  - id: res\n"
        "    title: Residual stream\n"
        "    hook: blocks.{layer}.hook_resid_pre\n"
        "    saes:\n"
        "      - {layer: 0, path: ../../inputs/saes/l0}\n"
        f"      - {{layer: 1, path: ../../inputs/saes/{D_SAE}}}\n"
    )
    return root


def import_times(stderr: str) -> dict[str, float]:
    """From `-X importtime` output: seconds of each package of PACKAGES's first import, inclusive of
    what it imported (they nest: transformer_lens imports transformers and torch), and "all" (every
    top-level import of the process)."""
    out: dict[str, float] = {"all": 0.0}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, raw = line.split("|")
        if not cum.strip().isdigit():
            continue
        name = raw.strip()
        if raw.startswith(" ") and not raw.startswith("  "):  # a top-level import
            out["all"] += int(cum) / 1e6
        if name in PACKAGES and name not in out:
            out[name] = int(cum) / 1e6
    return out


def run_compute(root: Path, threads: int | None) -> dict:
    """One `sae-atlas compute` on a fresh cache as a subprocess; its wall time, stages and imports."""
    cache = root / "cache"
    if cache.exists():
        shutil.rmtree(cache)
    stages_file = root / "stages.json"
    cmd = [sys.executable, "-X", "importtime", str(DRIVER), str(stages_file), "compute",
           "--content", str(root / "content"), "--cache", str(cache), "--device", "cpu", "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env["SAE_ATLAS_BENCH_LAUNCHED"] = repr(time.time())
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"sae-atlas compute failed ({done.returncode})")
    result = json.loads(stages_file.read_text())
    result["wall"] = wall
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["imports"] = import_times(done.stderr)
    return result


def run_plain(python: Path, cwd: Path, root: Path, threads: int | None) -> float:
    """Wall seconds of one `python -m sae_atlas compute` (another checkout's) on a fresh cache."""
    cache = root / "cache"
    if cache.exists():
        shutil.rmtree(cache)
    cmd = [str(python), "-m", "sae_atlas", "compute", "--content", str(root / "content"), "--cache", str(cache),
           "--device", "cpu", "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the baseline's sae-atlas compute failed ({done.returncode})")
    return wall


def compare(n_prompts: int, root: Path, baseline: Path, threads: int | None, repeat: int) -> float:
    """Ours and the baseline's, each as a user runs it (`run_plain`), alternating; returns our
    median / theirs."""
    python = baseline / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python}: no virtual environment in the baseline checkout (run `make install` there)")
    ours, theirs = [], []
    run_plain(python, baseline, root, threads)  # its warm-up
    for _ in range(repeat):
        theirs.append(run_plain(python, baseline, root, threads))
        ours.append(run_plain(Path(sys.executable), BENCH.parent, root, threads))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    ratio = med(ours) / med(theirs)
    print(f"\n{n_prompts} prompts, whole process, wall: ours {' / '.join(f'{x:.2f}' for x in ours)} s, "
          f"baseline ({baseline}) {' / '.join(f'{x:.2f}' for x in theirs)} s; medians {med(ours):.2f} / {med(theirs):.2f} s = {ratio:.2f}x")
    return ratio


def report(n_prompts: int, r: dict, floor: dict) -> float:
    stages = r["stages"]
    print(f"\n{n_prompts} prompts x 128 tokens ({n_prompts * 128:,} tokens), 2 SAEs x {D_SAE:,} features")
    print(f"  wall (whole process)           {r['wall']:7.2f} s")
    print(f"  CPU time (user + sys)          {r['cpu']:7.2f} s")
    print(f"  launch to the driver           {r['cli_start']:7.2f} s")
    print(f"  driver's imports, patching     {r['patching']:7.2f} s")
    for name, s in r["imports"].items():
        print(f"  import {name + (' (every import)' if name == 'all' else ''):<23} {s:7.2f} s")
    cpu = r.get("stage_cpu", {})
    for name, s in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<30} {s:7.2f} s" + (f"   CPU {cpu[name]:6.2f} s ({cpu[name] / s:.1f} cores)" if name in cpu and s > 0.05 else ""))
    untimed = r["cli_seconds"] - sum(stages.values())
    exit_ = r["wall"] - r["cli_start"] - r["patching"] - r["cli_seconds"]
    print(f"  the rest of the CLI            {untimed:7.2f} s  (its imports included)")
    print(f"  process exit                   {exit_:7.2f} s")
    total_floor = floor["forward"] + 2 * floor["encoder matmul"]
    ratio = r["wall"] / total_floor
    print(f"  floor: forward {floor['forward']:.2f} s + 2 encoder matmuls {2 * floor['encoder matmul']:.2f} s = {total_floor:.2f} s")
    print(f"  pass 1 {stages.get('pass 1', 0.0):.2f} s; ratio to floor {ratio:.1f}x")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, action="append", default=None, help="shapes to run (default: 512 and 2048)")
    ap.add_argument("--threads", type=int, default=None, help="--threads of sae-atlas compute (default: torch's own)")
    ap.add_argument("--keep", type=Path, default=None, help="build the fixtures here and keep them")
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout of this project, with DIR/.venv, timed alternately")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each version with --baseline (default 3)")
    args = ap.parse_args()
    shapes = args.prompts or [512, 2048]
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, {os.cpu_count()} CPUs")
    base = args.keep or Path(tempfile.mkdtemp(prefix="sae-atlas-cold-"))
    ratios, versus = [], []
    try:
        for n in shapes:
            root = base / f"p{n}"
            if not (root / "content").exists():
                if root.exists():
                    shutil.rmtree(root)
                build(root, n)
            run_compute(root, args.threads)  # warm-up: numba's cache, the page cache
            r = run_compute(root, args.threads)
            inputs = {"root": root / "inputs", "tokens": root / "inputs" / "tokens.npy", "hook": "blocks.1.hook_resid_pre", "context": 128}
            floor = measure_floor(inputs, D_SAE, n)
            ratios.append(report(n, r, floor))
            if args.baseline is not None:
                versus.append(compare(n, root, args.baseline.resolve(), args.threads, args.repeat))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"cold_compute_ratio={ratios[0]:.2f}")
    if versus:
        print(f"cold_compute_vs_baseline={versus[0]:.2f}")


if __name__ == "__main__":
    main()

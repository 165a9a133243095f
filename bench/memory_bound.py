"""Peak memory of `sae-atlas compute` against its bound: the replay budget plus a working set.

    make bench-memory                                # 4 shapes x 2 runs: a few minutes on an idle 2-core CPU
    make bench-memory ARGS="--prompts 64 256 --replay-memory 64M"

`sae-atlas compute` runs as a subprocess on a fresh cache for a dense SAE (each feature fires on
about half the tokens) and a sparse one (1%), each at two corpus lengths, once with
`--replay-memory` (the budget) and once with `--replay-memory 0` (the peer: the same work with
nothing kept, whose peak is the process's base plus its working set). The fixture is
`compute_vs_saedashboard.build_inputs`'s: a random 2-layer model (d_model 128, GPT-2 vocabulary
size), one random StandardSAE on blocks.1.hook_resid_pre (`--sae-count 2`: and one on
blocks.0.hook_resid_pre), random prompts of 128 tokens.

Per run it prints the child's peak RSS (its own rusage, started from a small launcher: see
tests/peak_rss.py for why a child of this process would report this process's RSS) and the bound the
engine states at the start of the passes ("memory bound ...": the memory in use then + the replay
budget + `replay.working_set`, an upper bound of the passes' working set for the batch size and
the SAE's width), and two ratios: peak / stated bound, and peak / (peak without replay + budget),
the replay's real cost against its budget (about 1.00 where the budget binds: two processes' peaks
differ by 10-20 MiB from run to run). Ends with `replay_cost_ratio=X` and `memory_bound_ratio=X`,
the largest peak / stated bound, which must stay at or below 1.00 (the exit status says whether it did).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from compute_vs_saedashboard import add_layer0_sae, build_inputs  # noqa: E402
from tests import peak_rss  # noqa: E402

HOOK = "blocks.1.hook_resid_pre"
BOUND_LINE = re.compile(r"memory bound ([\d,]+) MiB: (?:([\d,]+) MiB in use \+ )?replay budget ([\d,]+) MiB.*working set ([\d,]+) MiB")
REPLAY_LINE = re.compile(r"pass 2 replayed (\d+) of (\d+) SAE batches from memory \(([\d,.]+) MiB at most")


def size(text: str) -> int | None:
    """A size such as 64M, or "default" (None: the engine's default budget, no --replay-memory)."""
    if text.strip().lower() == "default":
        return None
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 64M")
    return int(float(m.group(1)) * units[m.group(2)])


def build(root: Path, n_prompts: int, d_sae: int, density: float, count: int = 1) -> Path:
    """A content dir under root: `count` SAEs (1 or 2: on blocks.1, then blocks.0) of d_sae features
    firing on about `density` of the tokens."""
    inputs = build_inputs(root / "inputs", n_prompts, [d_sae], hook=HOOK, density=density)
    layers = [1]
    if count > 1:
        add_layer0_sae(inputs, d_sae, density)
        layers.append(0)
    releases = root / "content" / "releases"
    releases.mkdir(parents=True)
    (releases / "mem.yaml").write_text(
        "release: mem\n"
        "title: Memory bound benchmark\n"
        "model: {id: bench-model, path: ../../inputs/model}\n"
        f"corpus: {{path: ../../inputs/corpus.jsonl, prompts: {n_prompts}, context: 128}}\n"
        "sets:\n"
        "  - id: res\n"
        "    title: Residual stream\n"
        "    hook: blocks.{layer}.hook_resid_pre\n"
        "    saes:\n"
        + "".join(f"      - {{layer: {layer}, path: ../../inputs/saes/{d_sae if layer == 1 else 'l0'}}}\n" for layer in layers)
    )
    return root / "content"


def run_compute(content: Path, cache: Path, replay_memory: int | None, threads: int | None) -> dict:
    """`sae-atlas compute` as a child process: its peak RSS (rusage), wall time and stated bound
    (replay_memory None: the default budget)."""
    argv = [sys.executable, "-m", "sae_atlas", "compute", "--content", str(content), "--cache", str(cache), "--device", "cpu"]
    if replay_memory is not None:
        argv += ["--replay-memory", str(replay_memory)]
    if threads:
        argv += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    done, peak = peak_rss.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    log = done.stderr
    if done.returncode != 0:
        raise SystemExit(f"sae-atlas compute failed ({done.returncode}):\n{log[-4000:]}")
    out = {"peak": peak, "wall": wall}
    m = BOUND_LINE.search(log)  # None from a version of the engine that states no bound
    mib = lambda g: int(g.replace(",", "")) << 20 if g else 0  # noqa: E731
    out.update(bound=None, in_use=None, budget=replay_memory, working_set=None)
    if m is not None:
        out.update(bound=mib(m.group(1)), in_use=mib(m.group(2)), budget=mib(m.group(3)), working_set=mib(m.group(4)))
    r = REPLAY_LINE.search(log)
    out["kept"] = int(float(r.group(3).replace(",", "")) * (1 << 20)) if r else 0
    out["replayed"] = f"{r.group(1)}/{r.group(2)}" if r else "-"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, nargs=2, default=[64, 256], metavar=("SHORT", "LONG"), help="corpus lengths (prompts of 128 tokens)")
    ap.add_argument("--d-sae", type=int, default=1024)
    ap.add_argument("--replay-memory", type=size, default=size("64M"), help='the budget of the runs with replay ("default": the engine\'s own)')
    ap.add_argument("--saes", choices=("dense", "sparse"), nargs="+", default=["dense", "sparse"], help="which SAEs (density 0.5 and 0.01)")
    ap.add_argument("--no-peer", action="store_true", help="skip the runs with --replay-memory 0")
    ap.add_argument("--sae-count", type=int, choices=(1, 2), default=1, help="SAEs per run (2: a second one on blocks.0)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    budget = "the default" if args.replay_memory is None else f"--replay-memory {args.replay_memory >> 20} MiB"
    where = HOOK if args.sae_count == 1 else f"{HOOK} and blocks.0.hook_resid_pre"
    print(f"{args.sae_count} SAE(s): {args.d_sae} features on {where}; prompts of 128 tokens; budget {budget}")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name, density in (("dense", 0.5), ("sparse", 0.01)):
            if name not in args.saes:
                continue
            for n_prompts in args.prompts:
                content = build(Path(tmp) / f"{name}-{n_prompts}", n_prompts, args.d_sae, density, args.sae_count)
                base = None if args.no_peer else run_compute(content, Path(tmp) / f"cache-{name}-{n_prompts}-0", 0, args.threads)
                kept = run_compute(content, Path(tmp) / f"cache-{name}-{n_prompts}-b", args.replay_memory, args.threads)
                rows.append((name, n_prompts, base, kept))
                walls = [r["wall"] for r in (base, kept) if r is not None]
                print(f"  {name} {n_prompts} prompts: done ({' + '.join(f'{w:.0f} s' for w in walls)})", flush=True)

    mib = lambda b: "-" if b is None else f"{b / 2**20:,.0f}"  # noqa: E731
    print()
    print("| SAE | prompts | replay kept (MiB) | peak RSS (MiB) | stated bound (MiB) = in use + budget + working set | peak / bound "
          "| peak, --replay-memory 0 (MiB) | peak / (that + budget) | wall (s) |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    worst = peer_worst = 0.0
    for name, n_prompts, base, kept in rows:
        ratio = kept["peak"] / kept["bound"] if kept["bound"] else None
        peer = None if base is None else kept["peak"] / (base["peak"] + kept["budget"])
        worst, peer_worst = max(worst, ratio or 0.0), max(peer_worst, peer or 0.0)
        print(f"| {name} | {n_prompts} | {mib(kept['kept'])} ({kept['replayed']} batches) | {mib(kept['peak'])} "
              f"| {mib(kept['bound'])} = {mib(kept['in_use'])} + {mib(kept['budget'])} + {mib(kept['working_set'])} "
              f"| {'-' if ratio is None else f'{ratio:.2f}'} | {'-' if base is None else mib(base['peak'])} | {'-' if peer is None else f'{peer:.2f}'} | {kept['wall']:.0f} |")
    print()
    if all(base is not None and base["in_use"] is not None for _, _, base, _ in rows):
        print("peak without replay - memory in use at the start of the passes (the measured working set, MiB):",
              ", ".join(f"{name} {n}: {mib(base['peak'] - base['in_use'])}" for name, n, base, _ in rows))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    # peak / (peak without replay + budget), the largest: two processes' peaks differ by 10-20 MiB
    # from run to run (the heap's layout), so a small budget that binds reads about 1.00 +- 0.02.
    if not args.no_peer:
        print(f"replay_cost_ratio={peer_worst:.2f}")
    print(f"memory_bound_ratio={worst:.2f}")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Memory keeps its bound: the replay store holds no more than its budget, a batch where features
fire densely is handled in runs of prompts, and a `compute` process's peak RSS exceeds that of the
same run without replay by no more than the budget, at a density where every feature fires on
about half the tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_atlas.compute import ComputeOptions, compute_releases
from sae_atlas.compute.stats import SparseActs
from sae_atlas.manifest import load_content
from tests import peak_rss
from tests.fixtures import build_fixture_content

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def dense_content(root: Path, n_prompts: int, context: int, d_sae: int) -> Path:
    """A fixture release of one standard SAE on blocks.1 whose encoder bias is 0: each feature fires
    wherever its pre-activation is positive, on about half the tokens."""
    from safetensors.torch import load_file, save_file

    content = build_fixture_content(
        root, n_prompts=n_prompts, context=context, d_sae=d_sae, corpus="tokens",
        sets=(("res", "blocks.{layer}.hook_resid_post", "standard", (1,)),), explanations=False,
    )
    for path in content.glob("saes/res/1/*.safetensors"):
        weights = load_file(str(path))
        weights["b_enc"].zero_()
        save_file(weights, str(path))
    return content


def test_split_gives_runs_of_whole_prompts_within_the_entry_budget():
    g = torch.Generator().manual_seed(5)
    n_prompts, context, n_features = 7, 5, 6
    dense = torch.rand(n_prompts, context, n_features, generator=g)
    dense = torch.where(dense > 0.4, dense, torch.zeros(()))
    dense[3] = 0  # a prompt where nothing fires
    acts = SparseActs.from_dense(dense.reshape(-1, n_features), 10, context)
    per_prompt = [int((dense[p] > 0).sum()) for p in range(n_prompts)]
    for budget in (1, 12, 25, 40, 10_000):
        parts = acts.split(budget)
        assert [p.first_prompt for p in parts] == [10 + sum(q.n_prompts for q in parts[:i]) for i in range(len(parts))]
        assert sum(p.n_prompts for p in parts) == n_prompts
        at = 0
        for part in parts:
            entries = sum(per_prompt[at : at + part.n_prompts])
            assert part.key.numel() == entries
            assert entries <= budget or part.n_prompts == 1
            # Greedy: the next prompt would not have fit.
            if at + part.n_prompts < n_prompts:
                assert entries + per_prompt[at + part.n_prompts] > budget
            assert torch.equal(part.to_dense().reshape(part.n_prompts, context, n_features), dense[at : at + part.n_prompts])
            at += part.n_prompts
        if budget >= sum(per_prompt):
            assert parts == [acts]


def _reachable_tensors(obj, seen=None) -> list[torch.Tensor]:
    """Every tensor reachable from obj through containers and objects' attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return []
    return [t for item in items for t in _reachable_tensors(item, seen)]


def test_the_replay_keeps_alive_no_more_bytes_than_its_budget(tmp_path, monkeypatch):
    """Everything the store references at the end of pass 2 (its batches and whatever the statistics
    attached to them) fits the budget: the bytes of every distinct storage, counted here."""
    import sae_atlas.compute.engine as engine

    content = dense_content(tmp_path / "fixture", n_prompts=24, context=16, d_sae=256)
    releases = load_content(content)
    budget = 400_000  # room for 4 of the 6 batches of 4 prompts (about 100 kB of entries each)
    held = []
    real_run_pass = engine._run_pass

    def run_pass(pass_no, model, running, corpus, store, options, batch_size, replay):
        done = real_run_pass(pass_no, model, running, corpus, store, options, batch_size, replay)
        storages = {}
        for t in _reachable_tensors(replay):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        held.append((pass_no, sum(storages.values()), replay.budget))
        return done

    monkeypatch.setattr(engine, "_run_pass", run_pass)
    report = compute_releases(releases, tmp_path / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True, batch_size=4, replay_memory=budget))
    assert 2 <= report.replayed < 6  # the budget binds: some batches kept, not all
    assert [p for p, _, _ in held] == [1, 2]
    for pass_no, nbytes, limit in held:
        assert limit == budget
        assert nbytes <= budget, f"after pass {pass_no} the replay keeps {nbytes} bytes alive, budget {budget}"
        assert nbytes >= budget // 2  # and it does keep batches


@pytest.mark.parametrize("replay_memory", [0, None])
def test_statistics_in_runs_of_prompts_equal_those_of_whole_batches(tmp_path, monkeypatch, replay_memory):
    import sae_atlas.compute.engine as engine

    content = dense_content(tmp_path / "fixture", n_prompts=12, context=8, d_sae=64)
    releases = load_content(content)
    options = dict(device="cpu", quiet=True, pca_map=True, batch_size=5, replay_memory=replay_memory)
    compute_releases(releases, tmp_path / "whole", ComputeOptions(**options))
    runs = []
    real_split = SparseActs.split
    monkeypatch.setattr(SparseActs, "split", lambda self, n: runs.append(len(real_split(self, n))) or real_split(self, n))
    monkeypatch.setattr(engine, "entry_budget", lambda device: 1)  # every prompt a run of its own
    compute_releases(releases, tmp_path / "runs", ComputeOptions(**options))
    assert max(runs) == 5
    from tests.test_compute import _assert_same_entries, _entries

    _assert_same_entries(_entries(tmp_path / "whole", releases[0]), _entries(tmp_path / "runs", releases[0]))


# A compute run that prints its resident set when pass 1 starts (after the model and the SAEs load).
CHILD = (
    "import sys\n"
    "from sae_atlas import api\n"
    "import sae_atlas.compute.engine as engine\n"
    "real = engine._run_pass\n"
    "def run_pass(pass_no, *a):\n"
    "    if pass_no == 1:\n"
    "        print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1], flush=True)\n"
    "    return real(pass_no, *a)\n"
    "engine._run_pass = run_pass\n"
    "api.compute(sys.argv[1], sys.argv[2], device='cpu', batch_size=int(sys.argv[3]), replay_memory=int(sys.argv[4]),"
    " threads=1, pca_map=True, quiet=True)\n"
)


def _peak_rss(content: Path, cache: Path, batch_size: int, replay_memory: int) -> tuple[int, int]:
    """(resident set when pass 1 starts, peak resident set) in bytes of a `compute` child process,
    the peak its own (`peak_rss.run`: not the test process's resident set, which a child of it
    would otherwise report as its peak)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done, peak = peak_rss.run([sys.executable, "-c", CHILD, str(content), str(cache), str(batch_size), str(replay_memory)],
                              cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    start = int(done.stdout.split()[0]) * 1024  # KiB on Linux
    assert start < peak, "the peak is the child's own, at least its resident set when pass 1 starts"
    return start, peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB and /proc are Linux's")
def test_peak_rss_exceeds_the_run_without_replay_by_at_most_the_budget(tmp_path):
    """128 prompts x 64 tokens x 1,024 features firing on half the tokens: about 50 MiB of firing
    entries, more than the 40 MiB budget. Keeping batches within the budget may grow the process
    (from its resident set when pass 1 starts to its peak) by at most the budget more than the
    same run without replay grows (its working set); when the store kept each batch's derived
    data too, it grew by twice the budget more."""
    content = dense_content(tmp_path / "fixture", n_prompts=128, context=64, d_sae=1024)
    budget = 40 * MiB
    start_0, peak_0 = _peak_rss(content, tmp_path / "cache-0", 16, 0)
    start_b, peak_b = _peak_rss(content, tmp_path / "cache-b", 16, budget)
    slack = budget // 4  # the heap's layout differs from run to run by about 10-20 MiB here
    growth_0, growth_b = peak_0 - start_0, peak_b - start_b
    assert growth_b <= growth_0 + budget + slack, (
        f"with --replay-memory {budget // MiB}M the process grew by {growth_b / MiB:.1f} MiB, without replay by {growth_0 / MiB:.1f} MiB"
    )


def test_cuda_bound_reads_the_models_device(monkeypatch):
    """On a second GPU the budget and the memory in use are that GPU's (`mem_get_info` and
    `memory_allocated` of its index), not the current device's; the batch size is CUDA's."""
    from types import SimpleNamespace

    from sae_atlas.compute import engine, replay
    from sae_atlas.compute.options import TOKENS_PER_BATCH, default_batch_size

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: asked.append(("free", d)) or (3 * MiB, 8 * MiB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: asked.append(("used", d)) or MiB)
    w_u = SimpleNamespace(device=torch.device("cuda", 1), shape=(16, 32))
    model = SimpleNamespace(unembedding=lambda: w_u)
    device = engine._memory_device(model)
    assert device == "cuda:1"
    assert replay.replay_budget(device, None, working_set=MiB) == int(2 * MiB * replay.BUDGET_FRACTION)
    assert replay.resident_bytes(device) == MiB
    assert asked == [("free", torch.device("cuda", 1)), ("used", torch.device("cuda", 1))]
    assert default_batch_size(device, 128) == default_batch_size("cuda", 128) == TOKENS_PER_BATCH["cuda"] // 128


KERNELS_AT_THE_BOUND = (
    "import sys\n"
    "from sae_atlas import api\n"
    "from sae_atlas.compute import correlation, engine, stats, weights\n"
    "seen = []\n"
    "real = engine.resident_bytes\n"
    "def resident(device):\n"
    "    kernels = [weights._COMPILED.get(f) for f in (stats._count_firing, stats._fill_firing, stats._feature_sort, correlation._co_fire_blocks)]\n"
    "    seen.append(['numba' in sys.modules] + [k is not None and bool(k.signatures) for k in kernels])\n"
    "    return real(device)\n"
    "engine.resident_bytes = resident\n"
    "api.compute(sys.argv[1], sys.argv[2], device='cpu', threads=1, pca_map=True, quiet=True)\n"
    "print(seen)\n"
)


def test_the_memory_in_use_the_bound_states_includes_the_passes_compiled_kernels(tmp_path):
    """On a CPU the passes' compiled kernels (numba and their code: about 130 MiB of resident set)
    are loaded before the memory in use is read for the bound, not by pass 1's first batch after it."""
    content = dense_content(tmp_path / "fixture", n_prompts=8, context=8, d_sae=64)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", KERNELS_AT_THE_BOUND, str(content), str(tmp_path / "cache")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str([[True] * 5])

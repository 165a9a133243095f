"""Work units finer than an SAE (`sae_atlas.compute.units`): the merge of units' partial statistics
against brute force over every token; `compute --shard I/N` processes racing on one cache with
more shards than SAEs (one SAE's units free to go to different processes) give the cache and the site of a
single-process build byte for byte; a shard alone takes over the units nobody holds; a killed
process's unit is taken over and completed."""

from __future__ import annotations

import collections
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_atlas.cache import sae_key
from sae_atlas.compute.stats import FeatureStats, SparseActs
from sae_atlas.compute.units import count_units, shard_pairs, unit_ranges
from sae_atlas.manifest import ComputeSettings, load_content
from tests.test_compute import _sample_priority
from tests.test_concurrency import SETS, entry_names, lock_files
from tests.test_faults import BATCH, ROOT, assert_same_tree, build, partial_states, run_and_kill
from tests.fixtures import build_fixture_content

N_PROMPTS, CONTEXT, D_SAE = 32, 16, 12
UNIT = ["--unit-prompts", "8"]  # 4 units per SAE, 12 (SAE, unit) pairs: more than the 3 SAEs

# The real CLI with checkpoints every 2 batches, logging each cache write as "pid kind/name state"
# lines in $ATLAS_WRITE_LOG (state: "pass:prompts_done" of a work unit's state or checkpoint, "-"
# for a finished entry). A unit's pass 1 ends with state "2:<its first prompt>", pass 2 with "3:...".
LOGGED_CLI = (
    "import functools, os, sys\n"
    "import sae_atlas.cache as cache, sae_atlas.compute as compute\n"
    "import sae_atlas.compute.engine as engine, sae_atlas.sources.corpus as corpus\n"
    "compute.ComputeOptions = functools.partial(compute.ComputeOptions, checkpoint_every=2)\n"
    "original = cache.write_entry\n"
    "def logged(final_dir, meta, *args, **kwargs):\n"
    "    original(final_dir, meta, *args, **kwargs)\n"
    "    state = f\"{meta['pass']}:{meta['prompts_done']}\" if 'pass' in meta else '-'\n"
    "    with open(os.environ['ATLAS_WRITE_LOG'], 'a') as f:\n"
    "        f.write(f'{os.getpid()} {final_dir.parent.name}/{final_dir.name} {state}\\n')\n"
    "engine.write_entry = corpus.write_entry = logged\n"
    "from sae_atlas.cli import main\n"
    # A start line: racing processes begin once all are imported (their imports take seconds, and
    # a process that starts first would otherwise take every unit before the others begin).
    "barrier = os.environ.get('ATLAS_START_BARRIER')\n"
    "if barrier:\n"
    "    import pathlib, time\n"
    "    folder, n = barrier.rsplit(':', 1)\n"
    "    (pathlib.Path(folder) / str(os.getpid())).touch()\n"
    "    deadline = time.monotonic() + 300\n"
    "    while len(list(pathlib.Path(folder).iterdir())) < int(n) and time.monotonic() < deadline:\n"
    "        time.sleep(0.05)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


# -- the merge against brute force ------------------------------------------------------------------


def _brute_window(row: np.ndarray, t: int, before: int, after: int) -> np.ndarray:
    padded = np.concatenate([np.zeros(before), row, np.zeros(after)])
    return padded[t : t + before + 1 + after].astype(np.float16)


def _run_units(acts: np.ndarray, x: np.ndarray, x_hat: np.ndarray, s: ComputeSettings, units: list[tuple[int, int]], batch: int) -> list[FeatureStats]:
    """Each unit's FeatureStats after both passes, pass 2 against the max over all units (as
    `engine._run_unit`), batches of `batch` prompts from each unit's start."""
    p_count, t_count, f_count = acts.shape
    d = x.shape[-1]
    states = []
    for lo, hi in units:
        st = FeatureStats(f_count, d, t_count, s, "cpu")
        for p0 in range(lo, hi, batch):
            p1 = min(p0 + batch, hi)
            sparse = SparseActs.from_dense(torch.from_numpy(acts[p0:p1].reshape(-1, f_count)), p0, t_count)
            windows = functools.partial(sparse.windows, before=s.context_before, after=s.context_after)
            xs = torch.from_numpy(x[p0:p1].reshape(-1, d))
            st.update_pass1(sparse, windows, xs, torch.from_numpy(x_hat[p0:p1].reshape(-1, d)), basis=xs)
        states.append(st)
    top = functools.reduce(torch.maximum, [st.max_activation for st in states])
    for st, (lo, hi) in zip(states, units):
        st.max_activation = top.clone()
        for p0 in range(lo, hi, batch):
            p1 = min(p0 + batch, hi)
            sparse = SparseActs.from_dense(torch.from_numpy(acts[p0:p1].reshape(-1, f_count)), p0, t_count)
            st.update_pass2(sparse, functools.partial(sparse.windows, before=s.context_before, after=s.context_after))
    return states


@pytest.mark.parametrize("units", [[(0, 3), (3, 7), (7, 10)], [(0, 1), (1, 2), (2, 10)], [(0, 10)]])
def test_merged_units_equal_brute_force_over_every_token(units):
    rng = np.random.default_rng(5)
    p_count, t_count, f_count, d = 10, 6, 5, 3
    s = ComputeSettings(top_k=3, intervals=2, per_interval=2, histogram_bins=4, context_before=2, context_after=1, seed=7, prompt_view=4, prompt_features=2)
    acts = np.where(rng.random((p_count, t_count, f_count)) < 0.45, rng.random((p_count, t_count, f_count)) + 0.01, 0.0).astype(np.float32)
    acts[8, 2, 1] = acts[0, 4, 1] = acts[:, :, 1].max() + 1  # a tie for the top across units: the earlier token wins
    acts[3, 0, 2] = acts[9, 5, 2] = acts[:, :, 2].max() + 1
    x = rng.normal(size=(p_count, t_count, d)).astype(np.float32)
    x_hat = (x + rng.normal(scale=0.3, size=x.shape)).astype(np.float32)

    states = _run_units(acts, x, x_hat, s, units, batch=2)
    merged = FeatureStats(f_count, d, t_count, s, "cpu")
    for st in states:
        merged.merge(st)
    got, rec = merged.feature_arrays(), merged.reconstruction_stats()

    flat = acts.reshape(-1, f_count).astype(np.float64)
    n = flat.shape[0]
    np.testing.assert_array_equal(got["max_activation"], acts.reshape(-1, f_count).max(0))
    np.testing.assert_array_equal(got["nonzero_count"], (flat > 0).sum(0))
    np.testing.assert_allclose(got["density"], (flat > 0).mean(0), rtol=1e-6)
    for f in range(f_count):
        col = flat[:, f]
        order = sorted((g for g in range(n) if col[g] > 0), key=lambda g: (-col[g], g))[: s.top_k]
        np.testing.assert_array_equal(got["top_prompt"][f], [g // t_count for g in order] + [-1] * (s.top_k - len(order)))
        np.testing.assert_array_equal(got["top_position"][f], [g % t_count for g in order] + [-1] * (s.top_k - len(order)))
        np.testing.assert_array_equal(got["top_value"][f, : len(order)], col[order].astype(np.float32))
        for j, g in enumerate(order):
            np.testing.assert_array_equal(got["top_window"][f, j], _brute_window(acts[g // t_count, :, f], g % t_count, s.context_before, s.context_after))
        top = col.max()
        expected, _ = np.histogram(col[col > 0], bins=s.histogram_bins, range=(0.0, top))
        np.testing.assert_array_equal(got["histogram"][f], expected)
        for i in range(s.intervals):
            lo, hi = i * top / s.intervals, (i + 1) * top / s.intervals
            members = [g for g in range(n) if lo < col[g] <= hi]
            chosen = sorted(members, key=lambda g: (-_sample_priority(g, f, s.seed), g))[: s.per_interval]
            m = len(chosen)
            np.testing.assert_array_equal(got["interval_prompt"][f, i, :m], [g // t_count for g in chosen])
            np.testing.assert_array_equal(got["interval_position"][f, i, :m], [g % t_count for g in chosen])
            np.testing.assert_array_equal(got["interval_value"][f, i, :m], col[chosen].astype(np.float32))
            assert (got["interval_prompt"][f, i, m:] == -1).all()
    for p in range(s.prompt_view):
        for t in range(t_count):
            a = acts[p, t]
            order = sorted((f for f in range(f_count) if a[f] > 0), key=lambda f: (-a[f], f))[: s.prompt_features]
            np.testing.assert_array_equal(got["prompt_feature"][p, t], order + [-1] * (s.prompt_features - len(order)))
    xf, err = x.reshape(n, d).astype(np.float64), (x - x_hat).reshape(n, d).astype(np.float64)
    sse = float((err**2).sum())
    assert rec["l0"] == pytest.approx(float((flat > 0).sum()) / n, rel=1e-12)
    assert rec["mse"] == pytest.approx(sse / (n * d), rel=1e-5)
    assert rec["explained_variance"] == pytest.approx(1 - sse / float(((xf - xf.mean(0)) ** 2).sum()), rel=1e-5)
    r = np.corrcoef(np.concatenate([flat, xf], 1).T)[:f_count, f_count:]  # Pearson r of each feature with each input dimension
    for f in range(f_count):
        order = np.argsort(-r[f], kind="stable")
        np.testing.assert_array_equal(got["corr_neuron_index"][f, :d], order)
        np.testing.assert_allclose(got["corr_neuron_value"][f, :d], r[f][order], atol=1e-5)

    # ... and bit for bit what one pass over the corpus in the same batches gives.
    whole = _run_units(acts, x, x_hat, s, [(0, p_count)], batch=2)[0]
    assert whole.reconstruction_stats() == rec
    for name, value in whole.feature_arrays().items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_units_and_shards_are_fixed_by_the_corpus_and_the_unit_size():
    assert unit_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert unit_ranges(10, 20) == [(0, 10)]
    jobs = [type("Job", (), {"id": name})() for name in ("a", "b", "c")]
    units = lambda job: unit_ranges(8, 2)  # noqa: E731  four units per SAE, 12 pairs
    shards = [shard_pairs(jobs, (i, 5), units) for i in range(5)]
    pairs = sorted((sae, lo) for shard in shards for sae, los in shard.items() for lo in los)
    assert pairs == sorted((j.id, lo) for j in jobs for lo in (0, 2, 4, 6)), "the shards cover every pair once"
    assert sum(len(los) for shard in shards for los in shard.values()) == 12
    assert shards[0] == {"a": {0, 2}}  # contiguous: a shard's units are of as few SAEs as can be
    assert shard_pairs(jobs, None, units) == {j.id: {0, 2, 4, 6} for j in jobs}


# -- processes on one cache ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def content(tmp_path_factory) -> Path:
    return build_fixture_content(tmp_path_factory.mktemp("units"), n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, sets=SETS)


@pytest.fixture(scope="module")
def reference(content, tmp_path_factory) -> tuple[Path, Path]:
    """(cache, site) of one single-process build, the corpus as one unit."""
    root = tmp_path_factory.mktemp("reference")
    assert build(content, root / "cache", root / "site") == 0
    return root / "cache", root / "site"


def compute_argv(content: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", LOGGED_CLI, "compute", "--content", str(content), "--cache", str(cache), "--device", "cpu", "--quiet", "--threads", "1", *BATCH, *UNIT, *extra]


def log_lines(log: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []


def unit_done(name: str, state: str, pass_no: int | None = None) -> bool:
    """Whether a logged write of a unit's state (sae/KEY.uLO-HI.partial) ends its pass (1, 2, or either)."""
    if ".u" not in name or state == "-":
        return False
    lo = int(name.rsplit(".u", 1)[1].split("-")[0])
    after, done = (int(v) for v in state.split(":"))
    return done == lo and after >= 2 and (pass_no is None or after == pass_no + 1)


def sae_keys(content: Path) -> dict[str, str]:
    (release,) = load_content(content)
    return {spec.id: sae_key(release, spec) for spec in release.saes()}


def test_the_slurm_array_may_have_a_task_per_unit(content):
    (release,) = load_content(content)
    assert count_units([release]) == 3  # the default unit holds the whole fixture corpus
    assert count_units([release], 8) == 12


def test_racing_shards_compute_each_unit_once_and_give_the_single_process_cache_and_site(content, reference, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "writes.log"
    shards = [["--shard", f"{i}/5"] for i in range(5)] + [[]]  # five shards of 12 pairs and an unsharded run
    (tmp_path / "barrier").mkdir()
    env = {**os.environ, "ATLAS_WRITE_LOG": str(log), "ATLAS_START_BARRIER": f"{tmp_path / 'barrier'}:{len(shards)}"}
    procs = [subprocess.Popen(compute_argv(content, cache, *s), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for s in shards]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err
    lines = log_lines(log)
    finished = collections.Counter(name for _, name, state in lines if state == "-")
    assert set(finished) == entry_names(reference[0]) == entry_names(cache)
    assert all(n == 1 for n in finished.values()), f"entries computed more than once: {finished}"
    # Each unit's pass ran once. (Which process ran which unit depends on when each got going; an
    # SAE's work done by two processes for sure is the killed-process test below: a unit resumed from
    # the checkpoint of a process killed part-way.)
    keys = sae_keys(content)
    unit_passes = collections.Counter((name, state) for _, name, state in lines if unit_done(name, state))
    assert unit_passes and all(n == 1 for n in unit_passes.values()), unit_passes
    assert len(unit_passes) == 2 * 4 * len(keys)
    assert lock_files(cache) == []
    assert not list((cache / "sae").glob("*.partial"))
    assert_same_tree(cache / "sae", reference[0] / "sae")
    assert build(content, cache, tmp_path / "site", command="render") == 0
    assert_same_tree(tmp_path / "site", reference[1])


def test_a_shard_alone_takes_over_the_units_nobody_holds(content, reference, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "writes.log"
    done = subprocess.run(compute_argv(content, cache, "--shard", "0/12"), cwd=ROOT, env={**os.environ, "ATLAS_WRITE_LOG": str(log)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    keys = sae_keys(content)
    first = min(keys)  # shard 0 of 12 has one unit: the first of the first SAE
    assert {name for name in entry_names(cache) if name.startswith("sae/")} == {f"sae/{keys[first]}"}
    assert len({name for _, name, state in log_lines(log) if unit_done(name, state, 2)}) == 4, "it did not compute every unit of its SAE"
    assert_same_tree(cache / "sae" / keys[first], reference[0] / "sae" / keys[first])
    assert lock_files(cache) == [] and not list((cache / "sae").glob("*.partial"))


def test_a_killed_process_unit_is_taken_over_and_completed(content, reference, tmp_path, capsys):
    cache, log = tmp_path / "cache", tmp_path / "writes.log"
    os.environ["ATLAS_WRITE_LOG"] = str(log)
    try:  # killed mid-unit: a checkpoint of pass 1 part-way through its first unit
        killed = run_and_kill(compute_argv(content, cache, "--shard", "0/3"), lambda t: any(p == 1 and done > 0 for p, done in partial_states(cache)))
    finally:
        del os.environ["ATLAS_WRITE_LOG"]
    assert killed, "finished before a checkpoint"
    held = lock_files(cache)
    assert any(".u" in name for name in held), f"no work unit lock left by the killed process: {held}"
    assert build(content, cache, tmp_path / "site", *UNIT) == 0
    err = capsys.readouterr().err
    assert "took over the stale lock sae-" in err and ".u0-8.lock" in err, err
    assert lock_files(cache) == []
    assert not list((cache / "sae").glob("*.partial"))
    assert_same_tree(cache / "sae", reference[0] / "sae")
    assert_same_tree(tmp_path / "site", reference[1])


def test_a_shard_waits_for_a_unit_a_live_process_holds_and_then_finishes_the_sae(content, reference, tmp_path):
    import time

    from sae_atlas.compute.units import unit_lock
    from sae_atlas.locks import Locks

    cache, log, err_path = tmp_path / "cache", tmp_path / "writes.log", tmp_path / "stderr"
    keys = sae_keys(content)
    key = keys[min(keys)]
    env = {**os.environ, "ATLAS_WRITE_LOG": str(log)}
    with Locks(cache) as locks, open(err_path, "w") as err:
        assert locks.try_acquire(unit_lock(key, 8, 16))  # this process, alive, "computes" the second unit
        proc = subprocess.Popen(compute_argv(content, cache, "--shard", "0/12"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 300
            while "waiting for SAE" not in err_path.read_text():
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < deadline, "the shard did not wait"
                time.sleep(0.1)
            assert "prompts 8-16" in err_path.read_text()
            lines = log_lines(log)
            # Pass 1 of the three free units is done; no pass 2 can start before the held one's pass 1.
            assert {name for _, name, state in lines if unit_done(name, state, 1)} == {f"sae/{key}.u{lo}-{lo + 8}.partial" for lo in (0, 16, 24)}
            assert not any(unit_done(name, state, 2) for _, name, state in lines)
            locks.release(unit_lock(key, 8, 16))  # the holder gives up: the shard takes the unit over
            assert proc.wait(timeout=300) == 0, err_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_same_tree(cache / "sae" / key, reference[0] / "sae" / key)
    assert lock_files(cache) == [] and not list((cache / "sae").glob("*.partial"))


def test_slurm_sizes_its_array_by_the_work_units(content, tmp_path):
    argv = [sys.executable, "-m", "sae_atlas", "slurm", "--content", str(content), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "site"),
            "--device", "cpu", "--quiet", *UNIT]
    done = subprocess.run([*argv, "--array-size", "12"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    script = (tmp_path / "slurm" / "compute.sbatch").read_text()
    assert "#SBATCH --array=0-11" in script and "--unit-prompts 8" in script
    refused = subprocess.run([*argv, "--array-size", "13", "--dir", str(tmp_path / "other")], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 1 and "--array-size 13: expected 1 to 12" in refused.stderr

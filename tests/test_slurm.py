"""`sae-atlas slurm`: the job scripts it writes, and a real single-node Slurm cluster running them
(`tests/slurm_cluster.py`): the compute array on one shared cache, then the render job after it,
gives the site of a single-process build byte for byte, also with more tasks than SAEs (work units)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sae_atlas.cli import main as cli_main
from tests.slurm_cluster import job_state, slurm_cluster
from tests.test_concurrency import SETS, entry_names, lock_files
from tests.test_faults import BATCH, ROOT, assert_same_tree, build
from tests.fixtures import build_fixture_content

N_PROMPTS, CONTEXT, D_SAE = 32, 16, 12


@pytest.fixture(scope="module")
def content(tmp_path_factory) -> Path:
    return build_fixture_content(tmp_path_factory.mktemp("slurm"), n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, sets=SETS)


@pytest.fixture(scope="module")
def reference(content, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reference")
    assert build(content, root / "cache", root / "site") == 0
    return root / "cache", root / "site"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("cluster")) as env:
        yield env


def slurm_argv(content: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sae_atlas", "slurm", "--content", str(content), "--cache", str(root / "cache"), "--out", str(root / "site"),
            "--device", "cpu", "--threads", "1", "--quiet", *BATCH, *extra, str(content / "releases" / "tiny-demo.yaml")]


def test_the_scripts_name_the_resources_and_run_a_shard_each(content, reference, tmp_path):
    args = ["--array-size", "2", "--partition", "gpu", "--gpus-per-task", "1", "--time", "2:00:00", "--cpus-per-task", "4", "--mem", "16G", "--sbatch=--account=lab"]
    done = subprocess.run(slurm_argv(content, tmp_path, *args), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    jobs = tmp_path / "slurm"
    compute, render = (jobs / "compute.sbatch").read_text(), (jobs / "render.sbatch").read_text()
    directives = lambda text: [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH ")]  # noqa: E731
    common = ["--ntasks=1", "--partition=gpu", "--time=2:00:00", "--cpus-per-task=4", "--mem=16G", "--account=lab"]
    assert set(directives(compute)) == {"--array=0-1", "--job-name=sae-atlas-compute", f"--output={jobs / 'logs'}/compute-%A_%a.log", "--gpus-per-task=1", *common}
    assert set(directives(render)) == {"--job-name=sae-atlas-render", f"--output={jobs / 'logs'}/render-%j.log", *common}
    assert sys.executable in compute and sys.executable in render
    # Each task is its shard: run the two array tasks' script as Slurm would (bash, the task id set), then render.
    for task in ("0", "1"):
        ran = subprocess.run(["bash", str(jobs / "compute.sbatch")], env={**os.environ, "SLURM_ARRAY_TASK_ID": task}, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        if task == "0":
            assert 0 < len(entry_names(tmp_path / "cache")) < len(entry_names(reference[0])), "task 0 computed all or nothing"
    ran = subprocess.run(["bash", str(jobs / "render.sbatch")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert_same_tree(tmp_path / "site", reference[1])


def test_an_array_larger_than_the_saes_is_refused(content, tmp_path, capsys):
    assert cli_main(slurm_argv(content, tmp_path, "--array-size", "4")[3:]) == 1
    assert "--array-size 4: expected 1 to 3" in capsys.readouterr().err
    assert not (tmp_path / "slurm").exists()


def test_a_slurm_array_then_its_render_job_give_the_single_process_site(content, reference, cluster, tmp_path):
    done = subprocess.run(slurm_argv(content, tmp_path, "--submit", "--time", "10:00", "--cpus-per-task", "1"), cwd=ROOT, env=cluster, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    compute, render = done.stdout.split()
    deadline = time.monotonic() + 400
    while (state := job_state(cluster, render)) not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        assert time.monotonic() < deadline, f"the render job is {state} (compute: {job_state(cluster, compute)})"
        assert job_state(cluster, compute) not in ("FAILED", "CANCELLED", "TIMEOUT"), "a compute task failed: " + logs_text(tmp_path)
        time.sleep(1)
    assert state == "COMPLETED", logs_text(tmp_path)
    assert job_state(cluster, compute) == "COMPLETED"
    logs = sorted(p.name for p in (tmp_path / "slurm" / "logs").iterdir())
    assert logs == [f"compute-{compute}_{i}.log" for i in range(3)] + [f"render-{render}.log"]
    assert lock_files(tmp_path / "cache") == []
    assert_same_tree(tmp_path / "site", reference[1])


def logs_text(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((root / "slurm" / "logs").glob("*")))


def test_an_array_of_more_tasks_than_saes_splits_them_into_work_units_and_gives_the_single_process_site(content, reference, cluster, tmp_path):
    # 3 SAEs x 4 units of 8 prompts = 12 tasks; the node runs a few at a time, so the first tasks take
    # over the units of tasks not started yet, and the later ones find their SAEs done.
    unit = ["--unit-prompts", "8", "--array-size", "12"]
    done = subprocess.run(slurm_argv(content, tmp_path, "--submit", "--time", "10:00", "--cpus-per-task", "1", *unit), cwd=ROOT, env=cluster, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--unit-prompts 8" in (tmp_path / "slurm" / "compute.sbatch").read_text()
    compute, render = done.stdout.split()
    deadline = time.monotonic() + 500
    while (state := job_state(cluster, render)) not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        assert time.monotonic() < deadline, f"the render job is {state} (compute: {job_state(cluster, compute)})"
        assert job_state(cluster, compute) not in ("FAILED", "CANCELLED", "TIMEOUT"), "a compute task failed: " + logs_text(tmp_path)
        time.sleep(1)
    assert state == "COMPLETED", logs_text(tmp_path)
    assert sorted(p.name for p in (tmp_path / "slurm" / "logs").iterdir()) == sorted([f"compute-{compute}_{i}.log" for i in range(12)] + [f"render-{render}.log"])
    assert lock_files(tmp_path / "cache") == [] and not list((tmp_path / "cache" / "sae").glob("*.partial"))
    assert_same_tree(tmp_path / "cache" / "sae", reference[0] / "sae")
    assert_same_tree(tmp_path / "site", reference[1])

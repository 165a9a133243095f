"""`sae-atlas slurm`: a Slurm array job of `compute --shard $SLURM_ARRAY_TASK_ID/N` tasks on a shared
cache, and a render job that starts once every task succeeded (`--dependency=afterok:JOBID`).

    <dir>/compute.sbatch   the array job (one task per shard; logs/compute-<job>_<task>.log)
    <dir>/render.sbatch    the render job (logs/render-<job>.log)
    <dir>/submit.sh        submits both, the second depending on the first (what --submit runs)

The scripts run the Python that wrote them (`python -m sae_atlas`), with absolute paths, so they work
from any directory of a cluster that shares the filesystem. Concurrent tasks share the cache safely
(`sae_atlas.locks`).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sae_atlas.errors import AtlasError


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of the compute tasks (the render job gets the same partition, time, CPUs and
    memory, without GPUs); `extra` are more `#SBATCH` options, e.g. ("--account=lab",)."""

    array_size: int
    partition: str | None = None
    gpus_per_task: int | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SlurmJobs:
    dir: Path
    compute: Path
    render: Path
    submit: Path


def _directives(name: str, log: Path, options: SlurmOptions, gpus: bool) -> list[str]:
    lines = [f"--job-name={name}", f"--output={log}", "--ntasks=1"]
    if options.partition:
        lines.append(f"--partition={options.partition}")
    if options.time:
        lines.append(f"--time={options.time}")
    if options.cpus_per_task:
        lines.append(f"--cpus-per-task={options.cpus_per_task}")
    if options.mem:
        lines.append(f"--mem={options.mem}")
    if gpus and options.gpus_per_task:
        lines.append(f"--gpus-per-task={options.gpus_per_task}")
    lines += list(options.extra)
    return [f"#SBATCH {line}" for line in lines]


def _quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _script(directives: list[str], command: str, comment: str) -> str:
    return "\n".join(["#!/bin/bash", f"# {comment}", *directives, "set -euo pipefail", f"exec {command}", ""])


def write_jobs(
    directory: Path,
    options: SlurmOptions,
    compute_args: list[str],
    render_args: list[str],
    python: str | None = None,
) -> SlurmJobs:
    """Write the array job, the render job and submit.sh under `directory`. `compute_args` and
    `render_args` are the arguments of `sae-atlas compute` (without --shard) and `sae-atlas render`,
    with absolute paths."""
    if options.array_size < 1:
        raise AtlasError(f"--array-size {options.array_size}: expected at least 1")
    directory = Path(directory).resolve()
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cli = [python or sys.executable, "-m", "sae_atlas"]
    n = options.array_size
    compute = directory / "compute.sbatch"
    directives = [f"#SBATCH --array=0-{n - 1}", *_directives("sae-atlas-compute", logs / "compute-%A_%a.log", options, gpus=True)]
    command = f'{_quote([*cli, "compute", "--shard"])} "${{SLURM_ARRAY_TASK_ID}}/{n}" {_quote(compute_args)}'
    compute.write_text(_script(directives, command, f"sae-atlas compute, shard $SLURM_ARRAY_TASK_ID of {n}"))
    render = directory / "render.sbatch"
    render.write_text(_script(_directives("sae-atlas-render", logs / "render-%j.log", options, gpus=False), _quote([*cli, "render", *render_args]), "sae-atlas render, once every compute task succeeded"))
    submit = directory / "submit.sh"
    submit.write_text(
        "#!/bin/bash\n# Submit the compute array, then the render job depending on it; prints both job ids.\nset -euo pipefail\n"
        f"compute=$(sbatch --parsable {shlex.quote(str(compute))})\ncompute=${{compute%%;*}}\n"
        f"render=$(sbatch --parsable --dependency=afterok:$compute {shlex.quote(str(render))})\n"
        'echo "compute $compute"\necho "render ${render%%;*}"\n'
    )
    for path in (compute, render, submit):
        path.chmod(0o755)
    return SlurmJobs(directory, compute, render, submit)


def _sbatch(*args: str) -> str:
    """The job id `sbatch --parsable ARGS` prints."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise AtlasError("sbatch not found on PATH; run submit.sh on a machine of the cluster, or install Slurm's client commands")
    done = subprocess.run([sbatch, "--parsable", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AtlasError(f"sbatch {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def submit(jobs: SlurmJobs) -> tuple[str, str]:
    """Submit the array job and the render job depending on it; their job ids."""
    compute = _sbatch(str(jobs.compute))
    render = _sbatch(f"--dependency=afterok:{compute}", str(jobs.render))
    return compute, render

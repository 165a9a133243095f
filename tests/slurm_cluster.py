"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd started as root in a
temporary directory (own key, socket, ports, state and logs; no cgroups, no accounting), stopped
afterwards. The packages are Debian's `slurm-wlm` and `munge` (`make test` installs them).

    with slurm_cluster(tmp_path) as env:    # env: os.environ plus SLURM_CONF
        subprocess.run(["sbatch", ...], env=env)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "scontrol", "sbatch")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    absent = [name for name in DAEMONS if _which(name) is None]
    if absent:
        return f"{', '.join(absent)} not found; install the slurm-wlm and munge packages (make test does, as root, where apt-get exists)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line(node: str) -> str:
    """This machine's NodeName line as `slurmd -C` reports it (CPUs, cores, memory)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("NodeName="))
    return re.sub(r"^NodeName=\S+", f"NodeName={node} NodeAddr=127.0.0.1", line)


def _wait(what: str, ready, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-3000:] if p.exists() else '(none)'}" for p in logs)
            raise RuntimeError(f"{what} within {timeout:.0f} s; logs:\n{tails}")
        time.sleep(0.2)


def job_state(env: dict, job: str) -> str:
    """JOBID's state (COMPLETED, FAILED, PENDING, ...); of an array job, its tasks' states joined."""
    out = subprocess.run([_which("scontrol"), "-o", "show", "job", job], env=env, capture_output=True, text=True).stdout
    return ",".join(sorted(set(re.findall(r"JobState=(\S+)", out)))) or "UNKNOWN"


@contextlib.contextmanager
def slurm_cluster(root: Path) -> Iterator[dict]:
    why = missing()
    if why:
        raise RuntimeError(f"cannot start a Slurm cluster: {why}")
    root = Path(root)
    for d in ("munge", "state", "spool", "log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key, sock = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
    node = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=sae-atlas-test",
                f"SlurmctldHost={node}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={sock}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "ReturnToService=2",
                "SchedulerType=sched/builtin",
                _node_line(node),
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = [root / "munge" / "munged.log", root / "log" / "slurmctld.log", root / "log" / "slurmd.log"]
    procs: list[subprocess.Popen] = []
    try:
        munged = [_which("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}", f"--log-file={logs[0]}",
                  f"--pid-file={root / 'munge' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'munged.seed'}"]
        procs.append(subprocess.Popen(munged, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait("munged did not create its socket", sock.exists, 20, logs)
        procs.append(subprocess.Popen([_which("slurmctld"), "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([_which("slurmd"), "-D", "-f", str(conf), "-N", node], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited with {p.returncode}; logs in {root / 'log'}:\n" + "\n".join(f"--- {q}\n{q.read_text()[-3000:] if q.exists() else '(none)'}" for q in logs))
            out = subprocess.run([_which("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            return out.strip() == "idle"

        _wait("the node did not come up idle", idle, 60, logs)
        yield env
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

"""A child process's own peak resident set, without its parent's.

Linux counts in a process's peak resident set (`ru_maxrss`, GNU time's "Maximum resident set size")
the memory image it ran in before its exec. Python starts a child with vfork, whose child runs in
the parent's memory until it execs, so a child of a large process (a test run or a benchmark that
has imported torch and built its inputs) reports at least the parent's resident set: a compute that
peaked at 580 MiB read as 1,024 MiB. `run` starts the command from a small launcher (`python -S`,
a few MiB), which forks and execs it and reports its rusage: the command's own peak.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run(argv: list[str], **popen) -> tuple[subprocess.CompletedProcess, int]:
    """subprocess.run(argv, **popen) through the launcher: (its result, the peak resident set of
    argv's process in bytes; Linux's ru_maxrss is in KiB). argv[0] must be a path (no PATH search)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "maxrss")
        done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, report, *argv], **popen)
        peak = int(Path(report).read_text()) * 1024 if os.path.exists(report) else 0
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr), peak

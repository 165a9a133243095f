"""Write requirements.lock: the exact version of every package that `pip install .[compute,test]` brings.

Resolved afresh in a temporary venv (nothing else needed but the Python running this): torch first, as the
Makefile installs it, then the project with its `compute` and `test` extras, then `pip freeze`. torch itself and
the CUDA packages a torch build brings (nvidia-*, triton) are left out of the lock, so that any torch build can be
installed next to it. The lock is used as pip constraints (`pip install -c requirements.lock ...`).

Usage: python tools/lock.py [--torch SPEC] [--torch-pip-args ARGS] [--out PATH]   (`make lock` runs it)
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "sae-atlas"
EXTRAS = "compute,test"
# The torch build chooses these itself (CPU or one CUDA version); pinning them would pin the build.
LEFT_OUT = re.compile(r"^(torch|triton|nvidia-.*)$")
# pip installs; nothing depends on it (setuptools stays: torch requires it).
TOOLS = {"pip"}
HEADER = """\
# Exact versions of every package `pip install .[{extras}]` brings, resolved on Python {python} ({platform}).
# make build / make test / make install install with `pip install -c requirements.lock`, so these versions hold.
# Regenerate after changing pyproject.toml:  make lock   (resolves afresh in a temporary venv)
# Left out: torch and the CUDA packages a torch build brings (nvidia-*, triton); the Makefile installs torch
# first (TORCH=..., TORCH_PIP_ARGS=... choose the build, e.g. a CUDA one).
"""


def normalize(name: str) -> str:
    """The package name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_lines(freeze: str) -> list[str]:
    """`pip freeze` output -> sorted `name==version` lines, without torch, CUDA packages, pip or the project itself."""
    pins: dict[str, str] = {}
    for line in freeze.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("-e "):
            continue
        if "==" not in line:
            raise ValueError(f"pip freeze gave a line that is not name==version: {line!r}")
        name, version = (part.strip() for part in line.split("==", 1))
        key = normalize(name)
        if key == PROJECT or key in TOOLS or LEFT_OUT.match(key):
            continue
        pins[key] = f"{key}=={version}"
    return [pins[k] for k in sorted(pins)]


def lock_text(freeze: str) -> str:
    header = HEADER.format(extras=EXTRAS, python=".".join(map(str, sys.version_info[:2])), platform=sys.platform)
    return header + "".join(line + "\n" for line in lock_lines(freeze))


def resolve(torch: str, torch_pip_args: list[str]) -> str:
    """Install torch then the project into a fresh venv; its `pip freeze`."""
    with tempfile.TemporaryDirectory(prefix="sae-atlas-lock-") as tmp:
        venv.create(tmp, with_pip=True)
        python = str(Path(tmp) / ("Scripts" if sys.platform == "win32" else "bin") / "python")
        pip = [python, "-m", "pip", "--quiet"]
        subprocess.run([*pip, "install", torch, *torch_pip_args], check=True)
        subprocess.run([*pip, "install", "-e", f"{ROOT}[{EXTRAS}]"], check=True)
        return subprocess.run([*pip, "freeze", "--all", "--exclude-editable"], check=True, capture_output=True, text=True).stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch", default="torch", help="the torch requirement to install first (as the Makefile's TORCH)")
    p.add_argument("--torch-pip-args", default="", help="extra pip arguments for torch (as the Makefile's TORCH_PIP_ARGS)")
    p.add_argument("--out", type=Path, default=ROOT / "requirements.lock")
    args = p.parse_args(argv)
    try:
        freeze = resolve(args.torch, shlex.split(args.torch_pip_args))
    except subprocess.CalledProcessError as e:
        print(f"lock: `{shlex.join(e.cmd)}` exited {e.returncode}; {args.out} is unchanged", file=sys.stderr)
        return 1
    text = lock_text(freeze)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)  # a failed run never leaves half a lock
    print(f"lock: wrote {args.out} ({len(lock_lines(freeze))} packages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

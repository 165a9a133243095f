"""How `sae-atlas` ends: after a command returns, the process exits with its code without the
interpreter's teardown (no module clearing, no garbage collection of the heap), while atexit
handlers still run and everything printed or written is complete.

Each run is a fresh `python -m sae_atlas` whose interpreter loads a sitecustomize that registers an
atexit handler and keeps an object whose finaliser only the interpreter's teardown would call: the
teardown is observed, not timed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SITECUSTOMIZE = """\
import atexit, sys

atexit.register(lambda: print("atexit handler ran", file=sys.stderr, flush=True))


class _Teardown:
    def __del__(self):
        print("interpreter teardown ran", file=sys.stderr, flush=True)


sys.modules[__name__].probe = _Teardown()  # cleared, and so finalised, only when modules are torn down
"""


def _run(tmp_path: Path, *args: object, code: str | None = None, python_args: bool = False) -> subprocess.CompletedProcess:
    probe = tmp_path / "probe"
    probe.mkdir(exist_ok=True)
    (probe / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(probe), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    argv = [sys.executable, "-c", code] if code else [sys.executable] if python_args else [sys.executable, "-m", "sae_atlas"]
    return subprocess.run([*argv, *(str(a) for a in args)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_the_probe_sees_an_ordinary_interpreter_exit(tmp_path):
    done = _run(tmp_path, code="print('done')")
    assert done.returncode == 0 and done.stdout == "done\n"
    assert "atexit handler ran" in done.stderr and "interpreter teardown ran" in done.stderr


def test_a_successful_command_skips_the_teardown_with_its_files_and_output_complete(tmp_path):
    done = _run(tmp_path, "new", "project")
    assert done.returncode == 0, done.stderr
    assert "interpreter teardown ran" not in done.stderr
    assert done.stderr.count("atexit handler ran") == 1
    written = sorted(str(p.relative_to(tmp_path / "project")) for p in (tmp_path / "project").rglob("*") if p.is_file())
    assert written == [".github/workflows/pages.yml", ".gitignore", "README.md", "content/releases/my-release.yaml"]
    for name in written:  # every line printed reached the pipe
        assert f"wrote project/{name}\n" in done.stderr
    assert "deploy` publishes build/site to gh-pages\natexit handler ran\n" in done.stderr


def test_a_failed_command_keeps_its_exit_code_and_every_message(tmp_path):
    assert _run(tmp_path, "new", "project").returncode == 0
    done = _run(tmp_path, "check", "--content", tmp_path / "project" / "content")
    assert done.returncode == 2
    assert "interpreter teardown ran" not in done.stderr
    problems = [line for line in done.stderr.splitlines() if line.startswith(str(tmp_path / "project")) or "my-release.yaml:" in line]
    assert len(problems) == 3
    assert "sae-atlas: 3 problems found; nothing was written" in done.stderr


def test_a_usage_error_exits_as_argparse_does(tmp_path):
    done = _run(tmp_path, "compute", "--shard", "5/2")
    assert done.returncode == 2
    assert "expected 0 <= I < N" in done.stderr


def test_an_unexpected_exception_prints_its_traceback_and_exits_1(tmp_path):
    code = (
        "import sys\n"
        "from sae_atlas import cli, pipeline\n"
        "def broken(args):\n"
        "    raise RuntimeError('a bug')\n"
        "pipeline.cmd_check = broken\n"
        "sys.argv[1:] = ['check']\n"
        "cli.run()\n"
    )
    done = _run(tmp_path, code=code)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "RuntimeError: a bug" in done.stderr


def test_a_running_non_daemon_thread_is_waited_for(tmp_path):
    out = tmp_path / "late.txt"
    code = (
        "import sys, threading\n"
        "from sae_atlas import cli\n"
        "go = threading.Event()\n"
        f"def late():\n"
        "    go.wait()\n"
        f"    open({str(out)!r}, 'w').write('written after main returned')\n"
        "threading.Thread(target=late).start()\n"
        "threading.Timer(0.2, go.set).start()\n"
        "cli.exit_now(3)\n"
    )
    done = _run(tmp_path, code=code)
    assert done.returncode == 3
    assert out.read_text() == "written after main returned"


def test_under_a_profiler_the_ordinary_exit_lets_it_write_its_report(tmp_path):
    profile = tmp_path / "profile.out"
    done = _run(tmp_path, "-m", "cProfile", "-o", profile, "-m", "sae_atlas", "new", "project", code=None, python_args=True)
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0
    assert (tmp_path / "project" / "README.md").is_file()

"""Session fixtures shared by the end-to-end and browser tests.

`built_site` builds the fixture release once per test run through the command line, exactly as a user
would; it is lazy, so tests that do not ask for it never pay for the build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CliRun:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(frozen=True)
class BuiltSite:
    content: Path  # content dir: releases/*.yaml, models/, saes/, corpus/, explanations/
    cache: Path
    site: Path
    build: CliRun  # the cold `sae-atlas build`


def sae_atlas(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900) -> CliRun:
    """Run `sae-atlas ARGS` in a fresh interpreter (from `cwd`, not the repository) and capture it."""
    argv = [sys.executable, "-m", "sae_atlas", *(str(a) for a in args)]
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": python_path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliRun(tuple(argv[3:]), done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> BuiltSite:
    """The fixture release built once with `sae-atlas build`: (content, cache, site, the build run)."""
    from tests.fixtures import build_fixture_content

    root = tmp_path_factory.mktemp("built")
    content = build_fixture_content(root)
    cache, site = root / "cache", root / "site"
    build = sae_atlas("build", "--content", content, "--out", site, "--cache", cache, "--quiet", cwd=root)
    if build.returncode != 0:
        pytest.fail(f"`sae-atlas build` of the fixture release exited {build.returncode}:\n{build.stderr[-4000:]}")
    return BuiltSite(content, cache, site, build)


@pytest.fixture(scope="session")
def chromium_browser():
    """One headless Chromium for the whole run (the system package, driven by Playwright)."""
    from tests.browser import harness

    with harness.chromium() as browser:
        yield browser

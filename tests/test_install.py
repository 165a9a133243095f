"""SAE Atlas as a tool people install: the wheel built from this checkout, installed with its
locked dependencies into a fresh virtual environment outside the repository, scaffolds a project
with `sae-atlas new`, builds a small release there, and the site works in Chromium.

Nothing here imports the checkout's code into the installed tool: the commands run with the fresh
environment's own `sae-atlas`, from a folder outside the repository, without PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.browser import harness
from tests.conftest import ROOT
from tests.fixtures import build_fixture_content

LOCK = ROOT / "requirements.lock"


def _run(argv: list, cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _package_files(wheel: Path) -> list[str]:
    return sorted(n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n)


def _clean_env(venv: Path) -> dict:
    """The environment of a user of the installed tool: its venv first on PATH, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, ROOT], cwd=out, env=dict(os.environ))
    (path,) = out.glob("sae_atlas-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv outside the repository with the wheel and its locked dependencies."""
    home = tmp_path_factory.mktemp("user")
    venv = home / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=home, env=dict(os.environ))
    env = _clean_env(venv)
    # --no-compile: pip's byte-compilation of every installed module (most of the install's time); the
    # modules the tool imports are compiled when first imported instead.
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    started = time.perf_counter()
    _run(pip + ["torch==2.13.0"], cwd=home, env=env)  # first, as the Makefile does (the CPU build)
    _run(pip + [f"{wheel}[compute]", "-c", LOCK], cwd=home, env=env)
    seconds = time.perf_counter() - started
    print(f"installed the wheel with its locked dependencies in {seconds:.0f} s", file=sys.stderr)
    return {"home": home, "venv": venv, "env": env, "seconds": seconds}


def test_the_wheel_holds_the_package_the_theme_and_live_reload(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {f"sae_atlas/{p.relative_to(ROOT / 'generator').as_posix()}" for p in (ROOT / "generator").rglob("*.py")}
    theme = {f"sae_atlas/themes/{p.relative_to(ROOT / 'themes').as_posix()}" for p in (ROOT / "themes").rglob("*") if p.is_file()}
    assert code and theme
    assert code <= names, sorted(code - names)
    assert theme <= names, sorted(theme - names)
    assert "sae_atlas/render/live-reload.js" in names
    assert not any(n.startswith(("generator/", "tests/", "content/")) for n in names)  # no generic top-level names


def test_the_sdist_holds_the_theme_and_builds_a_complete_wheel(wheel, tmp_path):
    """pip building from the sdist (as from a source download) gives the same package files."""
    _run([sys.executable, "-c", f"import setuptools.build_meta as b; b.build_sdist({str(tmp_path)!r})"], cwd=ROOT, env=dict(os.environ))
    (sdist,) = tmp_path.glob("sae_atlas-*.tar.gz")
    out = tmp_path / "from-sdist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, sdist], cwd=tmp_path, env=dict(os.environ))
    (rebuilt,) = out.glob("sae_atlas-*.whl")
    assert _package_files(rebuilt) == _package_files(wheel)


def test_installed_tool_scaffolds_builds_and_the_site_works_in_chromium(installed, tmp_path, chromium_browser):
    env, venv = installed["env"], installed["venv"]
    where = _run([venv / "bin" / "python", "-c", "import sae_atlas; print(sae_atlas.__file__)"], cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where  # the installed copy, not the checkout

    project = tmp_path / "my-saes"
    _run([venv / "bin" / "sae-atlas", "new", project], cwd=tmp_path, env=env)
    for name in (".gitignore", "README.md", ".github/workflows/pages.yml"):
        assert (project / name).is_file(), name
    # The researcher's own release in place of the commented example.
    for example in (project / "content" / "releases").glob("*.yaml"):
        example.unlink()
    build_fixture_content(project, n_prompts=8, context=8, d_sae=16)
    _run([venv / "bin" / "sae-atlas", "check"], cwd=project, env=env)
    _run([venv / "bin" / "sae-atlas", "build", "--quiet"], cwd=project, env=env)
    site = project / "build" / "site"
    assert (site / "index.html").is_file() and (site / "static" / "app.js").is_file()

    pages = ["index.html", "tiny-demo/index.html", "tiny-2l/res-st/index.html", "tiny-2l/0-res-st/index.html", "tiny-2l/0-res-st/index.html#1"]
    with harness.serve_site(site) as origin:
        page = chromium_browser.new_page()
        guard = harness.Guard(allowed_origin=origin.split("/repo/")[0])
        guard.attach(page)
        try:
            for path in pages:
                response = page.goto(origin + path)
                assert response is None or response.ok, f"{path}: {response.status}"  # None: a change of #hash only
                page.wait_for_selector("body[data-ready=true]" if "-res-st/" in path and "/0-" in path else "main")
            page.wait_for_selector(".fv-examples .ex .tok")
        finally:
            page.close()
        guard.assert_clean()

    # Published: the project is a git repository with a remote; deploy puts the site on gh-pages.
    git_env = {**env, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.org", "GIT_COMMITTER_NAME": "Ada",
               "GIT_COMMITTER_EMAIL": "ada@example.org", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    remote = tmp_path / "remote.git"
    _run(["git", "init", "--quiet", "--bare", remote], cwd=tmp_path, env=git_env)
    for argv in (["init", "--quiet"], ["add", "content", ".gitignore", "README.md", ".github"], ["commit", "--quiet", "-m", "My SAEs"], ["remote", "add", "origin", remote]):
        _run(["git", *argv], cwd=project, env=git_env)
    _run([venv / "bin" / "sae-atlas", "deploy"], cwd=project, env=git_env)
    published = _run(["git", "ls-tree", "-r", "--name-only", "gh-pages"], cwd=remote, env=git_env).stdout.split()
    assert ".nojekyll" in published and set(published) - {".nojekyll"} == {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}


def test_the_installed_tool_is_not_the_checkout(installed):
    """The fresh venv runs without the repository: moving the checkout's code out of sight changes nothing."""
    env, venv = installed["env"], installed["venv"]
    done = _run([venv / "bin" / "python", "-c", "import importlib.util as u; print(u.find_spec('generator'))"], cwd=installed["home"], env=env)
    assert done.stdout.strip() == "None"  # no top-level `generator` module in the user's environment
    assert shutil.which("sae-atlas", path=env["PATH"]).startswith(str(venv))

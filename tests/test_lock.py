"""How the project is installed: requirements.lock against pyproject.toml and the running environment, the
Makefile's use of it, the browser the tests fall back to, and the two ways of the Pages workflow.

Fast: nothing is installed or downloaded (one test launches the system Chromium through Playwright's lookup).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
WORKFLOW = ROOT / ".github" / "workflows" / "pages.yml"
LEFT_OUT = re.compile(r"^(torch|triton|nvidia-.*)$")  # the torch build's own choice
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def lock_entries() -> list[tuple[str, str]]:
    """(name, version) per pinned line of requirements.lock, in file order; a line that is no pin fails."""
    entries = []
    for number, line in enumerate(LOCK.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"requirements.lock:{number}: {line!r} is not name==version"
        entries.append((match[1], match[2]))
    return entries


def locked() -> dict[str, Version]:
    return {canonicalize_name(name): Version(version) for name, version in lock_entries()}


def project_requirements() -> list[Requirement]:
    """[project.dependencies] and the `compute` and `test` extras, as Requirements."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["compute"], *extras["test"]]]


def load_lock_tool():
    spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the lock ---------------------------------------------------------------------------------------------


def test_every_requirement_of_pyproject_is_pinned_at_a_version_it_accepts():
    pins = locked()
    problems = []
    for req in project_requirements():
        key = canonicalize_name(req.name)
        if key == "torch":
            continue
        if key not in pins:
            problems.append(f"{req} is not in requirements.lock")
        elif not req.specifier.contains(pins[key], prereleases=True):
            problems.append(f"{req} does not accept the locked {key}=={pins[key]}")
    assert not problems, "requirements.lock is out of date with pyproject.toml (run `make lock`):\n" + "\n".join(problems)


def test_the_lock_is_sorted_unique_pins_without_torch_or_cuda_packages():
    names = [canonicalize_name(name) for name, _ in lock_entries()]
    assert len(names) > 50, "requirements.lock pins only the direct requirements, not every transitive one"
    assert len(names) == len(set(names)), f"duplicates: {sorted({n for n in names if names.count(n) > 1})}"
    assert names == sorted(names)
    assert not [n for n in names if LEFT_OUT.match(n)], "torch, triton and nvidia-* are the torch build's choice"
    header = LOCK.read_text(encoding="utf-8").split("\n\n")[0]
    assert header.startswith("#") and "make lock" in header and "torch" in header


def test_the_lock_holds_every_package_the_project_needs_transitively():
    # Walk the installed metadata from pyproject's requirements, extras and markers included.
    pins, missing, seen = locked(), set(), set()
    todo = project_requirements()
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if (key, frozenset(req.extras)) in seen:
            continue
        seen.add((key, frozenset(req.extras)))
        if not LEFT_OUT.match(key) and key not in pins:
            missing.add(key)
        try:
            requires = metadata.distribution(req.name).requires or []
        except metadata.PackageNotFoundError:
            continue  # reported as missing above, or a CUDA package the CPU build of torch does not bring
        for line in requires:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                todo.append(dep)
    assert not missing, f"needed but not locked (run `make lock`): {sorted(missing)}"


def test_every_locked_package_is_installed_at_its_locked_version():
    # Proves that the environment running the tests was installed from the lock, as `make test` does.
    wrong = []
    for name, version in locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version}: not installed")
            continue
        if installed != version:
            wrong.append(f"{name}=={version}: {installed} is installed")
    assert not wrong, "this environment does not match requirements.lock (`make install` installs it):\n" + "\n".join(wrong)


def test_lock_lines_pin_every_frozen_package_but_torch_the_cuda_packages_pip_and_the_project():
    freeze = "\n".join([
        "PyYAML==6.0.2",
        "-e git+https://example.org/sae-atlas.git@abc#egg=sae_atlas",
        "torch==2.13.0+cpu",
        "nvidia-cublas-cu12==12.6.4.1",
        "triton==3.4.0",
        "sae_atlas==0.1.0",
        "Jinja2==3.1.6",
        "typing_extensions==4.15.0",
        "pip==26.3",
        "setuptools==84.2.1",
    ])
    expected = ["jinja2==3.1.6", "pyyaml==6.0.2", "setuptools==84.2.1", "typing-extensions==4.15.0"]
    assert load_lock_tool().lock_lines(freeze) == expected


def test_lock_tool_refuses_a_freeze_line_it_cannot_pin():
    with pytest.raises(ValueError, match="not name==version"):
        load_lock_tool().lock_lines("sae-lens @ file:///somewhere/sae_lens")


# --- the Makefile ------------------------------------------------------------------------------------------


def make_dry_run(*args: str) -> str:
    """The commands `make -n ARGS` would run for a venv that does not exist yet."""
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "VENV=/nonexistent/venv", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def pip_installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if " -m pip install" in line and "--upgrade pip" not in line]


def test_make_install_installs_torch_then_the_project_with_the_lock_as_constraints():
    installs = pip_installs(make_dry_run("install"))
    assert len(installs) == 2, installs
    assert all("-c requirements.lock" in line for line in installs)
    assert '"torch==2.13.0"' in installs[0] and '-e ".[compute,test]"' in installs[1]
    stamp_rule = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("$(STAMP):"))
    assert "$(LOCK)" in stamp_rule, "a changed lock must reinstall the venv"


def test_a_cuda_torch_still_overrides_the_default():
    url = "https://example.org/whl/cu126"
    installs = pip_installs(make_dry_run("install", "TORCH=torch==2.13.0+cu126", f"TORCH_PIP_ARGS=--extra-index-url {url}"))
    assert '"torch==2.13.0+cu126" --extra-index-url ' + url in installs[0]
    assert "-c requirements.lock" in installs[0]


def test_make_lock_resolves_with_the_chosen_torch():
    (command,) = [line for line in make_dry_run("lock", "TORCH=torch==2.13.0+cu126").splitlines() if "tools/lock.py" in line]
    assert '--torch "torch==2.13.0+cu126"' in command and "--out requirements.lock" in command


# --- browsers elsewhere ------------------------------------------------------------------------------------


def in_fresh_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A separate interpreter: Playwright's sync API allows one instance per thread, and a session fixture may hold one.
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.browser
def test_without_a_chromium_on_path_the_harness_launches_playwrights_own(tmp_path):
    from tests.browser import harness

    system = harness.chromium_path()
    env = {k: v for k, v in os.environ.items() if k != "CHROMIUM"}
    env.update(PATH=str(tmp_path / "empty-path"), PYTHONPATH=str(ROOT))
    if system is not None:
        # Stand the system Chromium in for the build `playwright install chromium` would put in an empty browsers dir.
        env["PLAYWRIGHT_BROWSERS_PATH"] = str(tmp_path / "browsers")
        probe = in_fresh_python(
            "from tests.browser import harness\n"
            "try:\n    harness.chromium_path()\nexcept RuntimeError as e:\n    print('refused:', e)\n"
            "from playwright.sync_api import sync_playwright\n"
            "with sync_playwright() as p:\n"
            "    try:\n        p.chromium.launch()\n    except Exception as e:\n        print(e)\n",
            env,
        )
        assert "refused: headless Chromium not found" in probe.stdout, probe.stdout + probe.stderr
        expected = Path(re.search(r"Executable doesn't exist at (\S+)", probe.stdout)[1])
        assert expected.is_relative_to(tmp_path / "browsers")
        expected.parent.mkdir(parents=True)
        expected.write_text(f'#!/bin/sh\nPATH="{os.environ["PATH"]}" exec "{system}" "$@"\n')
        expected.chmod(0o755)
    run = in_fresh_python(
        "from tests.browser import harness\n"
        "assert harness.chromium_path() is None, harness.chromium_path()\n"
        "with harness.chromium() as browser:\n"
        "    page = browser.new_page()\n"
        "    page.set_content('<p id=x>rendered</p>')\n"
        "    print(page.inner_text('#x'))\n",
        env,
    )
    assert run.returncode == 0 and run.stdout.strip() == "rendered", run.stdout + run.stderr


# --- the Pages workflow ------------------------------------------------------------------------------------


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def run_text(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def uses(job: dict) -> list[str]:
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def test_the_workflow_computes_with_cpu_torch_unless_given_a_cache_to_render():
    wf = workflow()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert "cache_release" in triggers["workflow_dispatch"]["inputs"]
    assert "main" in triggers["push"]["branches"]
    jobs = wf["jobs"]
    assert set(jobs) == {"compute", "render", "deploy"}
    assert jobs["compute"]["if"] == "${{ !inputs.cache_release }}"
    assert jobs["render"]["if"] == "${{ inputs.cache_release }}"
    compute = run_text(jobs["compute"])
    assert "make build" in compute
    assert re.search(r'TORCH="torch==[\d.]+\+cpu"', compute), "the runner must not pull the CUDA build of torch"
    assert 'TORCH_PIP_ARGS="--extra-index-url $TORCH_INDEX_URL"' in compute  # the CPU index, a repository variable
    assert any(s.get("env", {}).get("TORCH_INDEX_URL") == "${{ vars.TORCH_INDEX_URL }}" for s in jobs["compute"]["steps"])
    for job in ("compute", "render"):
        assert "actions/upload-pages-artifact" in uses(jobs[job])
        assert next(s for s in jobs[job]["steps"] if "upload-pages-artifact" in s.get("uses", ""))["with"]["path"] == "build/site"
    assert set(jobs["deploy"]["needs"]) == {"compute", "render"}
    assert "actions/deploy-pages" in uses(jobs["deploy"])


def test_the_render_only_way_installs_no_torch_and_renders_the_downloaded_cache():
    render = run_text(workflow()["jobs"]["render"])
    installs = [line for line in render.splitlines() if "pip install" in line]
    assert installs == ["pip install -c requirements.lock ."], "install the project only, without extras"
    assert "torch" not in render and not re.search(r"^\s*make\b", render, re.M), "make build/install bring torch"
    assert re.search(r'gh release download "\$CACHE_RELEASE"', render)
    assert re.search(r'tar -xzf "\$RUNNER_TEMP/\$CACHE_ASSET" -C build', render)
    steps = render.splitlines()
    render_at = next(i for i, line in enumerate(steps) if line.startswith("sae-atlas render"))
    assert render_at > next(i for i, line in enumerate(steps) if line.startswith("tar -xzf"))
    assert not re.search(r"\$\{\{\s*inputs\.", render), "inputs reach the scripts through env, never spliced into them"

"""Faults lose nothing: failed or killed renders leave the previous site as it was, corrupt cache
entries are reported and recomputed, a killed compute resumes to the same site, running out of
device memory names --batch-size, and bad input exits 2 with `path:line:col:` lines and writes
nothing. Every build here is the real CLI (`sae_atlas.cli.main`, in process or as a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sae_atlas.cli import main as cli_main
from tests.fixtures import build_fixture_content, make_sae_dir

ROOT = Path(__file__).resolve().parents[1]
HOOK = "blocks.{layer}.hook_resid_post"
# Two SAEs in one Set (so a Set entry is computed too); d_sae below 16 keeps the map on PCA (fast).
SETS = (("res-st", HOOK, "standard", (0, 1)),)
N_PROMPTS, CONTEXT, D_SAE = 32, 16, 12
BATCH = ["--batch-size", "2"]  # 16 batches per pass: room for kills between checkpoints
PROBLEM_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


# -- helpers --------------------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and directory under root: relative path -> sha256 of the bytes ("dir" for dirs)."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_same_tree(actual: Path, expected: Path) -> None:
    a, e = tree_digest(actual), tree_digest(expected)
    assert a.keys() == e.keys(), f"files differ: only in {actual}: {sorted(a.keys() - e.keys())[:10]}, only in {expected}: {sorted(e.keys() - a.keys())[:10]}"
    changed = [k for k in a if a[k] != e[k]]
    assert not changed, f"files with other bytes: {changed[:10]}"


def build(content: Path, cache: Path, out: Path, *extra: str, command: str = "build") -> int:
    args = [command, "--content", str(content), "--cache", str(cache), "--quiet"]
    if command != "render":
        args += ["--device", "cpu", *BATCH]
    if command != "compute":
        args += ["--out", str(out)]
    return cli_main(args + list(extra))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sae_atlas", *args]


def run_and_kill(argv: list[str], kill_when, timeout: float = 120.0) -> bool:
    """Start argv; SIGKILL it as soon as kill_when(elapsed seconds) is true. True if it was killed,
    False if it exited first (then it must have succeeded)."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            assert elapsed < timeout, f"{argv} ran past {timeout} s"
            if kill_when(elapsed):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        err = proc.stderr.read().decode()
        assert proc.returncode == 0, err
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def partial_states(cache: Path) -> list[tuple[int, int]]:
    """(pass, prompts_done) of every checkpoint now in the cache."""
    states = []
    for meta in (cache / "sae").glob("*.partial/meta.json"):
        try:
            m = json.loads(meta.read_bytes())
            states.append((int(m["pass"]), int(m["prompts_done"])))
        except (OSError, ValueError, KeyError):
            pass  # being replaced right now
    return states


def sae_entries(cache: Path) -> list[Path]:
    return sorted(p.parent for p in (cache / "sae").glob("*/meta.json") if "." not in p.parent.name)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def content(tmp_path_factory) -> Path:
    return build_fixture_content(tmp_path_factory.mktemp("faults"), n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, sets=SETS)


@pytest.fixture(scope="module")
def reference(content, tmp_path_factory) -> tuple[Path, Path]:
    """(cache, site) of one uninterrupted build."""
    root = tmp_path_factory.mktemp("reference")
    assert build(content, root / "cache", root / "site") == 0
    return root / "cache", root / "site"


# -- determinism ----------------------------------------------------------------------------------


def test_two_builds_from_the_same_inputs_are_byte_identical(content, reference, tmp_path):
    assert build(content, tmp_path / "cache", tmp_path / "site") == 0
    assert_same_tree(tmp_path / "site", reference[1])


# -- atomic render --------------------------------------------------------------------------------


def previous_site(reference_site: Path, out: Path) -> dict[str, str]:
    """A previous site at `out` that differs from what the next render writes; its digest."""
    shutil.copytree(reference_site, out)
    (out / "index.html").write_text("<!doctype html><title>the previous site</title>\n")
    (out / "only-in-the-previous-site.txt").write_text("keep me\n")
    return tree_digest(out)


def fail_after(calls: int, original, exc: BaseException):
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise exc
        return original(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(
    "where, exc",
    [
        ("pages.render_pages", RuntimeError("template exploded")),
        ("shards.write_sae_data", OSError(28, "No space left on device")),
        ("shards.write_sae_data", KeyboardInterrupt()),
    ],
    ids=["page-error", "disk-full-in-data", "ctrl-c-in-data"],
)
def test_a_render_failing_midway_leaves_the_previous_site_byte_for_byte(content, reference, tmp_path, monkeypatch, capsys, where, exc):
    from sae_atlas.render import pages, shards

    out = tmp_path / "site"
    before = previous_site(reference[1], out)
    module, name = where.split(".")
    target = {"pages": pages, "shards": shards}[module]
    # Data shards fail on the second SAE (the first SAE's shards are already in the staging dir).
    monkeypatch.setattr(target, name, fail_after(0 if module == "pages" else 1, getattr(target, name), exc))
    if isinstance(exc, KeyboardInterrupt):
        assert build(content, reference[0], out, command="render") == 130
    elif isinstance(exc, OSError):
        assert build(content, reference[0], out, command="render") == 1
        err = capsys.readouterr().err
        assert "writing the site failed" in err and "No space left on device" in err and "unchanged" in err
        assert "Traceback" not in err
    else:
        with pytest.raises(type(exc)):
            build(content, reference[0], out, command="render")
    assert tree_digest(out) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name != "site"], "the staging dir was left behind"


def test_a_killed_render_leaves_the_previous_site_byte_for_byte(content, reference, tmp_path):
    out = tmp_path / "site"
    before = previous_site(reference[1], out)
    args = ["render", "--content", str(content), "--cache", str(reference[0]), "--out", str(out), "--quiet"]
    # Each written file takes a few ms longer, so that the kills land mid-render on any machine.
    slow_render = (
        "import sys, time; from sae_atlas.render import write; original = write.SiteWriter.write\n"
        "def slow(self, *a): time.sleep(0.01); return original(self, *a)\n"
        "write.SiteWriter.write = slow; from sae_atlas.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", slow_render, *args]

    def staged_files(at_least: int):
        def ready(_elapsed: float) -> bool:
            staging = list(tmp_path.glob(".site.rendering-*"))
            return bool(staging) and sum(1 for _ in staging[0].rglob("*")) >= at_least
        return ready

    kills = [lambda t: t >= 0.3, staged_files(0), staged_files(5), staged_files(15)]
    for n, when in enumerate(kills):
        if not run_and_kill(argv, when):
            assert n >= 2, "the render finished before the staging dir appeared"
            break  # it finished first: the new site replaced the previous one
        assert tree_digest(out) == before, f"kill {n} changed the previous site"
    # The next render replaces the whole previous site with the new one.
    assert subprocess.run(cli(*args), cwd=ROOT, capture_output=True).returncode == 0
    assert_same_tree(out, reference[1])


# -- cache entries --------------------------------------------------------------------------------


def test_corrupt_cache_entries_are_reported_recomputed_and_never_rendered(content, reference, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(reference[0], cache)
    sae0, sae1 = sae_entries(cache)
    corpus = next((cache / "corpus").iterdir())
    # A flipped byte in an array, a truncated meta.json, a deleted array file.
    array = sae0 / "top_value.npy"
    data = bytearray(array.read_bytes())
    data[-1] ^= 0xFF
    array.write_bytes(bytes(data))
    meta = sae1 / "meta.json"
    meta.write_bytes(meta.read_bytes()[:40])
    (corpus / "tokens.npy").unlink()

    assert build(content, cache, tmp_path / "site") == 0
    err = capsys.readouterr().err
    reported = [line for line in err.splitlines() if "corrupt" in line]
    for entry in (sae0, sae1, corpus):
        assert any(entry.name in line for line in reported), f"{entry.name} not reported as corrupt:\n{err}"
    assert_same_tree(tmp_path / "site", reference[1])
    assert_same_tree(cache / "sae", reference[0] / "sae")


def test_render_alone_refuses_a_corrupt_entry_and_keeps_the_site(content, reference, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(reference[0], cache)
    array = sae_entries(cache)[0] / "histogram.npy"
    array.write_bytes(array.read_bytes()[:-8])
    out = tmp_path / "site"
    before = previous_site(reference[1], out)
    assert build(content, cache, out, command="render") == 1
    err = capsys.readouterr().err
    assert "corrupt" in err and "run `sae-atlas compute` first" in err and "Traceback" not in err
    assert tree_digest(out) == before


# -- killed compute -------------------------------------------------------------------------------

# The real CLI with checkpoints every 2 batches instead of 20 (the only change), so that a tiny
# corpus has several checkpoints per pass.
FREQUENT_CHECKPOINTS = (
    "import functools, sys\n"
    "import sae_atlas.compute as compute\n"
    "compute.ComputeOptions = functools.partial(compute.ComputeOptions, checkpoint_every=2)\n"
    "from sae_atlas.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_a_killed_compute_resumes_to_a_byte_identical_site(content, reference, tmp_path):
    cache = tmp_path / "cache"
    argv = [sys.executable, "-c", FREQUENT_CHECKPOINTS, "compute", "--content", str(content), "--cache", str(cache),
            "--device", "cpu", "--quiet", *BATCH]
    seen: list[list[tuple[int, int]]] = []

    def at_checkpoint(pass_no: int):
        def ready(_elapsed: float) -> bool:
            states = partial_states(cache)
            if any(p == pass_no and done > 0 for p, done in states):
                seen.append(states)
                return True
            return False
        return ready

    assert run_and_kill(argv, lambda t: t >= 0.5)  # while starting up
    run_and_kill(argv, lambda t: t >= 2.0)  # loading, tokenizing or in pass 1
    assert run_and_kill(argv, at_checkpoint(1)), "finished before a pass-1 checkpoint"
    assert run_and_kill(argv, at_checkpoint(2)), "finished before a pass-2 checkpoint"
    assert seen[-1] and all(p == 2 for p, _ in seen[-1]), seen
    run_and_kill(argv, lambda t: bool(sae_entries(cache)))  # between the two SAE entries, if it lands there
    run_and_kill(argv, lambda t: False)  # to the end

    assert len(sae_entries(cache)) == 2
    assert not list((cache / "sae").glob("*.partial")), "checkpoints left after the run finished"
    assert build(content, cache, tmp_path / "site", command="render") == 0
    assert_same_tree(tmp_path / "site", reference[1])


# -- out of memory --------------------------------------------------------------------------------


def test_out_of_memory_names_the_batch_size_setting(content, tmp_path, monkeypatch, capsys):
    import torch

    from sae_atlas.compute import engine

    original = engine.load_sae

    def load_sae_that_runs_out_of_memory(*args, **kwargs):
        sae = original(*args, **kwargs)

        def encode(x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

        sae.encode = encode
        return sae

    monkeypatch.setattr(engine, "load_sae", load_sae_that_runs_out_of_memory)
    code = build(content, tmp_path / "cache", tmp_path / "site")
    err = capsys.readouterr().err
    assert code == 1
    assert "--batch-size" in err and "out of memory" in err
    assert "Traceback" not in err
    assert not (tmp_path / "site").exists()
    assert not sae_entries(tmp_path / "cache")


# -- bad input at the CLI -------------------------------------------------------------------------


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, path)
    path.write_text(text.replace(old, new, 1))


def _yaml_syntax_error(c: Path) -> str:
    _edit(c / "releases/tiny-demo.yaml", "title: Tiny demo SAEs", "title: [Tiny demo SAEs")
    return "invalid YAML"


def _unknown_key(c: Path) -> str:
    _edit(c / "releases/tiny-demo.yaml", "authors:", "autors:")
    return "unknown key 'autors' in the manifest; did you mean 'authors'?"


def _non_utf8_corpus(c: Path) -> str:
    corpus = c / "corpus/stories.txt"
    corpus.write_bytes(corpus.read_bytes() + b"caf\xe9\n")
    return "is not UTF-8 (byte 0xe9)"


def _truncated_sae_weights(c: Path) -> str:
    weights = c / "saes/res-st/0/sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    return "sae_weights.safetensors is truncated"


def _sae_d_in_mismatch(c: Path) -> str:
    shutil.rmtree(c / "saes/res-st/1")
    make_sae_dir(c / "saes/res-st/1", 8, D_SAE, "standard", HOOK.format(layer=1), seed=5)  # d_model is 16
    return "SAE d_in is 8 but hook 'blocks.1.hook_resid_post'"


BAD_INPUTS = {
    "yaml-syntax-error": _yaml_syntax_error,
    "unknown-key-did-you-mean": _unknown_key,
    "non-utf8-corpus": _non_utf8_corpus,
    "truncated-sae-weights": _truncated_sae_weights,
    "sae-d-in-mismatch": _sae_d_in_mismatch,
}


@pytest.fixture(scope="module")
def bad_input_runs(content, tmp_path_factory) -> dict[str, tuple[Path, str, subprocess.CompletedProcess]]:
    """Every bad-input case through `python -m sae_atlas build`, run side by side."""
    root = tmp_path_factory.mktemp("bad-input")
    procs = {}
    for name, spoil in BAD_INPUTS.items():
        case = root / name
        shutil.copytree(content, case / "content")
        expected = spoil(case / "content")
        argv = cli("build", "--content", str(case / "content"), "--out", str(case / "build/site"),
                   "--cache", str(case / "build/cache"), "--quiet", "--device", "cpu")
        procs[name] = (case, expected, subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    runs = {}
    for name, (case, expected, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        runs[name] = (case, expected, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return runs


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_positioned_lines_and_writes_nothing(bad_input_runs, case):
    root, expected, run = bad_input_runs[case]
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    *problems, summary = lines
    assert problems and summary.endswith("found; nothing was written"), run.stderr
    for line in problems:
        m = PROBLEM_LINE.match(line)
        assert m, f"not a path:line:col: line: {line!r}"
        assert Path(m["path"]).exists() and int(m["line"]) >= 1 and int(m["col"]) >= 1, line
        assert "; expected" in m["message"] or "did you mean" in m["message"], line
    assert any(expected in line for line in problems), run.stderr
    assert not (root / "build").exists(), sorted(p.name for p in (root / "build").rglob("*"))

"""The site directory swap: atomic, and repaired after a run killed mid-swap."""

import os
import subprocess
import sys

import pytest

from sae_atlas.render.write import atomic_directory


def _site(path, text):
    path.mkdir(parents=True, exist_ok=True)
    (path / "index.html").write_text(text)


def test_swap_replaces_the_site_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "site"
    _site(out, "old")
    with atomic_directory(out) as staging:
        (staging / "index.html").write_text("new")
    assert (out / "index.html").read_text() == "new"
    assert os.listdir(tmp_path) == ["site"]


def test_failure_inside_keeps_the_previous_site(tmp_path):
    out = tmp_path / "site"
    _site(out, "old")
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as staging:
            (staging / "index.html").write_text("half")
            raise RuntimeError("boom")
    assert (out / "index.html").read_text() == "old"
    assert os.listdir(tmp_path) == ["site"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_site_moved_away_by_a_killed_swap_is_restored_first(tmp_path):
    out = tmp_path / "site"
    pid = _dead_pid()
    _site(tmp_path / f".site.old-{pid}", "previous")  # killed between the two renames: no `site`
    _site(tmp_path / f".site.rendering-{pid}", "half-written")
    with pytest.raises(RuntimeError):
        with atomic_directory(out):
            raise RuntimeError("this render fails too")
    assert (out / "index.html").read_text() == "previous"
    assert os.listdir(tmp_path) == ["site"]

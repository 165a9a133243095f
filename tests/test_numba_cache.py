"""UMAP's compiled code is cached on disk between runs, under the user's cache directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sae_atlas.compute.weights import numba_cache_dir

ROOT = Path(__file__).resolve().parent.parent


def test_cache_dir_follows_numba_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert numba_cache_dir() == tmp_path / "xdg" / "sae-atlas" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nb"))
    assert numba_cache_dir() == tmp_path / "nb"


LAYOUT = "layouts._optimize_layout_euclidean_single_epoch"


def test_umap_layout_compiled_once_into_the_user_cache(tmp_path):
    """A map in a fresh process writes numba's cache (index and compiled code) for umap-learn's
    layout optimiser under XDG_CACHE_HOME/sae-atlas/numba; nothing else names a cache dir.

    The new cache starts as a copy of this machine's own (where earlier maps left one) without the
    layout optimiser's entries, so that only that function is compiled here, not all of UMAP's."""
    ours = numba_cache_dir()
    if ours.is_dir():
        shutil.copytree(ours, tmp_path / "sae-atlas" / "numba", ignore=lambda _dir, names: [n for n in names if n.startswith(LAYOUT)])
    assert not [p for p in tmp_path.rglob(LAYOUT + "*")]
    script = (
        "import torch\n"
        "from sae_atlas.compute.weights import umap_coords\n"
        "coords = umap_coords(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), 5, 0, epochs=5)\n"
        "assert coords.shape == (64, 2)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=600)
    files = [p.name for p in (tmp_path / "sae-atlas" / "numba").rglob("*") if p.is_file()]
    assert any(name.startswith(LAYOUT) and name.endswith(".nbi") for name in files), files
    assert any(name.startswith(LAYOUT) and name.endswith(".nbc") for name in files), files

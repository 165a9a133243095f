"""UMAP's compiled code is cached on disk between runs, under the user's cache directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

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


KERNELS = '''
def total(x, out):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    out[0] = s


def text_hash(n):
    return hash("feature" + str(n))
'''

RUN_KERNELS = '''
import sys

import numpy as np
import numpy as np
sys.path.insert(0, sys.argv[1])
import kernels
from sae_atlas.compute.weights import compiled
x = np.random.default_rng(0).standard_normal(1000)
out = np.zeros(1)
compiled(kernels.total)(x, out)
expected = 0.0
for v in x.tolist():
    expected += v * v
assert out[0] == expected, (out[0], expected)
assert compiled(kernels.text_hash)(5) == hash("feature5")
print("compiler" if "numba.np.arraymath" in sys.modules else "cache only")
'''


def test_kernels_load_from_the_cache_without_numbas_implementations(tmp_path):
    """`weights.compiled` kernels: compiled in a first process; in the next ones (another hash
    seed each, so that the string hash reads that process's secret) loaded from numba's cache
    without importing numba's implementations, and giving the same results."""
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "kernels.py").write_text(KERNELS)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    runs = []
    for seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", RUN_KERNELS, str(tmp_path / "mod")], env=dict(env, PYTHONHASHSEED=seed), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.strip())
    assert runs == ["compiler", "cache only", "cache only"]


MAP = '''
import sys

import numpy as np
import numpy as np
import torch
from sae_atlas.compute import maps, weights
if sys.argv[1] == "numba's own load":
    maps.cache_loads_without_refresh = lambda: None
    weights.cache_loads_without_refresh = lambda: None
request = weights.umap_request(torch.randn(300, 16, generator=torch.Generator().manual_seed(3)), 10, 0, epochs=20)
coords = maps.fit(**request, numba_threads=1)
np.save(sys.argv[2], coords)
print("compiler" if "numba.np.arraymath" in sys.modules else "cache only")
'''


def test_a_map_from_the_cache_loads_no_numba_implementations_and_is_the_same(tmp_path):
    """A UMAP map in a process whose cache is warm loads umap-learn's code without numba's
    implementations, and its coordinates are those of numba's own load from the same cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache_dir()))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    runs = {}
    for mode in ("warm the cache", "numba's own load", "cache only"):
        out = tmp_path / f"{len(runs)}.npy"
        done = subprocess.run([sys.executable, "-c", MAP, mode, str(out)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs[mode] = (done.stdout.strip(), np.load(out))
    assert runs["numba's own load"][0] == "compiler"
    assert runs["cache only"][0] == "cache only"
    assert runs["cache only"][1].tobytes() == runs["numba's own load"][1].tobytes()

"""transformer_lens imported by the backend without datasets, pandas and transformers' model code,
and umap without scipy.stats and pandas, which they still get, as the real objects, when they use
them. Each check runs in a fresh interpreter (what a process has imported is what is tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("datasets", "pandas", "transformers.modeling_utils", "transformers.models.bert.modeling_bert", "torch._dynamo", "sympy")


def _python(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_plain_import_of_transformer_lens_imports_the_heavy_modules():
    """What the deferral is measured against: the ordinary import loads every one of them."""
    loaded = _python(f"import sys, json, transformer_lens; print(json.dumps([m in sys.modules for m in {HEAVY!r}]))")
    assert loaded == [True] * len(HEAVY)


def test_the_backend_builds_and_runs_a_model_without_the_heavy_modules():
    code = f"""
import json, sys
import torch
from sae_atlas.backends.transformer_lens import import_transformer_lens
tl = import_transformer_lens()
from transformer_lens import HookedTransformer, HookedTransformerConfig
cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=4, d_head=4, n_heads=2, d_mlp=16, d_vocab=11, act_fn="gelu", device="cpu")
torch.manual_seed(0)
model = HookedTransformer(cfg)
logits, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
print(json.dumps({{"loaded": [m for m in {HEAVY!r} if m in sys.modules], "shape": list(logits.shape),
                  "hooks": "blocks.0.hook_resid_pre" in cache}}))
"""
    assert _python(code) == {"loaded": [], "shape": [1, 3, 11], "hooks": True}


def test_deferred_names_are_the_real_objects_once_used():
    code = """
import json, sys
from sae_atlas.backends.transformer_lens import import_transformer_lens
from sae_atlas.backends.deferred_imports import Deferred
import_transformer_lens()
import transformer_lens.loading_from_pretrained as lfp
ht = sys.modules["transformer_lens.HookedTransformer"]
import transformer_lens.utilities.hf_utils as hf
before = [type(lfp.BertForPreTraining) is Deferred, type(ht.PreTrainedModel) is Deferred, type(hf.load_dataset) is Deferred]
not_a_model = isinstance(object(), ht.PreTrainedModel)  # an isinstance check imports the real class
import transformers
from transformers import PreTrainedModel
lfp.BertForPreTraining.from_pretrained  # an attribute: resolves and rebinds
import datasets, pandas
from datasets.load import load_dataset
print(json.dumps({
    "before": before, "not_a_model": not_a_model,
    "class": ht.PreTrainedModel is PreTrainedModel and transformers.PreTrainedModel is PreTrainedModel,
    "auto": lfp.BertForPreTraining is transformers.BertForPreTraining,
    "real_modules": [type(sys.modules[m]).__name__ for m in ("datasets", "pandas", "transformers.modeling_utils")],
    "dataframe": pandas.DataFrame({"a": [1, 2]}).shape[0],
    "load_dataset": callable(load_dataset) and type(load_dataset) is not Deferred and load_dataset is datasets.load_dataset,
}))
"""
    out = _python(code)
    assert out["before"] == [True, True, True]
    assert out["not_a_model"] is False
    assert out["class"] and out["auto"] and out["load_dataset"]
    assert out["real_modules"] == ["module", "module", "module"]
    assert out["dataframe"] == 2


def test_a_module_bound_by_transformer_lens_imports_the_real_one_on_first_use():
    code = """
import json, sys
from sae_atlas.backends.transformer_lens import import_transformer_lens
import_transformer_lens()
import transformer_lens.patching as patching
stand_in = type(patching.pd).__name__
frame = patching.pd.DataFrame({"x": [1, 2, 3]})
print(json.dumps({"stand_in": stand_in, "rows": len(frame), "pandas": type(sys.modules["pandas"]).__name__,
                  "same": type(frame) is sys.modules["pandas"].DataFrame}))
"""
    assert _python(code) == {"stand_in": "_StandIn", "rows": 3, "pandas": "module", "same": True}


def test_an_earlier_ordinary_import_is_kept():
    code = """
import json, sys
import transformer_lens, transformers
from sae_atlas.backends.transformer_lens import import_transformer_lens
assert import_transformer_lens() is transformer_lens
import transformer_lens.loading_from_pretrained as lfp
print(json.dumps(lfp.AutoModelForCausalLM is transformers.AutoModelForCausalLM))
"""
    assert _python(code) is True


UMAP_HEAVY = ("scipy.stats", "pandas")
UMAP_FIT = """
import hashlib, json, sys
import torch
from sae_atlas.compute.weights import umap_coords
torch.manual_seed(0)
w = torch.randn(96, 16)
coords = umap_coords(w, n_neighbours=10, seed=3, epochs=50)
print(json.dumps({"sha": hashlib.sha256(coords.tobytes()).hexdigest(), "shape": list(coords.shape),
                  "loaded": [m for m in %r if m in sys.modules]}))
"""


def test_a_plain_import_of_umap_imports_scipy_stats_and_pandas():
    loaded = _python(f"import sys, json, umap; print(json.dumps([m in sys.modules for m in {UMAP_HEAVY!r}]))")
    assert loaded == [True] * len(UMAP_HEAVY)


def test_a_umap_map_without_scipy_stats_and_pandas_is_the_map_of_an_ordinary_import():
    deferred = _python(UMAP_FIT % (UMAP_HEAVY,))
    ordinary = _python("import umap\n" + UMAP_FIT % (UMAP_HEAVY,))  # _umap() then keeps the ordinary import
    assert deferred["loaded"] == [] and ordinary["loaded"] == list(UMAP_HEAVY)
    assert deferred["shape"] == [96, 2]
    assert deferred["sha"] == ordinary["sha"]


def test_umaps_deferred_names_and_modules_are_the_real_ones_once_used():
    code = """
import json, sys
from sae_atlas.backends.deferred_imports import Deferred, import_umap
import_umap()
import sklearn.utils.fixes as fixes, sklearn.metrics._ranking as ranking
before = [type(fixes.pd).__name__, type(ranking.rankdata) is Deferred, "scipy.stats" in sys.modules]
version = fixes.pd.__version__  # a dunder too, once the import is over
ranks = ranking.rankdata([30, 10, 20]).tolist()
import pandas, scipy.stats
print(json.dumps({"before": before, "version": version == pandas.__version__, "ranks": ranks,
                  "rebound": ranking.rankdata is scipy.stats.rankdata, "stats": fixes.scipy.stats is scipy.stats,
                  "mode": fixes._mode([1, 2, 2, 3])[0].tolist(),
                  "real_modules": [type(sys.modules[m]).__name__ for m in ("pandas", "scipy.stats")]}))
"""
    out = _python(code)
    assert out["before"] == ["_StandIn", True, False]
    assert out["version"] and out["rebound"] and out["stats"]
    assert out["ranks"] == [3.0, 1.0, 2.0]
    assert out["mode"] == [2]
    assert out["real_modules"] == ["module", "module"]


def test_threads_importing_umap_at_once_each_get_the_whole_module():
    code = """
import json, sys, threading
from sae_atlas.backends.deferred_imports import import_umap
got = []
threads = [threading.Thread(target=lambda: got.append(hasattr(import_umap(), "UMAP"))) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"got": got, "loaded": [m for m in ("scipy.stats", "pandas") if m in sys.modules]}))
"""
    assert _python(code) == {"got": [True] * 4, "loaded": []}


STRUCTURE = """
import json, os, sys
%s
import transformers
from transformers.utils import import_utils
models = os.path.join(os.path.dirname(transformers.__file__), "models")
scanned = import_utils.create_import_structure_from_path.cache_info().misses  # files transformers read
structure = import_utils.define_import_structure(models, prefix="models")
flat = sorted((sorted(backends), module, sorted(names)) for backends, modules in structure.items() for module, names in modules.items())
from transformers import AutoTokenizer, PreTrainedTokenizerBase
print(json.dumps({"scanned": scanned, "structure": flat, "tokenizer": issubclass(AutoTokenizer, object) and PreTrainedTokenizerBase.__name__}))
"""


def test_transformers_import_structure_is_read_from_the_cache_while_its_sources_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ordinary = _python(STRUCTURE % "")
    cached = "from sae_atlas.backends.deferred_imports import import_transformers\nimport_transformers()"
    first = _python(STRUCTURE % cached)  # reads the sources and keeps what it found
    kept = sorted((tmp_path / "sae-atlas" / "transformers").glob("import-structure-*.pickle"))
    second = _python(STRUCTURE % cached)
    assert ordinary["scanned"] > 500 and first["scanned"] > 500  # a module per model, and more
    assert len(kept) == 2  # `transformers` and `transformers.models` each ask for the models' structure
    assert second["scanned"] == 0
    assert ordinary["structure"] == first["structure"] == second["structure"]
    assert second["tokenizer"] == "PreTrainedTokenizerBase"
    # A structure kept under another fingerprint (sources changed, another version) is read again.
    import pickle

    for path in kept:
        fingerprint, _ = pickle.loads(path.read_bytes())
        path.write_bytes(pickle.dumps(("stale" + fingerprint, {frozenset(): {}})))
    stale = _python(STRUCTURE % cached)
    assert stale["scanned"] > 500 and stale["structure"] == ordinary["structure"]
    assert all(not pickle.loads(path.read_bytes())[0].startswith("stale") for path in kept)  # and kept anew

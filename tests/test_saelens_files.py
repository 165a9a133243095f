"""SAELens save_model directories read without SAELens (`sae_atlas.backends.saelens_files`): the
same activations and reconstructions, bit for bit, as SAELens's own `SAE.load_from_disk` on every
kind of directory the reader accepts; None (SAELens loads it) for every kind it does not; and a
`sae-atlas compute` of local files imports neither SAELens nor plotting libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_atlas.backends.saelens_files import native_module
from sae_atlas.compute.weights import numba_cache_dir
from tests.conftest import ROOT
from tests.fixtures import build_fixture_content, make_sae_dir

D_IN, D_SAE = 12, 40


def _saelens(path: Path, dtype: str):
    from sae_lens import SAE

    return SAE.load_from_disk(str(path), device="cpu", dtype=dtype)


def _rewrite_cfg(path: Path, **changes) -> None:
    cfg = json.loads((path / "cfg.json").read_text())
    cfg.update(changes)
    (path / "cfg.json").write_text(json.dumps(cfg))


def _inputs(seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(3, 7, D_IN, generator=g) * 2).to(dtype)


CASES = [
    ("standard", {}, "float32"),
    ("standard", {"apply_b_dec_to_input": False}, "float32"),
    ("standard", {}, "bfloat16"),
    ("jumprelu", {}, "float32"),
    ("jumprelu", {"apply_b_dec_to_input": False}, "float64"),
    ("topk", {}, "float32"),
    ("topk", {"rescale_acts_by_decoder_norm": True}, "float32"),
]


@pytest.mark.parametrize("arch,changes,dtype", CASES, ids=[f"{a}-{'-'.join(c) or 'default'}-{d}" for a, c, d in CASES])
def test_activations_and_reconstructions_are_saelens_bits(tmp_path, arch, changes, dtype):
    make_sae_dir(tmp_path, D_IN, D_SAE, arch, "blocks.0.hook_resid_post", seed=3)
    if changes:
        _rewrite_cfg(tmp_path, **changes)
    ref, ours = _saelens(tmp_path, dtype), native_module(tmp_path, "cpu", dtype)
    assert ours is not None
    assert ours.cfg.architecture() == ref.cfg.architecture() == arch
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(ours, name), getattr(ref, name).detach()), name
        assert getattr(ours, name).dtype == getattr(ref, name).dtype
    for key in ("hook_name", "prepend_bos", "model_from_pretrained_kwargs"):
        assert ours.cfg.metadata.get(key) == ref.cfg.metadata.get(key)
    assert ours.cfg.d_in == ref.cfg.d_in and ours.cfg.d_sae == ref.cfg.d_sae
    with torch.no_grad():
        for seed, x in enumerate((_inputs(0), _inputs(1).double(), _inputs(2)[0])):
            a_ref, a_ours = ref.encode(x), ours.encode(x)
            assert a_ref.dtype == a_ours.dtype and torch.equal(a_ref, a_ours), seed
            assert a_ours.count_nonzero() > 0
            assert torch.equal(ref.decode(a_ref), ours.decode(a_ours)), seed
        flat = ref.encode(_inputs(5).reshape(-1, D_IN))
        sparse = [flat.to_sparse_csr()] + ([flat.to_sparse()] if arch == "topk" else [])
        for acts in sparse:  # torch has no sparse product in every dtype: then both fail alike
            try:
                expected = ref.decode(acts)
            except (NotImplementedError, RuntimeError) as e:
                with pytest.raises(type(e)):
                    ours.decode(acts)
                continue
            assert torch.equal(expected, ours.decode(acts))


def test_directories_it_does_not_run_exactly_are_left_to_saelens(tmp_path):
    def fresh(name: str, arch: str = "standard", **kw) -> Path:
        path = tmp_path / name
        make_sae_dir(path, D_IN, D_SAE, arch, "blocks.0.hook_resid_post", seed=1, **kw)
        return path

    assert native_module(fresh("ok"), "cpu", "float32") is not None
    from sae_lens import GatedSAE, GatedSAEConfig

    gated = tmp_path / "gated"
    GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)).save_model(str(gated))
    assert native_module(gated, "cpu", "float32") is None  # an architecture not read here
    assert native_module(fresh("hook-z", hook_z=True), "cpu", "float32") is None  # hook_z reshaping
    norm = fresh("norm")
    _rewrite_cfg(norm, normalize_activations="constant_norm_rescale")
    assert native_module(norm, "cpu", "float32") is None
    old = fresh("pre6")
    cfg = json.loads((old / "cfg.json").read_text())
    cfg["metadata"]["sae_lens_version"] = "5.9.0"
    (old / "cfg.json").write_text(json.dumps(cfg))
    assert native_module(old, "cpu", "float32") is None  # SAELens rewrites pre-6.0 configs
    unknown = fresh("unknown-field")
    _rewrite_cfg(unknown, some_new_inference_option=True)
    assert native_module(unknown, "cpu", "float32") is None
    log_threshold = fresh("log-threshold", "jumprelu")
    from safetensors.torch import load_file, save_file

    state = load_file(str(log_threshold / "sae_weights.safetensors"))
    state["log_threshold"] = state.pop("threshold").log()
    save_file(state, str(log_threshold / "sae_weights.safetensors"))
    assert native_module(log_threshold, "cpu", "float32") is None  # SAELens converts it on load


# One set of each architecture the reader runs, on local files and a local corpus.
LOCAL_SETS = (
    ("res-st", "blocks.{layer}.hook_resid_post", "standard", (0,)),
    ("res-tk", "blocks.{layer}.hook_resid_post", "topk", (1,)),
    ("mlp-jr", "blocks.{layer}.hook_mlp_out", "jumprelu", (0,)),
)
# Packages a compute of local files with a local corpus has no use for.
NOT_IMPORTED = ("sae_lens", "wandb", "matplotlib", "plotly", "seaborn", "IPython")


def test_compute_of_local_files_imports_no_saelens_training_stack_or_plotting(tmp_path):
    content = build_fixture_content(tmp_path, n_prompts=8, context=12, d_sae=24, sets=LOCAL_SETS, d_model=16)
    code = (
        "import sys\n"
        "from sae_atlas import cli\n"
        f"rc = cli.main(['compute', '--content', {str(content)!r}, '--cache', {str(tmp_path / 'cache')!r}, '--device', 'cpu', '--quiet'])\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_IMPORTED!r}))\n"
        "print('RC', rc, 'HEAVY', heavy, 'TORCH', 'torch' in sys.modules)\n"
    )
    # UMAP's compiled code from this machine's cache (a fresh HOME would compile all of it again).
    env = {"PYTHONPATH": str(ROOT), "PATH": "", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "NUMBA_CACHE_DIR": str(numba_cache_dir())}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == "RC 0 HEAVY [] TORCH True", last
    assert (tmp_path / "cache").is_dir()


# A registry release in SAELens's own format (no conversion_func, no config_overrides), on hook_mlp_out.
REGISTRY_RELEASE, REGISTRY_ID = "pythia-70m-deduped-mlp-sm", "blocks.0.hook_mlp_out"

LOAD_BY_NAME = """
import sys, torch
from sae_atlas.backends.saelens_files import native_pretrained
release, sae_id = sys.argv[1], sys.argv[2]
ours = native_pretrained(release, sae_id, "cpu", "float32")
print("NATIVE", ours is not None, "SAELENS_IMPORTED", "sae_lens" in sys.modules)
if ours is not None:
    from sae_lens import SAE
    ref = SAE.from_pretrained(release, sae_id, device="cpu", dtype="float32")
    x = torch.randn(5, 9, ref.cfg.d_in, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        same = all(torch.equal(getattr(ours, n), getattr(ref, n).detach()) for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
        a_ref, a_ours = ref.encode(x), ours.encode(x)
        same = same and torch.equal(a_ref, a_ours) and torch.equal(ref.decode(a_ref), ours.decode(a_ours)) and bool(a_ours.count_nonzero())
    meta = [ours.cfg.metadata.get(k) == ref.cfg.metadata.get(k) for k in ("hook_name", "prepend_bos", "model_from_pretrained_kwargs")]
    print("SAME", same and all(meta), ours.cfg.architecture() == ref.cfg.architecture())
"""


def test_a_registry_sae_in_saelens_format_loads_by_name_without_saelens_as_saelens_loads_it(tmp_path):
    from sae_atlas.sources.configs import pretrained_sae_entry
    from tests.hubcache import HubCache

    entry, sae = pretrained_sae_entry(REGISTRY_RELEASE, REGISTRY_ID)
    assert entry.get("conversion_func") is None and not entry.get("config_overrides")
    saved = tmp_path / "saved"
    make_sae_dir(saved, D_IN, D_SAE, "jumprelu", REGISTRY_ID, seed=4)
    hub = HubCache(tmp_path / "hf")
    hub.add_dir(entry["repo_id"], str(sae["path"]), saved)
    env = {**hub.env(), "PYTHONPATH": str(ROOT), "PATH": "", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", LOAD_BY_NAME, REGISTRY_RELEASE, REGISTRY_ID], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-3:-1] == ["NATIVE True SAELENS_IMPORTED False", "SAME True True"], done.stdout
    # A pre-6.0 config of the same repo is SAELens's to rewrite: by name it loads through SAELens.
    old = json.loads((saved / "cfg.json").read_text())
    old["metadata"]["sae_lens_version"] = "5.9.0"
    hub.add(entry["repo_id"], f"{sae['path']}/cfg.json", json.dumps(old).encode())
    done = subprocess.run([sys.executable, "-c", LOAD_BY_NAME, REGISTRY_RELEASE, REGISTRY_ID], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "NATIVE False SAELENS_IMPORTED False", done.stdout + done.stderr[-2000:]

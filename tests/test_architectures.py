"""Every SAE architecture SAELens registers, listed from SAELens at run time: computed and checked
against a brute-force recomputation with TransformerLens and SAELens directly, or refused with a
message naming it.

Transcoders read one hook and write another: their reconstruction statistics, CE splice and logits
are of the output hook (a skip transcoder's reconstruction includes its skip term). The fixture also
holds an SAE on one attention head (`hook_head_index`) and an SAE whose model must be loaded with
`model_from_pretrained_kwargs` (a second model load, with processed weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sae_atlas.cache import CacheStore, corpus_key
from sae_atlas.compute import ComputeOptions, compute_releases
from sae_atlas.errors import InputError
from sae_atlas.manifest import load_content
from sae_atlas.sources.architectures import architecture_info
from tests.brute import assert_entry_matches_brute_force, brute_force_result, compute_and_read
from tests.fixtures import build_fixture_content

N_PROMPTS, CONTEXT, D_SAE, CE_PROMPTS = 10, 8, 24, 4
LAYER = 1
KWARGS = {"center_writing_weights": True}
HEAD = 2


def _registered() -> list[str]:
    import sae_lens  # noqa: F401  (registers its architectures)
    from sae_lens.registry import SAE_CLASS_REGISTRY

    return sorted(SAE_CLASS_REGISTRY)


def _hooks(arch: str, d_model: int, d_mlp: int) -> tuple[str, str, int, int]:
    """(hook in, hook out, d_in, d_out) of the fixture SAE of `arch`."""
    info = architecture_info(arch)
    if not info.transcoder:
        return f"blocks.{LAYER}.hook_resid_post", f"blocks.{LAYER}.hook_resid_post", d_model, d_model
    if arch == "jumprelu_skip_transcoder":  # as Gemma Scope 2: hook_mlp_in (fires only when enabled) -> MLP out
        return f"blocks.{LAYER}.hook_mlp_in", f"blocks.{LAYER}.hook_mlp_out", d_model, d_model
    if info.skip:  # as circuit-tracer transcoders: the MLP's normalized input -> MLP out
        return f"blocks.{LAYER}.ln2.hook_normalized", f"blocks.{LAYER}.hook_mlp_out", d_model, d_model
    # d_out != d_in, written through W_out: the output hook's map is not the identity
    return f"blocks.{LAYER}.ln2.hook_normalized", f"blocks.{LAYER}.mlp.hook_post", d_model, d_mlp


def _make_sae(arch: str, d_in: int, d_out: int, seed: int):
    from sae_lens.registry import SAE_CLASS_REGISTRY

    cls, cfg_cls = SAE_CLASS_REGISTRY[arch]
    kw = {"d_in": d_in, "d_sae": D_SAE}
    if architecture_info(arch).transcoder:
        kw.update(d_out=d_out, apply_b_dec_to_input=False)
    if arch == "topk":
        kw["k"] = 4
    sae = cls(cfg_cls(**kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name in ("W_enc", "W_dec", "W_skip"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
            elif name in ("b_enc", "b_gate"):
                p.copy_(-0.2 - 0.3 * torch.rand(p.shape, generator=g))
            elif name == "threshold":
                p.copy_(0.05 + 0.1 * torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return sae


def _fixture_saes(d_model: int, d_mlp: int, d_head: int) -> list[dict]:
    """One SAE per supported architecture, plus a per-head SAE and one with model kwargs."""
    out = []
    for i, arch in enumerate(a for a in _registered() if not architecture_info(a).refused):
        hook_in, hook_out, d_in, d_out = _hooks(arch, d_model, d_mlp)
        out.append({"set": arch.replace("_", "-"), "arch": arch, "hook": hook_in, "hook_out": hook_out, "d_in": d_in, "d_out": d_out, "seed": i + 1})
    out.append({"set": "head-z", "arch": "standard", "hook": f"blocks.{LAYER}.attn.hook_z", "hook_out": f"blocks.{LAYER}.attn.hook_z", "d_in": d_head, "d_out": d_head, "seed": 90, "head": HEAD})
    out.append({"set": "res-cw", "arch": "standard", "hook": f"blocks.{LAYER}.hook_resid_post", "hook_out": f"blocks.{LAYER}.hook_resid_post", "d_in": d_model, "d_out": d_model, "seed": 91, "kwargs": KWARGS})
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    content = build_fixture_content(root, n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, corpus="tokens", sets=(), explanations=False, compute={"top_k": 5, "logits": 4, "neighbours": 3, "umap_neighbours": 4, "ce_prompts": CE_PROMPTS, "context_before": 3, "context_after": 2})
    cfg = json.loads((content / "models" / "tiny-2l" / "config.json").read_text())
    manifest_path = content / "releases" / "tiny-demo.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    fixtures = _fixture_saes(cfg["d_model"], cfg["d_mlp"], cfg["d_head"])
    for f in fixtures:
        sae = _make_sae(f["arch"], f["d_in"], f["d_out"], f["seed"])
        sae.cfg.metadata.hook_name = f["hook"]
        if f["hook_out"] != f["hook"]:
            sae.cfg.metadata.hook_name_out = f["hook_out"]
        if "head" in f:
            sae.cfg.metadata.hook_head_index = f["head"]
        if "kwargs" in f:
            sae.cfg.metadata.model_from_pretrained_kwargs = f["kwargs"]
        f["dir"] = content / "saes" / f["set"]
        sae.save_model(str(f["dir"]))
        manifest["sets"].append({"id": f["set"], "title": f["arch"], "hook": f["hook"].replace(f".{LAYER}.", ".{layer}.", 1), "saes": [{"layer": LAYER, "path": f"../saes/{f['set']}"}]})
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    tokens, entries = compute_and_read(content, root / "cache")
    return content, fixtures, tokens, entries


def _model(content: Path, kwargs: dict | None = None):
    """The fixture model built with TransformerLens directly (processed as `kwargs` ask)."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    raw = json.loads((content / "models" / "tiny-2l" / "config.json").read_text())
    fields = set(HookedTransformerConfig.__dataclass_fields__)
    model = HookedTransformer(HookedTransformerConfig(**{k: v for k, v in raw.items() if k in fields and k not in ("dtype", "device")}))
    model.load_state_dict(load_file(str(content / "models" / "tiny-2l" / "model.safetensors")), strict=False)
    if kwargs:
        model.process_weights_(fold_ln=False, center_writing_weights=bool(kwargs.get("center_writing_weights")), center_unembed=False)
    model.set_use_hook_mlp_in(True)  # so that blocks.L.hook_mlp_in fires
    return model.eval()


def _brute(content: Path, f: dict, tokens: torch.Tensor) -> dict:
    from sae_lens import SAE

    model = _model(content, f.get("kwargs"))
    sae = SAE.load_from_disk(str(f["dir"])).eval()
    head = f.get("head")
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens)
        x = cache[f["hook"]].float()
        target = cache[f["hook_out"]].float()
        if head is not None:
            x, target = x[:, :, head], target[:, :, head]
        acts = sae.encode(x).float()  # [P, T, F]
        recon = sae(x).float()  # SAELens's forward: decode(encode(x)) (+ W_skip x for skip transcoders)
        if f["hook_out"].endswith("mlp.hook_post"):
            out_map = model.blocks[LAYER].mlp.W_out
        elif head is not None:
            out_map = model.blocks[LAYER].attn.W_O[head]
        else:
            out_map = torch.eye(model.cfg.d_model)
        logits = sae.W_dec.float() @ out_map.float() @ model.W_U.float()

        def splice(act, hook):
            if head is None:
                return sae(saved["x"]).to(act.dtype).reshape(act.shape)
            act = act.clone()
            act[:, :, head] = sae(saved["x"]).to(act.dtype)
            return act

        saved = {}

        def keep(act, hook):
            saved["x"] = act[:, :, head] if head is not None else act

        ce_tokens = tokens[:CE_PROMPTS]
        clean = model(ce_tokens, return_type="loss", loss_per_token=True).double().mean()
        spliced = model.run_with_hooks(ce_tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(f["hook"], keep), (f["hook_out"], splice)]).double().mean()
    return brute_force_result(acts, target, recon, logits, (clean, spliced))


def test_every_registered_architecture_is_supported_or_refused():
    registered = _registered()
    assert {"standard", "topk", "jumprelu", "gated", "transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"} <= set(registered)
    for arch in registered:
        info = architecture_info(arch)
        assert info.name == arch
        assert info.refused is None or len(info.refused) > 20, arch


def test_each_supported_architecture_matches_brute_force(built):
    content, fixtures, tokens, entries = built
    assert sorted(entries) == sorted(f["set"] for f in fixtures)
    for f in fixtures:
        entry, want = entries[f["set"]], _brute(content, f, tokens)
        label = f"{f['set']} ({f['arch']})"
        m = entry.meta
        assert (m["architecture"], m["hook"], m["hook_out"], m["d_in"], m["d_out"]) == (f["arch"], f["hook"], f["hook_out"], f["d_in"], f["d_out"]), label
        assert_entry_matches_brute_force(entry, want, CONTEXT, label)


def test_skip_term_and_output_hook_matter(built):
    """The brute force would not agree with an engine that dropped the skip term or scored the
    reconstruction against the input hook: those give other numbers."""
    content, fixtures, tokens, entries = built
    from sae_lens import SAE

    for f in fixtures:
        if not architecture_info(f["arch"]).skip:
            continue
        sae = SAE.load_from_disk(str(f["dir"]))
        model = _model(content)
        with torch.inference_mode():
            _, cache = model.run_with_cache(tokens)
            x, target = cache[f["hook"]].float(), cache[f["hook_out"]].float()
            no_skip = sae.decode(sae.encode(x))
            mse_no_skip = float(((target - no_skip) ** 2).double().mean())
            mse_input_hook = float(((x - sae(x)) ** 2).double().mean())
        got = entries[f["set"]].meta["stats"]["mse"]
        assert abs(got - mse_no_skip) > 1e-3 * got and abs(got - mse_input_hook) > 1e-3 * got, f["set"]


def test_model_kwargs_load_a_second_processed_model(built):
    content, fixtures, tokens, entries = built
    f = next(f for f in fixtures if "kwargs" in f)
    assert entries[f["set"]].meta["model_kwargs"] == KWARGS
    with torch.inference_mode():
        raw = _model(content).run_with_cache(tokens)[1][f["hook"]]
        processed = _model(content, KWARGS).run_with_cache(tokens)[1][f["hook"]]
    assert (raw - processed).abs().max() > 1e-3  # the processing changes what the SAE reads


def test_model_kwargs_groups_are_logged(built, tmp_path, capsys):
    content, fixtures, tokens, entries = built
    releases = load_content(content)
    compute_releases(releases, tmp_path / "cache", ComputeOptions(device="cpu", quiet=False, pca_map=True, batch_size=4))
    err = capsys.readouterr().err
    assert "loading the model with {}" in err and 'loading the model with {"center_writing_weights":true} for tiny-2l@1-res-cw' in err


@pytest.mark.parametrize("arch", [a for a in _registered() if architecture_info(a).refused])
def test_refused_architectures_are_refused_by_name(arch, tmp_path):
    from sae_lens.registry import SAE_CLASS_REGISTRY

    content = build_fixture_content(tmp_path, n_prompts=4, context=8, corpus="tokens", sets=(), explanations=False)
    cls, cfg_cls = SAE_CLASS_REGISTRY[arch]
    kw = {"d_in": 16, "d_sae": 32}
    if arch == "abstopk":
        kw["k"] = 4
    if arch == "temporal":
        kw.update(n_heads=4, bottleneck_factor=4)
    sae = cls(cfg_cls(**kw))
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    sae.save_model(str(content / "saes" / "x"))
    manifest_path = content / "releases" / "tiny-demo.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["sets"] = [{"id": "res-x", "title": arch, "hook": "blocks.{layer}.hook_resid_post", "saes": [{"layer": 0, "path": "../saes/x"}]}]
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    with pytest.raises(InputError) as e:
        compute_releases(load_content(content), tmp_path / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True))
    assert f"architecture '{arch}' is not supported" in str(e.value)
    assert str(e.value).startswith(str(manifest_path))


def _text_release(tmp_path: Path, prepend_bos: list[bool], corpus_bos: bool | None = None) -> Path:
    """A text-corpus release with one standard SAE per entry of `prepend_bos` (SAELens metadata);
    `corpus_bos`: the manifest's corpus.prepend_bos (None: not given)."""
    content = build_fixture_content(tmp_path, n_prompts=6, context=8, corpus="txt", sets=(), explanations=False)
    cfg = json.loads((content / "models" / "tiny-2l" / "config.json").read_text())
    manifest_path = content / "releases" / "tiny-demo.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    if corpus_bos is not None:
        manifest["corpus"]["prepend_bos"] = corpus_bos
    for i, bos in enumerate(prepend_bos):
        sae = _make_sae("standard", cfg["d_model"], cfg["d_model"], seed=i)
        sae.cfg.metadata.hook_name = f"blocks.{i}.hook_resid_post"
        sae.cfg.metadata.prepend_bos = bos
        sae.save_model(str(content / "saes" / f"s{i}"))
        manifest["sets"].append({"id": f"res-{i}", "title": "x", "hook": "blocks.{layer}.hook_resid_post", "saes": [{"layer": i, "path": f"../saes/s{i}"}]})
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return content


def test_corpus_prepend_bos_false_gives_prompts_without_bos(tmp_path):
    from transformers import AutoTokenizer

    firsts = {}
    for flag in (True, False):
        content = _text_release(tmp_path / str(flag), [flag, flag], corpus_bos=None if flag else False)
        releases = load_content(content)
        compute_releases(releases, tmp_path / str(flag) / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True))
        tokens = np.asarray(CacheStore(tmp_path / str(flag) / "cache").corpus(corpus_key(releases[0]))["tokens"])
        bos = AutoTokenizer.from_pretrained(str(content / "models" / "tiny-2l")).bos_token_id
        firsts[flag] = tokens[:, 0]
    assert (firsts[True] == bos).all()
    assert not (firsts[False] == bos).any()


def test_an_sae_trained_without_bos_on_a_bos_corpus_is_an_input_error_before_weights_load(tmp_path):
    from tests.conftest import sae_atlas

    content = _text_release(tmp_path, [True, False])
    line = next(i for i, text in enumerate((content / "releases" / "tiny-demo.yaml").read_text().splitlines(), 1) if "../saes/s1" in text)
    want = "was trained with prepend_bos: false but corpus.prepend_bos is true; expected corpus.prepend_bos: false"
    run = sae_atlas("check", "--content", content)
    assert run.returncode == 2 and want in run.stderr and f"tiny-demo.yaml:{line}:" in run.stderr, run.output
    assert "s0" not in run.stderr.replace("res-0", "")  # the SAE trained with BOS is fine
    with pytest.raises(InputError) as e:
        compute_releases(load_content(content), tmp_path / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True))
    assert "tiny-2l@1-res-1 was trained with prepend_bos: false but corpus.prepend_bos is true" in str(e.value)


def test_check_accepts_every_supported_architecture_before_any_weights_load(built):
    from tests.conftest import sae_atlas

    content = built[0]
    run = sae_atlas("check", "--content", content)
    assert run.returncode == 0, run.output
    assert f"1 release(s), {len(built[1])} SAE(s)" in run.stderr


def test_check_finds_a_transcoder_whose_d_out_does_not_fit_its_output_hook(built, tmp_path):
    import shutil

    from tests.conftest import sae_atlas

    content = tmp_path / "content"
    shutil.copytree(built[0], content)
    f = next(f for f in built[1] if f["hook_out"].endswith("mlp.hook_post"))
    cfg_path = content / "saes" / f["set"] / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["d_out"] = f["d_out"] + 1
    cfg_path.write_text(json.dumps(cfg))
    run = sae_atlas("check", "--content", content)
    assert run.returncode == 2 and "d_out" in run.stderr and f["hook_out"] in run.stderr, run.output
    assert len(run.stderr.strip().splitlines()) == 2  # the problem, then the count

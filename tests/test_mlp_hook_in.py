"""Transcoders reading `blocks.L.mlp.hook_in` (circuit-tracer's, as SAELens's mwhanna_transcoder
loader names them): the MLP module's input, ln2's output with its weight applied. The engine's
density, top examples, MSE, explained variance, CE splice and logits match a brute force with
TransformerLens and SAELens directly, which reads the MLP's input with its own forward pre-hook, and
`check` accepts the hook with width d_model.

The fixture model is RMS-normalised with ln2's weight far from 1, so that the MLP's input differs
from `ln2.hook_normalized` (before the weight): an engine reading that hook gives other numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sae_atlas.sources.configs import hook_width, valid_hooks
from tests.brute import assert_entry_matches_brute_force, brute_force_result, compute_and_read
from tests.conftest import sae_atlas
from tests.fixtures import MODEL_ID, _json_ok, build_fixture_content, load_reference_model, load_reference_sae, model_config

N_PROMPTS, CONTEXT, D_SAE, CE_PROMPTS = 10, 8, 24, 4
LAYER = 1
HOOK_IN, HOOK_OUT = f"blocks.{LAYER}.mlp.hook_in", f"blocks.{LAYER}.hook_mlp_out"
ARCHITECTURES = ("transcoder", "skip_transcoder")


def _rms_model_dir(directory: Path, d_vocab: int) -> None:
    """Replace the fixture model by a random RMS-normalised one (same tokenizer) whose norm weights
    are far from 1."""
    from safetensors.torch import save_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(3)
    model = HookedTransformer(HookedTransformerConfig(**dict(model_config(d_vocab=d_vocab), normalization_type="RMS")))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3)
            elif name.endswith(".w"):  # ln1, ln2, ln_final weights
                p.uniform_(0.2, 2.0)
    full = {k: v for k, v in model.cfg.to_dict().items() if _json_ok(v)}
    (directory / "config.json").write_text(json.dumps(full, indent=1, sort_keys=True, default=str))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))


def _make_transcoder(arch: str, d_model: int, seed: int):
    from sae_lens.registry import SAE_CLASS_REGISTRY

    cls, cfg_cls = SAE_CLASS_REGISTRY[arch]
    sae = cls(cfg_cls(d_in=d_model, d_sae=D_SAE, d_out=d_model, apply_b_dec_to_input=False))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name in ("W_enc", "W_dec", "W_skip"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)
            elif name == "b_enc":
                p.copy_(-0.2 - 0.3 * torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    sae.cfg.metadata.hook_name = HOOK_IN
    sae.cfg.metadata.hook_name_out = HOOK_OUT
    sae.cfg.metadata.model_from_pretrained_kwargs = {"fold_ln": False}  # as the mwhanna_transcoder loader says
    return sae


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlpin")
    compute = {"top_k": 5, "logits": 4, "neighbours": 3, "umap_neighbours": 4, "ce_prompts": CE_PROMPTS, "context_before": 3, "context_after": 2}
    content = build_fixture_content(root, n_prompts=N_PROMPTS, context=CONTEXT, d_sae=D_SAE, corpus="tokens", sets=(), explanations=False, compute=compute)
    model_dir = content / "models" / MODEL_ID
    old = json.loads((model_dir / "config.json").read_text())
    _rms_model_dir(model_dir, old["d_vocab"])
    d_model = json.loads((model_dir / "config.json").read_text())["d_model"]
    manifest_path = content / "releases" / "tiny-demo.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    dirs = {}
    for seed, arch in enumerate(ARCHITECTURES, 1):
        set_id = "tc-" + arch.replace("_", "-")
        dirs[set_id] = content / "saes" / set_id
        _make_transcoder(arch, d_model, seed).save_model(str(dirs[set_id]))
        manifest["sets"].append({"id": set_id, "title": arch, "hook": "blocks.{layer}.mlp.hook_in", "saes": [{"layer": LAYER, "path": f"../saes/{set_id}"}]})
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    tokens, entries = compute_and_read(content, root / "cache")
    return content, dirs, tokens, entries


def _mlp_input(model, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """What model.blocks[LAYER].mlp receives (read by a forward pre-hook), and the activation cache."""
    seen = []
    handle = model.blocks[LAYER].mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        _, cache = model.run_with_cache(tokens)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0], cache


def _brute(content: Path, sae_dir: Path, tokens: torch.Tensor, read: str = "mlp_input") -> dict:
    """Statistics of the transcoder computed with TransformerLens and SAELens directly; `read`:
    the MLP's input (what the SAE is for) or "hook_normalized" (ln2 before its weight)."""
    model = load_reference_model(content / "models" / MODEL_ID)
    sae = load_reference_sae(sae_dir)
    with torch.inference_mode():
        mlp_in, cache = _mlp_input(model, tokens)
        torch.testing.assert_close(mlp_in, model.blocks[LAYER].ln2(cache[f"blocks.{LAYER}.hook_resid_mid"]))
        x = (mlp_in if read == "mlp_input" else cache[f"blocks.{LAYER}.ln2.hook_normalized"]).float()
        target = cache[HOOK_OUT].float()
        acts = sae.encode(x).float()
        recon = sae(x).float()  # decode(encode(x)) (+ W_skip x for the skip transcoder)
        logits = sae.W_dec.float() @ model.W_U.float()  # hook_mlp_out is in the residual basis

        saved = {}

        def keep_mlp_input(module, args):
            saved["x"] = args[0]

        def keep_normalized(act, hook):
            saved["x"] = act

        def splice(act, hook):
            return sae(saved["x"].float()).to(act.dtype)

        ce_tokens = tokens[:CE_PROMPTS]
        clean = model(ce_tokens, return_type="loss", loss_per_token=True).double().mean()
        hooks = [(HOOK_OUT, splice)]
        if read == "mlp_input":
            handle = model.blocks[LAYER].mlp.register_forward_pre_hook(keep_mlp_input)
        else:
            hooks.insert(0, (f"blocks.{LAYER}.ln2.hook_normalized", keep_normalized))
        try:
            spliced = model.run_with_hooks(ce_tokens, return_type="loss", loss_per_token=True, fwd_hooks=hooks).double().mean()
        finally:
            if read == "mlp_input":
                handle.remove()
    return brute_force_result(acts, target, recon, logits, (clean, spliced))


def test_transcoders_on_the_mlp_input_match_brute_force(built):
    content, dirs, tokens, entries = built
    assert sorted(entries) == sorted(dirs)
    for set_id, sae_dir in dirs.items():
        entry, want = entries[set_id], _brute(content, sae_dir, tokens)
        m = entry.meta
        assert (m["hook"], m["hook_out"], m["d_in"], m["d_out"]) == (HOOK_IN, HOOK_OUT, 16, 16), set_id
        acts = want["acts"]
        assert not (acts > 0).all(), set_id  # sparsely
        assert_entry_matches_brute_force(entry, want, CONTEXT, set_id)


def test_reading_ln2_hook_normalized_would_give_other_numbers(built):
    """ln2.hook_normalized is ln2's output before its weight: the brute force would not agree with
    an engine that read it."""
    content, dirs, tokens, entries = built
    for set_id, sae_dir in dirs.items():
        wrong = _brute(content, sae_dir, tokens, read="hook_normalized")
        stats = entries[set_id].meta["stats"]
        assert abs(stats["mse"] - wrong["mse"]) > 1e-3 * stats["mse"], set_id
        assert abs(stats["ce_loss_spliced"] - wrong["ce"][1]) > 1e-4, set_id
        got_max = np.asarray(entries[set_id]["max_activation"])
        assert np.abs(got_max - np.maximum(wrong["acts"].max(0), 0)).max() > 1e-3, set_id


def test_the_backend_captures_the_mlp_input_stopping_after_its_block(built):
    from sae_atlas.backends.transformer_lens import TransformerLensBackend

    content, _, tokens, _ = built
    backend = TransformerLensBackend(load_reference_model(content / "models" / MODEL_ID))
    reference = load_reference_model(content / "models" / MODEL_ID)
    assert not {f"blocks.{layer}.mlp.hook_in" for layer in range(2)} & backend.hook_names  # added on request only
    backend.enable_hooks(["blocks.0.mlp.hook_in"])  # as the engine does for the SAEs' hooks
    assert {f"blocks.{layer}.mlp.hook_in" for layer in range(2)} <= backend.hook_names
    assert backend.stop_layer(["blocks.0.mlp.hook_in"]) == 1 and backend.stop_layer(["blocks.1.hook_resid_pre", "blocks.0.mlp.hook_in"]) == 1
    with torch.inference_mode():
        got = backend.capture(tokens, ["blocks.0.mlp.hook_in", "blocks.1.hook_resid_pre", "blocks.0.ln2.hook_normalized"])
        seen = []
        handle = reference.blocks[0].mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        try:
            _, cache = reference.run_with_cache(tokens)
        finally:
            handle.remove()
    torch.testing.assert_close(got["blocks.0.mlp.hook_in"], seen[0], rtol=0, atol=0)
    torch.testing.assert_close(got["blocks.1.hook_resid_pre"], cache["blocks.1.hook_resid_pre"], rtol=0, atol=0)
    torch.testing.assert_close(got["blocks.0.ln2.hook_normalized"], cache["blocks.0.ln2.hook_normalized"], rtol=0, atol=0)
    assert (got["blocks.0.mlp.hook_in"] - got["blocks.0.ln2.hook_normalized"]).abs().max() > 1e-2


def test_mlp_hook_in_is_a_hook_of_models_with_an_mlp():
    config = model_config(d_vocab=30)
    assert "blocks.1.mlp.hook_in" in valid_hooks(config) and hook_width(config, "blocks.1.mlp.hook_in") == config["d_model"]
    assert "blocks.2.mlp.hook_in" not in valid_hooks(config)
    assert "blocks.0.mlp.hook_in" not in valid_hooks(dict(config, attn_only=True, d_mlp=None))


def test_check_accepts_them_and_finds_a_wrong_d_in(built, tmp_path):
    content, dirs, _, _ = built
    run = sae_atlas("check", "--content", content)
    assert run.returncode == 0, run.output
    assert f"1 release(s), {len(dirs)} SAE(s)" in run.stderr
    bad = tmp_path / "content"
    shutil.copytree(content, bad)
    cfg_path = bad / "saes" / "tc-transcoder" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["d_in"] = cfg["d_in"] + 1
    cfg_path.write_text(json.dumps(cfg))
    run = sae_atlas("check", "--content", bad)
    want = f"SAE d_in is 17 but hook '{HOOK_IN}' of model '{MODEL_ID}' has width 16; expected d_in = 16"
    assert run.returncode == 2 and want in run.stderr, run.output
    assert "tc-skip-transcoder" not in run.stderr, run.output


@pytest.mark.parametrize("own_forward", [False, True], ids=["fused", "transformer-lens-loss"])
def test_ce_splices_at_and_from_the_mlp_input(built, own_forward):
    """The CE loss of the backend's model, fused or TransformerLens's own: a transcoder reading the
    MLP's input, and a plain SAE on it whose reconstruction replaces what the MLP receives."""
    from transformer_lens import HookedTransformer

    from sae_atlas.backends import CeSae
    from sae_atlas.backends import transformer_lens_ce as ce
    from sae_atlas.backends.saelens import SaeLensSae
    from sae_atlas.backends.transformer_lens import TransformerLensBackend
    from sae_atlas.sources.corpus import Corpus
    from tests.fixtures import make_sae

    class OwnForward(HookedTransformer):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    content, dirs, tokens, _ = built
    reference = load_reference_model(content / "models" / MODEL_ID)
    model = load_reference_model(content / "models" / MODEL_ID)
    if own_forward:
        model = OwnForward(reference.cfg)
        model.load_state_dict(reference.state_dict())
    backend = TransformerLensBackend(model)
    backend.enable_hooks([HOOK_IN])
    model = backend.model
    assert ce._fused(model) != own_forward
    transcoder = load_reference_sae(dirs["tc-skip-transcoder"])
    plain = make_sae(reference.cfg.d_model, D_SAE, "standard", HOOK_IN, seed=7)
    saes = [CeSae("tc", SaeLensSae(transcoder), CE_PROMPTS), CeSae("sae", SaeLensSae(plain), CE_PROMPTS)]
    got = ce.ce_losses(model, Corpus("test", tokens.numpy().astype(np.int32), []), saes, 3, "cpu")

    def mlp_input_hook(fn):
        return reference.blocks[LAYER].mlp.register_forward_pre_hook(fn)

    ce_tokens = tokens[:CE_PROMPTS]
    with torch.inference_mode():
        clean = float(reference(ce_tokens, return_type="loss", loss_per_token=True).double().mean())
        saved = {}
        handle = mlp_input_hook(lambda module, args: saved.update(x=args[0]))
        try:
            tc = reference.run_with_hooks(ce_tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(HOOK_OUT, lambda act, hook: transcoder(saved["x"]))])
        finally:
            handle.remove()
        handle = mlp_input_hook(lambda module, args: (plain.decode(plain.encode(args[0])),))
        try:
            sae = reference(ce_tokens, return_type="loss", loss_per_token=True)
        finally:
            handle.remove()
    np.testing.assert_allclose(got["tc"], (clean, float(tc.double().mean())), rtol=1e-5)
    np.testing.assert_allclose(got["sae"], (clean, float(sae.double().mean())), rtol=1e-5)
    assert abs(got["sae"][1] - clean) > 1e-3 and abs(got["tc"][1] - clean) > 1e-3  # the splices change the loss

"""`check` on models and SAEs named by the hub (TransformerLens names, `sae_lens:` registry refs).

The hub cache is laid out by the test (tests/hubcache.py) with config files only, which is all
`check` reads. The conversion of Hugging Face configs is compared with TransformerLens's own
`convert_hf_model_config` and, for the hooks and their widths, with the activations a tiny
HookedTransformer of the same layout actually produces.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sae_atlas.sources.configs import convert_hf_config, hook_width, valid_hooks
from tests.conftest import ROOT, sae_atlas
from tests.hubcache import HubCache

# config.json of each repo as the hub serves it (the keys these architectures' real configs carry).
HF_CONFIGS: dict[str, dict] = {
    "gpt2": {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
        "n_layer": 12, "n_positions": 1024, "vocab_size": 50257, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
    },
    "EleutherAI/pythia-70m-deduped": {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 512, "intermediate_size": 2048,
        "num_attention_heads": 8, "num_hidden_layers": 6, "max_position_embeddings": 2048, "vocab_size": 50304,
        "hidden_act": "gelu", "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": True, "layer_norm_eps": 1e-05,
    },
    "EleutherAI/gpt-neo-125M": {
        "architectures": ["GPTNeoForCausalLM"], "model_type": "gpt_neo", "hidden_size": 768, "num_heads": 12, "num_layers": 12,
        "max_position_embeddings": 2048, "vocab_size": 50257, "activation_function": "gelu_new", "window_size": 256,
        "attention_types": [[["global", "local"], 6]], "layer_norm_epsilon": 1e-05,
    },
    "EleutherAI/gpt-j-6B": {
        "architectures": ["GPTJForCausalLM"], "model_type": "gptj", "n_embd": 4096, "n_head": 16, "n_layer": 28,
        "n_positions": 2048, "rotary_dim": 64, "vocab_size": 50400, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
    },
    "facebook/opt-125m": {
        "architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_attention_heads": 12,
        "num_hidden_layers": 12, "max_position_embeddings": 2048, "vocab_size": 50272, "activation_function": "relu",
        "word_embed_proj_dim": 768, "do_layer_norm_before": True,
    },
    "meta-llama/Llama-3.2-1B": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
        "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "head_dim": 64,
        "max_position_embeddings": 131072, "vocab_size": 128256, "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    },
    "mistralai/Mistral-7B-v0.1": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
        "vocab_size": 32000, "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    },
    "Qwen/Qwen2.5-0.5B": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "vocab_size": 151936, "hidden_act": "silu", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "initializer_range": 0.02,
        "tie_word_embeddings": True,
    },
    "Qwen/Qwen3-0.6B": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "head_dim": 128,
        "intermediate_size": 3072, "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
        "max_position_embeddings": 40960, "vocab_size": 151936, "hidden_act": "silu", "rms_norm_eps": 1e-06,
        "rope_theta": 1000000, "initializer_range": 0.02, "tie_word_embeddings": True,
    },
    "google/gemma-2b": {
        "architectures": ["GemmaForCausalLM"], "model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384,
        "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1, "head_dim": 256,
        "max_position_embeddings": 8192, "vocab_size": 256000, "hidden_act": "gelu", "rms_norm_eps": 1e-06,
    },
    "google/gemma-2-2b": {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
        "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "head_dim": 256,
        "max_position_embeddings": 8192, "vocab_size": 256000, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-06, "sliding_window": 4096,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 256,
    },
    "google/gemma-3-1b-pt": {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912,
        "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1, "head_dim": 256,
        "max_position_embeddings": 32768, "vocab_size": 262144, "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-06, "sliding_window": 512,
    },
    "google/gemma-3-4b-pt": {  # multimodal: the text model's config is nested and leaves defaults out
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {
            "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
        },
        "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"},
    },
}  # fmt: skip

# Fields that decide the hooks and their widths (and n_ctx, d_vocab for corpus checks).
FIELDS = (
    "n_layers", "d_model", "d_head", "n_heads", "d_mlp", "d_vocab", "n_ctx", "act_fn", "positional_embedding_type",
    "parallel_attn_mlp", "attn_only", "gated_mlp", "use_normalization_before_and_after", "use_qk_norm", "original_architecture",
)  # fmt: skip

# Small sizes with the same layout, for building a real HookedTransformer of each architecture.
SMALL = {"n_layers": 2, "d_model": 16, "d_head": 4, "n_heads": 4, "d_mlp": 24, "d_vocab": 30, "n_ctx": 8}


def shrink(cfg: dict) -> dict:
    """The same layout at SMALL sizes (grouped-query attention kept as 2 kv heads)."""
    small = dict(cfg, **SMALL)
    grouped = cfg.get("n_key_value_heads") not in (None, cfg.get("n_heads"))
    small["n_key_value_heads"] = 2 if grouped else None
    for key in ("attn_types",):
        if isinstance(small.get(key), list):
            small[key] = small[key][:2]
    if small.get("window_size"):
        small["window_size"] = 4
    if small.get("rotary_dim"):
        small["rotary_dim"] = 4
    return small


ORACLE = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.loading_from_pretrained import convert_hf_model_config
from sae_atlas.backends.transformer_lens import add_mlp_input_hooks
from tests.test_validate_names import FIELDS, shrink

out = {}
for name in json.loads(sys.argv[1]):
    cfg = convert_hf_model_config(name)
    full = HookedTransformerConfig.from_dict({k: v for k, v in cfg.items() if k not in ("tokenizer_name", "quantization_method")})
    fields = {f: getattr(full, f) for f in FIELDS}
    fields["n_key_value_heads"] = full.n_key_value_heads or full.n_heads
    fields["normalization_type"] = full.normalization_type
    small = shrink({k: v for k, v in cfg.items() if k not in ("tokenizer_name", "quantization_method")})
    model = HookedTransformer(HookedTransformerConfig.from_dict(dict(small, init_weights=True, device="cpu")))
    add_mlp_input_hooks(model)  # the engine's model has blocks.L.mlp.hook_in too
    widths = {}
    def record(act, hook):
        shape = list(act.shape)
        widths[hook.name] = shape[2] * shape[3] if len(shape) == 4 and hook.name.split(".")[-1] in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_rot_q", "hook_rot_k") else shape[-1] if len(shape) == 3 else None
    model.run_with_hooks(torch.tensor([[1, 2, 3]]), fwd_hooks=[(lambda n: True, record)])
    out[name] = {"fields": fields, "hooks": widths}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> dict:
    """TransformerLens's conversion of each config (read from a hub cache) and the hooks that fire."""
    hub = HubCache(tmp_path_factory.mktemp("oracle-hub"))
    for repo, cfg in HF_CONFIGS.items():
        hub.add(repo, "config.json", json.dumps(cfg).encode())
    env = {**os.environ, **hub.env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", ORACLE, json.dumps(list(HF_CONFIGS))], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_hf_config_converts_as_transformer_lens_does(oracle, name):
    ours = convert_hf_config(name, HF_CONFIGS[name])
    theirs = oracle[name]["fields"]
    for field in FIELDS:
        assert bool(ours.get(field)) == bool(theirs[field]) if isinstance(theirs[field], bool) else ours.get(field) == theirs[field], field
    assert ours["n_key_value_heads"] == theirs["n_key_value_heads"]
    assert ours["normalization_type"] == theirs["normalization_type"]


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_hooks_and_widths_are_those_a_model_of_the_layout_fires(oracle, name):
    small = shrink(convert_hf_config(name, HF_CONFIGS[name]))
    fired = oracle[name]["hooks"]
    assert valid_hooks(small) == set(fired)
    for hook, width in fired.items():
        ours = hook_width(small, hook)
        assert ours is None or ours == width, hook


# --- check on a hub cache ------------------------------------------------------------------------


def _cfg_json(**fields) -> bytes:
    return json.dumps(fields).encode()


def legacy_cfg(hook: str, d_in: int, d_sae: int = 24576, model: str = "gpt2-small") -> bytes:
    """A pre-6 SAELens cfg.json (hook_point, no metadata), as the older registry repos hold."""
    return _cfg_json(
        model_name=model, hook_point=hook, hook_point_layer=int(hook.split(".")[1]), hook_point_head_index=None, d_in=d_in,
        d_sae=d_sae, dtype="torch.float32", device="cuda", context_size=128, prepend_bos=True, apply_b_dec_to_input=True,
    )  # fmt: skip


def sae6_cfg(hook: str, d_in: int, d_sae: int = 32, architecture: str = "standard", **metadata) -> bytes:
    return _cfg_json(
        d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu", apply_b_dec_to_input=True, normalize_activations="none",
        architecture=architecture, metadata={"sae_lens_version": "6.0.0", "hook_name": hook, **metadata},
    )  # fmt: skip


def write_local_sae(directory: Path, cfg: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cfg.json").write_bytes(cfg)
    c = json.loads(cfg)
    d_out = c.get("d_out", c["d_in"])
    tensors = {"W_enc": np.zeros((c["d_in"], c["d_sae"]), np.float32), "W_dec": np.zeros((c["d_sae"], d_out), np.float32)}
    save_file(tensors, str(directory / "sae_weights.safetensors"))


def write_content(root: Path, manifest: str) -> Path:
    content = root / "content"
    (content / "releases").mkdir(parents=True)
    (content / "corpus").mkdir()
    (content / "corpus/c.txt").write_text("one two three four five six seven eight nine ten\n")
    (content / "releases/names.yaml").write_text(textwrap.dedent(manifest))
    return content


def at(content: Path, manifest: str, needle: str, nth: int = 0) -> str:
    """`file:line:col` of the nth occurrence of `needle` in the manifest text."""
    text, start = textwrap.dedent(manifest), -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return f"{content / 'releases/names.yaml'}:{line}:{col}"


def problem_lines(run) -> list[str]:
    assert "Traceback" not in run.stderr, run.stderr
    return [line for line in run.stderr.splitlines() if not line.startswith("sae-atlas:")]


GPT2_NAMED = """\
    release: names
    model: {id: gpt2-small, transformer_lens: gpt2-small}
    corpus: {path: ../corpus/c.txt, prompts: 2, context: 4}
    sets:
      - id: res
        hook: blocks.{layer}.hook_resid_pre
        saes:
          - {layer: 1, sae_lens: {release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}}
          - {layer: 12, sae_lens: {release: gpt2-small-res-jb, id: blocks.11.hook_resid_pre}}
          - {layer: 2, sae_lens: {release: gpt2-small-res-jb, id: blocks.3.hook_resid_pre}}
      - id: att
        hook: blocks.{layer}.hook_attn_out
        saes:
          - {layer: 0, sae_lens: {release: gpt2-small-attn-out-v5-32k, id: blocks.0.hook_attn_out}}
"""
GPT2_MANIFEST = GPT2_NAMED + """\
      - id: mlp
        hook: blocks.{layer}.hook_mlp_outt
        saes:
          - {layer: 0, path: ../saes/mlp0}
      - id: tc
        hook: blocks.{layer}.ln2.hook_normalized
        saes:
          - {layer: 4, path: ../saes/tc4}
          - {layer: 5, path: ../saes/tc5}
"""


def gpt2_hub(root: Path) -> HubCache:
    hub = HubCache(root / "hf")
    hub.add("gpt2", "config.json", json.dumps(HF_CONFIGS["gpt2"]).encode())
    for layer in (1, 3, 11):
        hook = f"blocks.{layer}.hook_resid_pre"
        hub.add("jbloom/GPT2-Small-SAEs-Reformatted", f"{hook}/cfg.json", legacy_cfg(hook, 768))
    # Wrong on purpose: the hook_attn_out of gpt2 is 768 wide.
    hub.add("jbloom/GPT2-Small-OAI-v5-32k-attn-out-SAEs", "v5_32k_layer_0/cfg.json", sae6_cfg("blocks.0.hook_attn_out", 512, model_name="gpt2-small"))
    return hub


def test_check_reports_every_mistake_against_hub_configs_at_its_manifest_position(tmp_path):
    content = write_content(tmp_path, GPT2_MANIFEST)
    write_local_sae(content / "saes/mlp0", sae6_cfg("blocks.0.hook_mlp_out", 768))
    tc = {"architecture": "transcoder", "d_sae": 8, "metadata": {"sae_lens_version": "6.0.0"}}
    tc4 = dict(tc, d_in=768, d_out=3072, metadata=dict(tc["metadata"], hook_name="blocks.4.ln2.hook_normalized", hook_name_out="blocks.4.hook_mlp_out"))
    tc5 = dict(tc, d_in=768, d_out=768, metadata=dict(tc["metadata"], hook_name="blocks.5.ln2.hook_normalized", hook_name_out="blocks.5.hook_mlp_outt"))
    write_local_sae(content / "saes/tc4", json.dumps(tc4).encode())
    write_local_sae(content / "saes/tc5", json.dumps(tc5).encode())
    run = sae_atlas("check", "--content", content, env=gpt2_hub(tmp_path).env())
    assert run.returncode == 2
    m = GPT2_MANIFEST
    assert problem_lines(run) == sorted(
        [
            f"{at(content, m, '12,')}: layer 12 is outside model 'gpt2-small', which has 12 layers; expected 0 to 11",
            f"{at(content, m, 'blocks.3.hook_resid_pre')}: SAELens SAE 'gpt2-small-res-jb/blocks.3.hook_resid_pre' says it reads "
            "'blocks.3.hook_resid_pre' but set 'res' puts it on 'blocks.2.hook_resid_pre'; expected the same hook (check the layer and the set's hook)",
            f"{at(content, m, 'blocks.0.hook_attn_out}')}: SAELens SAE 'gpt2-small-attn-out-v5-32k/blocks.0.hook_attn_out' d_in is 512 "
            "but hook 'blocks.0.hook_attn_out' of model 'gpt2-small' has width 768; expected d_in = 768",
            f"{at(content, m, 'blocks.{layer}.hook_mlp_outt')}: hook 'blocks.0.hook_mlp_outt' does not exist in model 'gpt2-small'; "
            "did you mean 'blocks.0.hook_mlp_out'?",
            f"{at(content, m, '../saes/tc4')}: SAE d_out is 3072 but output hook 'blocks.4.hook_mlp_out' of model 'gpt2-small' has width 768; "
            "expected d_out = 768",
            f"{at(content, m, '../saes/tc5')}: SAE cfg.json: the output hook 'blocks.5.hook_mlp_outt' does not exist in model 'gpt2-small'; "
            "did you mean 'blocks.5.hook_mlp_out'?",
        ],
        key=_position,
    )


def _position(line: str) -> tuple:
    file, row, col, message = line.split(":", 3)
    return file, int(row), int(col), message


def test_a_release_named_from_the_hub_passes_with_only_configs_cached(tmp_path):
    manifest = """\
        release: names
        model: {id: gpt2-small, transformer_lens: gpt2-small}
        corpus: {path: ../corpus/c.txt, prompts: 2, context: 4}
        sets:
          - id: res
            hook: blocks.{layer}.hook_resid_pre
            saes:
              - {layer: 1, sae_lens: {release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}}
              - {layer: 11, sae_lens: {release: gpt2-small-res-jb, id: blocks.11.hook_resid_pre}}
    """
    run = sae_atlas("check", "--content", write_content(tmp_path, manifest), env=gpt2_hub(tmp_path).env())
    assert run.returncode == 0, run.stderr
    assert "ok: 1 release(s), 2 SAE(s)" in run.stderr


def test_offline_with_nothing_cached_names_each_missing_repo_and_its_fetch_command(tmp_path):
    content = write_content(tmp_path, GPT2_NAMED)
    hub = HubCache(tmp_path / "empty-hf")
    run = sae_atlas("check", "--content", content, env=hub.env())
    assert run.returncode == 2
    lines = problem_lines(run)
    m, cache = GPT2_NAMED, hub.hub
    offline = f"not in the hub cache ({cache}) and HF_HUB_OFFLINE forbids fetching it; expected it in the hub cache: fetch it with"
    assert lines == sorted(
        [
            f"{at(content, m, 'gpt2-small}')}: model 'gpt2-small' needs config.json from hub repo 'gpt2', {offline} `hf download gpt2 config.json`",
            f"{at(content, m, 'blocks.1.hook_resid_pre')}: the config of SAELens SAE 'gpt2-small-res-jb/blocks.1.hook_resid_pre' needs "
            "blocks.1.hook_resid_pre/cfg.json, blocks.11.hook_resid_pre/cfg.json, blocks.3.hook_resid_pre/cfg.json from hub repo "
            f"'jbloom/GPT2-Small-SAEs-Reformatted', {offline} `hf download jbloom/GPT2-Small-SAEs-Reformatted "
            "blocks.1.hook_resid_pre/cfg.json blocks.11.hook_resid_pre/cfg.json blocks.3.hook_resid_pre/cfg.json`",
            f"{at(content, m, 'blocks.0.hook_attn_out}')}: the config of SAELens SAE 'gpt2-small-attn-out-v5-32k/blocks.0.hook_attn_out' "
            f"needs v5_32k_layer_0/cfg.json from hub repo 'jbloom/GPT2-Small-OAI-v5-32k-attn-out-SAEs', {offline} "
            "`hf download jbloom/GPT2-Small-OAI-v5-32k-attn-out-SAEs v5_32k_layer_0/cfg.json`",
        ],
        key=_position,
    )


def test_the_fetch_command_is_one_the_installed_hub_client_has():
    hf = Path(sys.executable).parent / "hf"
    done = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "REPO_ID" in done.stdout and "FILENAMES" in done.stdout


def test_check_does_not_import_torch(tmp_path):
    content = write_content(tmp_path, GPT2_NAMED)
    code = (
        "import sys\n"
        "from sae_atlas.cli import main\n"
        f"rc = main(['check', '--content', {str(content)!r}])\n"
        "assert rc == 2, rc\n"
        "assert 'torch' not in sys.modules, 'check imported torch'\n"
        "assert 'transformer_lens' not in sys.modules and 'sae_lens' not in sys.modules\n"
    )
    env = {**os.environ, **gpt2_hub(tmp_path).env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr


# --- SAE configs of registry refs, against SAELens's own config getters ------------------------------

CONNOR_ROB = "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9"

# (release, id) -> the files of its repo that SAELens's config getter reads, as the repos hold them.
REGISTRY_CASES: dict[tuple[str, str], dict[str, bytes]] = {
    ("gpt2-small-res-jb", "blocks.3.hook_resid_pre"): {"blocks.3.hook_resid_pre/cfg.json": legacy_cfg("blocks.3.hook_resid_pre", 768)},
    ("gpt2-small-attn-out-v5-32k", "blocks.0.hook_attn_out"): {
        "v5_32k_layer_0/cfg.json": sae6_cfg("blocks.0.hook_attn_out", 768, 32768, "topk", model_name="gpt2-small", prepend_bos=True)
    },
    ("gpt2-small-hook-z-kk", "blocks.0.hook_z"): {
        f"{CONNOR_ROB}_cfg.json": _cfg_json(act_size=768, dict_size=24576, act_name="blocks.0.attn.hook_z", l1_coeff=1.8)
    },
    ("gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_14"): {},
    ("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6"): {},
    ("gemma-scope-2b-pt-att", "layer_0/width_16k/average_l0_104"): {},
    ("gemma-scope-2b-pt-transcoders", "layer_3/width_16k/average_l0_54"): {},
    ("sae_bench_gemma-2-2b_topk_width-2pow12_date-1109", "blocks.12.hook_resid_post__trainer_0"): {
        "gemma-2-2b_topk_width-2pow12_date-1109/resid_post_layer_12/trainer_0/config.json": _cfg_json(
            trainer={"dict_class": "AutoEncoderTopK", "activation_dim": 2304, "dict_size": 4096, "k": 20, "layer": 12, "lm_name": "google/gemma-2-2b"},
            buffer={"ctx_len": 128, "d_submodule": 2304},
        )
    },
    ("temporal-sae-gemma-2-2b", "blocks.12.hook_resid_post"): {
        "gemma-2-2B/layer_12/temporal/conf.yaml": textwrap.dedent("""\
            llm: {dimin: 2304}
            sae: {exp_factor: 4, n_heads: 4, n_attn_layers: 1, bottleneck_factor: 1, sae_diff_type: topk, kval_topk: 192,
                  tied_weights: true, scaling_factor: 0.0067}
            data: {dtype: float32}
        """).encode()
    },
    ("llama_scope_lxa_32x", "l0a_32x"): {
        "Llama3_1-8B-Base-L0A-32x/hyperparams.json": _cfg_json(
            d_model=4096, d_sae=131072, hook_point_in="blocks.0.hook_attn_out", hook_point_out="blocks.0.hook_attn_out",
            jump_relu_threshold=0.5, dataset_average_activation_norm={"in": 10.0, "out": 10.0},
        )
    },
    ("llama_scope_r1_distill", "l0r_800m_slimpajama"): {
        "800M-Slimpajama-0-OpenR1-Math-220k/L0R/config.json": _cfg_json(d_model=4096, expansion_factor=8, hook_point_in="blocks.0.hook_resid_post")
    },
    ("mwhanna-qwen3-0.6b-transcoders-lowl0", "layer_0"): {
        "wandb-config.yaml": b"d_model: {value: 1024}\nd_feature: {value: 163840}\nbatch_size: {value: 4096}\n",
        "config.yaml": b"model_name: Qwen/Qwen3-0.6B\nfeature_input_hook: mlp.hook_in\n",
    },
    ("deepseek-r1-distill-llama-8b-qresearch", "blocks.19.hook_resid_post"): {},
    ("goodfire-llama-3.3-70b-instruct", "layer_50"): {},
    ("qwen-scope-3-1.7b-base-w32k-l50", "layer0"): {},
}

SAE_ORACLE = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface
out = {}
for release, sae_id in json.loads(sys.argv[1]):
    out[f"{release}|{sae_id}"] = load_sae_config_from_huggingface(release, sae_id, device="cpu")
print(json.dumps(out, default=str))
"""


def registry_hub(root: Path) -> HubCache:
    from sae_atlas.sources.configs import pretrained_sae_entry

    hub = HubCache(root)
    for (release, sae_id), files in REGISTRY_CASES.items():
        entry, _ = pretrained_sae_entry(release, sae_id)
        for path, data in files.items():
            hub.add(entry["repo_id"], path, data)
    return hub


@pytest.fixture(scope="module")
def sae_oracle(tmp_path_factory) -> tuple[HubCache, dict]:
    """SAELens's config of each registry case, built by SAELens from the same hub cache."""
    hub = registry_hub(tmp_path_factory.mktemp("sae-oracle-hub"))
    env = {**os.environ, **hub.env()}
    done = subprocess.run([sys.executable, "-c", SAE_ORACLE, json.dumps(list(REGISTRY_CASES))], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return hub, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(REGISTRY_CASES), ids="|".join)
def test_registry_sae_config_is_the_one_sae_lens_builds(sae_oracle, monkeypatch, case):
    from sae_atlas.sources.configs import pretrained_sae_config, sae_architecture, sae_hook_name, sae_hook_out_name, sae_metadata

    hub, oracle = sae_oracle
    for key, value in hub.env().items():
        monkeypatch.setenv(key, value)
    ours, theirs = pretrained_sae_config(*case), oracle["|".join(case)]
    meta = theirs.get("metadata") or {}
    assert (ours["d_in"], ours["d_sae"], ours.get("d_out")) == (theirs["d_in"], theirs["d_sae"], theirs.get("d_out"))
    assert sae_architecture(ours) == theirs["architecture"]
    assert sae_hook_name(ours) == meta.get("hook_name")
    assert sae_hook_out_name(ours) == meta.get("hook_name_out")
    for key in ("model_name", "hook_head_index", "model_from_pretrained_kwargs"):
        assert sae_metadata(ours, key) == meta.get(key), key


# --- conversion loaders and refused architectures through `check` -----------------------------------

GEMMA_MANIFEST = """\
    release: gemma
    model: {id: gemma-2-2b, transformer_lens: gemma-2-2b}
    corpus: {path: ../corpus/c.txt, prompts: 2, context: 4}
    sets:
      - id: res
        hook: blocks.{layer}.hook_resid_post
        saes:
          - {layer: 3, sae_lens: {release: gemma-scope-2b-pt-res, id: layer_3/width_16k/average_l0_14}}
          - {layer: 12, sae_lens: {release: temporal-sae-gemma-2-2b, id: blocks.12.hook_resid_post}}
      - id: npz
        hook: blocks.{layer}.hook_resid_post
        saes:
          - {layer: 3, sae_lens: {release: gemma-scope-2b-pt-res, id: layer_3/width_16k/average_l0_142}}
      - id: dl
        hook: blocks.{layer}.hook_resid_post
        saes:
          - {layer: 12, sae_lens: {release: sae_bench_gemma-2-2b_topk_width-2pow12_date-1109, id: blocks.12.hook_resid_post__trainer_0}}
      - id: tc
        hook: blocks.{layer}.ln2.hook_normalized
        saes:
          - {layer: 3, sae_lens: {release: gemma-scope-2b-pt-transcoders, id: layer_3/width_16k/average_l0_54}}
      - id: loc
        hook: blocks.{layer}.hook_resid_post
        saes:
          - {layer: 5, path: ../saes/temporal5}
"""


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_conversion_loaders_and_refused_architectures_are_checked_from_config_files(tmp_path):
    from sae_atlas.sources.architectures import ARCHITECTURES

    content = write_content(tmp_path, GEMMA_MANIFEST)
    write_local_sae(content / "saes/temporal5", sae6_cfg("blocks.5.hook_resid_post", 2304, architecture="temporal"))
    hub = registry_hub(tmp_path / "hf")
    hub.add("google/gemma-2-2b", "config.json", json.dumps(HF_CONFIGS["google/gemma-2-2b"]).encode())
    # Gemma Scope's weights are here for this one: the width comes from the npz headers (wrong on purpose).
    params = npz_bytes(W_enc=np.zeros((2048, 16), np.float32), W_dec=np.zeros((16, 2048), np.float32), threshold=np.zeros(16, np.float32))
    hub.add("google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_142/params.npz", params)
    run = sae_atlas("check", "--content", content, env=hub.env())
    assert run.returncode == 2
    m, temporal = GEMMA_MANIFEST, ARCHITECTURES["temporal"].refused
    assert problem_lines(run) == sorted(
        [
            f"{at(content, m, 'blocks.12.hook_resid_post}')}: SAELens SAE 'temporal-sae-gemma-2-2b/blocks.12.hook_resid_post' has architecture "
            f"'temporal', which SAE Atlas refuses: {temporal}; expected an SAE of a supported architecture",
            f"{at(content, m, 'layer_3/width_16k/average_l0_142')}: SAELens SAE 'gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_142' "
            "d_in is 2048 but hook 'blocks.3.hook_resid_post' of model 'gemma-2-2b' has width 2304; expected d_in = 2304",
            f"{at(content, m, '../saes/temporal5')}: SAE cfg.json has architecture 'temporal', which SAE Atlas refuses: {temporal}; "
            "expected an SAE of a supported architecture",
        ],
        key=_position,
    )


GEMMA_3_MANIFEST = """\
    release: gemma3
    model: {id: gemma-3-1b, transformer_lens: google/gemma-3-1b-pt}
    corpus: {path: ../corpus/c.txt, prompts: 2, context: 4}
    sets:
      - id: res
        hook: blocks.{layer}.hook_resid_post
        saes:
          - {layer: 13, sae_lens: {release: gemma-scope-2-1b-pt-res, id: layer_13_width_16k_l0_big}}
      - id: tc
        hook: blocks.{layer}.hook_mlp_in
        saes:
          - {layer: 13, sae_lens: {release: gemma-scope-2-1b-pt-transcoders, id: transcoder/layer_13_width_16k_l0_big}}
"""


def test_hooks_behind_a_flag_and_weights_headers_that_are_not_cached(tmp_path):
    content = write_content(tmp_path, GEMMA_3_MANIFEST)
    hub = HubCache(tmp_path / "hf")
    hub.add("google/gemma-3-1b-pt", "config.json", json.dumps(HF_CONFIGS["google/gemma-3-1b-pt"]).encode())
    run = sae_atlas("check", "--content", content, env=hub.env())
    assert run.returncode == 2
    m, cache = GEMMA_3_MANIFEST, hub.hub
    files = [f"{p}/config.json" for p in ("resid_post/layer_13_width_16k_l0_big", "transcoder/layer_13_width_16k_l0_big")]
    files = [files[0], files[0].replace("config.json", "params.safetensors"), files[1], files[1].replace("config.json", "params.safetensors")]
    assert problem_lines(run) == [
        f"{at(content, m, 'layer_13_width_16k_l0_big}')}: the config of SAELens SAE 'gemma-scope-2-1b-pt-res/layer_13_width_16k_l0_big' "
        f"needs {', '.join(files)} from hub repo 'google/gemma-scope-2-1b-pt', not in the hub cache ({cache}) and HF_HUB_OFFLINE forbids "
        f"fetching it; expected it in the hub cache: fetch it with `hf download google/gemma-scope-2-1b-pt {' '.join(files)}`",
    ]  # blocks.13.hook_mlp_in fires only with use_hook_mlp_in, which the engine sets for it: no problem


# --- hub failures during compute -----------------------------------------------------------------


def _add_sae_weights(hub: HubCache, repo: str, folder: str) -> None:
    """Random weights of the shapes the cached cfg.json gives, as SAELens's default loader reads them."""
    import torch
    from safetensors.torch import save

    cfg = json.loads((hub.repo_dir(repo) / "snapshots" / hub.commit_of(repo) / folder / "cfg.json").read_text())
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    tensors = {"W_enc": torch.randn(d_in, d_sae), "b_enc": torch.zeros(d_sae), "W_dec": torch.randn(d_sae, d_in), "b_dec": torch.zeros(d_in)}
    hub.add(repo, f"{folder}/sae_weights.safetensors", save(tensors))


def test_a_model_the_hub_cannot_give_is_named_with_its_fetch_command_not_as_a_cache_failure(tmp_path):
    manifest = """\
        release: names
        model: {id: gpt2-small, transformer_lens: gpt2-small}
        corpus: {path: ../corpus/c.txt, prompts: 2, context: 4}
        sets:
          - id: res
            hook: blocks.{layer}.hook_resid_pre
            saes:
              - {layer: 1, sae_lens: {release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}}
    """
    content = write_content(tmp_path, manifest)
    hub = gpt2_hub(tmp_path)  # configs only: `check` passes, the weights are not there
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    from tests.test_validate import WORDS, write_tokenizer

    write_tokenizer(tokenizer)
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}))
    hub.add_dir("gpt2", "", tokenizer)
    _add_sae_weights(hub, "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.1.hook_resid_pre")  # the SAE loads: the model is what fails
    (content / "corpus/c.txt").write_text(" ".join(WORDS * 3) + "\n")
    run = sae_atlas("compute", "--content", content, "--cache", tmp_path / "cache", "--quiet", env=hub.env())
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "writing the cache failed" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"sae-atlas: error: loading hub repo 'gpt2' failed: it is not in the hub cache ({hub.hub}) and HF_HUB_OFFLINE forbids fetching it (")
    assert line.endswith("; fetch it with `hf download gpt2` where the hub can be reached, then rerun (finished cache entries are kept)")


HUB_FAILURE = r"""
import sys, warnings
warnings.simplefilter("ignore")
from sae_atlas.sources.configs import hub_failure
from sae_lens import SAE
try:
    SAE.from_pretrained("gpt2-small-res-jb", "blocks.1.hook_resid_pre")
except Exception as e:
    print(hub_failure(e))
try:
    raise OSError("disk full")
except OSError as e:
    print(hub_failure(e))
"""


def test_an_sae_the_hub_cannot_give_names_its_repo_and_file(tmp_path):
    hub = HubCache(tmp_path / "hf")
    env = {**os.environ, **hub.env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", HUB_FAILURE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sae_line, other = done.stdout.strip().splitlines()[-2:]
    assert sae_line.startswith(
        "loading 'blocks.1.hook_resid_pre/cfg.json' of hub repo 'jbloom/GPT2-Small-SAEs-Reformatted' failed: "
        f"it is not in the hub cache ({hub.hub}) and HF_HUB_OFFLINE forbids fetching it ("
    )
    assert sae_line.endswith(
        "; fetch it with `hf download jbloom/GPT2-Small-SAEs-Reformatted --include 'blocks.1.hook_resid_pre/*'` "
        "where the hub can be reached, then rerun (finished cache entries are kept)"
    )
    assert other == "None"  # an error that is not the hub's stays what it is


def test_a_model_of_an_architecture_this_check_does_not_convert_is_left_to_transformer_lens(tmp_path):
    from sae_atlas.sources.configs import convert_hf_config

    phi = {"architectures": ["PhiForCausalLM"], "model_type": "phi", "hidden_size": 2560, "num_hidden_layers": 32}
    assert convert_hf_config("microsoft/phi-2", phi) is None
    manifest = """\
        release: phi
        model: {id: phi-2, transformer_lens: microsoft/phi-2}
        corpus: {path: ../corpus/c.txt, prompts: 2, context: 4}
        sets:
          - id: res
            hook: blocks.{layer}.hook_resid_pre
            saes:
              - {layer: 99, path: ../saes/r}
    """
    content = write_content(tmp_path, manifest)
    write_local_sae(content / "saes/r", sae6_cfg("blocks.99.hook_resid_pre", 2560))
    hub = HubCache(tmp_path / "hf")
    hub.add("microsoft/phi-2", "config.json", json.dumps(phi).encode())
    run = sae_atlas("check", "--content", content, env=hub.env())
    assert run.returncode == 0, run.stderr


# --- online: only the config files are fetched ------------------------------------------------------


class _Hub:
    """A local stand-in for the hub's file endpoint (`/{repo}/resolve/{revision}/{path}`) that logs requests."""

    def __init__(self, files: dict[tuple[str, str], bytes]):
        import hashlib
        import http.server
        import threading

        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                repo_path = self.path.split("?")[0].lstrip("/")
                repo, _, rest = repo_path.partition("/resolve/")
                data = files.get((repo, rest.partition("/")[2]))
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = hashlib.sha256(data).hexdigest()
                span = self.headers.get("Range")
                if span:  # bytes=A-B, as range requests for headers send it
                    first, last = (int(x) for x in span.removeprefix("bytes=").split("-"))
                    data = data[first : last + 1]
                self.send_response(206 if span else 200)
                self.send_header("X-Repo-Commit", hashlib.sha1(repo.encode()).hexdigest())
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._serve(False)

            def do_GET(self):
                self._serve(True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_online_check_fetches_the_config_files_alone_into_the_hub_cache(tmp_path):
    manifest = """\
        release: names
        model: {id: gpt2-small, transformer_lens: gpt2-small}
        corpus: {path: ../corpus/c.txt, prompts: 2, context: 4}
        sets:
          - id: res
            hook: blocks.{layer}.hook_resid_pre
            saes:
              - {layer: 1, sae_lens: {release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}}
    """
    files = {
        ("gpt2", "config.json"): json.dumps(HF_CONFIGS["gpt2"]).encode(),
        ("gpt2", "model.safetensors"): b"weights that must not be fetched",
        ("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.1.hook_resid_pre/cfg.json"): legacy_cfg("blocks.1.hook_resid_pre", 768),
        ("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.1.hook_resid_pre/sae_weights.safetensors"): b"nor these",
    }
    server = _Hub(files)
    hub = HubCache(tmp_path / "hf")
    env = {**hub.env(), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1"}
    try:
        run = sae_atlas("check", "--content", write_content(tmp_path, manifest), env=env)
    finally:
        server.close()
    assert run.returncode == 0, run.stderr
    fetched = {path.split("/resolve/main/")[1] for method, path, _ in server.requests if method == "GET"}
    assert fetched == {"config.json", "blocks.1.hook_resid_pre/cfg.json"}
    snapshot = next((hub.repo_dir("gpt2") / "snapshots").iterdir())
    assert json.loads((snapshot / "config.json").read_text()) == HF_CONFIGS["gpt2"]


def test_a_repo_two_releases_need_is_one_line(tmp_path):
    content = write_content(tmp_path, GPT2_NAMED)
    second = textwrap.dedent(GPT2_NAMED).replace("release: names", "release: again").replace("id: res", "id: res2").replace("id: att", "id: att2")
    (content / "releases/again.yaml").write_text(second)
    run = sae_atlas("check", "--content", content, env=HubCache(tmp_path / "hf").env())
    assert run.returncode == 2
    gpt2 = [line for line in problem_lines(run) if "hub repo 'gpt2'" in line]
    assert len(gpt2) == 1 and gpt2[0].startswith(str(content / "releases/again.yaml"))  # where it is first needed
    assert len(problem_lines(run)) == 3


GEMMA_SCOPE_2 = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from sae_atlas.sources.configs import pretrained_sae_config
cases = json.loads(sys.argv[1])
ours = {"|".join(c): pretrained_sae_config(*c) for c in cases}
print(json.dumps(ours))
from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface
print(json.dumps({"|".join(c): load_sae_config_from_huggingface(*c, device="cpu") for c in cases}, default=str))
"""


def small_safetensors(**shapes: tuple[int, ...]) -> bytes:
    from safetensors.numpy import save

    return save({name: np.zeros(shape, np.float32) for name, shape in shapes.items()})


def test_gemma_scope_2_configs_read_weights_headers_by_range_as_sae_lens_does(tmp_path):
    """Gemma Scope 2 widths come from the params.safetensors header: fetched by range, never whole."""
    d, width = 1152, 16
    params = small_safetensors(w_enc=(d, width), w_dec=(width, d), b_enc=(width,), b_dec=(d,), threshold=(width,))
    files = {
        ("google/gemma-scope-2-1b-pt", "resid_post/layer_13_width_16k_l0_big/config.json"): _cfg_json(
            architecture="jump_relu", model_name="gemma-v3-1b-pt", hf_hook_point_in="model.layers.13.output"
        ),
        ("google/gemma-scope-2-1b-pt", "resid_post/layer_13_width_16k_l0_big/params.safetensors"): params,
        # No config.json here: both infer it from the names (an affine transcoder).
        ("google/gemma-scope-2-1b-pt", "transcoder/layer_13_width_16k_l0_big_affine/params.safetensors"): params,
    }
    cases = [("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_big"), ("gemma-scope-2-1b-pt-transcoders", "transcoder/layer_13_width_16k_l0_big_affine")]
    server = _Hub(files)
    hub = HubCache(tmp_path / "hf")
    env = {**os.environ, **hub.env(), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-c", GEMMA_SCOPE_2, json.dumps(cases)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    ours, theirs = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    from sae_atlas.sources.configs import sae_architecture, sae_hook_name, sae_hook_out_name, sae_metadata

    for key, cfg in ours.items():
        meta = theirs[key].get("metadata") or {}
        assert (cfg["d_in"], cfg["d_sae"], cfg.get("d_out")) == (theirs[key]["d_in"], theirs[key]["d_sae"], theirs[key].get("d_out"))
        assert (sae_architecture(cfg), sae_hook_name(cfg), sae_hook_out_name(cfg)) == (theirs[key]["architecture"], meta.get("hook_name"), meta.get("hook_name_out"))
        assert sae_metadata(cfg, "model_name") == meta.get("model_name")
    assert sae_architecture(ours["|".join(cases[1])]) == "jumprelu_skip_transcoder"
    weights = [(m, r) for m, path, r in server.requests if path.endswith("params.safetensors") and m == "GET"]
    assert weights and all(r is not None for _, r in weights)  # only ever a range
    assert not any(p.name == "params.safetensors" for p in hub.hub.rglob("*"))

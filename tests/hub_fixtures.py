"""Tiny, random repos laid out in a Hugging Face hub cache (see tests/hubcache.py), each in its real
repo's own file names and formats, so that the libraries load them by name with the hub offline:

- `gpt2` (TransformerLens `gpt2-small`): GPT2LMHeadModel config.json + model.safetensors + tokenizer;
- `EleutherAI/pythia-70m-deduped`: a GPTNeoX whose `vocab_size` is larger than its tokenizer;
- `jbloom/GPT2-Small-SAEs-Reformatted` (SAELens release `gpt2-small-res-jb`): the pre-6.0 SAELens
  cfg.json + sae_weights.safetensors + sparsity.safetensors per hook folder;
- `ckkissane/attn-saes-gpt2-small-all-layers` (`gpt2-small-hook-z-kk`, conversion `connor_rob_hook_z`):
  a torch state dict `<name>.pt` with its `<name>_cfg.json`;
- `canrager/lm_sae` (`sae_bench_pythia70m_sweep_standard_ctx128_0712`, conversion
  `dictionary_learning_1`): dictionary_learning's `ae.pt` + `config.json` per trainer folder;
- a dataset repo with a parquet `text` column.

    hub = HubCache(tmp_path / "hf")
    add_gpt2(hub); add_res_jb(hub, layers=(8, 9)); add_text_dataset(hub, DATASET)
    run(..., env=hub.env())

Weights are seeded: the same calls give the same files. Everything is small enough to build in seconds.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from tests.fixtures import SPECIAL_TOKEN, fixture_text
from tests.hubcache import HubCache

GPT2_REPO = "gpt2"
PYTHIA_REPO = "EleutherAI/pythia-70m-deduped"
RES_JB_RELEASE, RES_JB_REPO = "gpt2-small-res-jb", "jbloom/GPT2-Small-SAEs-Reformatted"
KK_RELEASE, KK_REPO = "gpt2-small-hook-z-kk", "ckkissane/attn-saes-gpt2-small-all-layers"
DL_RELEASE, DL_REPO = "sae_bench_pythia70m_sweep_standard_ctx128_0712", "canrager/lm_sae"
DATASET = "NeelNanda/pile-10k"

# Paths inside the repos, as SAELens's registry (pretrained_saes.yaml) names them; written out so that
# laying out the cache needs no SAELens import.
KK_PATHS = {5: "gpt2-small_L5_Hcat_z_lr1.20e-03_l11.00e+00_ds49152_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9.pt"}
DL_FOLDERS = {10: "pythia70m_sweep_standard_ctx128_0712/resid_post_layer_3/trainer_10"}

GPT2_LAYERS, GPT2_D_MODEL, GPT2_HEADS = 10, 32, 4
PYTHIA_LAYERS, PYTHIA_D_MODEL, PYTHIA_HEADS = 4, 32, 4
PYTHIA_VOCAB_PADDING = 20  # config vocab_size = tokenizer size + this, as Pythia pads 50,277 to 50,304
TOKENIZER_VOCAB = 300
PYTHIA_PAD_TOKEN = "<|padding|>"  # id 1 of Pythia's tokenizer; GPTNeoXTokenizer adds it when absent


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _tokenizer_files(text: str, special: tuple[str, ...] = (SPECIAL_TOKEN,), vocab_size: int = TOKENIZER_VOCAB) -> dict[str, bytes]:
    """A trained byte-level BPE: tokenizer.json, vocab.json and merges.txt (special tokens first, from id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    with tempfile.TemporaryDirectory() as d:
        tok.model.save(d)
        files = {name: (Path(d) / name).read_bytes() for name in ("vocab.json", "merges.txt")}
    files["tokenizer.json"] = tok.to_str().encode()
    return files


def _tokenizer_size(files: dict[str, bytes]) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(files["tokenizer.json"].decode()).get_vocab_size(with_added_tokens=True)


def _safetensors(model) -> bytes:
    """model.safetensors as `save_pretrained` writes it (HF parameter names, tied weights once)."""
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return (Path(d) / "model.safetensors").read_bytes()


def _randomize(model, seed: int, scale: float = 0.3) -> None:
    """Larger-than-init weights so activations and logits are not all near zero."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def add_gpt2(hub: HubCache, text: str | None = None, seed: int = 0) -> dict:
    """HF repo `gpt2`, i.e. TransformerLens `gpt2-small`: GPT2 config keys, GPT2LMHeadModel weights, tokenizer.
    Returns the config.json written."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _tokenizer_files(text or fixture_text())
    vocab = _tokenizer_size(tokenizer)
    config = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 0,
        "embd_pdrop": 0.1,
        "eos_token_id": 0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 64,
        "n_embd": GPT2_D_MODEL,
        "n_head": GPT2_HEADS,
        "n_layer": GPT2_LAYERS,
        "n_positions": 64,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": vocab,
    }
    import torch

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**config))
    _randomize(model, seed)
    hub.add(GPT2_REPO, "config.json", _json(config))
    hub.add(GPT2_REPO, "model.safetensors", _safetensors(model))
    hub.add(GPT2_REPO, "tokenizer_config.json", _json({"model_max_length": 64}))
    for name, data in tokenizer.items():
        hub.add(GPT2_REPO, name, data)
    return config


def add_pythia(hub: HubCache, text: str | None = None, seed: int = 1) -> dict:
    """`EleutherAI/pythia-70m-deduped` as a tiny GPTNeoX whose vocab_size exceeds its tokenizer's size."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = _tokenizer_files(text or fixture_text(seed=1), special=(SPECIAL_TOKEN, PYTHIA_PAD_TOKEN))
    vocab = _tokenizer_size(tokenizer)
    config = {
        "architectures": ["GPTNeoXForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_size": PYTHIA_D_MODEL,
        "initializer_range": 0.02,
        "intermediate_size": 4 * PYTHIA_D_MODEL,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 64,
        "model_type": "gpt_neox",
        "num_attention_heads": PYTHIA_HEADS,
        "num_hidden_layers": PYTHIA_LAYERS,
        "rotary_emb_base": 10000,
        "rotary_pct": 0.25,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_parallel_residual": True,
        "vocab_size": vocab + PYTHIA_VOCAB_PADDING,
    }
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**config))
    _randomize(model, seed)
    special = {"bos_token": SPECIAL_TOKEN, "eos_token": SPECIAL_TOKEN, "unk_token": SPECIAL_TOKEN}
    hub.add(PYTHIA_REPO, "config.json", _json(config))
    hub.add(PYTHIA_REPO, "model.safetensors", _safetensors(model))
    hub.add(PYTHIA_REPO, "special_tokens_map.json", _json(special))
    hub.add(PYTHIA_REPO, "tokenizer_config.json", _json({"add_prefix_space": False, **special, "tokenizer_class": "GPTNeoXTokenizer"}))
    hub.add(PYTHIA_REPO, "tokenizer.json", tokenizer["tokenizer.json"])
    return config


def _sae_weights(d_in: int, d_sae: int, seed: int) -> dict:
    """W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec; feature 0 never fires."""
    import torch

    g = torch.Generator().manual_seed(seed)
    w = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) / d_in**0.5,
        "b_enc": -0.3 - 0.5 * torch.rand(d_sae, generator=g),
        "b_dec": 0.01 * torch.randn(d_in, generator=g),
    }
    w["b_enc"][0] = -1e4
    return w


def _safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def _torch_bytes(obj: object) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def add_res_jb(hub: HubCache, layers: tuple[int, ...] = (8, 9), d_sae: int = 64, seed: int = 10) -> None:
    """`gpt2-small-res-jb`: per `blocks.L.hook_resid_pre` folder the pre-6.0 SAELens training cfg.json
    (hook_point, activation_fn_str absent, dtype "torch.float32"), sae_weights.safetensors and
    sparsity.safetensors (log10 feature density)."""
    import torch

    for layer in layers:
        hook = f"blocks.{layer}.hook_resid_pre"
        cfg = {
            "model_name": "gpt2-small",
            "hook_point": hook,
            "hook_point_layer": layer,
            "hook_point_head_index": None,
            "dataset_path": "Skylion007/openwebtext",
            "is_dataset_tokenized": False,
            "context_size": 128,
            "use_cached_activations": False,
            "cached_activations_path": None,
            "d_in": GPT2_D_MODEL,
            "n_batches_in_buffer": 128,
            "total_training_tokens": 300000000,
            "store_batch_size": 32,
            "device": "mps",
            "seed": 42,
            "dtype": "torch.float32",
            "b_dec_init_method": "geometric_median",
            "expansion_factor": d_sae // GPT2_D_MODEL,
            "from_pretrained_path": None,
            "l1_coefficient": 8e-05,
            "lr": 0.0004,
            "lr_scheduler_name": None,
            "lr_warm_up_steps": 5000,
            "train_batch_size": 4096,
            "use_ghost_grads": False,
            "feature_sampling_window": 1000,
            "feature_sampling_method": None,
            "resample_batches": 1028,
            "feature_reinit_scale": 0.2,
            "dead_feature_window": 5000,
            "dead_feature_estimation_method": "no_fire",
            "dead_feature_threshold": 1e-08,
            "log_to_wandb": True,
            "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
            "wandb_entity": None,
            "wandb_log_frequency": 100,
            "n_checkpoints": 10,
            "checkpoint_path": "checkpoints/y1t51byy",
            "d_sae": d_sae,
            "tokens_per_buffer": 67108864,
            "run_name": f"{d_sae}-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
        }
        weights = _sae_weights(GPT2_D_MODEL, d_sae, seed + layer)
        hub.add(RES_JB_REPO, f"{hook}/cfg.json", _json(cfg))
        hub.add(RES_JB_REPO, f"{hook}/sae_weights.safetensors", _safetensors_bytes(weights))
        hub.add(RES_JB_REPO, f"{hook}/sparsity.safetensors", _safetensors_bytes({"sparsity": torch.full((d_sae,), -3.0)}))


def kk_path(layer: int) -> str:
    """The registry's file name for layer `layer` of `gpt2-small-hook-z-kk`."""
    return KK_PATHS[layer]


def add_hook_z_kk(hub: HubCache, layer: int = 5, d_sae: int = 64, seed: int = 20) -> None:
    """`gpt2-small-hook-z-kk` layer L: `<name>.pt` (torch state dict W_enc, W_dec, b_enc, b_dec over the
    concatenated heads' z) and `<name>_cfg.json`, as Kissane et al. trained them."""
    path = kk_path(layer)
    d_in = GPT2_D_MODEL  # n_heads * d_head
    cfg = {
        "seed": 49, "batch_size": 4096, "buffer_mult": 384, "lr": 0.0012, "num_tokens": 2000000000,
        "l1_coeff": 1.0, "beta1": 0.9, "beta2": 0.99, "dict_mult": d_sae // d_in, "seq_len": 128,
        "enc_dtype": "fp32", "model_name": "gpt2-small", "site": "z", "layer": layer, "device": "cuda",
        "reinit": "reinit", "head": "cat", "concat_heads": True, "resample_scheme": "anthropic",
        "anthropic_neuron_resample_scale": 0.2, "dead_direction_cutoff": 1e-06, "re_init_every": 25000,
        "anthropic_resample_last": 12500, "resample_factor": 0.01, "num_resamples": 4,
        "wandb_project_name": "gpt2-L5-z", "wandb_entity": "ckkissane", "save_state_dict_every": 50000,
        "b_dec_init": "zeros", "sched_type": "cosine_warmup", "sched_epochs": 1000, "sched_lr_factor": 0.1,
        "sched_warmup_epochs": 1000, "sched_finish": True, "anthropic_resample_batches": 100, "eval_every": 1000,
        "model_batch_size": 512, "buffer_size": 1572864, "buffer_batches": 12288,
        "act_name": f"blocks.{layer}.attn.hook_z", "act_size": d_in, "dict_size": d_sae,
        "name": f"gpt2-small_{layer}_{d_sae}_z",
    }
    hub.add(KK_REPO, path, _torch_bytes(_sae_weights(d_in, d_sae, seed)))
    hub.add(KK_REPO, path.split(".pt")[0] + "_cfg.json", _json(cfg))


def dl_sae_id(layer: int = 3, trainer: int = 10) -> str:
    return f"blocks.{layer}.hook_resid_post__trainer_{trainer}"


def add_dictionary_learning(hub: HubCache, trainer: int = 10, d_sae: int = 64, seed: int = 30) -> str:
    """One SAE of `sae_bench_pythia70m_sweep_standard_ctx128_0712` (layer 3): dictionary_learning's
    AutoEncoder `ae.pt` (encoder.weight [d_sae, d_in], encoder.bias, decoder.weight [d_in, d_sae], bias)
    and its `config.json` ({trainer, buffer}). Returns the SAE id."""
    sae_id = dl_sae_id(3, trainer)
    folder = DL_FOLDERS[trainer]
    w = _sae_weights(PYTHIA_D_MODEL, d_sae, seed)
    ae = {"bias": w["b_dec"], "encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"], "decoder.weight": w["W_dec"].T.contiguous()}
    config = {
        "trainer": {
            "dict_class": "AutoEncoder", "trainer_class": "StandardTrainer", "activation_dim": PYTHIA_D_MODEL,
            "dict_size": d_sae, "lr": 0.0003, "l1_penalty": 0.06, "warmup_steps": 1000, "resample_steps": None,
            "sparsity_warmup_steps": 5000, "steps": 48828, "decay_start": 39062, "seed": 0, "device": "cuda:0",
            "layer": 3, "lm_name": PYTHIA_REPO, "wandb_name": f"StandardTrainer-pythia70m-resid_post_layer_3_trainer_{trainer}",
            "submodule_name": "resid_post_layer_3",
        },
        "buffer": {"d_submodule": PYTHIA_D_MODEL, "io": "out", "n_ctxs": 2000, "ctx_len": 128, "refresh_batch_size": 24, "out_batch_size": 2048, "device": "cuda:0"},
    }
    hub.add(DL_REPO, f"{folder}/ae.pt", _torch_bytes(ae))
    hub.add(DL_REPO, f"{folder}/config.json", _json(config))
    return sae_id


def add_text_dataset(hub: HubCache, repo_id: str = DATASET, n_docs: int = 60, seed: int = 0) -> list[str]:
    """A dataset repo with one parquet split file with a `text` column (and `meta`, as the Pile has).
    Returns the documents in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [d for d in fixture_text(n_docs=n_docs, seed=seed).split("\n\n") if d.strip()]
    table = pa.table({"text": docs, "meta": [json.dumps({"pile_set_name": "Fixture"})] * len(docs)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    hub.add(repo_id, "data/train-00000-of-00001.parquet", buf.getvalue(), repo_type="dataset")
    hub.add(repo_id, "README.md", b"---\nlicense: mit\n---\n# Fixture corpus\n", repo_type="dataset")
    return docs

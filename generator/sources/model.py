"""Loading a model: a local directory (HookedTransformerConfig + state dict + HF tokenizer) or a
TransformerLens model name. The tokenizer loads on its own so that tokenizing a corpus never needs
the weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from generator.errors import AtlasError, InputError, problem_at
from generator.manifest import ModelSpec

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def resolve_device(device: str = "auto") -> str:
    """auto picks cuda > mps > cpu; an explicit device that is unavailable is an error."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AtlasError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise AtlasError("--device mps: MPS is not available; use --device cpu or auto")
    return device


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def read_local_config(directory: Path) -> dict:
    """config.json as HookedTransformerConfig keyword arguments (unknown keys dropped)."""
    from transformer_lens import HookedTransformerConfig

    path = Path(directory) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError([problem_at(path, f"cannot read model config ({e}); expected HookedTransformerConfig fields as JSON")]) from e
    known = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    cfg = {k: v for k, v in raw.items() if k in known}
    cfg.pop("dtype", None)
    cfg.pop("device", None)
    return cfg


def load_tokenizer(spec: ModelSpec):
    """The model's Hugging Face tokenizer: a local model's own, or for a TransformerLens name the one
    TransformerLens loads (its config's `tokenizer_name`, not the architecture)."""
    from transformers import AutoTokenizer

    if spec.path is not None:
        try:
            return AutoTokenizer.from_pretrained(str(spec.path))
        except (OSError, ValueError) as e:
            raise InputError([problem_at(spec.path, f"cannot load tokenizer ({e}); expected files written by save_pretrained")]) from e
    from transformer_lens.loading_from_pretrained import NON_HF_HOSTED_MODEL_NAMES, get_pretrained_model_config

    mark = spec.mark_of("transformer_lens")
    try:
        cfg = get_pretrained_model_config(spec.transformer_lens)
        name = cfg.tokenizer_name
        if name is None or name in NON_HF_HOSTED_MODEL_NAMES:
            raise InputError([problem_at(mark.file, f"TransformerLens model '{spec.transformer_lens}' names no tokenizer on the hub; expected a model with a tokenizer, or a local model with `path:`", mark.line, mark.col)])
        return AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:  # not in the hub cache offline, or the hub unreachable
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError([problem_at(mark.file, f"cannot load the tokenizer of TransformerLens model '{spec.transformer_lens}' ({first}); expected it on the Hugging Face hub or in its cache", mark.line, mark.col)]) from e


def load_model(spec: ModelSpec, device: str = "cpu", dtype: str = "float32"):
    """A HookedTransformer in eval mode on `device`, no gradients needed."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if spec.path is None:
        model = HookedTransformer.from_pretrained(spec.transformer_lens, device=device, dtype=torch_dtype(dtype))
        return model.eval()
    from safetensors.torch import load_file

    cfg = HookedTransformerConfig(**read_local_config(spec.path), device=device, dtype=torch_dtype(dtype))
    model = HookedTransformer(cfg)  # parameters created with cfg.dtype on cfg.device
    state = load_file(str(Path(spec.path) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # TransformerLens registers some buffers (masks, rotary tables) that need not be in the file.
    missing = [k for k in missing if not k.endswith(("mask", "IGNORE", "rotary_sin", "rotary_cos"))]
    if missing or unexpected:
        raise InputError(
            [problem_at(Path(spec.path) / "model.safetensors", f"state dict does not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]}); expected HookedTransformer.state_dict()")]
        )
    return model.eval()

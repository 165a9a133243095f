"""Loading a model: a local directory (HookedTransformerConfig + state dict + HF tokenizer) or a
model name, through its backend (`generator/backends/`). The tokenizer loads on its own so that
tokenizing a corpus never needs the weights."""

from __future__ import annotations

from typing import Any

from sae_atlas.errors import AtlasError
from sae_atlas.manifest import ModelSpec

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


def load_tokenizer(spec: ModelSpec):
    """The model's Hugging Face tokenizer."""
    from sae_atlas.backends.transformer_lens import load_tokenizer as load

    return load(spec)


def load_model(spec: ModelSpec, device: str = "cpu", dtype: str = "float32", kwargs: dict[str, Any] | None = None, quiet: bool = False):
    """The model's backend (`sae_atlas.backends.ModelBackend`) in eval mode on `device`, loaded with
    the SAEs' from-pretrained keyword arguments `kwargs` (`quiet`: without the loaders' progress output)."""
    from sae_atlas.backends.transformer_lens import TransformerLensBackend

    return TransformerLensBackend.load(spec, device, dtype, kwargs, quiet)


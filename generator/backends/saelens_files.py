"""SAELens-format SAEs read without importing SAELens, for the architectures whose inference is a
few tensor operations: `standard`, `jumprelu` and `topk`; from a `save_model` directory
(`native_module`), or by registry release/id (`native_pretrained`) when the release is in SAELens's
own format (no `conversion_func` in `pretrained_saes.yaml`).

`import sae_lens` imports its training stack (the activations-store runner, its config and wandb)
on top of the TransformerLens the model needs anyway; a local SAE of these architectures does not
need it. The module below holds the same tensors as SAELens's `SAE.load_from_disk` and runs the same
operations in the same order (`process_sae_in`, then each architecture's `encode` / `decode`), so
its activations and reconstructions are the same bits (tests/test_saelens_files.py compares them
with SAELens's own on every case the reader accepts).

The reader accepts a directory only when nothing in it needs SAELens's other paths: a SAELens 6
config (no pre-6.0 defaulting), no run-time normalisation (`normalize_activations: none`), no hook_z
reshaping, the exact parameter names of the architecture (no `scaling_factor`, no `log_threshold`),
and no other config field that changes what encode or decode compute. Anything else (every other
architecture, a release with a converter, pre-6.0 configs such as gpt2-small-res-jb's) loads
through SAELens as before: both functions return None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CFG_FILENAME, WEIGHTS_FILENAME = "cfg.json", "sae_weights.safetensors"

# Per architecture: its parameters, and its config fields besides the base ones (with SAELens's defaults).
_ARCHITECTURES: dict[str, tuple[frozenset[str], dict[str, Any]]] = {
    "standard": (frozenset({"W_enc", "W_dec", "b_enc", "b_dec"}), {}),
    "jumprelu": (frozenset({"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}), {}),
    "topk": (frozenset({"W_enc", "W_dec", "b_enc", "b_dec"}), {"k": 100, "rescale_acts_by_decoder_norm": False}),
}
# SAEConfig's own fields and their defaults.
_BASE_FIELDS: dict[str, Any] = {
    "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
}
# Fields of a saved config that describe the SAE's training or provenance, not its inference.
_DESCRIPTIVE = frozenset({"architecture", "metadata", "d_in", "d_sae", "sae_lens_version", "sae_lens_training_version", "neuronpedia_id"})
_DTYPES = ("float32", "float64", "float16", "bfloat16")


class _Config:
    """The SAELens config fields the engine's adapter reads (and `architecture()`)."""

    def __init__(self, architecture: str, fields: dict[str, Any], metadata: dict[str, Any]):
        self._architecture = architecture
        self.metadata = metadata
        for k, v in fields.items():
            setattr(self, k, v)

    def architecture(self) -> str:
        return self._architecture


def _version_6_or_later(version: object) -> bool:
    try:
        return int(str(version).split(".")[0]) >= 6
    except ValueError:
        return False


def _read_cfg(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _accepted_config(raw: dict[str, Any], dtype: str | None) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(architecture, config fields, metadata) when a config (cfg.json with SAELens's overrides
    applied) is one this reader runs exactly as SAELens does; None otherwise."""
    architecture = raw.get("architecture")
    metadata = raw.get("metadata")
    if architecture not in _ARCHITECTURES or not isinstance(metadata, dict):
        return None
    version = raw.get("sae_lens_version") or metadata.get("sae_lens_version")
    if not version or not _version_6_or_later(version):
        return None  # SAELens rewrites pre-6.0 configs (handle_pre_6_0_config)
    extra = _ARCHITECTURES[architecture][1]
    fields = {**_BASE_FIELDS, **extra}
    unknown = set(raw) - set(fields) - _DESCRIPTIVE
    if unknown:
        return None  # a field this reader does not model
    fields.update({k: raw[k] for k in fields if k in raw})
    if dtype is not None:
        fields["dtype"] = dtype
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except (KeyError, TypeError, ValueError):
        return None
    if (
        fields["normalize_activations"] != "none"
        or fields["reshape_activations"] != "none"
        or fields["dtype"] not in _DTYPES
        or not isinstance(fields["apply_b_dec_to_input"], bool)
        or (architecture == "topk" and not (isinstance(fields["k"], int) and isinstance(fields["rescale_acts_by_decoder_norm"], bool)))
    ):
        return None
    fields.update(d_in=d_in, d_sae=d_sae)
    return architecture, fields, metadata


class FileSae:
    """A `standard`, `jumprelu` or `topk` SAE as SAELens runs it in eval mode, without SAELens."""

    def __init__(self, cfg: _Config, params: dict[str, Any]):
        import torch

        self.cfg = cfg
        self.dtype = getattr(torch, cfg.dtype)
        for name, value in params.items():
            setattr(self, name, value)

    def eval(self) -> "FileSae":
        return self

    def process_sae_in(self, sae_in):
        # SAE.process_sae_in: no reshaping, identity hook, no normalisation (the reader accepts no other).
        sae_in = sae_in.to(self.dtype)
        bias_term = self.b_dec * self.cfg.apply_b_dec_to_input
        return sae_in - bias_term

    def encode(self, x):
        import torch

        sae_in = self.process_sae_in(x)
        hidden_pre = sae_in @ self.W_enc
        # The bias and the activation in place where the dtypes allow: the same values as SAELens's
        # out-of-place ops, without a new [tokens, d_sae] tensor for each.
        in_place = hidden_pre.dtype == self.b_enc.dtype
        hidden_pre = hidden_pre.add_(self.b_enc) if in_place else hidden_pre + self.b_enc
        arch = self.cfg.architecture()
        if arch == "standard":
            return hidden_pre.relu_() if in_place else torch.relu(hidden_pre)
        if arch == "jumprelu":
            jump_relu_mask = (hidden_pre > self.threshold).to(hidden_pre.dtype)  # before the relu changes h
            base_acts = hidden_pre.relu_() if in_place else torch.relu(hidden_pre)
            return base_acts.mul_(jump_relu_mask) if in_place else base_acts * jump_relu_mask
        # topk (TopK with use_sparse_activations=False)
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        topk_values, topk_indices = torch.topk(hidden_pre, k=self.cfg.k, dim=-1, sorted=False)
        values = topk_values.relu()
        result = torch.zeros_like(hidden_pre)
        result.scatter_(-1, topk_indices, values)
        return result

    def decode(self, feature_acts):
        if self.cfg.architecture() == "topk":
            # topk_sae.act_times_W_dec; a sparse COO input of more than 2 dimensions is flattened there
            if self.cfg.rescale_acts_by_decoder_norm:
                feature_acts = feature_acts * (1 / self.W_dec.norm(dim=-1))
            if feature_acts.is_sparse:
                import torch

                if feature_acts.ndim != 2:
                    raise ValueError("a sparse COO input to decode must be 2-D [tokens, d_sae]")
                with torch.autocast(device_type=feature_acts.device.type, enabled=False):
                    return torch.sparse.mm(feature_acts, self.W_dec) + self.b_dec
        return feature_acts @ self.W_dec + self.b_dec


def native_module(path: Path, device: str = "cpu", dtype: str | None = None) -> FileSae | None:
    """The SAE in directory `path` as SAELens's `SAE.load_from_disk(path, device, dtype)` would hold
    it, when this reader runs it exactly (see the module's docstring); None otherwise."""
    raw = _read_cfg(Path(path) / CFG_FILENAME)
    if raw is None or not (Path(path) / WEIGHTS_FILENAME).is_file():
        return None
    accepted = _accepted_config(raw, dtype)
    return None if accepted is None else _load(Path(path) / WEIGHTS_FILENAME, accepted, device)


def native_pretrained(release: str, sae_id: str, device: str = "cpu", dtype: str = "float32") -> FileSae | None:
    """A registry SAE as SAELens's `SAE.from_pretrained(release, sae_id, device, dtype)` would hold
    it, when its release uses SAELens's own format (no `conversion_func`) and its config is one this
    reader runs exactly; None otherwise (SAELens loads it). The lookups are SAELens's: the release's
    repo_id and the SAE's path in `pretrained_saes.yaml` (read as data), its `config_overrides` and
    `neuronpedia` id applied to `PATH/cfg.json`; the files come from the hub (its cache) as SAELens
    fetches them, and a hub failure propagates as it would from SAELens."""
    from sae_atlas.sources.configs import pretrained_sae_entry

    found = pretrained_sae_entry(release, sae_id)
    if found is None:
        return None
    entry, sae = found
    if entry.get("conversion_func") is not None or not isinstance(sae.get("id"), str) or "norm_scaling_factor" in sae:
        return None
    repo_id, folder = entry.get("repo_id"), sae.get("path")
    if not isinstance(repo_id, str) or not isinstance(folder, (str, int)):
        return None
    from huggingface_hub import hf_hub_download

    raw = _read_cfg(Path(hf_hub_download(repo_id=repo_id, filename=f"{folder}/{CFG_FILENAME}")))
    if raw is None:
        return None
    raw.update(entry.get("config_overrides") or {})
    raw["neuronpedia_id"] = sae.get("neuronpedia")
    accepted = _accepted_config(raw, dtype)
    if accepted is None:
        return None
    return _load(Path(hf_hub_download(repo_id=repo_id, filename=f"{folder}/{WEIGHTS_FILENAME}")), accepted, device)


def _load(weights: Path, accepted: tuple[str, dict[str, Any], dict[str, Any]], device: str) -> FileSae | None:
    architecture, fields, metadata = accepted
    import torch
    from safetensors import safe_open

    fields["device"] = device
    target = getattr(torch, fields["dtype"])
    params: dict[str, Any] = {}
    with safe_open(str(weights), framework="pt", device=device) as f:
        names = set(f.keys())
        if names != _ARCHITECTURES[architecture][0]:
            return None
        for name in sorted(names):
            params[name] = f.get_tensor(name).to(dtype=target)
    expected = {
        "W_enc": (fields["d_in"], fields["d_sae"]), "W_dec": (fields["d_sae"], fields["d_in"]),
        "b_enc": (fields["d_sae"],), "b_dec": (fields["d_in"],), "threshold": (fields["d_sae"],),
    }
    if any(tuple(t.shape) != expected[n] for n, t in params.items()):
        return None  # SAELens's load_state_dict refuses it: let it say so
    return FileSae(_Config(architecture, fields, metadata), params)

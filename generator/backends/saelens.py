"""The SAE interface (`sae_atlas.backends.SaeModule`) for SAELens: a `save_model` directory or a
registry release/id, any registered architecture the engine supports
(`generator/sources/architectures.py`). A `standard`, `jumprelu` or `topk` directory that needs
nothing else of SAELens is read without importing it (`saelens_files.py`, the same tensors and
operations); everything else loads through SAELens.

The adapter fixes where an SAE reads and writes: an SAE reads and writes `metadata.hook_name`; a
transcoder reads `hook_name` and writes `metadata.hook_name_out` (`cfg.d_out` wide), and a skip
transcoder's reconstruction adds `x @ W_skip.T`. An SAE with `hook_head_index` reads and writes
that one head of a per-head hook (`attn.hook_z`, `hook_q`, ...).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from sae_atlas.errors import AtlasError, InputError, Problem, problem_at
from sae_atlas.manifest import SaeSpec
from sae_atlas.sources.architectures import architecture_info


def _metadata(sae, key: str, default: Any = None) -> Any:
    metadata = getattr(sae.cfg, "metadata", None)
    value = None
    if metadata is not None:
        value = metadata.get(key) if hasattr(metadata, "get") else getattr(metadata, key, None)
    if value is None:
        value = getattr(sae.cfg, key, None)
    return default if value is None else value


class SaeLensSae:
    """One SAELens SAE (or transcoder) in eval mode, behind the engine's SAE interface."""

    def __init__(self, module, hook: str | None = None):
        self.module = module.eval()
        self.architecture = architecture_name(module)
        info = architecture_info(self.architecture)
        self.hook_in = str(hook or _metadata(module, "hook_name", ""))
        self.hook_out = str(_metadata(module, "hook_name_out", "") or self.hook_in) if info.transcoder else self.hook_in
        head = _metadata(module, "hook_head_index")
        self.head_index = None if head is None else int(head)
        self.d_in = int(module.cfg.d_in)
        self.d_sae = int(module.cfg.d_sae)
        self.d_out = int(getattr(module.cfg, "d_out", None) or self.d_in) if info.transcoder else self.d_in
        self.model_kwargs = dict(_metadata(module, "model_from_pretrained_kwargs", {}) or {})
        self.prepend_bos = bool(_metadata(module, "prepend_bos", True))
        self._w_skip = getattr(module, "W_skip", None) if info.skip else None

    @property
    def W_enc(self) -> torch.Tensor:
        return self.module.W_enc

    @property
    def W_dec(self) -> torch.Tensor:
        return self.module.W_dec

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks the SAE needs: what it reads, then (a transcoder) what it writes."""
        return tuple(dict.fromkeys((self.hook_in, self.hook_out)))

    def read(self, activation: torch.Tensor) -> torch.Tensor:
        """The SAE's input from its hook's activation [..., heads, d_head] or [..., d]."""
        if self.head_index is not None:
            return activation[..., self.head_index, :]
        return activation

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.encode(x)

    def input_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per token of x [..., d_in] (a per-head hook's [..., heads, d_head] flattened), the factor
        `encode` multiplies its input by before W_enc, which `decode` divides its output by again:
        sqrt(d_in) / |x| under SAELens's `constant_norm_rescale`; None when the SAE rescales
        nothing at run time (`expected_average_only_in` is folded into the weights when SAELens
        loads from a release, and covariance whitening always is). A `layer_norm` input is refused:
        its centring is not a per-token factor."""
        mode = getattr(self.module.cfg, "normalize_activations", "none") or "none"
        if mode == "constant_norm_rescale":
            lead = x.shape[:-1] if x.shape[-1] == self.d_in else x.shape[:-2]
            return self.d_in**0.5 / x.reshape(*lead, self.d_in).float().norm(dim=-1)
        if mode == "layer_norm":
            raise AtlasError(f"SAE on {self.hook_in} layer-normalises its input (normalize_activations: layer_norm): its feature attributions and loss effects are not computed")
        return None

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return self.module.decode(acts)

    def skip(self, x: torch.Tensor) -> torch.Tensor | None:
        """x @ W_skip.T for a skip transcoder, flattened to [tokens, d_out]; None otherwise."""
        if self._w_skip is None:
            return None
        w = self._w_skip.detach()
        return x.reshape(-1, self.d_in).to(w.dtype) @ w.T

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) + skip(x), shaped [..., d_out] like x's leading dimensions."""
        out = self.decode(self.encode(x.float())).float()
        skip = self.skip(x.float())
        if skip is not None:
            out = out + skip.reshape(out.shape)
        return out

    def write(self, activation: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """`activation` of hook_out with this SAE's reconstruction in place of what it reads."""
        if self.head_index is not None:
            out = activation.clone()
            out[..., self.head_index, :] = reconstruction.reshape(out[..., self.head_index, :].shape).to(out.dtype)
            return out
        return reconstruction.to(activation.dtype).reshape(activation.shape)


def architecture_name(sae) -> str:
    try:
        return str(sae.cfg.architecture())
    except (AttributeError, TypeError):
        return type(sae).__name__


def load_sae(spec: SaeSpec, device: str = "cpu", dtype: str = "float32") -> SaeLensSae:
    """The SAE (any architecture SAELens knows and the engine supports), in eval mode on `device`."""
    with warnings.catch_warnings():
        # SAELens warns that the model should load with the SAE's model_from_pretrained_kwargs: it does.
        warnings.filterwarnings("ignore", message=r"\s*This SAE has non-empty model_from_pretrained_kwargs")
        sae = SaeLensSae(_load_module(spec, device, dtype), spec.hook)
    refused = architecture_info(sae.architecture).refused
    if refused:
        m = spec.mark
        raise InputError([Problem(m.file, m.line, m.col, f"SAE architecture '{sae.architecture}' is not supported: {refused}; expected one of the supported architectures")])
    return sae


def _load_module(spec: SaeSpec, device: str, dtype: str):
    # A standard, jumprelu or topk SAE in SAELens's own format needs no SAELens import (saelens_files.py).
    from sae_atlas.backends.saelens_files import native_module, native_pretrained

    if spec.path is not None:
        module = native_module(spec.path, device=device, dtype=dtype)
    else:
        module = native_pretrained(spec.sae_lens.release, spec.sae_lens.id, device=device, dtype=dtype)  # type: ignore[union-attr]
    if module is not None:
        return module
    from sae_lens import SAE

    if spec.path is not None:
        try:
            module = SAE.load_from_disk(str(spec.path), device=device, dtype=dtype)
        except (OSError, ValueError, KeyError) as e:
            raise InputError([problem_at(spec.path, f"cannot load SAE ({e}); expected a SAELens save_model directory")]) from e
    else:
        ref = spec.sae_lens
        # A hub failure propagates: the CLI names the repo, the file and the command that fetches it.
        module = SAE.from_pretrained(ref.release, ref.id, device=device, dtype=dtype)  # type: ignore[union-attr]
        if isinstance(module, tuple):  # older SAELens returned (sae, cfg, sparsity)
            module = module[0]
    return module

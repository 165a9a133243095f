"""Loading an SAE with SAELens: a `save_model` directory or a pretrained release/id."""

from __future__ import annotations

from generator.errors import InputError, problem_at
from generator.manifest import SaeSpec


def load_sae(spec: SaeSpec, device: str = "cpu", dtype: str = "float32"):
    """The SAELens SAE (any architecture SAELens knows), in eval mode on `device`."""
    from sae_lens import SAE

    if spec.path is not None:
        try:
            sae = SAE.load_from_disk(str(spec.path), device=device, dtype=dtype)
        except (OSError, ValueError, KeyError) as e:
            raise InputError([problem_at(spec.path, f"cannot load SAE ({e}); expected a SAELens save_model directory")]) from e
    else:
        ref = spec.sae_lens
        sae = SAE.from_pretrained(ref.release, ref.id, device=device, dtype=dtype)  # type: ignore[union-attr]
        if isinstance(sae, tuple):  # older SAELens returned (sae, cfg, sparsity)
            sae = sae[0]
    return sae.eval()


def architecture(sae) -> str:
    try:
        return str(sae.cfg.architecture())
    except (AttributeError, TypeError):
        return type(sae).__name__

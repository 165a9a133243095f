"""Loading an SAE: a SAELens `save_model` directory or a pretrained release/id, behind the engine's
SAE interface (`sae_atlas.backends.SaeModule`)."""

from __future__ import annotations

from sae_atlas.backends.saelens import load_sae

__all__ = ["load_sae"]

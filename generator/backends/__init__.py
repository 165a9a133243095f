"""Model backends and the SAE interface the engine relies on.

A model backend has two halves:

- torch-free (`identity`): what names the model in a cache key. Hook names and widths for
  validation come from the model's config (`generator/sources/configs.py`), read without torch.
- torch (`load_model` -> a `ModelBackend`): loads the model with the SAEs' from-pretrained
  keyword arguments, captures hook activations stopping at the last needed block, maps a hook's
  activations into the residual stream (`output_map`), gives the unembedding, and computes the
  next-token loss clean and with reconstructions spliced in (`ce_losses`). For per-example
  statistics (`sae_atlas.compute.attribution`) it gives a layer's attention pattern and values
  (`attention`) and the per-token loss with one feature ablated from a spliced reconstruction
  (`ablation_losses`).

TransformerLens's `HookedTransformer` is the first backend (`transformer_lens.py`); nothing outside
this package imports transformer_lens or sae_lens. The SAE interface (`SaeModule`) is implemented
for SAELens in `saelens.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class SaeModule(Protocol):
    """One dictionary as the engine sees it: reads `hook_in`, writes `hook_out` (the same hook for
    an SAE, another for a transcoder), `d_in` -> `d_sae` -> `d_out`."""

    architecture: str
    hook_in: str
    hook_out: str
    head_index: int | None  # the attention head it reads, when the hook is per head
    d_in: int
    d_sae: int
    d_out: int
    model_kwargs: dict[str, Any]  # from-pretrained keyword arguments of the model it was trained on
    prepend_bos: bool

    @property
    def W_enc(self) -> Any: ...  # [d_in, d_sae]

    @property
    def W_dec(self) -> Any: ...  # [d_sae, d_out]

    @property
    def hooks(self) -> tuple[str, ...]: ...  # hook_in, then hook_out when it differs

    def read(self, activation: Any) -> Any: ...  # the hook's activation -> the SAE's input

    def encode(self, x: Any) -> Any: ...

    def input_scale(self, x: Any) -> Any | None: ...  # per token, what encode scales x by before W_enc (None: 1)

    def decode(self, acts: Any) -> Any: ...  # dense or sparse (CSR) feature activations

    def skip(self, x: Any) -> Any | None: ...  # the skip term of a skip transcoder, else None

    def reconstruct(self, x: Any) -> Any: ...  # decode(encode(x)) + skip(x)

    def write(self, activation: Any, reconstruction: Any) -> Any: ...  # splice into hook_out's activation


class ModelBackend(Protocol):
    name: str
    d_model: int
    d_vocab: int
    n_layers: int
    hook_names: set[str]

    def enable_hooks(self, hooks: list[str]) -> None: ...  # make hooks that fire only on request fire

    def capture(self, tokens: Any, hooks: list[str]) -> dict[str, Any]: ...

    def output_map(self, hook: str, head_index: int | None = None) -> Any | None: ...

    def unembedding(self) -> Any: ...  # W_U [d_model, d_vocab]

    def attention(self, tokens: Any, layer: int) -> tuple[Any, Any]: ...  # (pattern [b, head, q, k], v [b, k, head, d_head])

    def ablation_losses(self, tokens: Any, sae: SaeModule, row_prompt: Any, row_feature: Any, batch_size: int, row_positions: Any = None) -> tuple[Any, Any]: ...
    # next-token losses [prompts, pos - 1] with the SAE spliced in, and [rows, pos - 1] with a row's
    # feature ablated from it; only at row_positions (bool [rows, pos - 1]), 0 elsewhere


@dataclass(frozen=True)
class CeSae:
    """An SAE whose reconstruction the CE loss splices in, over the corpus's first `prompts` prompts."""

    id: str
    sae: SaeModule
    prompts: int  # 0: no CE loss

    @property
    def hook(self) -> str:
        """The hook the reconstruction is spliced into."""
        return self.sae.hook_out

    @property
    def resid_start(self) -> bool:
        """Whether the spliced forward can start from the clean residual stream at its hook."""
        return self.sae.hook_in == self.sae.hook_out and self.sae.head_index is None

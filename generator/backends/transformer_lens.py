"""TransformerLens's HookedTransformer as a model backend. Importing this module imports neither
torch nor transformer_lens: `identity` and `hook_layer` are the torch-free half.

Loading follows SAELens: a model by name is `HookedTransformer.from_pretrained_no_processing(name,
**model_from_pretrained_kwargs)` with the SAE's keyword arguments (so `fold_ln`,
`center_writing_weights` ... apply exactly when the SAE asks for them). A local directory holds a
HookedTransformerConfig and its state dict; the same processing keyword arguments are applied to it
with `process_weights_`, other keyword arguments override config fields.

Besides TransformerLens's own hooks, every block with an MLP gets `blocks.L.mlp.hook_in`: the
tensor the MLP module receives (in a pre-norm block, ln2's output with its weight applied), the hook
circuit-tracer transcoders read (TransformerBridge's name for it). It is a HookPoint fired by a forward
pre-hook on `blocks[L].mlp`, so it reads and splices like any TransformerLens hook.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

from sae_atlas.backends.deferred_imports import import_transformer_lens, import_transformers
from sae_atlas.errors import AtlasError, InputError, problem_at
from sae_atlas.manifest import ModelSpec

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# Hooks whose activations live in the residual stream basis (output map = identity).
_RESIDUAL_HOOKS = {"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out"}
# from_pretrained keyword arguments that process the weights (HookedTransformer.process_weights_).
PROCESSING_KWARGS = ("fold_ln", "center_writing_weights", "center_unembed", "refactor_factored_attn_matrices")
# Keyword arguments that say where or how to load, not what the model computes.
_PLACEMENT_KWARGS = ("device", "n_devices", "dtype", "torch_dtype", "move_to_device", "first_n_layers")



def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def hook_layer(hook: str) -> int | None:
    m = _BLOCK_HOOK.match(hook)
    return int(m.group(1)) if m else None


def neuron_hook(hook_in: str, hook_out: str | None = None, head_index: int | None = None) -> str | None:
    """The hook of the MLP neurons behind an SAE that reads and writes `blocks.L.hook_mlp_out`:
    `blocks.L.mlp.hook_post` (d_mlp wide, the MLP's post-activations, whose output weights W_out
    write hook_mlp_out). None for any other SAE, whose neurons are its hook's own dimensions."""
    m = _BLOCK_HOOK.match(hook_in)
    if m is None or m.group(2) != "hook_mlp_out" or head_index is not None or (hook_out is not None and hook_out != hook_in):
        return None
    return f"blocks.{m.group(1)}.mlp.hook_post"


def identity(spec: ModelSpec, kwargs: dict[str, Any] | None = None) -> list:
    """What names a by-name model in a cache key (torch-free): backend, name, loader, kwargs."""
    return ["transformer_lens", str(spec.transformer_lens), "no_processing", dict(sorted((kwargs or {}).items()))]


def read_local_config(directory: Path) -> dict:
    """config.json as HookedTransformerConfig keyword arguments (unknown keys dropped)."""
    import_transformer_lens()
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


def add_mlp_input_hooks(model) -> None:
    """Give each block's MLP a HookPoint `hook_in` that sees (and may replace) the MLP's input,
    named `blocks.L.mlp.hook_in` in the model's hook_dict. Idempotent; attention-only blocks are left
    as they are."""
    import_transformer_lens()
    from transformer_lens.hook_points import HookPoint

    added = False
    for block in model.blocks:
        mlp = getattr(block, "mlp", None)
        if mlp is None or hasattr(mlp, "hook_in"):
            continue
        mlp.hook_in = HookPoint()  # [batch, pos, d_model]
        mlp.register_forward_pre_hook(_fire_mlp_input_hook)
        added = True
    if added:
        model.setup()  # name the new HookPoints and put them in hook_dict / mod_dict


def _fire_mlp_input_hook(mlp, args):
    # Called before mlp.forward(x): pass x through the HookPoint, which returns x or what a hook put there.
    return (mlp.hook_in(args[0]), *args[1:])


def load_tokenizer(spec: ModelSpec):
    """The model's Hugging Face tokenizer: a local model's own, or for a TransformerLens name the one
    TransformerLens loads (its config's `tokenizer_name`, not the architecture)."""
    import_transformers()
    from transformers import AutoTokenizer

    if spec.path is not None:
        try:
            return AutoTokenizer.from_pretrained(str(spec.path))
        except (OSError, ValueError) as e:
            raise InputError([problem_at(spec.path, f"cannot load tokenizer ({e}); expected files written by save_pretrained")]) from e
    import_transformer_lens()
    from transformer_lens.loading_from_pretrained import NON_HF_HOSTED_MODEL_NAMES, get_pretrained_model_config

    mark = spec.mark_of("transformer_lens")
    try:
        cfg = get_pretrained_model_config(spec.transformer_lens)
        name = cfg.tokenizer_name
        if name is None or name in NON_HF_HOSTED_MODEL_NAMES:
            raise InputError([problem_at(mark.file, f"TransformerLens model '{spec.transformer_lens}' names no tokenizer on the hub; expected a model with a tokenizer, or a local model with `path:`", mark.line, mark.col)])
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:  # not in the hub cache offline, or the hub unreachable
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError([problem_at(mark.file, f"cannot load the tokenizer of TransformerLens model '{spec.transformer_lens}' ({first}); expected it on the Hugging Face hub or in its cache", mark.line, mark.col)]) from e
    if len(tokenizer) < 2:  # transformers builds an empty tokenizer when only the config is cached
        raise InputError([problem_at(mark.file, f"the tokenizer of TransformerLens model '{spec.transformer_lens}' has no vocabulary: its files are not in the hub cache; expected them there (fetch with `hf download {name}`)", mark.line, mark.col)])
    return tokenizer


@contextlib.contextmanager
def _quiet_loading(quiet: bool):
    """With `quiet`, no progress bars from the hub clients and no "Loaded pretrained model" line."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        transformers_logging.enable_progress_bar()


class TransformerLensBackend:
    """A HookedTransformer in eval mode behind the engine's model interface."""

    name = "transformer_lens"

    def __init__(self, model):
        self.model = model.eval()
        cfg = model.cfg
        self.d_model, self.n_layers = int(cfg.d_model), int(cfg.n_layers)
        self.d_vocab = int(getattr(cfg, "d_vocab_out", -1) or -1)
        if self.d_vocab <= 0:
            self.d_vocab = int(cfg.d_vocab)
        self.hook_names = set(model.hook_dict)

    # -- loading

    @classmethod
    def load(cls, spec: ModelSpec, device: str, dtype: str, kwargs: dict[str, Any] | None = None, quiet: bool = False) -> "TransformerLensBackend":
        with _quiet_loading(quiet):
            return cls._load(spec, device, dtype, kwargs)

    @classmethod
    def _load(cls, spec: ModelSpec, device: str, dtype: str, kwargs: dict[str, Any] | None) -> "TransformerLensBackend":
        import_transformer_lens()
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        kwargs = {k: v for k, v in (kwargs or {}).items() if k not in _PLACEMENT_KWARGS}
        if spec.path is None:
            # A hub failure propagates: the CLI names the repo, the file and the command that fetches it.
            model = HookedTransformer.from_pretrained_no_processing(spec.transformer_lens, device=device, dtype=torch_dtype(dtype), **kwargs)
            return cls(model)
        from safetensors.torch import load_file

        process = {k: kwargs.pop(k) for k in PROCESSING_KWARGS if k in kwargs}
        config = read_local_config(spec.path)
        known = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise AtlasError(f"model_from_pretrained_kwargs {unknown} of an SAE on {spec.id} are not HookedTransformerConfig fields or weight processing options")
        # Every parameter is read from the file below (one missing is an error), so none is drawn at
        # random first: without init_weights, a model of 13M parameters is built in 0.01 s, not 0.1.
        cfg = HookedTransformerConfig(**{**config, **kwargs, "init_weights": False}, device=device, dtype=torch_dtype(dtype))
        model = HookedTransformer(cfg)  # parameters created with cfg.dtype on cfg.device
        state = load_file(str(Path(spec.path) / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # TransformerLens registers some buffers (masks, rotary tables) that need not be in the file.
        missing = [k for k in missing if not k.endswith(("mask", "IGNORE", "rotary_sin", "rotary_cos"))]
        if missing or unexpected:
            raise InputError(
                [problem_at(Path(spec.path) / "model.safetensors", f"state dict does not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]}); expected HookedTransformer.state_dict()")]
            )
        if any(process.values()):
            model.process_weights_(**{k: bool(process.get(k, False)) for k in PROCESSING_KWARGS})
        return cls(model)

    # -- the corpus passes

    def enable_hooks(self, hooks) -> None:
        """Turn on what makes `hooks` fire, only when asked (each costs a call per block and forward):
        `blocks.L.hook_mlp_in` (read by Gemma Scope 2 transcoders) fires only with TransformerLens's
        use_hook_mlp_in set; `blocks.L.mlp.hook_in` (circuit-tracer transcoders) is added."""
        block_hooks = [h for h in hooks if _BLOCK_HOOK.match(h)]
        if any(h.endswith(".hook_mlp_in") for h in block_hooks) and not self.model.cfg.use_hook_mlp_in:
            self.model.set_use_hook_mlp_in(True)
        if any(h.endswith(".mlp.hook_in") for h in block_hooks):
            add_mlp_input_hooks(self.model)
            self.hook_names = set(self.model.hook_dict)

    def stop_layer(self, hooks: list[str]) -> int | None:
        """The first block the capturing forward need not run (None: run the whole model). A
        `blocks.L.hook_resid_pre` needs only blocks < L; any other hook of block L (`blocks.L.mlp.hook_in`
        included: block L runs up to its MLP) needs block L."""
        needs = []
        for h in hooks:
            layer = hook_layer(h)
            if layer is None:
                return None
            needs.append(layer if h == f"blocks.{layer}.hook_resid_pre" else layer + 1)
        return max(needs) if needs else None

    def capture(self, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
        """Activations at `hooks`, running the blocks up to the last one needed. With stop_at_layer
        = L the forward returns the residual stream entering block L, which is
        `blocks.L.hook_resid_pre` (that hook does not fire: block L does not run)."""
        stop_at_layer = self.stop_layer(hooks)
        captured: dict[str, torch.Tensor] = {}
        boundary = None if stop_at_layer is None else f"blocks.{stop_at_layer}.hook_resid_pre"

        def save(act, hook):
            captured[hook.name] = act

        fired = [h for h in hooks if h != boundary]
        out = self.model.run_with_hooks(tokens, fwd_hooks=[(h, save) for h in fired], stop_at_layer=stop_at_layer, return_type=None)
        if boundary is not None and boundary in hooks:
            captured[boundary] = out
        return captured

    # -- weights

    def output_map(self, hook: str, head_index: int | None = None) -> torch.Tensor | None:
        """M [d, d_model] mapping the hook's activations (of one head when `head_index` is set) into
        the residual stream, or None when the hook has no linear path to it (e.g. queries)."""
        d_model = self.d_model
        import torch

        if hook in ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized"):
            return torch.eye(d_model)
        m = _BLOCK_HOOK.match(hook)
        if not m:
            return None
        layer, name = int(m.group(1)), m.group(2)
        block = self.model.blocks[layer]
        if name in _RESIDUAL_HOOKS:
            return torch.eye(d_model)
        if name == "mlp.hook_post":
            return block.mlp.W_out.detach().float().cpu()
        if name == "attn.hook_z":
            w_o = block.attn.W_O.detach().float().cpu()  # [n_heads, d_head, d_model]
            return w_o[head_index] if head_index is not None else w_o.reshape(-1, d_model)
        return None

    def unembedding(self) -> torch.Tensor:
        return self.model.W_U.detach()

    # -- per-example statistics

    def attention(self, tokens: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block `layer`'s attention pattern [batch, head, query, key] and values [batch, key, head,
        d_head] (`attn.hook_pattern`, `attn.hook_v`; float32), the forward stopping after that
        block. Grouped-query attention's value heads (`hook_v` has n_key_value_heads of them unless
        the model ungroups them) are repeated to one per query head, as TransformerLens does when it
        computes z, so that z[b, q, h] = sum_k pattern[b, h, q, k] v[b, k, h] always holds."""
        pattern_hook, v_hook = f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v"
        got = self.capture(tokens, [pattern_hook, v_hook])
        pattern, v = got[pattern_hook].float(), got[v_hook].float()
        heads, kv_heads = pattern.shape[1], v.shape[2]
        if kv_heads != heads:
            if kv_heads <= 0 or heads % kv_heads:
                raise AtlasError(f"block {layer}'s attention has {heads} query heads and {kv_heads} value heads (hook_v); expected as many, or a divisor (grouped-query attention)")
            v = v.repeat_interleave(heads // kv_heads, dim=2)
        return pattern, v

    def ablation_losses(self, tokens: torch.Tensor, sae, row_prompt: torch.Tensor, row_feature: torch.Tensor, batch_size: int, row_positions=None):
        from sae_atlas.backends.transformer_lens_ablation import ablation_losses

        return ablation_losses(self, tokens, sae, row_prompt, row_feature, batch_size, row_positions)

    # -- the CE loss

    def ce_losses(self, corpus, saes, batch_size: int, device: str, progress: str | None = None):
        from sae_atlas.backends.transformer_lens_ce import ce_losses

        return ce_losses(self.model, corpus, saes, batch_size, device, progress=progress)

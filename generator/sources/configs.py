"""Torch-free readers of what a manifest names: model configs, SAE configs, safetensors headers and
the TransformerLens hook names (with their widths) that a model config implies.

Used by `validate.py` to check a release before any model is loaded. Nothing here imports torch,
transformer_lens or sae_lens; their packaged name lists are read as data files when installed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import struct
from pathlib import Path
from typing import Any

import yaml

from generator.manifest import ModelSpec, SaeSpec

MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
SAE_CONFIG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"

# Configs of a few TransformerLens models, so that their layers, hooks and widths can be checked offline.
# Keyed by TransformerLens's official name; aliases are resolved with its own alias table.
KNOWN_TRANSFORMER_LENS_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {
        "n_layers": 12, "d_model": 768, "d_head": 64, "n_heads": 12, "d_mlp": 3072, "d_vocab": 50257,
        "n_ctx": 1024, "act_fn": "gelu_new", "normalization_type": "LN", "positional_embedding_type": "standard",
    },
    "EleutherAI/pythia-70m-deduped": {
        "n_layers": 6, "d_model": 512, "d_head": 64, "n_heads": 8, "d_mlp": 2048, "d_vocab": 50304,
        "n_ctx": 2048, "act_fn": "gelu", "normalization_type": "LN", "positional_embedding_type": "rotary",
        "parallel_attn_mlp": True,
    },
}  # fmt: skip

# Bytes per element of each safetensors dtype.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit


class ConfigError(ValueError):
    """A config or weights file that exists but cannot be used; the message says why."""


# --- JSON configs --------------------------------------------------------------------------------


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object; ConfigError (with line/column when known) otherwise."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {Path(path).name} ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{Path(path).name} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{Path(path).name} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{Path(path).name} holds a JSON {type(data).__name__}, not an object")
    return data


def read_model_config(model: ModelSpec) -> dict[str, Any] | None:
    """The model's HookedTransformerConfig fields with TransformerLens's defaults filled in.

    Local models: their `config.json` (None when it is missing). TransformerLens names: the entry of
    KNOWN_TRANSFORMER_LENS_CONFIGS, or None where the config is not knowable without downloading it.
    """
    if model.path is not None:
        path = Path(model.path) / MODEL_CONFIG
        if not path.is_file():
            return None
        return normalise_model_config(read_json_object(path))
    if model.transformer_lens:
        official = transformer_lens_official_name(model.transformer_lens)
        known = KNOWN_TRANSFORMER_LENS_CONFIGS.get(official or model.transformer_lens)
        return normalise_model_config(dict(known)) if known else None
    return None


def normalise_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill the derived defaults HookedTransformerConfig computes (n_heads, d_mlp, n_key_value_heads)."""
    cfg = dict(config)
    d_model, d_head = cfg.get("d_model"), cfg.get("d_head")
    if cfg.get("n_heads") in (None, -1) and is_int(d_model) and is_int(d_head) and d_head > 0:
        cfg["n_heads"] = d_model // d_head
    if cfg.get("d_mlp") is None and not cfg.get("attn_only") and is_int(d_model):
        cfg["d_mlp"] = 4 * d_model
    if cfg.get("n_key_value_heads") is None:
        cfg["n_key_value_heads"] = cfg.get("n_heads")
    return cfg


def model_config_problems(config: dict[str, Any]) -> list[str]:
    """What is missing or mistyped among the fields the build relies on (empty when usable)."""
    problems = []
    for key in ("n_layers", "d_model", "d_head", "n_heads", "n_ctx", "d_vocab"):
        value = config.get(key)
        if not is_int(value) or value < 1:
            what = "missing" if value is None else f"{value!r}"
            problems.append(f"'{key}' is {what}; expected a whole number >= 1")
    if not config.get("attn_only"):
        value = config.get("d_mlp")
        if not is_int(value) or value < 1:
            problems.append(f"'d_mlp' is {value!r}; expected a whole number >= 1")
    return problems


def read_sae_config(sae: SaeSpec) -> dict[str, Any] | None:
    """The SAE's config.

    Local SAEs: the `cfg.json` SAELens `save_model` writes (d_in, d_sae, architecture, metadata.hook_name
    ...), None when it is missing. `sae_lens:` refs: the entry of SAELens's packaged pretrained directory
    ({"release", "id", "model", "repo_id", "path", "neuronpedia", "pretrained": True}), which has no
    widths; None when the release or id is not in the directory (or SAELens is not installed).
    """
    if sae.path is not None:
        path = Path(sae.path) / SAE_CONFIG
        if not path.is_file():
            return None
        return read_json_object(path)
    if sae.sae_lens is not None:
        release = pretrained_saes_directory().get(sae.sae_lens.release)
        if release is None:
            return None
        for entry in release.get("saes") or ():
            if str(entry.get("id")) == sae.sae_lens.id:
                return {
                    "release": sae.sae_lens.release,
                    "id": sae.sae_lens.id,
                    "model": release.get("model"),
                    "repo_id": release.get("repo_id"),
                    "path": str(entry.get("path")),
                    "neuronpedia": entry.get("neuronpedia"),
                    "pretrained": True,
                }
    return None


def sae_hook_name(cfg: dict[str, Any]) -> str | None:
    """The hook an SAE config says it reads: SAELens 6 `metadata.hook_name`, older top-level `hook_name`."""
    metadata = cfg.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("hook_name"), str) and metadata["hook_name"]:
        return metadata["hook_name"]
    hook = cfg.get("hook_name")
    return hook if isinstance(hook, str) and hook else None


# --- packaged name lists (read as data, no imports of the libraries) ------------------------------


def _package_file(package: str, name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / name
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def pretrained_saes_directory() -> dict[str, Any]:
    """SAELens's packaged `pretrained_saes.yaml` (release -> {model, repo_id, saes: [{id, path}]}); {} without SAELens."""
    path = _package_file("sae_lens", "pretrained_saes.yaml")
    if path is None:
        return {}
    with path.open("r", encoding="utf-8") as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return data if isinstance(data, dict) else {}


@functools.cache
def _transformer_lens_names() -> dict[str, str] | None:
    """lowercased alias or official name -> official name, from TransformerLens's `supported_models.py`."""
    path = _package_file("transformer_lens", "supported_models.py")
    if path is None:
        return None
    namespace: dict[str, Any] = {}
    try:
        # The file is plain data (a list and a dict); executing it alone avoids importing torch.
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    except Exception:
        return None
    official = namespace.get("OFFICIAL_MODEL_NAMES") or []
    aliases = namespace.get("MODEL_ALIASES") or {}
    names: dict[str, str] = {}
    for name in official:
        for alias in aliases.get(name, []):
            names[alias.lower()] = name
        names[name.lower()] = name
    return names


def transformer_lens_official_name(name: str) -> str | None:
    """TransformerLens's official name for a model name or alias; None when unknown to it."""
    names = _transformer_lens_names()
    if names is None:
        return None
    return names.get(name.lower())


def transformer_lens_names_known() -> list[str] | None:
    """Every name TransformerLens accepts (for suggestions); None when it is not installed."""
    names = _transformer_lens_names()
    if names is None:
        return None
    return sorted(set(names.values()) | {a for a in names if a != names[a].lower()})


# --- safetensors -------------------------------------------------------------------------------


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors file ({name: {dtype, shape, data_offsets}}), after checking that
    the header is well-formed and the file is exactly as long as the header says (not truncated)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ConfigError(f"{path.name} is {size} bytes long, too short for a safetensors file")
            (n,) = struct.unpack("<Q", prefix)
            if n > _MAX_HEADER or 8 + n > size:
                raise ConfigError(f"{path.name} is truncated or not a safetensors file (header of {n} bytes in a {size}-byte file)")
            raw = f.read(n)
    except OSError as e:
        raise ConfigError(f"cannot read {path.name} ({e.strerror})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path.name} has a corrupt header; not a safetensors file") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path.name} has a corrupt header; not a safetensors file")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    data_end = 0
    for name, info in tensors.items():
        if not isinstance(info, dict):
            raise ConfigError(f"{path.name}: tensor '{name}' has a corrupt header entry")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if (
            not isinstance(shape, list)
            or not all(is_int(d) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ConfigError(f"{path.name}: tensor '{name}' has a corrupt header entry")
        width = _DTYPE_BYTES.get(dtype)
        if width is not None and offsets[1] - offsets[0] != math.prod(shape) * width:
            raise ConfigError(f"{path.name}: tensor '{name}' has {offsets[1] - offsets[0]} bytes for shape {shape} {dtype}")
        data_end = max(data_end, offsets[1])
    if 8 + n + data_end != size:
        state = "truncated" if 8 + n + data_end > size else "longer than its header says"
        raise ConfigError(f"{path.name} is {state} ({size} bytes; its header describes {8 + n + data_end})")
    return tensors


# --- TransformerLens hooks ---------------------------------------------------------------------



def valid_hooks(config: dict[str, Any]) -> set[str]:
    """Every hook name a HookedTransformer built from `config` fires during a forward pass."""
    return set(_hook_widths(_freeze(config)))


def hook_width(config: dict[str, Any], hook_name: str) -> int | None:
    """The activation width an SAE on `hook_name` reads (its d_in); None for unknown hooks and for
    hooks that are not one vector per token (attention patterns, scales). `attn.hook_z/q/k/v` are
    flattened over heads, as SAELens does for hook_z SAEs."""
    return _hook_widths(_freeze(config)).get(hook_name)


def _freeze(config: dict[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in normalise_model_config(config).items() if isinstance(v, (int, float, str, bool, type(None)))))


@functools.lru_cache(maxsize=64)
def _hook_widths(frozen: tuple) -> dict[str, int | None]:
    cfg = dict(frozen)
    n_layers = cfg.get("n_layers")
    d_model = cfg.get("d_model")
    if not is_int(n_layers) or not is_int(d_model):
        return {}
    d_head = cfg.get("d_head") or 0
    n_heads = cfg.get("n_heads") or 0
    n_kv = cfg.get("n_key_value_heads") or n_heads
    d_mlp = cfg.get("d_mlp")
    d_vocab_out = cfg.get("d_vocab_out") if cfg.get("d_vocab_out") not in (None, -1) else cfg.get("d_vocab")
    attn_only = bool(cfg.get("attn_only"))
    parallel = bool(cfg.get("parallel_attn_mlp"))
    norm = cfg.get("normalization_type")
    positional = cfg.get("positional_embedding_type", "standard")
    act_fn = cfg.get("act_fn") or ""

    widths: dict[str, int | None] = {"hook_embed": d_model, "unembed.hook_in": d_model, "unembed.hook_out": d_vocab_out}
    if positional in ("standard", "shortformer"):
        widths["hook_pos_embed"] = d_model
    if cfg.get("use_hook_tokens"):
        widths["hook_tokens"] = None
    if norm is not None:
        widths["ln_final.hook_scale"] = None
        widths["ln_final.hook_normalized"] = d_model

    per_block: dict[str, int | None] = {
        "hook_resid_pre": d_model,
        "hook_resid_post": d_model,
        "hook_attn_out": d_model,
        "attn.hook_q": n_heads * d_head,
        "attn.hook_k": n_kv * d_head,
        "attn.hook_v": n_kv * d_head,
        "attn.hook_z": n_heads * d_head,
        "attn.hook_attn_scores": None,
        "attn.hook_pattern": None,
    }
    if positional == "rotary":
        per_block["attn.hook_rot_q"] = n_heads * d_head
        per_block["attn.hook_rot_k"] = n_kv * d_head
    if cfg.get("use_attn_result"):
        per_block["attn.hook_result"] = None
    if cfg.get("use_split_qkv_input"):
        per_block.update({"hook_q_input": None, "hook_k_input": None, "hook_v_input": None})
    if cfg.get("use_attn_in"):
        per_block["hook_attn_in"] = None
    if norm is not None:
        # With per-head attention inputs the ln1 output is per head too.
        per_head_input = cfg.get("use_attn_in") or cfg.get("use_split_qkv_input")
        per_block.update({"ln1.hook_scale": None, "ln1.hook_normalized": None if per_head_input else d_model})
    if not attn_only:
        per_block.update({"hook_mlp_out": d_model, "mlp.hook_pre": d_mlp, "mlp.hook_post": d_mlp})
        if not parallel:
            per_block["hook_resid_mid"] = d_model
        if cfg.get("use_hook_mlp_in"):
            per_block["hook_mlp_in"] = d_model
        if norm is not None:
            per_block.update({"ln2.hook_scale": None, "ln2.hook_normalized": d_model})
        if cfg.get("gated_mlp"):
            per_block["mlp.hook_pre_linear"] = d_mlp
        if act_fn.endswith("_ln"):
            per_block.update({"mlp.hook_mid": d_mlp, "mlp.ln.hook_scale": None, "mlp.ln.hook_normalized": d_mlp})
    for layer in range(n_layers):
        for name, width in per_block.items():
            widths[f"blocks.{layer}.{name}"] = width
    return widths


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- BOS -----------------------------------------------------------------------------------------


def sae_prepend_bos(cfg: dict[str, Any] | None) -> bool | None:
    """SAELens's `prepend_bos` of an SAE config (metadata or top level); None when it does not say."""
    if not cfg:
        return None
    metadata = cfg.get("metadata")
    value = metadata.get("prepend_bos") if isinstance(metadata, dict) else None
    if value is None:
        value = cfg.get("prepend_bos")
    return None if value is None else bool(value)


def release_prepend_bos(release) -> bool:
    """Whether a text corpus's prompts start with BOS: as the release's SAEs were trained
    (SAELens's `prepend_bos`, true unless every SAE that says so says false)."""
    return _prepend_bos_of(tuple(release.saes()))


@functools.lru_cache(maxsize=256)
def _prepend_bos_of(specs: tuple[SaeSpec, ...]) -> bool:
    said = set()
    for spec in specs:
        try:
            value = sae_prepend_bos(read_sae_config(spec))
        except ConfigError:
            value = None
        if value is not None:
            said.add(value)
    return said != {False}

"""Torch-free readers of what a manifest names: model configs, SAE configs, safetensors and npz
headers and the TransformerLens hook names (with their widths) that a model config implies.

Used by `validate.py` to check a release before any model is loaded. Nothing here imports torch,
transformer_lens or sae_lens; their packaged data (supported model names, the SAE registry, one
table of Qwen Scope widths) is read as data files when installed.

Names are resolved through the Hugging Face hub cache the environment names (HF_HOME,
HF_HUB_CACHE), reading config files only: a model repo's config.json (converted as TransformerLens
converts it) and the small files each SAELens loader builds its config from. When a file is not
cached and HF_HUB_OFFLINE is not set, that file alone is fetched (weights headers by range request,
never whole); otherwise HubFileMissing says which file of which repo is missing and why.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import math
import os
import re
import shlex
import struct
from pathlib import Path
from typing import Any

import yaml

from sae_atlas.manifest import ModelSpec, SaeSpec

MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
SAE_CONFIG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"

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

    Local models: their `config.json` (None when it is missing). TransformerLens names: the hub
    `config.json` of the official repo converted as TransformerLens converts it (HubFileMissing when
    it is neither cached nor fetchable; None for names TransformerLens does not know).
    """
    if model.path is not None:
        path = Path(model.path) / MODEL_CONFIG
        if not path.is_file():
            return None
        return normalise_model_config(read_json_object(path))
    if model.transformer_lens:
        official = transformer_lens_official_name(model.transformer_lens)
        if official is None:
            return None
        return transformer_lens_config(official)
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
    """The SAE's config, normalised as SAELens 6 reads it (`normalise_sae_config`).

    Local SAEs: the `cfg.json` SAELens `save_model` writes (None when it is missing). `sae_lens:` refs:
    the config SAELens builds for the registry entry (`pretrained_sae_config`, HubFileMissing when its
    files cannot be had) plus the registry's {"release", "id", "model", "repo_id", "path",
    "neuronpedia", "pretrained": True}; None when the release or id is not in the registry.
    """
    if sae.path is not None:
        path = Path(sae.path) / SAE_CONFIG
        if not path.is_file():
            return None
        return normalise_sae_config(read_json_object(path))
    if sae.sae_lens is not None:
        found = pretrained_sae_entry(sae.sae_lens.release, sae.sae_lens.id)
        if found is None:
            return None
        release, entry = found
        cfg = pretrained_sae_config(sae.sae_lens.release, sae.sae_lens.id) or {}
        return {
            **cfg,
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


# --- the Hugging Face hub cache (config files only) ----------------------------------------------


class HubFileMissing(ConfigError):
    """A file a name refers to that is not in the hub cache and could not be fetched.

    `absent` says the hub itself has no such file (as opposed to offline, unreachable or refused)."""

    def __init__(self, repo_id: str, filename: str, reason: str, absent: bool = False, also: tuple[str, ...] = ()):
        self.repo_id, self.filename, self.reason, self.absent = repo_id, filename, reason, absent
        self.filenames = (filename, *also)  # every file of the repo known to be needed and missing
        super().__init__(f"{repo_id}/{', '.join(self.filenames)}: {reason}")


def hub_cache_dir() -> Path:
    """The hub cache the environment names now (HF_HUB_CACHE, else HF_HOME/hub, else the default)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def hub_offline() -> bool:
    """Whether the environment forbids hub requests now (HF_HUB_OFFLINE, as huggingface_hub reads it)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def fetch_command(repo_id: str, filenames: list[str] | tuple[str, ...]) -> str:
    """The shell command that puts these files of a model repo into the hub cache."""
    return " ".join(["hf download", shlex.quote(repo_id), *(shlex.quote(f) for f in filenames)])


# Set on the first request that cannot reach the hub, so one check waits for the network once.
_HUB_UNREACHABLE: list[str] = []


def forget_unreachable_hub() -> None:
    """Try the network again on the next fetch (a new check, e.g. when `serve` reloads)."""
    _HUB_UNREACHABLE.clear()


def hub_file(repo_id: str, filename: str) -> Path:
    """The cached path of `filename` in a model repo; fetched (that file alone) when online and not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise HubFileMissing(repo_id, filename, "huggingface_hub is not installed, so the hub cache cannot be read") from None
    cache = hub_cache_dir()
    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache))
    if isinstance(found, str):
        return Path(found)
    if found is not None:  # the hub said before that the file does not exist, and that is cached
        raise HubFileMissing(repo_id, filename, "the hub has no such file", absent=True)
    _check_fetchable(repo_id, filename, cache)
    return _fetch(repo_id, filename, cache)


def _check_fetchable(repo_id: str, filename: str, cache: Path) -> None:
    """HubFileMissing when an uncached file cannot be fetched now (offline, or the hub unreachable)."""
    if hub_offline():
        raise HubFileMissing(repo_id, filename, f"not in the hub cache ({cache}) and HF_HUB_OFFLINE forbids fetching it")
    if _HUB_UNREACHABLE:
        raise HubFileMissing(repo_id, filename, f"not in the hub cache ({cache}) and the hub cannot be reached ({_HUB_UNREACHABLE[0]})")


def _fetch(repo_id: str, filename: str, cache: Path) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    try:
        # One HEAD request without retries first: a missing network fails in a moment, not minutes.
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=10)
        return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache)))
    except Exception as e:  # the hub client raises several unrelated error types
        raise _hub_error(repo_id, filename, e) from None


def _hub_error(repo_id: str, filename: str, error: Exception) -> HubFileMissing:
    from huggingface_hub import errors

    if isinstance(error, errors.GatedRepoError) or getattr(getattr(error, "response", None), "status_code", None) in (401, 403):
        return HubFileMissing(repo_id, filename, "the hub refuses access (a gated or private repo): accept its terms on the hub and run `hf auth login`")
    if isinstance(error, errors.RepositoryNotFoundError):
        return HubFileMissing(repo_id, filename, f"the hub has no repo '{repo_id}' (or it is private)", absent=True)
    if isinstance(error, (errors.EntryNotFoundError, errors.RevisionNotFoundError)):
        return HubFileMissing(repo_id, filename, "the hub has no such file", absent=True)
    reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}"
    if not isinstance(error, errors.HfHubHTTPError):
        _HUB_UNREACHABLE.append(reason)
    return HubFileMissing(repo_id, filename, f"not in the hub cache ({hub_cache_dir()}) and the hub cannot be reached ({reason})")


def hub_failure(error: BaseException) -> str | None:
    """What to tell the user when `error`, or an error that caused it, is a failure to get a file
    from the hub (the hub client's errors, or transformers's OSError for files it cannot find): the
    repo, the file where known, why, and the command that fetches it. None for other errors."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    hub_errors = [e for e in chain if type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "httpx2", "requests")]
    repo_id, filename, repo_type = _failed_download(chain)
    if not hub_errors and not (repo_id and any(isinstance(e, OSError) for e in chain)):
        return None
    cause = hub_errors[-1] if hub_errors else chain[-1]
    what = f"'{filename}' of hub repo '{repo_id}'" if repo_id and filename else f"hub repo '{repo_id}'" if repo_id else "a file from the hub"
    name, detail = type(cause).__name__, (str(cause).splitlines() or ["no detail"])[0]
    if "Gated" in name or getattr(getattr(cause, "response", None), "status_code", None) in (401, 403):
        why = "is in a gated or private repo: accept its terms on the hub and run `hf auth login`"
    elif "NotFound" in name and "Local" not in name:
        why = "does not exist on the hub; expected the name the model or SAE registry gives"
    elif hub_offline():
        why = f"is not in the hub cache ({hub_cache_dir()}) and HF_HUB_OFFLINE forbids fetching it ({detail})"
    else:
        why = f"could not be fetched ({name}: {detail})"
    fetch = ""
    if repo_id:
        command = ["hf download", shlex.quote(repo_id)] + (["--repo-type", repo_type] if repo_type and repo_type != "model" else [])
        if filename and "/" in filename:
            command += ["--include", shlex.quote(filename.rsplit("/", 1)[0] + "/*")]
        fetch = f"; fetch it with `{' '.join(command)}` where the hub can be reached, then rerun"
    return f"loading {what} failed: it {why}{fetch} (finished cache entries are kept)"


def _failed_download(chain: list[BaseException]) -> tuple[str | None, str | None, str | None]:
    """(repo_id, filename, repo_type) of the innermost hub download in the errors' tracebacks; else
    (the model name, None, None) of a transformers from_pretrained that failed on a hub name."""
    download: tuple[str | None, str | None, str | None] = (None, None, None)
    loading: str | None = None
    for error in chain:
        tb = error.__traceback__
        while tb is not None:
            module, local = str(tb.tb_frame.f_globals.get("__name__", "")), tb.tb_frame.f_locals
            repo = local.get("repo_id", local.get("path_or_repo_id"))
            if module.startswith(("huggingface_hub", "transformers.utils.hub")) and isinstance(repo, str):
                filename, repo_type = local.get("filename"), local.get("repo_type")
                download = (repo, filename if isinstance(filename, str) else None, repo_type if isinstance(repo_type, str) else None)
            name = local.get("pretrained_model_name_or_path")
            if module.startswith("transformers") and isinstance(name, str) and not os.path.isdir(name):
                loading = name
            tb = tb.tb_next
    return download if download[0] is not None else (loading, None, None)


def hub_cached(repo_id: str, filename: str) -> Path | None:
    """The cached path of a file, never fetching; None when it is not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()))
    return Path(found) if isinstance(found, str) else None


def hub_json(repo_id: str, filename: str) -> dict[str, Any]:
    return read_json_object(hub_file(repo_id, filename))


def hub_yaml(repo_id: str, filename: str) -> dict[str, Any]:
    path = hub_file(repo_id, filename)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{repo_id}/{filename} cannot be read as YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{repo_id}/{filename} holds a YAML {type(data).__name__}, not a mapping")
    return data


def hub_safetensors_shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
    """{tensor: shape} from a safetensors header: the cached file's, or (online) its first bytes alone,
    never the whole (weights) file."""
    cached = hub_cached(repo_id, filename)
    if cached is not None:
        return {k: v["shape"] for k, v in safetensors_header(cached).items()}
    _check_fetchable(repo_id, filename, hub_cache_dir())
    return _remote_safetensors_shapes(repo_id, filename)


def _remote_safetensors_shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url, headers = hf_hub_url(repo_id, filename), build_hf_headers()
    try:
        first = get_session().get(url, headers={**headers, "Range": "bytes=0-7"}, follow_redirects=True, timeout=10)
        first.raise_for_status()
        (n,) = struct.unpack("<Q", first.content[:8])
        if n > _MAX_HEADER:
            raise ConfigError(f"{repo_id}/{filename} is not a safetensors file (header of {n} bytes)")
        second = get_session().get(url, headers={**headers, "Range": f"bytes=8-{7 + n}"}, follow_redirects=True, timeout=10)
        second.raise_for_status()
        header = json.loads(second.content.decode("utf-8"))
    except ConfigError:
        raise
    except Exception as e:  # network, HTTP and decoding errors alike
        raise _hub_error(repo_id, filename, e) from None
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{array: shape} of an .npz file from the headers of its members; no array is read."""
    import zipfile

    from numpy.lib import format as npy_format

    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as f:
                    version = npy_format.read_magic(f)
                    header = npy_format.read_array_header_1_0(f) if version == (1, 0) else npy_format.read_array_header_2_0(f)
                shapes[name.removesuffix(".npy")] = tuple(header[0])
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise ConfigError(f"{Path(path).name} is not a readable .npz file ({e})") from None
    return shapes


# --- TransformerLens configs from Hugging Face configs ------------------------------------------

# Fields transformers fills in when a config.json leaves them out (its config classes' defaults),
# for the keys the conversion below reads.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_ctx": 1024, "n_positions": 1024, "activation_function": "gelu_new", "vocab_size": 50257},
    "gpt_neox": {"use_parallel_residual": True, "hidden_act": "gelu"},
    "gptj": {"activation_function": "gelu_new"},
    "gpt_neo": {"activation_function": "gelu_new"},
    "opt": {"activation_function": "relu"},
    "llama": {"hidden_act": "silu"},
    "mistral": {"hidden_act": "silu", "sliding_window": 4096},
    "qwen2": {"hidden_act": "silu"},
    "qwen3": {"hidden_act": "silu"},
    "gemma": {"head_dim": 256, "hidden_act": "gelu_pytorch_tanh"},
    "gemma2": {"head_dim": 256, "hidden_activation": "gelu_pytorch_tanh"},
    "gemma3_text": {
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131_072,
    },
}  # fmt: skip

# TransformerLens caps the context of some models below what their hub config allows.
_N_CTX_CAPS = (("Llama-3.1-", 2048), ("Llama-3.2-", 2048), ("Llama-3.3-", 2048), ("codellama/", 4096), ("google/gemma", 8192), ("google/medgemma", 8192))


class _HfConfig:
    """A hub config.json read with transformers's defaults for its model type."""

    def __init__(self, repo_id: str, data: dict[str, Any]):
        self.repo_id, self.data = repo_id, data
        self.defaults = _HF_DEFAULTS.get(str(data.get("model_type")), {})

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return value if value is not None else self.defaults.get(key, default)

    def int(self, key: str) -> int:
        value = self.get(key)
        if not is_int(value) or value < 1:
            raise ConfigError(f"{self.repo_id}/{MODEL_CONFIG} has {key} = {value!r}; expected a whole number >= 1")
        return value

    def head_dim(self) -> int:
        value = self.get("head_dim")
        return value if is_int(value) and value > 0 else self.int("hidden_size") // self.int("num_attention_heads")

    def kv_heads(self, drop_equal: bool) -> int | None:
        kv = self.get("num_key_value_heads")
        if not is_int(kv) or (drop_equal and kv == self.int("num_attention_heads")):
            return None
        return kv


def _gpt2(c: _HfConfig) -> dict[str, Any]:
    return {
        "d_model": c.int("n_embd"), "d_head": c.int("n_embd") // c.int("n_head"), "n_heads": c.int("n_head"),
        "d_mlp": 4 * c.int("n_embd"), "n_layers": c.int("n_layer"), "n_ctx": c.int("n_ctx"), "d_vocab": c.int("vocab_size"),
        "act_fn": c.get("activation_function"), "normalization_type": "LN",
    }  # fmt: skip


def _gpt_neo(c: _HfConfig) -> dict[str, Any]:
    return {
        "d_model": c.int("hidden_size"), "d_head": c.int("hidden_size") // c.int("num_heads"), "n_heads": c.int("num_heads"),
        "d_mlp": 4 * c.int("hidden_size"), "n_layers": c.int("num_layers"), "n_ctx": c.int("max_position_embeddings"),
        "d_vocab": c.int("vocab_size"), "act_fn": c.get("activation_function"), "normalization_type": "LN",
    }  # fmt: skip


def _opt(c: _HfConfig) -> dict[str, Any]:
    return {
        "d_model": c.int("hidden_size"), "d_head": c.int("hidden_size") // c.int("num_attention_heads"),
        "n_heads": c.int("num_attention_heads"), "d_mlp": c.int("ffn_dim"), "n_layers": c.int("num_hidden_layers"),
        "n_ctx": c.int("max_position_embeddings"), "d_vocab": c.int("vocab_size"), "act_fn": c.get("activation_function"),
        "normalization_type": "LN",
    }  # fmt: skip


def _gptj(c: _HfConfig) -> dict[str, Any]:
    return {
        "d_model": c.int("n_embd"), "d_head": c.int("n_embd") // c.int("n_head"), "n_heads": c.int("n_head"),
        "d_mlp": 4 * c.int("n_embd"), "n_layers": c.int("n_layer"), "n_ctx": c.int("n_positions"), "d_vocab": c.int("vocab_size"),
        "act_fn": c.get("activation_function"), "parallel_attn_mlp": True, "positional_embedding_type": "rotary",
        "normalization_type": "LN",
    }  # fmt: skip


def _gpt_neox(c: _HfConfig) -> dict[str, Any]:
    return {
        "d_model": c.int("hidden_size"), "d_head": c.int("hidden_size") // c.int("num_attention_heads"),
        "n_heads": c.int("num_attention_heads"), "d_mlp": c.int("intermediate_size"), "n_layers": c.int("num_hidden_layers"),
        "n_ctx": c.int("max_position_embeddings"), "d_vocab": c.int("vocab_size"), "act_fn": c.get("hidden_act"),
        "parallel_attn_mlp": bool(c.get("use_parallel_residual", True)), "positional_embedding_type": "rotary",
        "normalization_type": "LN",
    }  # fmt: skip


def _rms_rotary_gated(c: _HfConfig, d_head: int, n_kv: int | None, n_ctx: int, act_fn: Any, **extra: Any) -> dict[str, Any]:
    """The decoder layout of Llama, Mistral, Qwen and Gemma: RMSNorm, rotary, gated MLP."""
    return {
        "d_model": c.int("hidden_size"), "d_head": d_head, "n_heads": c.int("num_attention_heads"), "n_key_value_heads": n_kv,
        "d_mlp": c.int("intermediate_size"), "n_layers": c.int("num_hidden_layers"), "n_ctx": n_ctx,
        "d_vocab": c.int("vocab_size"), "act_fn": act_fn, "normalization_type": "RMS",
        "positional_embedding_type": "rotary", "gated_mlp": True, "final_rms": True, **extra,
    }  # fmt: skip


def _llama(c: _HfConfig) -> dict[str, Any]:
    d_head = c.int("hidden_size") // c.int("num_attention_heads")
    return _rms_rotary_gated(c, d_head, c.kv_heads(drop_equal=True), c.int("max_position_embeddings"), c.get("hidden_act"))


def _mistral(c: _HfConfig) -> dict[str, Any]:
    return _rms_rotary_gated(c, c.head_dim(), c.get("num_key_value_heads"), 2048, c.get("hidden_act"))


def _qwen2(c: _HfConfig) -> dict[str, Any]:
    d_head = c.int("hidden_size") // c.int("num_attention_heads")
    return _rms_rotary_gated(c, d_head, c.get("num_key_value_heads"), c.int("max_position_embeddings"), c.get("hidden_act"))


def _qwen3(c: _HfConfig) -> dict[str, Any]:
    return _rms_rotary_gated(c, c.head_dim(), c.kv_heads(drop_equal=True), 2048, c.get("hidden_act"), use_qk_norm=True)


def _gemma(c: _HfConfig) -> dict[str, Any]:
    return _rms_rotary_gated(c, c.head_dim(), c.get("num_key_value_heads"), c.int("max_position_embeddings"), "gelu")


def _gemma2(c: _HfConfig) -> dict[str, Any]:
    act = c.get("hidden_activation") or c.get("hidden_act")
    return _rms_rotary_gated(c, c.head_dim(), c.get("num_key_value_heads"), c.int("max_position_embeddings"), act, use_normalization_before_and_after=True)


def _gemma3(c: _HfConfig) -> dict[str, Any]:
    act = c.get("hidden_activation") or c.get("hidden_act")
    return _rms_rotary_gated(
        c, c.head_dim(), c.get("num_key_value_heads"), c.int("max_position_embeddings"), act, use_normalization_before_and_after=True, use_qk_norm=True
    )


def _gemma3_multimodal(c: _HfConfig) -> dict[str, Any]:
    text = c.data.get("text_config")
    return _gemma3(_HfConfig(c.repo_id, {"model_type": "gemma3_text", **(text if isinstance(text, dict) else {})}))


# HF architecture -> the HookedTransformerConfig fields TransformerLens's convert_hf_model_config sets.
HF_ARCHITECTURES = {
    "GPT2LMHeadModel": _gpt2,
    "GPTNeoForCausalLM": _gpt_neo,
    "OPTForCausalLM": _opt,
    "GPTJForCausalLM": _gptj,
    "GPTNeoXForCausalLM": _gpt_neox,
    "LlamaForCausalLM": _llama,
    "MistralForCausalLM": _mistral,
    "Qwen2ForCausalLM": _qwen2,
    "Qwen3ForCausalLM": _qwen3,
    "GemmaForCausalLM": _gemma,
    "Gemma2ForCausalLM": _gemma2,
    "Gemma3ForCausalLM": _gemma3,
    "Gemma3ForConditionalGeneration": _gemma3_multimodal,
}

# Repos whose config.json already holds HookedTransformerConfig fields (TransformerLens's own models).
_TRANSFORMER_LENS_FORMAT_PREFIXES = ("NeelNanda/", "ArthurConmy/", "Baidicoot/")


def convert_hf_config(official_name: str, hf_config: dict[str, Any]) -> dict[str, Any] | None:
    """HookedTransformerConfig fields from a model repo's config.json, as TransformerLens derives them
    (the fields hooks and widths depend on), with its derived defaults filled in; None for an
    architecture not in HF_ARCHITECTURES (TransformerLens checks it when it loads)."""
    if official_name.startswith(_TRANSFORMER_LENS_FORMAT_PREFIXES):
        return normalise_model_config(hf_config)
    architectures = hf_config.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    convert = HF_ARCHITECTURES.get(str(architecture))
    if convert is None:
        return None
    # HookedTransformerConfig's defaults, for the fields an architecture leaves alone.
    cfg = {"positional_embedding_type": "standard", "parallel_attn_mlp": False, "attn_only": False, "gated_mlp": False}
    cfg.update(convert(_HfConfig(official_name, hf_config)))
    for prefix, cap in _N_CTX_CAPS:
        if prefix in official_name:
            cfg["n_ctx"] = min(cfg["n_ctx"], cap)
    cfg["original_architecture"] = architecture
    return normalise_model_config({k: v for k, v in cfg.items() if v is not None})


@functools.lru_cache(maxsize=32)
def _transformer_lens_config(official_name: str, cache: str) -> dict[str, Any] | None:
    return convert_hf_config(official_name, hub_json(official_name, MODEL_CONFIG))


def transformer_lens_config(official_name: str) -> dict[str, Any] | None:
    """The converted hub config of a TransformerLens model (HubFileMissing when it cannot be had,
    None when its architecture is not one this module converts)."""
    config = _transformer_lens_config(official_name, str(hub_cache_dir()))
    return dict(config) if config is not None else None


# --- SAE configs: SAELens's cfg.json and its conversion loaders ------------------------------------

# Keys SAELens moves into `metadata` when it upgrades a pre-6 config (LLM_METADATA_KEYS in SAELens).
_SAE_METADATA_KEYS = frozenset({
    "model_name", "hook_name", "model_class_name", "hook_head_index", "model_from_pretrained_kwargs", "prepend_bos",
    "exclude_special_tokens", "neuronpedia_id", "context_size", "seqpos_slice", "dataset_path", "sae_lens_version",
    "sae_lens_training_version", "hook_name_out", "hook_head_index_out", "hf_hook_name", "hf_hook_name_out",
})  # fmt: skip
_PRE_6_RENAMES = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index", "activation_fn_str": "activation_fn"}


def _version_before_6(version: object) -> bool:
    if not isinstance(version, str) or not version:
        return True
    try:
        from packaging.version import Version

        return Version(version) < Version("6.0.0-rc.0")
    except Exception:  # packaging missing or an unparsable version: read the major number
        head = version.split(".")[0]
        return not head.isdigit() or int(head) < 6


def normalise_sae_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A SAELens cfg.json as SAELens 6 reads it: pre-6 keys renamed, the model-facing keys
    (hook_name, hook_name_out, model_name, ...) under `metadata`, the architecture named."""
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    version = raw.get("sae_lens_version") or metadata.get("sae_lens_version")
    if not _version_before_6(version):
        return {**raw, "metadata": dict(metadata), "architecture": raw.get("architecture") or "standard"}
    cfg = {_PRE_6_RENAMES.get(k, k): v for k, v in raw.items()}
    architecture = cfg.get("architecture") or "standard"
    kwargs = cfg.get("activation_fn_kwargs")
    if cfg.get("activation_fn") == "topk" and isinstance(kwargs, dict) and kwargs.get("k") is not None:
        architecture = "topk"
    out = {k: v for k, v in cfg.items() if k not in _SAE_METADATA_KEYS and k != "metadata"}
    out["metadata"] = {**metadata, **{k: v for k, v in cfg.items() if k in _SAE_METADATA_KEYS}}
    out["architecture"] = architecture
    return out


def sae_hook_out_name(cfg: dict[str, Any]) -> str | None:
    """The hook a transcoder writes (`metadata.hook_name_out`); None for SAEs."""
    metadata = cfg.get("metadata")
    hook = metadata.get("hook_name_out") if isinstance(metadata, dict) else None
    hook = hook or cfg.get("hook_name_out")
    return hook if isinstance(hook, str) and hook else None


def sae_metadata(cfg: dict[str, Any], key: str) -> Any:
    metadata = cfg.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if value is not None else cfg.get(key)


def sae_architecture(cfg: dict[str, Any]) -> str:
    return str(cfg.get("architecture") or "standard")


def _layer_in(text: str, pattern: str = r"layer_(\d+)") -> int:
    match = re.search(pattern, text)
    if match is None:
        raise ConfigError(f"no layer number in '{text}'")
    return int(match.group(1))


def _width_in(folder: str) -> int:
    match = re.search(r"width_(\d+)([km])", folder)
    if match is None:
        raise ConfigError(f"no width in '{folder}'")
    return int(match.group(1)) * (1024 if match.group(2) == "k" else 1024 * 1024)


_GEMMA_2_WIDTHS = {"2b": 2304, "9b": 3584, "27b": 4608}
_GEMMA_2_ATTENTION_WIDTHS = {"2b": 2048, "9b": 4096, "27b": 4608}


def _gemma_2_size(repo_id: str) -> str:
    for size in ("2b", "9b", "27b"):
        if size in repo_id:
            return size
    raise ConfigError(f"no Gemma 2 model size in '{repo_id}'")


def _read_sae_lens(repo_id: str, path: str) -> dict[str, Any]:
    return hub_json(repo_id, f"{path}/{SAE_CONFIG}")


def _read_connor_rob_hook_z(repo_id: str, path: str) -> dict[str, Any]:
    old = hub_json(repo_id, path.split(".pt")[0] + "_cfg.json")
    return {"architecture": "standard", "d_in": old["act_size"], "d_sae": old["dict_size"], "model_name": "gpt2-small", "hook_name": old["act_name"]}


def _read_gemma_2(repo_id: str, path: str) -> dict[str, Any]:
    size = _gemma_2_size(repo_id)
    layer = 0 if "layer_" not in path and "embedding" in path else _layer_in(path)
    d_in = _GEMMA_2_WIDTHS[size]
    if "res" in repo_id:
        hook = "hook_embed" if "embedding" in path else f"blocks.{layer}.hook_resid_post"
    elif "mlp" in repo_id:
        hook = f"blocks.{layer}.hook_mlp_out"
    elif "att" in repo_id:
        hook, d_in = f"blocks.{layer}.attn.hook_z", _GEMMA_2_ATTENTION_WIDTHS[size]
    else:
        raise ConfigError(f"no hook kind (res, mlp, att) in '{repo_id}'")
    cfg = {"architecture": "jumprelu", "d_in": d_in, "d_sae": _width_in(path), "model_name": f"gemma-2-{size}" + ("-it" if f"{size}-it" in repo_id else ""), "hook_name": hook}
    cached = hub_cached(repo_id, f"{path}/params.npz")
    if cached is not None:  # the weights are here already: their shapes are the truth
        cfg["d_in"], cfg["d_sae"] = npz_shapes(cached)["W_enc"]
    return cfg


def _read_gemma_2_transcoder(repo_id: str, path: str) -> dict[str, Any]:
    size = _gemma_2_size(repo_id)
    layer = _layer_in(path) if "layer_" in path else _layer_in(repo_id)
    d = _GEMMA_2_WIDTHS[size]
    return {
        "architecture": "jumprelu_transcoder", "d_in": d, "d_out": d, "d_sae": _width_in(path),
        "model_name": f"gemma-2-{size}" + ("-it" if f"{size}-it" in repo_id else ""),
        "hook_name": f"blocks.{layer}.ln2.hook_normalized", "hook_name_out": f"blocks.{layer}.hook_mlp_out",
        "model_from_pretrained_kwargs": None,
    }  # fmt: skip


def _read_gemma_3(repo_id: str, path: str) -> dict[str, Any]:
    transcoder = "transcoder" in path or "clt" in path
    config_missing = None
    try:
        raw = hub_json(repo_id, f"{path}/config.json")
    except HubFileMissing as missing:
        if not missing.absent:
            config_missing = missing  # go on, so that the weights header is listed as missing too
        raw = {"model_name": repo_id.replace("gemma-scope-2", "gemma-3"), "affine_connection": "affine" in path}
    layer = _layer_in(path)
    kinds = (("resid_post", f"blocks.{layer}.hook_resid_post"), ("attn_out", f"blocks.{layer}.attn.hook_z"), ("mlp_out", f"blocks.{layer}.hook_mlp_out"))
    hook = f"blocks.{layer}.hook_mlp_in" if transcoder else next((h for k, h in kinds if k in path), None)
    if hook is None:
        raise ConfigError(f"no hook kind in '{path}'")
    try:
        shapes = hub_safetensors_shapes(repo_id, f"{path}.safetensors" if "clt" in path else f"{path}/params.safetensors")
    except HubFileMissing as missing:
        if config_missing is None or missing.absent:
            raise
        raise HubFileMissing(repo_id, config_missing.filename, config_missing.reason, also=(missing.filename,)) from None
    if config_missing is not None:
        raise config_missing
    d_in, d_sae = shapes["w_enc"]
    model = str(raw["model_name"])
    model = (model if "google" in model else "google/" + model).replace("-v3", "-3")
    cfg: dict[str, Any] = {"architecture": "jumprelu", "d_in": d_in, "d_sae": d_sae, "model_name": model.replace("-pt", "") if "270m" in model else model, "hook_name": hook}
    if transcoder:
        cfg["architecture"] = "jumprelu_skip_transcoder" if raw.get("affine_connection") else "jumprelu_transcoder"
        cfg["hook_name_out"], cfg["d_out"] = f"blocks.{layer}.hook_mlp_out", shapes["w_dec"][-1]
    return cfg


def _read_dictionary_learning_1(repo_id: str, path: str) -> dict[str, Any]:
    trainer = hub_json(repo_id, f"{path}/config.json")["trainer"]
    kind = trainer["dict_class"]
    architecture = {"GatedAutoEncoder": "gated", "MatryoshkaBatchTopKSAE": "jumprelu", "BatchTopKSAE": "jumprelu", "JumpReluAutoEncoder": "jumprelu"}.get(kind, "standard")
    topk = kind == "AutoEncoderTopK"  # an activation_fn SAELens upgrades to the topk architecture
    return {
        "architecture": architecture, "d_in": trainer["activation_dim"], "d_sae": trainer["dict_size"],
        "model_name": str(trainer["lm_name"]).split("/")[-1], "hook_name": f"blocks.{trainer['layer']}.hook_resid_post",
        "activation_fn": "topk" if topk else "relu", "activation_fn_kwargs": {"k": trainer["k"]} if topk else {},
    }  # fmt: skip


def _read_llama_scope(repo_id: str, path: str) -> dict[str, Any]:
    old = hub_json(repo_id, f"{path}/hyperparams.json")
    return {"architecture": "jumprelu", "d_in": old["d_model"], "d_sae": old["d_sae"], "model_name": "meta-llama/Llama-3.1-8B", "hook_name": old["hook_point_in"]}


def _read_llama_scope_r1_distill(repo_id: str, path: str) -> dict[str, Any]:
    old = hub_json(repo_id, f"{path}/config.json")
    d_in = old["d_model"]
    return {"architecture": "jumprelu", "d_in": d_in, "d_sae": d_in * old["expansion_factor"], "model_name": "meta-llama/Llama-3.1-8B", "hook_name": old["hook_point_in"]}


def _read_deepseek_r1(repo_id: str, path: str) -> dict[str, Any]:
    layer = _layer_in(path, r"l(\d+)")
    return {"architecture": "standard", "d_in": 4096, "d_sae": 4096 * 16, "model_name": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "hook_name": f"blocks.{layer}.hook_resid_post"}


_GOODFIRE = {
    ("Goodfire/Llama-3.3-70B-Instruct-SAE-l50", "Llama-3.3-70B-Instruct-SAE-l50.pt"): (8192, "meta-llama/Llama-3.3-70B-Instruct", 50),
    ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", "Llama-3.1-8B-Instruct-SAE-l19.pth"): (4096, "meta-llama/Llama-3.1-8B-Instruct", 19),
}


def _read_goodfire(repo_id: str, path: str) -> dict[str, Any]:
    if (repo_id, path) not in _GOODFIRE:
        raise ConfigError(f"SAELens does not know the Goodfire SAE {repo_id}/{path}")
    d_in, model, layer = _GOODFIRE[(repo_id, path)]
    return {"architecture": "standard", "d_in": d_in, "d_sae": 65536, "model_name": model, "hook_name": f"blocks.{layer}.hook_resid_post"}


@functools.cache
def _qwen_scope_models() -> dict[str, tuple[str, int]]:
    """SAELens's QWEN_SCOPE_MODEL_INFO, read from its source as a literal (importing it needs torch)."""
    path = _package_file("sae_lens", "loading/pretrained_sae_loaders.py")
    if path is None:
        return {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == "QWEN_SCOPE_MODEL_INFO" and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


def _read_qwen_scope(repo_id: str, path: str) -> dict[str, Any]:
    layer = _layer_in(path, r"layer(\d+)\.sae\.pt")
    match = re.search(r"SAE-Res-(.+)-W(\d+)K-L0_(\d+)", repo_id)
    if match is None or match.group(1) not in _qwen_scope_models():
        raise ConfigError(f"'{repo_id}' is not a Qwen Scope repo SAELens knows")
    model, d_in = _qwen_scope_models()[match.group(1)]
    return {"architecture": "topk", "d_in": d_in, "d_sae": int(match.group(2)) * 1024, "model_name": model, "hook_name": f"blocks.{layer}.hook_resid_post"}


def _read_mwhanna_transcoder(repo_id: str, path: str) -> dict[str, Any]:
    layer = int(path.replace(".safetensors", "").split("_")[-1])
    try:
        wandb = hub_yaml(repo_id, "wandb-config.yaml")
    except HubFileMissing as missing:
        if not missing.absent:
            raise
        wandb = hub_yaml(repo_id, "wanb-config.yaml")  # some of these repos spell it so
    try:
        model = hub_yaml(repo_id, "config.yaml")["model_name"]
    except HubFileMissing as missing:
        size = re.search(r"qwen3-(\d+(?:\.\d+)?)b", repo_id)
        if not missing.absent or size is None:
            raise
        model = f"Qwen/Qwen3-{size.group(1)}B"
    d = wandb["d_model"]["value"]
    return {
        "architecture": "transcoder", "d_in": d, "d_out": d, "d_sae": wandb["d_feature"]["value"], "model_name": model,
        "hook_name": f"blocks.{layer}.mlp.hook_in", "hook_name_out": f"blocks.{layer}.hook_mlp_out",
        "model_from_pretrained_kwargs": {"fold_ln": False},
    }  # fmt: skip


def _read_mntss_clt_layer(repo_id: str, path: str) -> dict[str, Any]:
    info = hub_yaml(repo_id, "config.yaml")
    shapes = hub_safetensors_shapes(repo_id, f"W_enc_{path}.safetensors")
    d = shapes[f"b_dec_{path}"][0]
    return {
        "architecture": "transcoder", "d_in": d, "d_out": d, "d_sae": shapes[f"b_enc_{path}"][0], "model_name": info["model_name"],
        "hook_name": f"blocks.{path}.{info['feature_input_hook']}", "hook_name_out": f"blocks.{path}.{info['feature_output_hook']}",
        "model_from_pretrained_kwargs": {"fold_ln": False},
    }  # fmt: skip


def _read_temporal(repo_id: str, path: str) -> dict[str, Any]:
    conf = hub_yaml(repo_id, f"{path}/conf.yaml")
    d_in = conf["llm"]["dimin"]
    return {"architecture": "temporal", "d_in": d_in, "d_sae": int(d_in * conf["sae"]["exp_factor"]), "hook_name": f"blocks.{_layer_in(path)}.hook_resid_post"}


# SAELens conversion_func -> a reader of the same config its config getter builds, from the config
# files alone (or from names, where SAELens derives the config from names).
PRETRAINED_CONFIG_READERS = {
    "sae_lens": _read_sae_lens,
    "connor_rob_hook_z": _read_connor_rob_hook_z,
    "gemma_2": _read_gemma_2,
    "gemma_2_transcoder": _read_gemma_2_transcoder,
    "gemma_3": _read_gemma_3,
    "dictionary_learning_1": _read_dictionary_learning_1,
    "llama_scope": _read_llama_scope,
    "llama_scope_r1_distill": _read_llama_scope_r1_distill,
    "deepseek_r1": _read_deepseek_r1,
    "goodfire": _read_goodfire,
    "qwen_scope": _read_qwen_scope,
    "mwhanna_transcoder": _read_mwhanna_transcoder,
    "mntss_clt_layer_transcoder": _read_mntss_clt_layer,
    "temporal": _read_temporal,
}


def pretrained_sae_entry(release: str, sae_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(release entry, SAE entry) of SAELens's registry; None when either is not there."""
    entry = pretrained_saes_directory().get(release)
    if not isinstance(entry, dict):
        return None
    for sae in entry.get("saes") or ():
        if isinstance(sae, dict) and str(sae.get("id")) == sae_id:
            return entry, sae
    return None


def pretrained_sae_config(release: str, sae_id: str) -> dict[str, Any] | None:
    """The config SAELens builds for a registry SAE (normalised as `normalise_sae_config`), with the
    registry's config_overrides applied; read from config files in the hub cache, fetched when online.

    None when the SAE is not in the registry or its loader has no reader here. HubFileMissing when a
    file is missing; ConfigError when a file cannot be used."""
    found = pretrained_sae_entry(release, sae_id)
    if found is None:
        return None
    entry, sae = found
    reader = PRETRAINED_CONFIG_READERS.get(entry.get("conversion_func") or "sae_lens")
    if reader is None:
        return None
    repo_id, path = str(entry.get("repo_id")), str(sae.get("path"))
    try:
        raw = reader(repo_id, path)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"the config of {repo_id}/{path} cannot be read (no {e})" if isinstance(e, KeyError) else f"the config of {repo_id}/{path} cannot be read ({e})") from None
    raw.update(entry.get("config_overrides") or {})
    cfg = normalise_sae_config({k: v for k, v in raw.items() if v is not None})
    cfg["source"] = f"{repo_id}/{path}"
    return cfg


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
    """Every hook name a HookedTransformer built from `config` fires during a forward pass, plus
    `blocks.L.mlp.hook_in` (the MLP's input, ln2 applied) that the engine's backend adds to each MLP."""
    return set(_hook_widths(_freeze(config)))


# Hooks a HookedTransformer has but fires only when a config flag is set (None: never set here).
FLAG_GATED_HOOKS = {
    "hook_attn_in": "use_attn_in",
    "hook_q_input": "use_split_qkv_input",
    "hook_k_input": "use_split_qkv_input",
    "hook_v_input": "use_split_qkv_input",
    "hook_mlp_in": "use_hook_mlp_in",
    "attn.hook_result": "use_attn_result",
}


def hook_needs_flag(config: dict[str, Any], hook_name: str) -> str | None:
    """The config flag without which `hook_name` never fires (e.g. use_hook_mlp_in); None otherwise."""
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook_name)
    n_layers = config.get("n_layers")
    if match is None or not is_int(n_layers) or int(match.group(1)) >= n_layers:
        return None
    flag = FLAG_GATED_HOOKS.get(match.group(2))
    if flag is None or config.get(flag) or (flag == "use_hook_mlp_in" and config.get("attn_only")):
        return None
    return flag


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
    if norm is not None and cfg.get("use_normalization_before_and_after"):
        per_block.update({"ln1_post.hook_scale": None, "ln1_post.hook_normalized": d_model})
        if not attn_only:
            per_block.update({"ln2_post.hook_scale": None, "ln2_post.hook_normalized": d_model})
    if cfg.get("use_qk_norm"):
        per_block.update({f"attn.{n}_norm.{h}": None for n in ("q", "k") for h in ("hook_scale", "hook_normalized")})
    if not attn_only:
        per_block.update({"hook_mlp_out": d_model, "mlp.hook_pre": d_mlp, "mlp.hook_post": d_mlp})
        per_block["mlp.hook_in"] = d_model  # added by the backend (circuit-tracer transcoders read it)
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

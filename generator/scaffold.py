"""`sae-atlas init --sae-lens RELEASE`: a manifest for a release of SAELens's registry (torch-free).

Reads SAELens's packaged `pretrained_saes.yaml` only. Each registry SAE gets a layer and a hook
from its id (`blocks.8.hook_resid_pre`, `layer_3/width_16k/canonical`, `l5m_8x`, ...); SAEs on the
same hook kind with the same variant become one Set (`res-jb`, `mlp-tm`, `att-kk`, `tc-...`), one
`sae_lens: {release, id}` per layer. Where the registry id does not name the hook, the hook is
inferred from the release name and the manifest says to check it. An existing file is never
overwritten.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sae_atlas.errors import AtlasError
from sae_atlas.manifest import CORPUS_SUFFIXES, CorpusSpec
from sae_atlas.sources.configs import ConfigError, pretrained_saes_directory, read_json_object

# Hooks inside a block, as registry ids write them (longest first, so `hook_resid_pre_768` splits
# into the hook and a variant). `hook_z` is SAELens's short form of `attn.hook_z`.
BLOCK_HOOKS = (
    "ln2.hook_normalized", "ln1.hook_normalized", "attn.hook_result", "attn.hook_z", "attn.hook_q",
    "attn.hook_k", "attn.hook_v", "mlp.hook_post", "mlp.hook_pre", "hook_resid_post", "hook_resid_pre",
    "hook_resid_mid", "hook_attn_out", "hook_mlp_out", "hook_mlp_in", "hook_attn_in", "hook_z",
)  # fmt: skip
HOOK_ALIASES = {"hook_z": "attn.hook_z"}
_BLOCK_ID = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(h) for h in BLOCK_HOOKS) + r")(.*)$")
# Layer numbers in ids that are not hook names: layer_3/..., layer3, resid_post_layer_3_..., l3m_8x.
_LAYER_IN_ID = re.compile(r"(?:^|[/_])layer_?(\d+)|^l(\d+)(?=[a-z])")
_LLAMA_SCOPE_KIND = re.compile(r"^l\d+(a|m|r|tc)_")

# Set id prefix, title and (for ids without a hook) the hook assumed for each hook kind.
KINDS = {
    "res": ("Residual stream", "hook_resid_post"),
    "mlp": ("MLP out", "hook_mlp_out"),
    "att": ("Attention", "attn.hook_z"),
    "tc": ("Transcoders", "ln2.hook_normalized"),
}
# Words of a release name or id that name a hook kind (and are not part of the set id suffix).
KIND_WORDS = {
    "res": "res", "resid": "res", "residual": "res", "mlp": "mlp", "att": "att", "attn": "att",
    "transcoder": "tc", "transcoders": "tc", "tc": "tc", "clt": "tc", "skip": "tc",
}  # fmt: skip
_HOOK_WORDS = {"hook", "z", "post", "pre", "mid", "out", "in"}
_SHORT_HOOK = {
    "hook_resid_pre": "pre", "hook_resid_post": "post", "hook_resid_mid": "mid", "hook_attn_out": "out",
    "attn.hook_z": "z", "hook_mlp_out": "out", "mlp.hook_post": "post", "hook_mlp_in": "in",
}  # fmt: skip


class InitError(AtlasError):
    """Bad arguments to `init` (unknown release or layer, a file that exists): exit 2."""

    exit_code = 2


@dataclass(frozen=True)
class RegistrySae:
    layer: int
    hook: str  # hook name inside the block, e.g. hook_resid_pre
    kind: str  # a KINDS key
    variant: str  # what tells SAEs of one layer and kind apart ("" when one per layer)
    sae_id: str  # the registry id
    hook_from_id: bool  # False: the hook is inferred from the release name


@dataclass
class ScaffoldSet:
    id: str
    title: str
    hook_template: str
    hook_from_id: bool
    saes: list[RegistrySae] = field(default_factory=list)


@dataclass(frozen=True)
class Scaffold:
    release: str  # the registry release name
    entry: dict
    sets: list[ScaffoldSet]
    skipped: list[str]  # registry ids with no layer (e.g. embedding SAEs)


# --- reading the registry --------------------------------------------------------------------------


def registry_release(name: str) -> dict:
    directory = pretrained_saes_directory()
    if not directory:
        raise InitError("SAELens is not installed here, so its registry (pretrained_saes.yaml) cannot be read; install sae-lens")
    if name in directory:
        return directory[name]
    close = difflib.get_close_matches(name, list(directory), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"expected one of the {len(directory)} releases of SAELens's pretrained_saes.yaml"
    raise InitError(f"'{name}' is not a SAELens release; {hint}")


def _kind_of_words(text: str) -> str | None:
    for word in re.split(r"[^a-z0-9]+", text.lower()):
        if word in KIND_WORDS:
            return KIND_WORDS[word]
    return None


def _kind_of_hook(hook: str) -> str:
    if "resid" in hook:
        return "res"
    if "mlp" in hook:
        return "mlp"
    if "attn" in hook:
        return "att"
    return "tc" if hook.startswith("ln2.") else "res"


# The hook a conversion loader's transcoders read, where its ids do not name one (SAELens's loaders).
CONVERSION_TRANSCODER_HOOKS = {"mwhanna_transcoder": "mlp.hook_in", "gemma_2_transcoder": "ln2.hook_normalized"}


def parse_registry_id(release: str, sae_id: str, conversion: str | None = None) -> RegistrySae | None:
    """Layer, hook, kind and variant of one registry SAE; None when the id names no layer.
    `conversion`: the release's conversion loader, which fixes some transcoders' hook."""
    transcoders = _kind_of_words(release) == "tc"
    m = _BLOCK_ID.match(sae_id)
    if m:
        hook = HOOK_ALIASES.get(m.group(2), m.group(2))
        kind = "tc" if transcoders else _kind_of_hook(hook)
        return RegistrySae(int(m.group(1)), hook, kind, m.group(3).strip("._"), sae_id, True)
    m = _LAYER_IN_ID.search(sae_id)
    if not m:
        return None
    layer = int(m.group(1) or m.group(2))
    variant = (sae_id[: m.start()] + "{layer}" + sae_id[m.end() :]).strip("/_")
    llama = _LLAMA_SCOPE_KIND.match(sae_id)
    in_id = {"a": "att", "m": "mlp", "r": "res", "tc": "tc"}[llama.group(1)] if llama else None
    kind = "tc" if transcoders else in_id or _kind_of_words(sae_id.replace(str(layer), "")) or _kind_of_words(release) or "res"
    hook = KINDS[kind][1]
    if "resid_post" in sae_id:
        hook = "hook_resid_post"
    elif llama and kind == "att":
        hook = "hook_attn_out"  # Llama Scope's attention SAEs read the attention output
    if kind == "tc" and conversion in CONVERSION_TRANSCODER_HOOKS:
        return RegistrySae(layer, CONVERSION_TRANSCODER_HOOKS[conversion], kind, variant, sae_id, True)
    return RegistrySae(layer, hook, kind, variant, sae_id, False)


def parse_layers(text: str) -> set[int]:
    """`8-9`, `8,9` or `0,3-5` -> the layer numbers; InitError otherwise."""
    layers: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise InitError(f"--layers {text!r}: expected layer numbers and ranges such as 8-9, 8,9 or 0,3-5")
        lo = int(m.group(1))
        layers.update(range(lo, int(m.group(2) or lo) + 1))
    return layers


def _ranges(layers: list[int]) -> str:
    out, start = [], None
    for i, layer in enumerate(layers):
        start = layer if start is None else start
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            out.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ",".join(out)


# --- grouping into Sets --------------------------------------------------------------------------


def slugify(text: str) -> str:
    """A valid id (sae_atlas.ids.SLUG) from any text: lowercase, runs of other characters as '-'."""
    slug = re.sub(r"[^a-z0-9_.]+", "-", text.lower()).strip("-._")
    return slug or "x"


def model_slug(model: str) -> str:
    """URL slug of a model name: `google/gemma-2-2b` -> `gemma-2-2b`."""
    return slugify(model.rsplit("/", 1)[-1])


def set_suffix(release: str, model: str) -> str:
    """What names the release's author or method: `gpt2-small-res-jb` -> `jb`."""
    model_words = set(re.split(r"[^a-z0-9]+", model.lower().rsplit("/", 1)[-1]))
    words = [
        w for w in re.split(r"[^a-z0-9.]+", release.lower())
        if w and w not in model_words and w not in KIND_WORDS and w not in _HOOK_WORDS
    ]  # fmt: skip
    return slugify("-".join(words)) if words else "sae"


def group_sets(release: str, model: str, saes: list[RegistrySae]) -> list[ScaffoldSet]:
    """One Set per (kind, hook, variant), each with at most one SAE per layer."""
    suffix = set_suffix(release, model)
    by_key: dict[tuple[str, str, str], list[RegistrySae]] = {}
    for sae in saes:
        by_key.setdefault((sae.kind, sae.hook, sae.variant), []).append(sae)
    hooks_of_kind: dict[str, set[str]] = {}
    variants_of: dict[tuple[str, str], set[str]] = {}
    for kind, hook, variant in by_key:
        hooks_of_kind.setdefault(kind, set()).add(hook)
        variants_of.setdefault((kind, hook), set()).add(variant)
    sets: list[ScaffoldSet] = []
    for (kind, hook, variant), members in sorted(by_key.items()):
        prefix = kind
        if len(hooks_of_kind[kind]) > 1 and kind != "tc":
            prefix += "_" + _SHORT_HOOK.get(hook, slugify(hook))
        parts = [prefix, suffix]
        if len(variants_of[(kind, hook)]) > 1 and variant:
            known = set(suffix.split("-"))
            words = [w for w in re.split(r"[^a-z0-9_.]+", variant.replace("{layer}", "").lower()) if w and w not in known]
            parts.append(slugify("-".join(words)))
        title = KINDS[kind][0] + (f" ({variant.replace('{layer}', 'L')})" if variant and len(variants_of[(kind, hook)]) > 1 else "")
        members = sorted({s.layer: s for s in reversed(members)}.values(), key=lambda s: s.layer)
        sets.append(ScaffoldSet("-".join(parts), title, f"blocks.{{layer}}.{hook}", members[0].hook_from_id, members))
    return sets


def scaffold(release: str, layers: set[int] | None = None) -> Scaffold:
    entry = registry_release(release)
    parsed, skipped = [], []
    for item in entry.get("saes") or ():
        sae = parse_registry_id(release, str(item.get("id")), entry.get("conversion_func"))
        if sae is None:
            skipped.append(str(item.get("id")))
        else:
            parsed.append(sae)
    available = sorted({s.layer for s in parsed})
    if layers is not None:
        missing = sorted(layers - set(available))
        if missing:
            raise InitError(
                f"--layers: release '{release}' has no SAE on layer {_ranges(missing)}; expected layers among {_ranges(available) or 'none'}"
            )
        parsed = [s for s in parsed if s.layer in layers]
    if not parsed:
        raise InitError(f"release '{release}' has no SAE whose registry id names a layer; expected ids such as blocks.8.hook_resid_pre")
    return Scaffold(release, entry, group_sets(release, str(entry.get("model")), parsed), skipped)


# --- writing the manifest --------------------------------------------------------------------------


def _scalar(value: object) -> str:
    """`value` as one YAML flow scalar (quoted where YAML needs it)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip().removesuffix("...").strip()


def cached_sae_config(entry: dict, sae_id: str) -> dict | None:
    """The registry SAE's `cfg.json` where the local Hugging Face hub cache holds it (no download)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    item = next((x for x in entry.get("saes") or () if str(x.get("id")) == sae_id), None)
    if item is None or not entry.get("repo_id"):
        return None
    try:
        found = try_to_load_from_cache(str(entry["repo_id"]), f"{item.get('path')}/cfg.json")
    except ValueError:  # a repo id or path the hub client rejects
        return None
    if not isinstance(found, str):
        return None
    try:
        return read_json_object(Path(found))
    except ConfigError:
        return None


def training_dataset(entry: dict, sae_id: str) -> str | None:
    """The dataset the SAE was trained on: the registry's config overrides, else its cached cfg.json."""
    dataset = (entry.get("config_overrides") or {}).get("dataset_path")
    if not dataset:
        cfg = cached_sae_config(entry, sae_id) or {}
        metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
        dataset = cfg.get("dataset_path") or metadata.get("dataset_path")
    return str(dataset) if isinstance(dataset, str) and dataset else None


def _corpus_lines(corpus: str | None, dataset: str | None, manifest: Path) -> list[str]:
    defaults = CorpusSpec()
    size = f"  prompts: {defaults.prompts}  # how many prompts of\n  context: {defaults.context}  # tokens each"
    if corpus is not None:
        local = Path(corpus)
        if local.is_file() or corpus.endswith(CORPUS_SUFFIXES):
            if not local.is_file():
                raise InitError(f"--corpus '{corpus}' does not exist; expected a .txt or .jsonl file, or a dataset name on the Hugging Face hub")
            rel = Path(os.path.relpath(local.resolve(), manifest.resolve().parent)).as_posix()
            return ["corpus:  # the text the features are computed on", f"  path: {_scalar(rel)}", size]
        return ["corpus:  # the text the features are computed on", f"  dataset: {_scalar(corpus)}", size]
    if dataset:
        return ["corpus:  # the SAEs' training data, as their config names it; edit to taste", f"  dataset: {_scalar(dataset)}", size]
    return [
        "# EDIT: the text the features are computed on. SAELens's registry does not say which data these",
        "# SAEs were trained on; their training data is the best choice. Uncomment one of:",
        f"# corpus: {{dataset: NAME, prompts: {defaults.prompts}, context: {defaults.context}}}  # a Hugging Face dataset with a text column",
        f"# corpus: {{path: ../corpus/my-text.txt, prompts: {defaults.prompts}, context: {defaults.context}}}  # a local .txt or .jsonl file",
    ]


def manifest_text(sc: Scaffold, manifest: Path, corpus: str | None = None) -> str:
    entry = sc.entry
    model = str(entry.get("model"))
    release_id = slugify(sc.release)
    model_id = model_slug(model)
    if release_id == model_id:
        release_id += "-saes"
    description = f"SAEs of the SAELens release `{sc.release}` (weights: `{entry.get('repo_id')}`)."
    lines = [
        f"# Manifest for the SAELens release {sc.release}, written by `sae-atlas init`.",
        "# Edit what you like (titles, description, corpus, layers), then run `sae-atlas check` and",
        "# `sae-atlas build`. The format is described in the README, section Manifest.",
        f"release: {_scalar(release_id)}",
        f"title: {_scalar(sc.release)}",
        f"description: {_scalar(description)}",
    ]
    links = {str(k): str(v) for k, v in (entry.get("links") or {}).items() if str(v).startswith(("https://", "http://"))}
    if links:
        lines.append("links:  # from SAELens's registry")
        lines += [f"  {_scalar(k)}: {_scalar(v)}" for k, v in links.items()]
    lines += [
        "model:",
        f"  id: {_scalar(model_id)}  # URL slug of the model",
        f"  transformer_lens: {_scalar(model)}  # as SAELens's registry names it",
    ]
    lines += _corpus_lines(corpus, training_dataset(entry, sc.sets[0].saes[0].sae_id), manifest)
    lines.append("sets:  # one Set per hook kind; one SAE per layer (remove layers you do not want)")
    for s in sc.sets:
        lines.append(f"  - id: {_scalar(s.id)}")
        lines.append(f"    title: {_scalar(s.title)}")
        hook_note = "" if s.hook_from_id else "  # CHECK: inferred from the release name; each SAE's cfg.json names its hook (metadata.hook_name)"
        lines.append(f"    hook: {_scalar(s.hook_template)}{hook_note}")
        lines.append("    saes:")
        for sae in s.saes:
            lines.append(f"      - {{layer: {sae.layer}, sae_lens: {{release: {_scalar(sc.release)}, id: {_scalar(sae.sae_id)}}}}}")
    if sc.skipped:
        lines.append(f"# Not included (no layer in their registry id): {', '.join(sc.skipped[:5])}{' ...' if len(sc.skipped) > 5 else ''}")
    lines.append("# compute: {top_k: 20, logits: 10}  # optional; see the README for every setting")
    return "\n".join(lines) + "\n"


def write_new(path: Path, text: str) -> None:
    """Create `path` with `text`; InitError if it exists (never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise InitError(f"{path} already exists; nothing was written (remove it or pass --out with another path)") from None


def init_manifest(release: str, layers: str | None, out: Path | None, content: Path, corpus: str | None = None) -> tuple[Path, Scaffold]:
    """Write the manifest of registry release `release`; returns its path and what it holds."""
    sc = scaffold(release, parse_layers(layers) if layers else None)
    path = Path(out) if out is not None else Path(content) / "releases" / f"{slugify(release)}.yaml"
    if path.suffix != ".yaml":
        raise InitError(f"--out {path}: manifests end in .yaml; expected a path such as {path.with_suffix('.yaml')}")
    write_new(path, manifest_text(sc, path, corpus))
    return path, sc

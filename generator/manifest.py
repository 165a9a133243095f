"""Release manifests: YAML -> frozen dataclasses, with every problem reported as file:line:col.

The loader walks the composed YAML node tree (which keeps each node's position) instead of plain
Python values, so that every problem points at the exact key or value the user has to fix, and it
keeps going after a problem so that one run reports all of them.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sae_atlas.errors import InputError, Problem
from sae_atlas.ids import SLUG, SaeId, parse_feature_id


@dataclass(frozen=True)
class Mark:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NO_MARK = Mark("<none>", 1, 1)

# Positions of the individual keys/values of a manifest object, e.g. {"layer": Mark, "path": Mark}.
# Excluded from equality and hashing: moving a line in the manifest changes no object.
Marks = dict[str, Mark]


def _marks() -> Any:
    return field(default_factory=dict, compare=False, hash=False, repr=False)


class _HasMarks:
    mark: Mark
    marks: Marks

    def mark_of(self, key: str) -> Mark:
        """Position of `key`'s value in the manifest, or of the whole object when the key was absent."""
        return self.marks.get(key, self.mark)


@dataclass(frozen=True)
class ModelSpec(_HasMarks):
    id: str
    transformer_lens: str | None = None
    path: Path | None = None
    mark: Mark = NO_MARK
    marks: Marks = _marks()


@dataclass(frozen=True)
class CorpusSpec(_HasMarks):
    path: Path | None = None
    dataset: str | None = None
    prompts: int = 4096
    context: int = 128
    # Text prompts start with BOS, as SAELens's `prepend_bos` (the default) trains SAEs.
    prepend_bos: bool = True
    mark: Mark = NO_MARK
    marks: Marks = _marks()


@dataclass(frozen=True)
class SaeLensRef:
    release: str
    id: str


@dataclass(frozen=True)
class SaeSpec(_HasMarks):
    model_id: str
    set_id: str
    layer: int
    hook: str
    path: Path | None = None
    sae_lens: SaeLensRef | None = None
    mark: Mark = NO_MARK
    marks: Marks = _marks()

    @property
    def sae_id(self) -> SaeId:
        return SaeId(self.model_id, self.layer, self.set_id)

    @property
    def id(self) -> str:
        return str(self.sae_id)


@dataclass(frozen=True)
class SetSpec(_HasMarks):
    id: str
    title: str
    hook_template: str
    saes: tuple[SaeSpec, ...]
    description: str = ""
    mark: Mark = NO_MARK
    marks: Marks = _marks()


@dataclass(frozen=True)
class ListFeature:
    """One feature of a curated list, `MODEL@LAYER-SET:INDEX`, with its position in the manifest
    (the index is checked against the SAE's width at render time)."""

    sae_id: SaeId
    index: int
    mark: Mark = field(default=NO_MARK, compare=False, hash=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.sae_id}:{self.index}"


@dataclass(frozen=True)
class ListSpec(_HasMarks):
    """A curated feature list of a release (`lists:`), rendered as `RELEASE/lists/ID.html`."""

    id: str
    title: str
    features: tuple[ListFeature, ...]
    description: str = ""
    mark: Mark = NO_MARK
    marks: Marks = _marks()


@dataclass(frozen=True)
class ComputeSettings:
    top_k: int = 20
    intervals: int = 5
    per_interval: int = 5
    histogram_bins: int = 50
    logits: int = 10
    logit_histogram_bins: int = 50  # bins of a feature's logit effects over the whole vocabulary
    neighbours: int = 10
    context_before: int = 24
    context_after: int = 8
    umap_neighbours: int = 15
    umap_epochs: int = 200  # umap-learn's own default above 10,000 points (500 below)
    seed: int = 0
    ce_prompts: int = 32
    prompt_view: int = 256  # the first N corpus prompts get each token's strongest features (prompt view)
    prompt_features: int = 3  # features kept per token and SAE for the prompt view
    # Loss effects of the top examples (one ablated forward per example and feature): "auto" computes
    # them where the corpus passes ran on CUDA; true or false always or never.
    loss_effects: bool | str = field(default="auto", metadata={"kind": "auto_bool"})

    @property
    def window(self) -> int:
        return self.context_before + 1 + self.context_after


@dataclass(frozen=True)
class Release(_HasMarks):
    id: str
    title: str
    model: ModelSpec
    corpus: CorpusSpec
    sets: tuple[SetSpec, ...]
    source: Path
    description: str = ""
    authors: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    explanations: Path | None = None
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    lists: tuple[ListSpec, ...] = ()
    # A release mirrored from Neuronpedia's export (`source: {neuronpedia_export: DIR}`): its model,
    # sets and SAEs come from the export's folders, and it is imported instead of computed.
    neuronpedia_export: Path | None = None
    mark: Mark = NO_MARK
    marks: Marks = _marks()

    def saes(self) -> list[SaeSpec]:
        return [sae for s in self.sets for sae in s.saes]


# --- schema --------------------------------------------------------------------------------------

TOP_KEYS = ("release", "title", "description", "authors", "links", "model", "corpus", "sets", "explanations", "compute", "lists", "source")
SOURCE_KEYS = ("neuronpedia_export",)
MODEL_KEYS = ("id", "transformer_lens", "path")
CORPUS_KEYS = ("path", "dataset", "prompts", "context", "prepend_bos")
SET_KEYS = ("id", "title", "description", "hook", "saes")
SAE_KEYS = ("layer", "path", "sae_lens")
SAE_LENS_KEYS = ("release", "id")
LIST_KEYS = ("id", "title", "description", "features")
CORPUS_SUFFIXES = (".txt", ".jsonl")
# Smallest allowed value of each compute setting.
COMPUTE_MINIMUM = {
    "top_k": 1,
    "intervals": 1,
    "per_interval": 1,
    "histogram_bins": 1,
    "logits": 1,
    "logit_histogram_bins": 1,
    "neighbours": 1,
    "context_before": 0,
    "context_after": 0,
    "umap_neighbours": 2,
    "umap_epochs": 1,
    "seed": 0,
    "ce_prompts": 0,
    "prompt_view": 0,
    "prompt_features": 1,
}
# Top-level names the site itself uses; a release or model with one of these ids would overwrite them.
RESERVED_IDS = frozenset({"static", "corpus", "index.html", "search-index.js"})

_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

_INT = "tag:yaml.org,2002:int"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "expected one of: " + ", ".join(choices)


def _describe(node: Node) -> str:
    """What the user wrote, in words, for `X is <describe>; expected ...` messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = _short(node.value)
    if node.tag == _NULL:
        return "empty"
    if node.tag == _BOOL:
        return f"true/false ({value})"
    if node.tag in (_INT, _FLOAT):
        return f"the number {value}"
    return f"the text {value!r}"


def _short(text: str, limit: int = 40) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Reader:
    """Reads one manifest's node tree, collecting problems instead of stopping at the first."""

    def __init__(self, path: Path):
        self.file = str(path)
        self.base = path.resolve().parent
        self.problems: list[Problem] = []

    def mark(self, node: Node) -> Mark:
        return Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def problem(self, where: Node | Mark, message: str) -> None:
        m = where if isinstance(where, Mark) else self.mark(where)
        self.problems.append(Problem(m.file, m.line, m.col, message))

    # -- containers

    def mapping(
        self, node: Node, name: str, allowed: tuple[str, ...], required: tuple[str, ...], example: str
    ) -> dict[str, tuple[Node, Node]] | None:
        """Key -> (key node, value node). Reports unknown, duplicate and missing keys."""
        if not isinstance(node, MappingNode):
            self.problem(node, f"{name} is {_describe(node)}; expected a mapping, e.g. {example}")
            return None
        items: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.problem(key_node, f"{name} has a key that is {_describe(key_node)}; expected a plain key name")
                continue
            key = key_node.value
            if key not in allowed:
                self.problem(key_node, f"unknown key '{_short(key)}' in {name}; {_did_you_mean(key, allowed)}")
            elif key in items:
                first = self.mark(items[key][0])
                self.problem(key_node, f"duplicate key '{key}' in {name} (first at line {first.line}); expected each key once")
            else:
                items[key] = (key_node, value_node)
        for key in required:
            if key not in items:
                self.problem(node, f"{name} is missing '{key}'; expected {example}")
        return items

    def sequence(self, node: Node, name: str, example: str, allow_empty: bool = False) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.problem(node, f"{name} is {_describe(node)}; expected a list, e.g. {example}")
            return None
        if not node.value and not allow_empty:
            self.problem(node, f"{name} is an empty list; expected at least one entry, e.g. {example}")
            return None
        return list(node.value)

    # -- scalars

    def text(self, node: Node, name: str, expected: str = "text", allow_empty: bool = False) -> str | None:
        if not isinstance(node, ScalarNode):
            self.problem(node, f"{name} is {_describe(node)}; expected {expected}")
            return None
        if node.tag == _NULL or (not allow_empty and not node.value.strip()):
            if allow_empty:
                return ""
            self.problem(node, f"{name} is empty; expected {expected}")
            return None
        # The text exactly as written: `title: 2024` stays "2024" rather than becoming a number.
        return node.value

    def slug(self, node: Node, name: str, example: str) -> str | None:
        expected = f"a slug of lowercase letters, digits, '.', '_' or '-' that starts with a letter or digit, e.g. {example}"
        value = self.text(node, name, expected)
        if value is None:
            return None
        if not SLUG.fullmatch(value):
            self.problem(node, f"{name} '{_short(value)}' is not a valid id; expected {expected}")
            return None
        if value in RESERVED_IDS:
            self.problem(node, f"{name} '{value}' is reserved for the site's own files; expected another id")
            return None
        return value

    def integer(self, node: Node, name: str, minimum: int) -> int | None:
        expected = f"a whole number >= {minimum}"
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            self.problem(node, f"{name} is {_describe(node)}; expected {expected}")
            return None
        try:
            value = SafeConstructor().construct_yaml_int(node)
        except (ValueError, ConstructorError):
            self.problem(node, f"{name} is {_describe(node)}; expected {expected}")
            return None
        if value < minimum:
            self.problem(node, f"{name} is {value}; expected {expected}")
            return None
        return value

    def boolean(self, node: Node, name: str) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != _BOOL:
            self.problem(node, f"{name} is {_describe(node)}; expected true or false")
            return None
        return bool(SafeConstructor().construct_yaml_bool(node))

    def auto_boolean(self, node: Node, name: str) -> bool | str | None:
        """true, false or the text auto (decided where it is used)."""
        if isinstance(node, ScalarNode) and node.tag == _BOOL:
            return bool(SafeConstructor().construct_yaml_bool(node))
        if isinstance(node, ScalarNode) and node.tag == _STR and node.value == "auto":
            return "auto"
        self.problem(node, f"{name} is {_describe(node)}; expected auto, true or false")
        return None

    def path(self, node: Node, name: str, kind: str, expected: str) -> Path | None:
        """A path relative to the manifest's directory that must exist as a `file` or `dir`."""
        value = self.text(node, name, f"a path relative to the manifest, to {expected}")
        if value is None:
            return None
        try:
            resolved = (self.base / value).resolve()
            exists = resolved.exists()
        except (OSError, ValueError) as e:  # NUL bytes, names too long for the file system
            self.problem(node, f"{name} {_short(value, 80)!r} is not a usable path ({e}); expected {expected}")
            return None
        if not exists:
            self.problem(node, f"{name} '{_short(value, 80)}' does not exist (paths are relative to the manifest); expected {expected}")
            return None
        if kind == "file" and not resolved.is_file():
            self.problem(node, f"{name} '{_short(value, 80)}' is a directory; expected {expected}")
            return None
        if kind == "dir" and not resolved.is_dir():
            self.problem(node, f"{name} '{_short(value, 80)}' is a file; expected {expected}")
            return None
        return resolved

    def exactly_one(self, node: Node, items: dict[str, tuple[Node, Node]], name: str, a: str, b: str, example: str) -> str | None:
        """Which of two alternative keys is present; reports both/neither."""
        has_a, has_b = a in items, b in items
        if has_a and has_b:
            later = max(items[a][0], items[b][0], key=lambda n: n.start_mark.index)
            self.problem(later, f"{name} has both '{a}' and '{b}'; expected exactly one of them")
            return None
        if not has_a and not has_b:
            self.problem(node, f"{name} has neither '{a}' nor '{b}'; expected exactly one of them, e.g. {example}")
            return None
        return a if has_a else b


# --- one manifest --------------------------------------------------------------------------------


def _parse_yaml(path: Path, reader: _Reader) -> Node | None:
    try:
        raw = path.read_bytes()
    except OSError as e:
        reader.problem(Mark(reader.file, 1, 1), f"cannot read the manifest ({e.strerror}); expected a readable YAML file")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        reader.problem(Mark(reader.file, line, col), f"the manifest is not UTF-8 (byte 0x{raw[e.start]:02x}); expected UTF-8 text")
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = ": ".join(x for x in (e.context, e.problem) if x)
        reader.problem(Mark(reader.file, line, col), f"invalid YAML ({what}); expected valid YAML syntax")
        return None
    except yaml.YAMLError as e:
        reader.problem(Mark(reader.file, 1, 1), f"invalid YAML: {e}; expected a YAML mapping")
        return None
    if node is None:
        reader.problem(Mark(reader.file, 1, 1), "the manifest is empty; expected a mapping with release, model, corpus and sets")
        return None
    return node


def _read_model(r: _Reader, node: Node) -> ModelSpec | None:
    example = "model: {id: gpt2-small, transformer_lens: gpt2-small}"
    items = r.mapping(node, "model", MODEL_KEYS, ("id",), example)
    if items is None:
        return None
    marks = {k: r.mark(v) for k, (_, v) in items.items()}
    model_id = r.slug(items["id"][1], "model.id", "gpt2-small") if "id" in items else None
    source = r.exactly_one(node, items, "model", "transformer_lens", "path", "transformer_lens: gpt2-small or path: models/my-model")
    tl_name = model_path = None
    if source == "transformer_lens":
        tl_name = r.text(items["transformer_lens"][1], "model.transformer_lens", "a TransformerLens model name, e.g. gpt2-small")
    elif source == "path":
        model_path = r.path(items["path"][1], "model.path", "dir", "a model directory with config.json, model.safetensors and tokenizer files")
    if model_id is None or (tl_name is None and model_path is None):
        return None
    return ModelSpec(id=model_id, transformer_lens=tl_name, path=model_path, mark=r.mark(node), marks=marks)


def _read_corpus(r: _Reader, node: Node) -> CorpusSpec | None:
    example = "corpus: {path: corpus/stories.txt, prompts: 4096, context: 128}"
    items = r.mapping(node, "corpus", CORPUS_KEYS, (), example)
    if items is None:
        return None
    marks = {k: r.mark(v) for k, (_, v) in items.items()}
    ok = True
    prompts = context = None
    if "prompts" in items:
        prompts = r.integer(items["prompts"][1], "corpus.prompts", 1)
        ok &= prompts is not None
    if "context" in items:
        # A prompt is the BOS token plus at least one token of text.
        context = r.integer(items["context"][1], "corpus.context", 2)
        ok &= context is not None
    prepend_bos = True
    if "prepend_bos" in items:
        value = r.boolean(items["prepend_bos"][1], "corpus.prepend_bos")
        ok &= value is not None
        prepend_bos = bool(value)
    source = r.exactly_one(node, items, "corpus", "path", "dataset", "path: corpus/stories.txt or dataset: NAME")
    corpus_path = dataset = None
    if source == "path":
        corpus_path = _read_corpus_path(r, items["path"][1])
        ok &= corpus_path is not None
    elif source == "dataset":
        dataset = r.text(items["dataset"][1], "corpus.dataset", "a dataset name on the Hugging Face hub, e.g. roneneldan/TinyStories")
        ok &= dataset is not None
    else:
        ok = False
    if not ok:
        return None
    defaults = CorpusSpec()
    return CorpusSpec(
        path=corpus_path,
        dataset=dataset,
        prompts=prompts if prompts is not None else defaults.prompts,
        context=context if context is not None else defaults.context,
        prepend_bos=prepend_bos,
        mark=r.mark(node),
        marks=marks,
    )


def _read_corpus_path(r: _Reader, node: Node) -> Path | None:
    expected = "a local .txt or .jsonl file"
    value = r.text(node, "corpus.path", f"a path relative to the manifest, to {expected}")
    if value is None:
        return None
    if not value.endswith(CORPUS_SUFFIXES):
        hint = f"; for a hub dataset write `dataset: {value}`" if _HUB_NAME.fullmatch(value) else ""
        r.problem(node, f"corpus.path '{_short(value, 80)}' is not a .txt or .jsonl file; expected {expected}{hint}")
        return None
    return r.path(node, "corpus.path", "file", expected)


def _check_hook_template(r: _Reader, node: Node, template: str, name: str, n_saes: int) -> bool:
    example = "blocks.{layer}.hook_resid_pre"
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        r.problem(node, f"{name} '{_short(template, 60)}' is not a valid template ({e}); expected e.g. {example}")
        return False
    bad = [f for f in names if f != "layer"]
    if bad:
        r.problem(node, f"{name} '{_short(template, 60)}' has the placeholder {{{bad[0]}}}; expected only {{layer}}, e.g. {example}")
        return False
    try:
        template.format(layer=0)
    except (ValueError, TypeError) as e:
        r.problem(node, f"{name} '{_short(template, 60)}' cannot be filled in ({e}); expected e.g. {example}")
        return False
    if not names and n_saes > 1:
        r.problem(node, f"{name} '{_short(template, 60)}' has no {{layer}} but the set has {n_saes} SAEs; expected a template like {example}")
        return False
    return True


def _read_sae(
    r: _Reader, node: Node, name: str, model_id: str, set_id: str, hook_template: str | None
) -> tuple[SaeSpec | None, tuple[int, Mark] | None]:
    """The SAE entry, and its layer with position (known even when the rest of the entry is wrong)."""
    example = "{layer: 0, path: saes/res/0}"
    items = r.mapping(node, name, SAE_KEYS, ("layer",), example)
    if items is None:
        return None, None
    marks = {k: r.mark(v) for k, (_, v) in items.items()}
    layer = r.integer(items["layer"][1], f"{name}.layer", 0) if "layer" in items else None
    source = r.exactly_one(node, items, name, "path", "sae_lens", "path: saes/res/0 or sae_lens: {release: R, id: ID}")
    sae_path = ref = None
    if source == "path":
        sae_path = r.path(items["path"][1], f"{name}.path", "dir", "an SAE directory written by SAELens save_model (cfg.json + sae_weights.safetensors)")
    elif source == "sae_lens":
        ref_node = items["sae_lens"][1]
        ref_items = r.mapping(ref_node, f"{name}.sae_lens", SAE_LENS_KEYS, SAE_LENS_KEYS, "{release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}")
        if ref_items is not None:
            release = r.text(ref_items["release"][1], f"{name}.sae_lens.release", "a SAELens release name") if "release" in ref_items else None
            ref_id = r.text(ref_items["id"][1], f"{name}.sae_lens.id", "a SAE id within the SAELens release") if "id" in ref_items else None
            if release is not None and ref_id is not None:
                ref = SaeLensRef(release, ref_id)
                marks["sae_lens.release"] = r.mark(ref_items["release"][1])
                marks["sae_lens.id"] = r.mark(ref_items["id"][1])
    layer_at = (layer, marks["layer"]) if layer is not None else None
    if layer is None or (sae_path is None and ref is None) or hook_template is None:
        return None, layer_at
    return SaeSpec(
        model_id=model_id,
        set_id=set_id,
        layer=layer,
        hook=hook_template.format(layer=layer),
        path=sae_path,
        sae_lens=ref,
        mark=r.mark(node),
        marks=marks,
    ), layer_at


def _read_set(r: _Reader, node: Node, name: str, model_id: str | None) -> SetSpec | None:
    example = "{id: res, hook: 'blocks.{layer}.hook_resid_pre', saes: [...]}"
    items = r.mapping(node, name, SET_KEYS, ("id", "hook", "saes"), example)
    if items is None:
        return None
    marks = {k: r.mark(v) for k, (_, v) in items.items()}
    set_id = r.slug(items["id"][1], f"{name}.id", "res-jb") if "id" in items else None
    title = r.text(items["title"][1], f"{name}.title") if "title" in items else set_id
    description = r.text(items["description"][1], f"{name}.description", allow_empty=True) if "description" in items else ""
    entries = r.sequence(items["saes"][1], f"{name}.saes", "[{layer: 0, path: saes/res/0}]") if "saes" in items else None
    template = None
    if "hook" in items:
        template = r.text(items["hook"][1], f"{name}.hook", "a TransformerLens hook name template, e.g. blocks.{layer}.hook_resid_pre")
        if template is not None and not _check_hook_template(r, items["hook"][1], template, f"{name}.hook", len(entries or ())):
            template = None
    saes: list[SaeSpec] = []
    seen: dict[int, Mark] = {}
    complete = entries is not None
    for i, entry in enumerate(entries or ()):
        sae, layer_at = _read_sae(r, entry, f"{name}.saes[{i}]", model_id or "model", set_id or "set", template)
        if layer_at is not None:
            layer, mark = layer_at
            if layer in seen:
                sae_id = SaeId(model_id or "MODEL", layer, set_id or "SET")
                r.problem(mark, f"duplicate SAE id '{sae_id}' (layer {layer} first at line {seen[layer].line}); expected each layer once per set")
                complete = False
                continue
            seen[layer] = mark
        if sae is None:
            complete = False
            continue
        saes.append(sae)
    if set_id is None or title is None or description is None or template is None or model_id is None or not complete:
        return None
    return SetSpec(id=set_id, title=title, hook_template=template, saes=tuple(saes), description=description, mark=r.mark(node), marks=marks)


def _read_compute(r: _Reader, node: Node) -> ComputeSettings | None:
    names = tuple(f.name for f in fields(ComputeSettings))
    items = r.mapping(node, "compute", names, (), "compute: {top_k: 20}")
    if items is None:
        return None
    kinds = {f.name: f.metadata.get("kind") for f in fields(ComputeSettings)}
    values: dict[str, int | bool | str] = {}
    ok = True
    for key, (_, value_node) in items.items():
        if kinds[key] == "auto_bool":
            value = r.auto_boolean(value_node, f"compute.{key}")
        else:
            value = r.integer(value_node, f"compute.{key}", COMPUTE_MINIMUM[key])
        if value is None:
            ok = False
        else:
            values[key] = value
    return ComputeSettings(**values) if ok else None


def _read_authors(r: _Reader, node: Node) -> tuple[str, ...] | None:
    entries = r.sequence(node, "authors", "authors: [Jane Doe, John Roe]", allow_empty=True)
    if entries is None:
        return None
    names = [r.text(e, f"authors[{i}]", "an author name") for i, e in enumerate(entries)]
    return None if any(n is None for n in names) else tuple(n for n in names if n is not None)


def _read_links(r: _Reader, node: Node) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(node, MappingNode):
        r.problem(node, f"links is {_describe(node)}; expected a mapping of name to URL, e.g. links: {{paper: https://...}}")
        return None
    links: list[tuple[str, str]] = []
    ok = True
    for key_node, value_node in node.value:
        key = r.text(key_node, "a links key", "a link name, e.g. paper")
        url = r.text(value_node, f"links.{key}", "an http(s) URL")
        if key is None or url is None:
            ok = False
        elif not url.startswith(("https://", "http://")):
            r.problem(value_node, f"links.{key} '{_short(url, 60)}' is not an http(s) URL; expected a URL starting with https://")
            ok = False
        elif key in dict(links):
            r.problem(key_node, f"duplicate key '{key}' in links; expected each link name once")
            ok = False
        else:
            links.append((key, url))
    return tuple(links) if ok else None


def _read_lists(r: _Reader, node: Node, sets: list[SetSpec], model_id: str | None) -> tuple[ListSpec, ...] | None:
    """`lists:` entries; each feature must name an SAE of this release (its index is checked against
    the SAE's width at render time, when the width is known)."""
    example = "lists: [{id: induction, title: Induction features, features: [MODEL@LAYER-SET:INDEX]}]"
    entries = r.sequence(node, "lists", example, allow_empty=True)
    if entries is None:
        return None
    known = {sae.sae_id: sae for s in sets for sae in s.saes}
    lists: list[ListSpec] = []
    seen: dict[str, Mark] = {}
    ok = True
    for i, entry in enumerate(entries):
        name = f"lists[{i}]"
        items = r.mapping(entry, name, LIST_KEYS, ("id", "features"), "{id: induction, title: Induction features, features: [...]}")
        if items is None:
            ok = False
            continue
        marks = {k: r.mark(v) for k, (_, v) in items.items()}
        list_id = r.slug(items["id"][1], f"{name}.id", "induction") if "id" in items else None
        if list_id is not None:
            if list_id in seen:
                r.problem(items["id"][1], f"duplicate list id '{list_id}' (first at line {seen[list_id].line}); expected each list id once per release")
                list_id = None
            else:
                seen[list_id] = marks["id"]
        title = r.text(items["title"][1], f"{name}.title") if "title" in items else list_id
        description = r.text(items["description"][1], f"{name}.description", allow_empty=True) if "description" in items else ""
        features = _read_list_features(r, items["features"][1], f"{name}.features", known, model_id) if "features" in items else None
        if list_id is None or title is None or description is None or features is None:
            ok = False
            continue
        lists.append(ListSpec(list_id, title, features, description, mark=r.mark(entry), marks=marks))
    return tuple(lists) if ok else None


def _read_list_features(
    r: _Reader, node: Node, name: str, known: dict[SaeId, SaeSpec], model_id: str | None
) -> tuple[ListFeature, ...] | None:
    example = f"[{model_id or 'MODEL'}@0-res:12]"
    entries = r.sequence(node, name, example)
    if entries is None:
        return None
    out: list[ListFeature] = []
    first: dict[tuple[SaeId, int], Mark] = {}
    ok = True
    for j, item in enumerate(entries):
        where = f"{name}[{j}]"
        value = r.text(item, where, f"a feature id MODEL@LAYER-SET:INDEX, e.g. {example[1:-1]}")
        if value is None:
            ok = False
            continue
        try:
            sae_id, index = parse_feature_id(value.strip())
        except ValueError:
            r.problem(item, f"{where} '{_short(value, 60)}' is not a feature id; expected MODEL@LAYER-SET:INDEX, e.g. {example[1:-1]}")
            ok = False
            continue
        if known and sae_id not in known:
            choices = [str(k) for k in known]
            r.problem(item, f"{where} names the SAE '{_short(str(sae_id), 60)}', which this release does not define; {_did_you_mean(str(sae_id), choices)}")
            ok = False
            continue
        mark = r.mark(item)
        if (sae_id, index) in first:
            r.problem(item, f"{where} '{sae_id}:{index}' is listed twice (first at line {first[(sae_id, index)].line}); expected each feature once per list")
            ok = False
            continue
        first[(sae_id, index)] = mark
        out.append(ListFeature(sae_id, index, mark))
    return tuple(out) if ok else None


@dataclass
class _Parsed:
    """One manifest's result: the release (None when it has problems) and the marks of its ids."""

    release: Release | None
    problems: list[Problem]
    release_id: tuple[str, Mark] | None = None
    model_id: tuple[str, Mark] | None = None
    set_ids: list[tuple[str, Mark]] = field(default_factory=list)
    model_source: tuple[str | None, Path | None] | None = None


def _parse(path: Path) -> _Parsed:
    path = Path(path)
    r = _Reader(path)
    root = _parse_yaml(path, r)
    if root is None:
        return _Parsed(None, r.problems)
    example = "release: my-saes (see the manifest format in the README)"
    mirrored = isinstance(root, MappingNode) and _key_value(root, "source") is not None
    required = ("release", "source") if mirrored else ("release", "model", "corpus", "sets")
    items = r.mapping(root, "the manifest", TOP_KEYS, required, example)
    if items is None:
        return _Parsed(None, r.problems)
    if mirrored:
        return _parse_mirror(r, root, items, path)
    parsed = _Parsed(None, r.problems)
    marks = {k: r.mark(v) for k, (_, v) in items.items()}

    def optional(key: str, read: Callable[[Node], Any], default: Any) -> tuple[bool, Any]:
        if key not in items:
            return True, default
        value = read(items[key][1])
        return value is not None, value

    release_id = r.slug(items["release"][1], "release", "my-saes") if "release" in items else None
    if release_id is not None:
        parsed.release_id = (release_id, marks["release"])
    ok_title, title = optional("title", lambda n: r.text(n, "title"), release_id)
    ok_desc, description = optional("description", lambda n: r.text(n, "description", allow_empty=True), "")
    ok_authors, authors = optional("authors", lambda n: _read_authors(r, n), ())
    ok_links, links = optional("links", lambda n: _read_links(r, n), ())
    ok_expl, explanations = optional(
        "explanations",
        lambda n: r.path(n, "explanations", "any", "a .jsonl file of {sae, index, text, author, score}, Neuronpedia's explanation export or delphi's output folder"),
        None,
    )
    ok_compute, compute = optional("compute", lambda n: _read_compute(r, n), ComputeSettings())

    model = _read_model(r, items["model"][1]) if "model" in items else None
    if "model" in items and isinstance(items["model"][1], MappingNode):
        model_items = {k.value: v for k, v in items["model"][1].value if isinstance(k, ScalarNode)}
        if model is not None:
            parsed.model_id = (model.id, model.mark_of("id"))
            parsed.model_source = (model.transformer_lens, model.path)
        elif isinstance(model_items.get("id"), ScalarNode) and SLUG.fullmatch(model_items["id"].value or ""):
            parsed.model_id = (model_items["id"].value, r.mark(model_items["id"]))
    model_id = parsed.model_id[0] if parsed.model_id else None
    if release_id is not None and release_id == model_id:
        r.problem(marks["release"], f"release '{release_id}' has the same id as its model; expected distinct ids (releases and models share the site's top level)")

    corpus = _read_corpus(r, items["corpus"][1]) if "corpus" in items else None

    sets: list[SetSpec] = []
    sets_ok = False
    if "sets" in items:
        entries = r.sequence(items["sets"][1], "sets", "sets: [{id: res, hook: ..., saes: [...]}]")
        sets_ok = entries is not None
        seen: dict[str, Mark] = {}
        for i, entry in enumerate(entries or ()):
            spec = _read_set(r, entry, f"sets[{i}]", model_id)
            id_node = _key_value(entry, "id")
            if id_node is not None and isinstance(id_node, ScalarNode) and SLUG.fullmatch(id_node.value or ""):
                set_id, set_mark = id_node.value, r.mark(id_node)
                if set_id in seen:
                    r.problem(set_mark, f"duplicate set id '{set_id}' (first at line {seen[set_id].line}); expected each set id once per model")
                    sets_ok = False
                else:
                    seen[set_id] = set_mark
                    parsed.set_ids.append((set_id, set_mark))
            if spec is None:
                sets_ok = False
            else:
                sets.append(spec)

    ok_lists, lists = optional("lists", lambda n: _read_lists(r, n, sets if sets_ok else [], model_id), ())

    complete = (
        release_id is not None
        and all((ok_title, ok_desc, ok_authors, ok_links, ok_expl, ok_compute, sets_ok, ok_lists))
        and model is not None
        and corpus is not None
        and not r.problems
    )
    if complete:
        parsed.release = Release(
            id=release_id,
            title=title,
            model=model,
            corpus=corpus,
            sets=tuple(sets),
            source=path.resolve(),
            description=description,
            authors=authors,
            links=links,
            explanations=explanations,
            compute=compute,
            lists=lists,
            mark=r.mark(root),
            marks=marks,
        )
    return parsed


def _read_export(r: _Reader, node: Node) -> tuple[Path, ModelSpec, tuple[SetSpec, ...]] | None:
    """`source: {neuronpedia_export: DIR}`: the export folder and the model and sets its SAE
    folders (`{modelId}/{sourceId}/`, sourceId `{layer}-{setName}`) name."""
    from sae_atlas.sources.neuronpedia import find_saes

    items = r.mapping(node, "source", SOURCE_KEYS, SOURCE_KEYS, "{neuronpedia_export: neuronpedia/gpt2-small}")
    if items is None or "neuronpedia_export" not in items:
        return None
    value = items["neuronpedia_export"][1]
    folder = r.path(value, "source.neuronpedia_export", "dir", "a folder of Neuronpedia's export ({modelId}/{sourceId}/features/...)")
    if folder is None:
        return None
    found = find_saes(folder)
    models = sorted({s.model_id for s in found})
    if not found:
        r.problem(value, "source.neuronpedia_export has no SAE folder; expected {modelId}/{sourceId}/ folders with features/batch-N.jsonl.gz, sourceId LAYER-SET")
        return None
    if len(models) > 1:
        r.problem(value, f"source.neuronpedia_export holds SAEs of {len(models)} models ({', '.join(models)}); expected one model per release")
        return None
    if not SLUG.fullmatch(models[0]) or any(not SLUG.fullmatch(s.set_name) for s in found):
        r.problem(value, f"source.neuronpedia_export: model '{models[0]}' or a set name is not a slug; expected lowercase letters, digits and dashes")
        return None
    mark = r.mark(value)
    model = ModelSpec(id=models[0], mark=mark)
    sets = []
    for name in sorted({s.set_name for s in found}):
        saes = tuple(SaeSpec(models[0], name, s.layer, "", path=s.path, mark=mark) for s in found if s.set_name == name)
        sets.append(SetSpec(name, name, "", saes, mark=mark))
    return folder, model, tuple(sets)


def _parse_mirror(r: _Reader, root: Node, items: dict[str, tuple[Node, Node]], path: Path) -> _Parsed:
    """A release mirrored from Neuronpedia's export: model, corpus and sets come from the export."""
    parsed = _Parsed(None, r.problems)
    marks = {k: r.mark(v) for k, (_, v) in items.items()}
    for key in ("model", "corpus", "sets"):
        if key in items:
            r.problem(items[key][0], f"'{key}' with 'source'; expected one of them: a mirrored release takes its {key} from the export")
    release_id = r.slug(items["release"][1], "release", "my-saes") if "release" in items else None
    if release_id is not None:
        parsed.release_id = (release_id, marks["release"])
    read = {
        "title": lambda n: r.text(n, "title"),
        "description": lambda n: r.text(n, "description", allow_empty=True),
        "authors": lambda n: _read_authors(r, n),
        "links": lambda n: _read_links(r, n),
        "explanations": lambda n: r.path(n, "explanations", "any", "an explanations file or folder (see the README)"),
        "compute": lambda n: _read_compute(r, n),
    }
    values = {k: read[k](items[k][1]) for k in read if k in items}
    export = _read_export(r, items["source"][1])
    if "lists" in items:
        values["lists"] = _read_lists(r, items["lists"][1], list(export[2]) if export else [], export[1].id if export else None)
    if export is not None:
        parsed.model_id = (export[1].id, export[1].mark)
        parsed.set_ids = [(s.id, s.mark) for s in export[2]]
        if release_id == export[1].id:
            r.problem(marks["release"], f"release '{release_id}' has the same id as its model; expected distinct ids (releases and models share the site's top level)")
    if release_id is None or export is None or r.problems or any(v is None for v in values.values()):
        return parsed
    parsed.release = Release(
        id=release_id,
        title=values.get("title", release_id),
        model=export[1],
        corpus=CorpusSpec(mark=export[1].mark),
        sets=export[2],
        source=path.resolve(),
        description=values.get("description", ""),
        authors=values.get("authors", ()),
        links=values.get("links", ()),
        explanations=values.get("explanations"),
        compute=values.get("compute", ComputeSettings()),
        lists=values.get("lists", ()),
        neuronpedia_export=export[0],
        mark=r.mark(root),
        marks=marks,
    )
    return parsed


def _key_value(node: Node, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return v
    return None


def load_release(path: Path) -> Release:
    """Parse and validate one manifest; raises InputError with every problem found."""
    parsed = _parse(Path(path))
    if parsed.problems or parsed.release is None:
        raise InputError(parsed.problems or [Problem(str(path), 1, 1, "the manifest could not be read; expected a valid manifest")])
    return parsed.release


def _cross_file_problems(results: list[_Parsed]) -> list[Problem]:
    """Ids that collide between manifests: releases and models share the top level of the site."""
    problems: list[Problem] = []

    def at(mark: Mark, message: str) -> None:
        problems.append(Problem(mark.file, mark.line, mark.col, message))

    releases: dict[str, Mark] = {}
    for p in results:
        if p.release_id:
            rid, mark = p.release_id
            if rid in releases:
                at(mark, f"release id '{rid}' is also used by {releases[rid]}; expected release ids unique across manifests")
            else:
                releases[rid] = mark
    models: dict[str, tuple[Mark, tuple[str | None, Path | None] | None]] = {}
    for p in results:
        if p.model_id:
            mid, mark = p.model_id
            if mid in releases and releases[mid].file != mark.file:  # the same file is reported by _parse
                at(mark, f"model id '{mid}' is also a release id at {releases[mid]}; expected model and release ids to differ")
            if mid not in models:
                models[mid] = (mark, p.model_source)
            elif p.model_source and models[mid][1] and p.model_source != models[mid][1]:
                at(mark, f"model '{mid}' names a different model than at {models[mid][0]}; expected one transformer_lens name or path per model id")
    set_owner: dict[tuple[str, str], Mark] = {}
    for p in results:
        if not p.model_id:
            continue
        mid = p.model_id[0]
        for set_id, mark in p.set_ids:
            key = (mid, set_id)
            if key in set_owner and set_owner[key].file != mark.file:
                at(mark, f"set '{set_id}' of model '{mid}' is also defined at {set_owner[key]}; expected set ids unique per model across releases")
            set_owner.setdefault(key, mark)
    # A set directory MODEL/SET/ must not coincide with an SAE directory MODEL/LAYER-SET/.
    sae_dirs = {
        (sae.model_id, sae.sae_id.slug): sae.mark_of("layer")
        for p in results
        if p.release
        for sae in p.release.saes()
    }
    for (mid, set_id), mark in set_owner.items():
        if (mid, set_id) in sae_dirs:
            at(mark, f"set id '{set_id}' of model '{mid}' is also the directory of the SAE at {sae_dirs[(mid, set_id)]}; expected a set id that is not LAYER-SET")
    return problems


def load_content(content_dir: Path) -> list[Release]:
    """Every manifest in `content_dir/releases/`, sorted by id; all problems of all files at once."""
    releases_dir = Path(content_dir, "releases")
    if not releases_dir.is_dir():
        raise InputError([Problem(str(releases_dir), 1, 1, "no such directory; expected a content directory with releases/*.yaml")])
    files = sorted(releases_dir.glob("*.yaml"))
    problems: list[Problem] = [
        Problem(str(f), 1, 1, f"manifest has the extension '{f.suffix}'; expected '.yaml'")
        for f in sorted(releases_dir.glob("*.yml"))
    ]
    if not files and not problems:
        raise InputError([Problem(str(releases_dir), 1, 1, "no manifests found; expected releases/*.yaml")])
    results = [_parse(f) for f in files]
    for p in results:
        problems.extend(p.problems)
    problems.extend(_cross_file_problems(results))
    releases = sorted((p.release for p in results if p.release is not None), key=lambda r: r.id)
    if problems:
        error = InputError(problems)
        error.valid_releases = releases  # so the caller can still check their files in this run
        raise error
    return releases

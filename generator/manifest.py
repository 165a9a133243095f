"""Release manifests: YAML -> frozen dataclasses, with every problem reported as file:line:col."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from generator.errors import InputError, Problem
from generator.ids import SaeId


@dataclass(frozen=True)
class Mark:
    file: str
    line: int
    col: int


NO_MARK = Mark("<none>", 1, 1)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    transformer_lens: str | None = None
    path: Path | None = None
    mark: Mark = NO_MARK


@dataclass(frozen=True)
class CorpusSpec:
    path: Path | None = None
    dataset: str | None = None
    prompts: int = 4096
    context: int = 128
    mark: Mark = NO_MARK


@dataclass(frozen=True)
class SaeLensRef:
    release: str
    id: str


@dataclass(frozen=True)
class SaeSpec:
    model_id: str
    set_id: str
    layer: int
    hook: str
    path: Path | None = None
    sae_lens: SaeLensRef | None = None
    mark: Mark = NO_MARK

    @property
    def sae_id(self) -> SaeId:
        return SaeId(self.model_id, self.layer, self.set_id)

    @property
    def id(self) -> str:
        return str(self.sae_id)


@dataclass(frozen=True)
class SetSpec:
    id: str
    title: str
    hook_template: str
    saes: tuple[SaeSpec, ...]
    description: str = ""
    mark: Mark = NO_MARK


@dataclass(frozen=True)
class ComputeSettings:
    top_k: int = 20
    intervals: int = 5
    per_interval: int = 5
    histogram_bins: int = 50
    logits: int = 10
    neighbours: int = 10
    context_before: int = 24
    context_after: int = 8
    umap_neighbours: int = 15
    seed: int = 0
    ce_prompts: int = 32

    @property
    def window(self) -> int:
        return self.context_before + 1 + self.context_after


@dataclass(frozen=True)
class Release:
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

    def saes(self) -> list[SaeSpec]:
        return [sae for s in self.sets for sae in s.saes]


def load_release(path: Path) -> Release:
    """Minimal happy-path loader; full validation lives in the loader below once written."""
    path = Path(path)
    base = path.parent.resolve()
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    m = data["model"]
    model = ModelSpec(
        id=m["id"],
        transformer_lens=m.get("transformer_lens"),
        path=(base / m["path"]).resolve() if m.get("path") else None,
    )
    c = data["corpus"]
    corpus = CorpusSpec(
        path=(base / c["path"]).resolve() if "path" in c else None,
        dataset=c.get("dataset"),
        prompts=int(c.get("prompts", 4096)),
        context=int(c.get("context", 128)),
    )
    sets = []
    for s in data["sets"]:
        saes = []
        for e in s["saes"]:
            ref = e.get("sae_lens")
            saes.append(
                SaeSpec(
                    model_id=model.id,
                    set_id=s["id"],
                    layer=int(e["layer"]),
                    hook=s["hook"].format(layer=e["layer"]),
                    path=(base / e["path"]).resolve() if e.get("path") else None,
                    sae_lens=SaeLensRef(ref["release"], ref["id"]) if ref else None,
                )
            )
        sets.append(SetSpec(id=s["id"], title=s.get("title", s["id"]), hook_template=s["hook"], saes=tuple(saes)))
    return Release(
        id=data["release"],
        title=data.get("title", data["release"]),
        description=data.get("description", ""),
        authors=tuple(data.get("authors", [])),
        links=tuple((k, v) for k, v in (data.get("links") or {}).items()),
        model=model,
        corpus=corpus,
        sets=tuple(sets),
        explanations=(base / data["explanations"]).resolve() if data.get("explanations") else None,
        compute=ComputeSettings(**(data.get("compute") or {})),
        source=path.resolve(),
    )


def load_content(content_dir: Path) -> list[Release]:
    files = sorted(Path(content_dir, "releases").glob("*.yaml"))
    if not files:
        raise InputError([Problem(str(Path(content_dir, "releases")), 1, 1, "no manifests found; expected releases/*.yaml")])
    return sorted((load_release(f) for f in files), key=lambda r: r.id)

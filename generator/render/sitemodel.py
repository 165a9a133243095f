"""The finished site model: releases + cache -> plain dataclasses, before anything is written.

Building it checks that every SAE and corpus has a cache entry (one error naming all that are
missing), reads each entry's meta.json, and prepares everything pages and shards need.
"""

from __future__ import annotations

import os
import posixpath
from urllib.parse import quote
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from markupsafe import Markup

from sae_atlas import ids
from sae_atlas import stats as statistics
from sae_atlas.cache import DEFAULT_DTYPE, CacheStore, corpus_key, missing_entry_hint, sae_key, set_key
from sae_atlas.sources.explanations import Explanation, load_explanations
from sae_atlas.errors import AtlasError, InputError, Problem
from sae_atlas.ids import SaeId
from sae_atlas.manifest import ListSpec, Release, SaeSpec, SetSpec
from sae_atlas.render import prompts, shards
from sae_atlas.render.markup import clean_text, plain_text, render_markdown, safe_href
from sae_atlas.sources.configs import pretrained_sae_entry

NEURONPEDIA = "https://www.neuronpedia.org/"
STAT_KEYS = ("l0", "dead", "dense", "explained_variance", "mse", "ce_loss_clean", "ce_loss_spliced", "ce_loss_delta")


@dataclass(frozen=True)
class Link:
    title: str
    href: str


@dataclass
class SaeModel:
    spec: SaeSpec
    release_id: str
    set_title: str
    cache_key: str
    entry_dir: Path
    meta: dict
    corpus_key: str
    corpus_label: str
    stats: dict
    snippet: str
    shard_size: int
    explanations: dict[int, list[dict]] = field(default_factory=dict)
    cross: shards.CrossNeighbours | None = None
    neuronpedia: str | None = None  # the SAE's Neuronpedia page, where SAELens's registry names one
    prompt_viewed: int = 0  # prompts with per-token features (the prompt view's P)
    prompts_page: str = ""  # site path of the prompt view covering this SAE's corpus

    @property
    def embed_page(self) -> str:
        return posixpath.join(posixpath.dirname(self.page), "embed.html")

    @property
    def hook_in(self) -> str:
        """The hook the SAE reads (encodes)."""
        return str(self.meta.get("hook") or self.spec.hook)

    @property
    def hook_out(self) -> str:
        """The hook the SAE writes (reconstructs): another hook for transcoders, else `hook_in`."""
        return str(self.meta.get("hook_out") or self.hook_in)

    @property
    def sae_id(self) -> SaeId:
        return self.spec.sae_id

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def page(self) -> str:
        return ids.sae_path(self.sae_id)

    @property
    def data_dir(self) -> str:
        return posixpath.join(posixpath.dirname(self.page), "data")

    @property
    def d_sae(self) -> int:
        return int(self.meta.get("d_sae") or 0)


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    label: str
    href: str


@dataclass(frozen=True)
class Chart:
    """A small server-rendered line chart (SVG coordinates precomputed)."""

    title: str
    unit: str
    width: int
    height: int
    polyline: str
    points: tuple[ChartPoint, ...]
    y_min: str
    y_max: str
    x_labels: tuple[tuple[float, str], ...]


@dataclass
class SetModel:
    spec: SetSpec
    release_id: str
    model_id: str
    saes: list[SaeModel]
    description_html: Markup
    charts: list[Chart] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def page(self) -> str:
        return ids.set_path(self.model_id, self.spec.id)


class _SetsOfSaes:
    """Shared by pages that list Sets: their SAEs in order and the feature count."""

    sets: list[SetModel]

    @property
    def saes(self) -> list[SaeModel]:
        return [sae for s in self.sets for sae in s.saes]

    @property
    def n_features(self) -> int:
        return sum(sae.d_sae for sae in self.saes)


@dataclass
class ListModel:
    """A curated feature list: its features resolved to the SAEs that hold them."""

    spec: ListSpec
    release_id: str
    description_html: Markup
    features: list[tuple[SaeModel, int]]

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def page(self) -> str:
        return ids.list_path(self.release_id, self.spec.id)

    @property
    def data_path(self) -> str:
        return self.page.removesuffix(".html") + ".js"


@dataclass
class ReleaseModel(_SetsOfSaes):
    release: Release
    description_html: Markup
    links: list[Link]
    sets: list[SetModel]
    lists: list[ListModel] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.release.id

    @property
    def page(self) -> str:
        return ids.release_path(self.release.id)



@dataclass
class ModelModel(_SetsOfSaes):
    id: str
    releases: list[ReleaseModel]

    @property
    def sets(self) -> list[SetModel]:
        return [s for r in self.releases for s in r.sets]



@dataclass
class CorpusModel:
    key: str
    entry_dir: Path
    prompts: int
    context: int
    prompts_per_shard: int

    @property
    def site_dir(self) -> str:
        return f"corpus/{self.key}"


@dataclass
class PromptViewModel:
    """One prompt view page: a model's SAEs over one corpus (every release of the model whose
    corpus is that one), in layer order, then by set."""

    model_id: str
    corpus_key: str
    page: str  # MODEL/prompts.html; MODEL/prompts-RELEASE.html for a model's further corpora
    release_ids: list[str]
    saes: list[SaeModel]

    @property
    def data_dir(self) -> str:
        return self.page.removesuffix(".html")

    @property
    def viewed(self) -> int:
        """Prompts with per-token features in at least one SAE (0 .. viewed-1 get a data file)."""
        return max((sae.prompt_viewed for sae in self.saes), default=0)


@dataclass
class SiteModel:
    releases: list[ReleaseModel]
    models: list[ModelModel]
    corpora: dict[str, CorpusModel]
    prompt_views: list[PromptViewModel] = field(default_factory=list)

    @property
    def saes(self) -> list[SaeModel]:
        return [sae for r in self.releases for sae in r.saes]

    def job(self, sae: SaeModel) -> shards.SaeDataJob:
        corpus = self.corpora[sae.corpus_key]
        settings = sae.meta.get("settings") or {}
        set_model = next(s for r in self.releases for s in r.sets for x in s.saes if x is sae)
        return shards.SaeDataJob(
            sae_id=sae.id,
            entry_dir=str(sae.entry_dir),
            corpus_dir=str(corpus.entry_dir),
            data_dir=sae.data_dir,
            corpus_href=ids.relative(sae.page, corpus.site_dir + "/"),
            shard_size=sae.shard_size,
            prompts_per_shard=corpus.prompts_per_shard,
            context_before=int(settings.get("context_before", 0)),
            context_after=int(settings.get("context_after", 0)),
            layers=tuple((other.id, ids.relative(sae.page, other.page)) for other in set_model.saes),
            explanations=sae.explanations,
            cross=sae.cross,
            neurons=sae.meta.get("neurons"),
        )


    def prompt_view_jobs(self, view: PromptViewModel) -> list:
        saes = tuple(
            prompts.PromptSae(
                sae_id=sae.id,
                href=sibling_link(view.page, sae.page),
                entry_dir=str(sae.entry_dir),
                viewed=sae.prompt_viewed,
                explanations={i: e[0]["text"] for i, e in sae.explanations.items() if e},
            )
            for sae in view.saes
        )
        return prompts.prompt_view_jobs(view.data_dir, str(self.corpora[view.corpus_key].entry_dir), saes, view.viewed)

    def list_job(self, r: ReleaseModel, lst: ListModel):
        settings = r.release.compute
        corpus = self.corpora[corpus_key(r.release)]
        return prompts.ListJob(
            path=lst.data_path,
            list_id=lst.id,
            title=lst.spec.title,
            corpus_href=ids.relative(lst.page, corpus.site_dir + "/"),
            prompts_per_shard=corpus.prompts_per_shard,
            context_before=settings.context_before,
            context_after=settings.context_after,
            features=tuple(prompts.ListFeatureJob(self.job(sae), ids.relative(lst.page, sae.page), i) for sae, i in lst.features),
        )


def _explanation_records(entries: list) -> list[dict]:
    records = []
    for e in entries:
        html = str(render_markdown(str(e.text or "")))
        records.append(
            {
                "html": html,
                "text": plain_text(html),
                "author": clean_text(e.author) if e.author else None,
                "score": e.score,
                **({"scores": [[clean_text(name), value] for name, value in e.scores]} if e.scores else {}),
            }
        )
    return records


def _snippet(release: Release, spec: SaeSpec) -> str:
    if release.neuronpedia_export is not None:
        return ""
    if spec.sae_lens is not None:
        call = f'SAE.from_pretrained(release="{spec.sae_lens.release}", sae_id="{spec.sae_lens.id}")'
    else:
        # Relative to the directory holding the content dir (the repository root, where one runs commands).
        root = release.source.parent.parent.parent
        local = Path(os.path.relpath(spec.path, root)).as_posix() if spec.path else spec.id
        call = f'SAE.load_from_disk("{local}")'
    return clean_text(f"from sae_lens import SAE\n\nsae = {call}")


def neuronpedia_href(spec: SaeSpec) -> str | None:
    """Link to the SAE's page on Neuronpedia when SAELens's registry gives its id (a link only:
    the site itself never requests anything from another host)."""
    found = pretrained_sae_entry(spec.sae_lens.release, spec.sae_lens.id) if spec.sae_lens is not None else None
    np_id = found[1].get("neuronpedia") if found else None
    return safe_href(NEURONPEDIA + quote(str(np_id), safe="/")) if np_id else None


def mirrored_href(spec: SaeSpec) -> str | None:
    """Link to the Neuronpedia page a mirrored SAE comes from: `MODEL/SOURCE` (its export folder)."""
    return safe_href(NEURONPEDIA + quote(f"{spec.model_id}/{Path(spec.path).name}", safe="/")) if spec.path else None


def _corpus_label(release: Release) -> str:
    c = release.corpus
    if release.neuronpedia_export is not None:
        return clean_text(f"Neuronpedia's activation rows ({release.neuronpedia_export.name}), one prompt each")
    name = c.path.name if c.path is not None else str(c.dataset)
    return clean_text(f"{name} · {c.prompts:,} prompts × {c.context} tokens")


def _mirrored_explanations(store: CacheStore, release: Release, dtype: str, by_sae: dict[str, dict[int, list]]) -> None:
    """The explanations a mirrored SAE's entry holds (its export's explanation rows); the
    manifest's explanations file replaces them feature by feature."""
    for spec in release.saes():
        path = store.sae_dir(sae_key(release, spec, dtype)) / "explanations.json"
        if path.is_file():
            for e in orjson.loads(path.read_bytes()):
                by_sae[spec.id].setdefault(e["index"], []).append(Explanation(e["text"], e["author"], e["score"], tuple(map(tuple, e["scores"]))))


def _stats(meta: dict) -> dict:
    raw = meta.get("stats") or {}
    stats = {k: raw.get(k) for k in STAT_KEYS}
    d_sae = meta.get("d_sae") or 0
    dead = raw.get("dead")
    stats["dead_pct"] = 100.0 * dead / d_sae if isinstance(dead, (int, float)) and d_sae else None
    return stats


def _cross_neighbours(store: CacheStore, release: Release, set_spec: SetSpec, saes: list[SaeModel]) -> None:
    """Attach to each SAE its closest decoder direction in the previous and next SAE of the Set
    (by layer), where the cache has the Set's cross-layer neighbours; otherwise features get `xnb: []`.
    Only adjacent layers: all layers x 3 would add ~2 KB per feature to the site."""
    entry = store.set_entry(set_key(release, set_spec))
    if entry is None:
        return
    position = {sae_id: p for p, sae_id in enumerate(entry.meta.get("sae_ids", []))}
    for n, sae in enumerate(saes):
        a = position.get(sae.id)
        if a is None or f"index_{a}" not in entry.arrays:
            continue
        adjacent = [saes[m] for m in (n - 1, n + 1) if 0 <= m < len(saes) and saes[m].id in position]
        if not adjacent:
            continue
        columns = [position[other.id] for other in adjacent]
        index = np.asarray(entry[f"index_{a}"][:, columns, 0])
        cosine = np.asarray(entry[f"cosine_{a}"][:, columns, 0])
        targets = tuple((other.id, sibling_link(sae.page, other.page)) for other in adjacent)
        sae.cross = shards.CrossNeighbours(targets, np.ascontiguousarray(index), np.ascontiguousarray(cosine))


def sibling_link(from_page: str, to_page: str) -> str:
    """Shortest page-relative link between two site paths (shard records repeat it per feature)."""
    return posixpath.relpath(to_page, posixpath.dirname(from_page) or ".")


def build_site_model(releases: list[Release], cache: Path, dtype: str = DEFAULT_DTYPE) -> SiteModel:
    """The site model of the SAE entries computed with model dtype `dtype`."""
    store = CacheStore(Path(cache))
    missing: list[str] = []
    corpora: dict[str, CorpusModel] = {}
    release_models: list[ReleaseModel] = []
    for release in sorted(releases, key=lambda r: r.id):
        ckey = corpus_key(release)
        if ckey not in corpora:
            entry = store.corpus(ckey)
            if entry is None or not (store.corpus_dir(ckey) / "vocab.json").exists():
                missing.append(f"corpus of release {release.id}")
            else:
                n_prompts, context = (int(x) for x in entry["tokens"].shape)
                corpora[ckey] = CorpusModel(ckey, entry.path, n_prompts, context, shards.choose_prompts_per_shard(context))
        by_sae: dict[str, dict[int, list]] = defaultdict(dict)
        if release.neuronpedia_export is not None:
            _mirrored_explanations(store, release, dtype, by_sae)
        if release.explanations:
            for (sae_name, index), entries in load_explanations(release.explanations, release.saes()).items():
                by_sae[sae_name][index] = entries
        settings = release.compute
        shard_size = shards.choose_shard_size(
            settings.top_k + settings.intervals * settings.per_interval, settings.logits, settings.neighbours
        )
        set_models = []
        for set_spec in release.sets:
            sae_models = []
            for spec in sorted(set_spec.saes, key=lambda s: s.layer):
                key = sae_key(release, spec, dtype)
                entry = store.sae_entry(key)
                if entry is None:
                    missing.append(f"SAE {spec.id} (release {release.id}){missing_entry_hint(store, release, spec, dtype)}")
                    continue
                outdated = statistics.stale(entry.meta, release.compute)
                if outdated:
                    names = ", ".join(s.name for s in outdated)
                    missing.append(f"SAE {spec.id} (release {release.id}): its {names} predate the manifest's settings or this version")
                    continue
                sae_models.append(
                    SaeModel(
                        spec=spec,
                        release_id=release.id,
                        set_title=set_spec.title,
                        cache_key=key,
                        entry_dir=entry.path,
                        meta=entry.meta,
                        corpus_key=ckey,
                        corpus_label=_corpus_label(release),
                        stats=_stats(entry.meta),
                        snippet=_snippet(release, spec),
                        neuronpedia=neuronpedia_href(spec) if release.neuronpedia_export is None else mirrored_href(spec),
                        shard_size=shard_size,
                        prompt_viewed=int(entry["prompt_feature"].shape[0]) if "prompt_feature" in entry.arrays else 0,
                        explanations={
                            index: _explanation_records(entries) for index, entries in sorted(by_sae.get(spec.id, {}).items())
                        },
                    )
                )
            _cross_neighbours(store, release, set_spec, sae_models)
            set_model = SetModel(set_spec, release.id, release.model.id, sae_models, render_markdown(set_spec.description))
            set_model.charts = set_charts(set_model)
            set_models.append(set_model)
        links = [Link(clean_text(name), href) for name, url in release.links if (href := safe_href(url)) is not None]
        release_models.append(ReleaseModel(release, render_markdown(release.description), links, set_models))
    if missing:
        raise AtlasError(
            "no computed statistics in the cache for "
            + "; ".join(missing)
            + f" (cache {cache}, --dtype {dtype}); run `sae-atlas compute` first"
        )
    _resolve_lists(release_models)
    by_model: dict[str, list[ReleaseModel]] = defaultdict(list)
    for r in release_models:
        by_model[r.release.model.id].append(r)
    models = [ModelModel(model_id, rs) for model_id, rs in sorted(by_model.items())]
    return SiteModel(release_models, models, dict(sorted(corpora.items())), _prompt_views(models))


def _resolve_lists(release_models: list[ReleaseModel]) -> None:
    """Attach each release's lists, their features resolved to SAE models; an index past an SAE's
    width is an input error at the feature's position in the manifest."""
    problems: list[Problem] = []
    for r in release_models:
        by_id = {sae.id: sae for sae in r.saes}
        for spec in r.release.lists:
            features = []
            for f in spec.features:
                sae = by_id[str(f.sae_id)]
                if f.index >= sae.d_sae:
                    m = f.mark
                    problems.append(Problem(m.file, m.line, m.col, f"feature {f.id} of list '{spec.id}' is out of range: "
                                            f"{sae.id} has {sae.d_sae:,} features; expected an index from 0 to {sae.d_sae - 1:,}"))
                    continue
                features.append((sae, f.index))
            r.lists.append(ListModel(spec, r.id, render_markdown(spec.description), features))
    if problems:
        raise InputError(problems)


def _prompt_views(models: list[ModelModel]) -> list[PromptViewModel]:
    """One prompt view per (model, corpus): `MODEL/prompts.html` for the corpus of the model's first
    release (by id), `MODEL/prompts-RELEASE.html` for each further corpus (RELEASE: its first release)."""
    views = []
    for m in models:
        groups: dict[str, list[ReleaseModel]] = {}
        for r in sorted(m.releases, key=lambda r: r.id):
            groups.setdefault(corpus_key(r.release), []).append(r)
        for n, (key, rs) in enumerate(groups.items()):
            page = ids.prompts_path(m.id, None if n == 0 else rs[0].id)
            saes = sorted((sae for r in rs for sae in r.saes), key=lambda sae: (sae.spec.layer, sae.spec.set_id))
            for sae in saes:
                sae.prompts_page = page
            views.append(PromptViewModel(m.id, key, page, [r.id for r in rs], saes))
    return views


# --- Set charts -----------------------------------------------------------------------------------
CHART_W, CHART_H, PAD_L, PAD_R, PAD_T, PAD_B = 260, 120, 40, 10, 10, 22


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _chart(title: str, unit: str, set_model: SetModel, values: list[tuple[SaeModel, float | None]]) -> Chart | None:
    known = [(sae, v) for sae, v in values if isinstance(v, (int, float)) and np.isfinite(v)]
    if not known:
        return None
    layers = [sae.spec.layer for sae, _ in known]
    ys = [float(v) for _, v in known]
    x_lo, x_hi = min(layers), max(layers)
    y_lo, y_hi = min(0.0, min(ys)), max(ys)
    if y_hi <= y_lo:
        y_hi = y_lo + 1.0
    plot_w, plot_h = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B

    def sx(layer: int) -> float:
        return round(PAD_L + (plot_w / 2 if x_hi == x_lo else (layer - x_lo) / (x_hi - x_lo) * plot_w), 1)

    def sy(y: float) -> float:
        return round(PAD_T + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h, 1)

    points = tuple(
        ChartPoint(sx(sae.spec.layer), sy(v), f"{sae.id}: {_fmt(v)}{unit}", ids.relative(set_model.page, sae.page))
        for sae, v in zip((s for s, _ in known), ys)
    )
    return Chart(
        title=title,
        unit=unit,
        width=CHART_W,
        height=CHART_H,
        polyline=" ".join(f"{p.x},{p.y}" for p in points),
        points=points,
        y_min=_fmt(y_lo),
        y_max=_fmt(y_hi),
        x_labels=tuple((sx(layer), str(layer)) for layer in sorted(set(layers))),
    )


def set_charts(set_model: SetModel) -> list[Chart]:
    saes = set_model.saes
    charts = [
        _chart("L0", "", set_model, [(s, s.stats.get("l0")) for s in saes]),
        _chart("Dead features", "%", set_model, [(s, s.stats.get("dead_pct")) for s in saes]),
        _chart(
            "Explained variance",
            "%",
            set_model,
            [(s, None if s.stats.get("explained_variance") is None else 100.0 * s.stats["explained_variance"]) for s in saes],
        ),
    ]
    return [c for c in charts if c is not None]

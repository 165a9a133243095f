"""HTML pages: one Jinja2 Environment (templates parsed once), user theme first, default second.

Each page gets `title`, `root`, `page_kind`, `crumbs` and its own objects (see docs/ARCHITECTURE.md,
Templates). Links are page-relative and built with `sae_atlas.ids`.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import jinja2

from sae_atlas import ids
from sae_atlas.render.sitemodel import ListModel, PromptViewModel, ReleaseModel, SaeModel, SetModel, SiteModel, sibling_link
from sae_atlas.render.write import SiteWriter

def _default_theme() -> Path:
    """themes/default: inside the installed package (sae_atlas/themes/default), or beside the code
    in a checkout (generator/ and themes/ side by side)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "themes" / "default"
    return installed if installed.is_dir() else package.parent / "themes" / "default"


DEFAULT_THEME = _default_theme()


def theme_dirs(theme: Path | None) -> list[Path]:
    """Theme directories, highest priority first."""
    dirs = [Path(theme)] if theme is not None else []
    return dirs + [DEFAULT_THEME]


def make_environment(theme: Path | None) -> jinja2.Environment:
    loaders = [jinja2.FileSystemLoader(str(d / "templates")) for d in theme_dirs(theme) if (d / "templates").is_dir()]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["thousands"] = lambda n: f"{int(n):,}" if isinstance(n, (int, float)) else "—"
    env.filters["sig"] = _sig
    env.filters["pct"] = lambda v: f"{v:.1f}%" if isinstance(v, (int, float)) else "—"
    return env


def _sig(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


# The parts of static/app.js in load order after core.js; then any other part (by path), the panes
# (app/panes/, by path), boot.js last. docs/ARCHITECTURE.md, "Front end".
APP_FIRST = "core.js"
APP_ORDER = ("charts.js", "search.js", "map.js", "list.js", "lookup.js", "sae-page.js")
APP_LAST = "boot.js"


def static_files(theme: Path | None) -> dict[str, Path]:
    """site path under static/ -> source file; a user theme file replaces the default one of the same name.
    The parts under static/app/ are not copied: they make up static/app.js (app_js)."""
    files: dict[str, Path] = {}
    for d in reversed(theme_dirs(theme)):
        static = d / "static"
        if static.is_dir():
            for path in sorted(static.rglob("*")):
                rel = path.relative_to(static).as_posix()
                if path.is_file() and not rel.startswith("app/"):
                    files["static/" + rel] = path
    return dict(sorted(files.items()))


def _app_rank(rel: str) -> tuple[int, int, str]:
    if rel == APP_FIRST:
        return (0, 0, rel)
    if rel in APP_ORDER:
        return (1, APP_ORDER.index(rel), rel)
    if rel == APP_LAST:
        return (4, 0, rel)
    return (3 if rel.startswith("panes/") else 2, 0, rel)


def app_parts(theme: Path | None) -> list[tuple[str, Path]]:
    """(path under static/app/, source file) of every front-end part in load order; a user theme's part
    replaces the default one at the same path, a new path adds a part."""
    parts: dict[str, Path] = {}
    for d in reversed(theme_dirs(theme)):
        app = d / "static" / "app"
        if app.is_dir():
            for path in app.rglob("*.js"):
                if path.is_file():
                    parts[path.relative_to(app).as_posix()] = path
    return sorted(parts.items(), key=lambda item: _app_rank(item[0]))


def app_js(theme: Path | None) -> bytes:
    """static/app.js: the parts (app_parts) joined, each after a comment line naming it, so that every
    page loads the whole front end with one classic script."""
    out = []
    for rel, path in app_parts(theme):
        data = path.read_bytes()
        out.append(b"/* ---- app/%s ---- */\n" % rel.encode("utf-8") + data + (b"" if data.endswith(b"\n") else b"\n"))
    return b"".join(out)


def _root(page: str) -> str:
    return ids.relative(page, "")


def _crumbs(page: str, trail: list[tuple[str, str]]) -> list[dict]:
    return [{"title": "Home", "href": ids.relative(page, ids.home_path())}] + [
        {"title": title, "href": ids.relative(page, path)} for title, path in trail
    ]


def _sae_row(page: str, sae: SaeModel) -> dict:
    st = sae.stats
    return {
        "id": sae.id,
        "href": ids.relative(page, sae.page),
        "layer": sae.spec.layer,
        "hook": sae.spec.hook,
        "architecture": sae.meta.get("architecture"),
        "d_sae": sae.d_sae,
        "l0": st.get("l0"),
        "dead_pct": st.get("dead_pct"),
        "explained_variance": st.get("explained_variance"),
    }


def _set_entry(page: str, s: SetModel) -> dict:
    return {
        "id": s.id,
        "title": s.spec.title,
        "model": s.model_id,
        "href": ids.relative(page, s.page),
        "saes": [_sae_row(page, sae) for sae in s.saes],
        "n_saes": len(s.saes),
        "n_features": sum(sae.d_sae for sae in s.saes),
    }


def _release_entry(page: str, r: ReleaseModel) -> dict:
    return {
        "id": r.id,
        "title": r.release.title,
        "href": ids.relative(page, r.page),
        "model": r.release.model.id,
        "authors": list(r.release.authors),
        "n_sets": len(r.sets),
        "n_saes": len(r.saes),
        "n_features": r.n_features,
    }


def home_context(site: SiteModel) -> dict:
    page = ids.home_path()
    return {
        "title": "SAE releases",
        "root": _root(page),
        "page_kind": "home",
        "crumbs": _crumbs(page, []),
        "releases": [_release_entry(page, r) for r in site.releases],
        "models": [
            {
                "id": m.id,
                "releases": [_release_entry(page, r) for r in m.releases],
                "sets": [_set_entry(page, s) for s in m.sets],
                "n_sets": len(m.sets),
                "n_saes": len(m.saes),
                "n_features": m.n_features,
            }
            for m in site.models
        ],
    }


def release_context(r: ReleaseModel) -> dict:
    page = r.page
    return {
        "title": r.release.title,
        "root": _root(page),
        "page_kind": "release",
        "crumbs": _crumbs(page, [(r.release.title, page)]),
        "release": {
            **_release_entry(page, r),
            "description_html": r.description_html,
            "links": [{"title": link.title, "href": link.href} for link in r.links],
        },
        "sets": [_set_entry(page, s) for s in r.sets],
        "prompts_href": ids.relative(page, r.saes[0].prompts_page) if r.saes and r.saes[0].prompts_page else "",
        "lists": [
            {"id": lst.id, "title": lst.spec.title, "href": ids.relative(page, lst.page), "n_features": len(lst.features)}
            for lst in r.lists
        ],
    }


def list_context(r: ReleaseModel, lst: ListModel) -> dict:
    page = lst.page
    prompts_page = lst.features[0][0].prompts_page if lst.features else ""
    return {
        "title": lst.spec.title,
        "root": _root(page),
        "page_kind": "list",
        "crumbs": _crumbs(page, [(r.release.title, r.page), (lst.spec.title, page)]),
        "list": {
            "id": lst.id,
            "title": lst.spec.title,
            "description_html": lst.description_html,
            "n_features": len(lst.features),
            "data_href": posixpath.basename(lst.data_path),
            "prompts_href": ids.relative(page, prompts_page) if prompts_page else "",
        },
        "release": _release_entry(page, r),
    }


def prompts_context(site: SiteModel, view: PromptViewModel) -> dict:
    page = view.page
    corpus = site.corpora[view.corpus_key]
    releases = [r for r in site.releases if r.id in view.release_ids]
    setting = "compute.prompt_view"
    return {
        "title": f"{view.model_id} · prompts",
        "root": _root(page),
        "page_kind": "prompts",
        "crumbs": _crumbs(page, [(f"{view.model_id} prompts", page)]),
        "view": {
            "model": view.model_id,
            "n_prompts": corpus.prompts,
            "context": corpus.context,
            "viewed": view.viewed,
            "setting": setting,
            "corpus_href": ids.relative(page, corpus.site_dir + "/"),
            "prompts_per_shard": corpus.prompts_per_shard,
            "data_href": posixpath.basename(view.data_dir) + "/",
            "n_saes": len(view.saes),
            "releases": [{"id": r.id, "title": r.release.title, "href": ids.relative(page, r.page)} for r in releases],
        },
    }


def embed_context(site: SiteModel, sae: SaeModel) -> dict:
    page = sae.embed_page
    corpus = site.corpora[sae.corpus_key]
    settings = sae.meta.get("settings") or {}
    return {
        "title": sae.id,
        "root": _root(page),
        "page_kind": "embed",
        "embed": {
            "sae": sae.id,
            "d_sae": sae.d_sae,
            "shard_size": sae.shard_size,
            "data_href": "data/",
            "corpus_href": ids.relative(page, corpus.site_dir + "/"),
            "prompts_per_shard": corpus.prompts_per_shard,
            "context_before": int(settings.get("context_before", 0)),
            "context_after": int(settings.get("context_after", 0)),
            "sae_href": posixpath.basename(sae.page),
            "prompts_href": sibling_link(page, sae.prompts_page) if sae.prompts_page else "",
        },
    }


def set_context(r: ReleaseModel, s: SetModel) -> dict:
    page = s.page
    return {
        "title": f"{s.model_id} · {s.spec.title}",
        "root": _root(page),
        "page_kind": "set",
        "crumbs": _crumbs(page, [(r.release.title, r.page), (f"{s.model_id}/{s.id}", page)]),
        "set": {**_set_entry(page, s), "hook": s.spec.hook_template, "description_html": s.description_html},
        "release": _release_entry(page, r),
        "saes": [_sae_row(page, sae) for sae in s.saes],
        "charts": s.charts,
    }


def sae_context(r: ReleaseModel, s: SetModel, sae: SaeModel) -> dict:
    page = sae.page
    meta = sae.meta
    data_href = "data/summary.js"
    links = [
        {"title": f"Release: {r.release.title}", "href": ids.relative(page, r.page)},
        {"title": f"Set: {s.model_id}/{s.id}", "href": ids.relative(page, s.page)},
    ] + [{"title": link.title, "href": link.href} for link in r.links]
    if sae.prompts_page:
        links.append({"title": "Prompt view", "href": sibling_link(page, sae.prompts_page)})
    if sae.neuronpedia:
        links.append({"title": "Neuronpedia", "href": sae.neuronpedia})
    return {
        "title": sae.id,
        "root": _root(page),
        "page_kind": "sae",
        "crumbs": _crumbs(page, [(r.release.title, r.page), (f"{s.model_id}/{s.id}", s.page), (sae.id, page)]),
        "sae": {
            "id": sae.id,
            "model": sae.spec.model_id,
            "release": r.id,
            "set": s.id,
            "set_title": s.spec.title,
            "hook": sae.hook_in,
            "hook_out": sae.hook_out,
            "layer": sae.spec.layer,
            "architecture": meta.get("architecture"),
            "d_in": meta.get("d_in"),
            "d_sae": sae.d_sae,
            "dtype": meta.get("dtype"),
            "n_tokens": meta.get("n_tokens"),
            "corpus": sae.corpus_label,
        },
        "stats": sae.stats,
        "snippet": sae.snippet,
        "links": links,
        "set_saes": [{"id": o.id, "href": ids.relative(page, o.page), "label": f"L{o.spec.layer}"} for o in s.saes],
        "data_href": data_href,
        "summary_src": data_href,
        "prompts_href": sibling_link(page, sae.prompts_page) if sae.prompts_page else "",
        "embed_href": posixpath.basename(sae.embed_page),
    }


def render_pages(site: SiteModel, env: jinja2.Environment, writer: SiteWriter) -> None:
    templates = {name: env.get_template(f"{name}.html") for name in ("index", "release", "set", "sae", "prompts", "list", "embed")}
    writer.write(ids.home_path(), templates["index"].render(home_context(site)))
    for r in site.releases:
        writer.write(r.page, templates["release"].render(release_context(r)))
        for lst in r.lists:
            writer.write(lst.page, templates["list"].render(list_context(r, lst)))
        for s in r.sets:
            writer.write(s.page, templates["set"].render(set_context(r, s)))
            for sae in s.saes:
                writer.write(sae.page, templates["sae"].render(sae_context(r, s, sae)))
                writer.write(sae.embed_page, templates["embed"].render(embed_context(site, sae)))
    for view in site.prompt_views:
        writer.write(view.page, templates["prompts"].render(prompts_context(site, view)))


def search_documents(site: SiteModel) -> dict:
    """The global search index: releases, models, sets and SAEs with site-root-relative hrefs."""
    docs = []
    for r in site.releases:
        docs.append(
            {
                "id": f"release:{r.id}",
                "kind": "release",
                "title": r.release.title,
                "text": " ".join([r.id, r.release.model.id, *r.release.authors]),
                "href": r.page,
            }
        )
        for s in r.sets:
            docs.append(
                {
                    "id": f"set:{s.model_id}/{s.id}",
                    "kind": "set",
                    "title": f"{s.model_id}/{s.id} · {s.spec.title}",
                    "text": " ".join([s.id, s.model_id, r.id, s.spec.hook_template]),
                    "href": s.page,
                }
            )
            for sae in s.saes:
                docs.append(
                    {
                        "id": f"sae:{sae.id}",
                        "kind": "sae",
                        "title": sae.id,
                        "text": " ".join(
                            str(x)
                            for x in dict.fromkeys((sae.hook_in, sae.hook_out, s.spec.title, r.id, sae.meta.get("architecture") or "", sae.d_sae))
                        ),
                        "href": sae.page,
                    }
                )
    for m in site.models:
        first_set = m.sets[0].page if m.sets else ids.home_path()
        docs.append(
            {
                "id": f"model:{m.id}",
                "kind": "model",
                "title": m.id,
                "text": " ".join(r.id for r in m.releases),
                "href": first_set,
            }
        )
    return {"docs": docs}

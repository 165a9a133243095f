"""render_site: cache + releases -> site model -> pages, data shards and static files, swapped in atomically."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sae_atlas.cache import DEFAULT_DTYPE
from sae_atlas.errors import AtlasError
from sae_atlas.export import Task, run_tasks
from sae_atlas.manifest import Release
from sae_atlas.render import pages, prompts, shards
from sae_atlas.render.sitemodel import SiteModel, build_site_model
from sae_atlas.render.write import SiteWriter, atomic_directory

# Below this many features the process start-up costs more than it saves.
PARALLEL_MIN_FEATURES = 50_000


@dataclass(frozen=True)
class RenderReport:
    out: Path
    files: int
    bytes: int
    features: int


def _data_tasks(site: SiteModel) -> list[Task]:
    tasks: list[Task] = [
        (shards.write_corpus, (str(c.entry_dir), c.site_dir, c.prompts_per_shard)) for c in site.corpora.values()
    ]
    tasks += [(shards.write_sae_data, (site.job(sae),)) for sae in site.saes]
    tasks += [(prompts.write_prompt_view, (job,)) for view in site.prompt_views for job in site.prompt_view_jobs(view)]
    tasks += [(prompts.write_list, (site.list_job(r, lst),)) for r in site.releases for lst in r.lists]
    return tasks


def write_data(site: SiteModel, root: Path, workers: int, quiet: bool) -> tuple[int, int]:
    return run_tasks(_data_tasks(site), root, workers, quiet, "render data")


def render_site(
    releases: list[Release],
    cache: Path,
    out: Path,
    theme: Path | None = None,
    quiet: bool = False,
    workers: int | None = None,
    dtype: str = DEFAULT_DTYPE,
) -> RenderReport:
    """Render every release from the cache (the entries computed with `dtype`) into `out`
    (replaced atomically; on failure untouched)."""
    if theme is not None and not Path(theme).is_dir():
        raise AtlasError(f"theme directory {theme} does not exist; expected a dir with templates/ and/or static/")
    site = build_site_model(releases, Path(cache), dtype)
    env = pages.make_environment(theme)
    n_features = sum(sae.d_sae for sae in site.saes)
    if workers is None:
        workers = min(os.cpu_count() or 1, len(site.saes) + len(site.corpora)) if n_features >= PARALLEL_MIN_FEATURES else 1
    with atomic_directory(Path(out)) as root:
        writer = SiteWriter(root)
        static = pages.static_files(theme)
        for rel, source in static.items():
            writer.copy(rel, source)
        if "static/app.js" not in static:  # a theme's own whole app.js replaces the assembled one
            writer.write("static/app.js", pages.app_js(theme))
        writer.write("search-index.js", shards.js_call("search", shards.to_json(pages.search_documents(site))))
        pages.render_pages(site, env, writer)
        files, size = write_data(site, root, workers, quiet)
    report = RenderReport(Path(out), writer.files + files, writer.bytes + size, n_features)
    if not quiet:
        print(
            f"sae-atlas: rendered {len(site.saes)} SAE(s), {n_features:,} features, "
            f"{report.files:,} files ({report.bytes / 1e6:.1f} MB) into {out}",
            file=sys.stderr,
        )
    return report

"""render_site: cache + releases -> site model -> pages, data shards and static files, swapped in atomically."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from sae_atlas.cache import DEFAULT_DTYPE
from sae_atlas.errors import AtlasError
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


def _progress(total: int, quiet: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="SAE", disable=quiet, file=sys.stderr, leave=False)


def _data_tasks(site: SiteModel) -> list[tuple]:
    tasks: list[tuple] = [
        (shards.write_corpus, (str(c.entry_dir), c.site_dir, c.prompts_per_shard)) for c in site.corpora.values()
    ]
    tasks += [(shards.write_sae_data, (site.job(sae),)) for sae in site.saes]
    tasks += [(prompts.write_prompt_view, (job,)) for view in site.prompt_views for job in site.prompt_view_jobs(view)]
    tasks += [(prompts.write_list, (site.list_job(r, lst),)) for r in site.releases for lst in r.lists]
    return tasks


def _run(function, args, root: str) -> tuple[int, int]:
    return function(*args, root)


def write_data(site: SiteModel, root: Path, workers: int, quiet: bool) -> tuple[int, int]:
    tasks = _data_tasks(site)
    files = size = 0
    if workers <= 1:
        with _progress(len(tasks), quiet, "render data") as bar:
            for function, args in tasks:
                f, b = function(*args, str(root))
                files, size = files + f, size + b
                bar.update()
        return files, size
    # fork: workers inherit the loaded modules (no re-import of a caller's __main__); every task is
    # submitted before the progress bar starts its monitor thread.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = [pool.submit(_run, function, args, str(root)) for function, args in tasks]
        try:
            with _progress(len(tasks), quiet, "render data") as bar:
                for future in as_completed(futures):
                    f, b = future.result()
                    files, size = files + f, size + b
                    bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return files, size


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

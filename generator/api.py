"""The public Python API (for notebooks and scripts): the command line's stages as functions.

    import sae_atlas
    releases = sae_atlas.load_content("content")                       # list[Release], checked
    report = sae_atlas.compute(releases, cache="build/cache")          # ComputeReport
    site = sae_atlas.render(releases, cache="build/cache", out="build/site")   # RenderReport
    both = sae_atlas.build("content", out="build/site")                # BuildReport(compute, render)

Each function does what the command of the same name does, with the same defaults, and returns the
dataclass that command uses. Bad input raises InputError (`.problems`: every problem found, as
`file:line:col: message`); other failures the user can act on raise AtlasError. Wherever releases
are taken, a Release, a list of them, a manifest (.yaml) or a content directory will do.
Importing this module (or `sae_atlas`) does not import torch; `compute` and `build` do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from sae_atlas.cache import DEFAULT_DTYPE
from sae_atlas.errors import AtlasError, InputError
from sae_atlas.manifest import Release

if TYPE_CHECKING:
    from sae_atlas.compute import ComputeReport
    from sae_atlas.render import RenderReport

# The command line's defaults (relative to the working directory).
DEFAULT_CONTENT = Path("content")
DEFAULT_CACHE = Path("build/cache")
DEFAULT_OUT = Path("build/site")

Releases = Union[Release, Sequence[Release], str, Path]


@dataclass(frozen=True)
class BuildReport:
    compute: ComputeReport
    render: RenderReport | None  # None when only a shard was computed (render once all are done)


def load_release(path: str | Path) -> Release:
    """One manifest, parsed and checked against the files it names (as `sae-atlas check` does)."""
    from sae_atlas import manifest
    from sae_atlas.sources.validate import validate_sources

    release = manifest.load_release(Path(path))
    validate_sources([release])
    return release


def load_content(content: str | Path = DEFAULT_CONTENT, only: Sequence[str] | None = None) -> list[Release]:
    """Every manifest of `content/releases/` (or only the releases with these ids, as --release),
    sorted by id, parsed and checked against their files; all problems of all manifests in one
    InputError."""
    from sae_atlas.pipeline import load_releases

    return load_releases(Path(content), list(only) if only else None)


def check(source: Releases = DEFAULT_CONTENT) -> list[Release]:
    """Validate releases (a content dir, a manifest, or Release objects) against their files, as
    `sae-atlas check`; returns them, or raises InputError."""
    from sae_atlas.sources.validate import validate_sources

    releases = _releases(source)
    if not isinstance(source, (str, Path)):  # paths were validated while loading
        validate_sources(releases)
    return releases


def compute(
    releases: Releases,
    cache: str | Path = DEFAULT_CACHE,
    *,
    device: str = "auto",
    dtype: str = DEFAULT_DTYPE,
    batch_size: int | None = None,
    shard: tuple[int, int] | None = None,
    unit_prompts: int | None = None,
    replay_memory: int | None = None,
    threads: int | None = None,
    pca_map: bool = False,
    quiet: bool = False,
) -> ComputeReport:
    """Fill `cache` with every SAE of `releases` not cached yet (`sae-atlas compute`). Options as
    the command line's; `pca_map=True` draws the feature map with PCA instead of UMAP (no UMAP
    warm-up: for quick previews and tests). The map method is recorded in each entry's meta, not
    in its cache key: an entry computed with PCA is reused until that SAE is recomputed. Releases
    mirrored from Neuronpedia (`source: {neuronpedia_export: DIR}`) are imported, not computed."""
    releases = _releases(releases)  # before importing torch: bad input fails fast
    mirrored = [r for r in releases if r.neuronpedia_export is not None]
    if mirrored:
        from sae_atlas.mirror import import_release

        for release in mirrored:
            import_release(release, Path(cache), quiet=quiet)
        releases = [r for r in releases if r.neuronpedia_export is None]
    if not releases:
        from sae_atlas.compute import ComputeReport

        return ComputeReport(cached=[s.id for r in mirrored for s in r.saes()])
    worker = _map_worker(threads, pca_map)  # before torch's import, which its own import then runs beside
    try:
        from sae_atlas.compute import ComputeOptions, compute_releases

        if threads:
            import torch

            torch.set_num_threads(max(1, threads))
        options = ComputeOptions(
            device=device, dtype=dtype, batch_size=batch_size, shard=shard, unit_prompts=unit_prompts, replay_memory=replay_memory,
            quiet=quiet, pca_map=pca_map, map_worker=worker,
        )
        with _compute_failures():
            return compute_releases(releases, Path(cache), options)
    finally:
        if worker is not None:
            worker.close()


def _map_worker(threads: int | None, pca_map: bool):
    """The process that fits the UMAP maps beside the compute (`compute.maps.MapWorker`), with a
    thread per core but one, or one thread at --threads N (so that a run asked for N cores stays
    near them); None on one core, at --threads 1 or with --pca-map (no UMAP)."""
    from sae_atlas.compute.maps import MapWorker, usable_cores

    cores = usable_cores() if threads is None else min(threads, usable_cores())
    if pca_map or cores < 2:
        return None
    try:
        return MapWorker(cores - 1 if threads is None else 1)
    except OSError:  # no process to be had: the compute fits its maps itself
        return None


def render(
    releases: Releases,
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_OUT,
    *,
    theme: str | Path | None = None,
    dtype: str = DEFAULT_DTYPE,
    quiet: bool = False,
) -> RenderReport:
    """Render the site of `releases` from `cache` into `out`, replaced atomically (`sae-atlas
    render`; no torch). On failure the previous site in `out` is unchanged."""
    from sae_atlas.render import render_site

    releases = _releases(releases)
    try:
        return render_site(releases, cache=Path(cache), out=Path(out), theme=Path(theme) if theme else None, quiet=quiet, dtype=dtype)
    except OSError as e:
        raise AtlasError(f"writing the site failed: {e}; the previous site in {out} is unchanged") from e


def build(
    releases: Releases = DEFAULT_CONTENT,
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_OUT,
    *,
    theme: str | Path | None = None,
    **options,
) -> BuildReport:
    """compute then render (`sae-atlas build`); `options` are compute's. With `shard=(I, N)` only
    that slice is computed and nothing is rendered."""
    releases = _releases(releases)
    computed = compute(releases, cache, **options)
    if options.get("shard") is not None:
        return BuildReport(computed, None)
    rendered = render(releases, cache, out, theme=theme, dtype=options.get("dtype", DEFAULT_DTYPE), quiet=options.get("quiet", False))
    return BuildReport(computed, rendered)


def _releases(source: Releases) -> list[Release]:
    """Release objects from a Release, a list of them, a manifest file or a content directory."""
    if isinstance(source, Release):
        return [source]
    if isinstance(source, (str, Path)):
        path = Path(source)
        return [load_release(path)] if path.suffix in (".yaml", ".yml") or path.is_file() else load_content(path)
    releases = list(source)
    wrong = [type(r).__name__ for r in releases if not isinstance(r, Release)]
    if wrong:
        raise TypeError(f"expected Release objects, a manifest path or a content directory; got {', '.join(sorted(set(wrong)))}")
    return releases


@contextlib.contextmanager
def _compute_failures() -> Iterator[None]:
    """The errors of a compute run as the command line reports them."""
    try:
        yield
    except AtlasError:
        raise
    except Exception as e:
        from sae_atlas.sources.configs import hub_failure

        hub = hub_failure(e)  # a model, SAE or corpus the hub could not give, not the cache
        if hub is not None:
            raise AtlasError(hub) from e
        if isinstance(e, OSError):
            raise AtlasError(f"writing the cache failed: {e}; finished entries are kept, rerun to resume") from e
        raise


__all__ = ["AtlasError", "BuildReport", "InputError", "build", "check", "compute", "load_content", "load_release", "render"]

"""The build, top to bottom: manifest -> sources -> compute -> cache -> render -> site.

Each `cmd_*` is one CLI command. Stages import lazily so that `render` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sae_atlas.errors import AtlasError, InputError, Problem
from sae_atlas.manifest import Release, load_content


def load_releases(content: Path, only: list[str] | None = None) -> list[Release]:
    """Parse and validate every manifest (all problems at once), then check them against their files."""
    from sae_atlas.sources.validate import validate_sources

    try:
        releases = load_content(content)
    except InputError as e:
        # Report the file problems of the manifests that did parse in the same run.
        try:
            validate_sources(getattr(e, "valid_releases", []))
        except InputError as more:
            raise InputError(e.problems + more.problems) from None
        raise
    if only:
        known = {r.id for r in releases}
        missing = [r for r in only if r not in known]
        if missing:
            raise AtlasError(f"unknown release {', '.join(missing)}; known: {', '.join(sorted(known))}")
        releases = [r for r in releases if r.id in only]
    validate_sources(releases)
    return releases


def cmd_check(args: argparse.Namespace) -> int:
    releases = load_releases(args.content)
    n_saes = sum(len(s.saes) for r in releases for s in r.sets)
    print(f"ok: {len(releases)} release(s), {n_saes} SAE(s)", file=sys.stderr)
    return 0


def cmd_compute(args: argparse.Namespace) -> int:
    from sae_atlas import api

    releases = load_releases(args.content, args.release)  # before importing torch: bad input fails fast
    if all(r.neuronpedia_export is not None for r in releases):  # only mirrors: imported, no torch
        from sae_atlas.mirror import import_release

        for release in releases:
            import_release(release, args.cache, quiet=args.quiet)
        return 0
    api.compute(
        releases, args.cache, device=args.device, dtype=args.dtype, batch_size=args.batch_size, shard=args.shard,
        unit_prompts=args.unit_prompts, replay_memory=args.replay_memory, threads=getattr(args, "threads", None), quiet=args.quiet,
    )
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from sae_atlas import api

    releases = load_releases(args.content, getattr(args, "release", None))
    api.render(releases, args.cache, args.out, theme=args.theme, dtype=args.dtype, quiet=args.quiet)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    cmd_compute(args)
    if args.shard is not None:
        print("sae-atlas: --shard computes a slice only; run `sae-atlas render` once all shards are done", file=sys.stderr)
        return 0
    return cmd_render(args)


def cmd_import(args: argparse.Namespace) -> int:
    from sae_atlas.mirror import import_export

    release, n = import_export(args.dir, args.cache, quiet=args.quiet)
    print(
        f"imported {n} SAE(s) of {release.model.id} into {args.cache}; a manifest with\n"
        f"  release: {release.id}\n  source: {{neuronpedia_export: {Path(args.dir).resolve()}}}\n"
        "renders them (`sae-atlas render`)",
        file=sys.stderr,
    )
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    import orjson

    from sae_atlas.export.dump import dump_feature

    releases = load_content(args.content)
    record = dump_feature(releases, args.cache, args.feature, args.dtype)
    sys.stdout.buffer.write(orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sae_atlas.export import exporter

    releases = load_releases(args.content, args.release)
    exporter(args.format)(releases, args.cache, args.out, dtype=args.dtype, quiet=args.quiet)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from sae_atlas.scaffold import init_manifest

    path, sc = init_manifest(args.sae_lens, args.layers, args.out, args.content, args.corpus)
    n_saes = sum(len(s.saes) for s in sc.sets)
    print(f"wrote {path}: {len(sc.sets)} set(s), {n_saes} SAE(s); edit it (see its comments), then run `sae-atlas check`", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sae_atlas.render.serve import serve

    serve(args)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from sae_atlas.deploy import DeployOptions, deploy_site

    deploy_site(DeployOptions(args.site, args.branch, args.remote, args.message, args.push, site_limit=args.max_site_size, file_limit=args.max_file_size))
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    from sae_atlas.new import new_project, next_steps

    for path in new_project(args.dir):
        print(f"wrote {path}", file=sys.stderr)
    print(next_steps(args.dir), end="", file=sys.stderr)
    return 0


def _slurm_releases(args: argparse.Namespace) -> tuple[Path, list[str] | None]:
    """The content dir and release ids of `sae-atlas slurm`: those of the MANIFEST arguments (files in
    a content dir's releases/), else --content with its --release filter."""
    if not args.manifests:
        return args.content, args.release
    contents = set()
    for path in args.manifests:
        if path.suffix != ".yaml" or path.resolve().parent.name != "releases":
            raise InputError([Problem(str(path), 1, 1, "expected a manifest CONTENT/releases/NAME.yaml")])
        contents.add(path.resolve().parent.parent)
    if len(contents) > 1:
        raise AtlasError(f"the manifests are in {len(contents)} content dirs ({', '.join(sorted(map(str, contents)))}); expected one")
    content = contents.pop()
    wanted = {p.resolve() for p in args.manifests}
    ids = [r.id for r in load_content(content) if r.source.resolve() in wanted]
    return content, sorted(set(ids + (args.release or [])))


def cmd_slurm(args: argparse.Namespace) -> int:
    from sae_atlas import slurm
    from sae_atlas.compute.units import count_units

    content, only = _slurm_releases(args)
    releases = load_releases(content, only)
    n_saes = len({spec.id for r in releases for spec in r.saes()})
    n_units = count_units([r for r in releases if r.neuronpedia_export is None], args.unit_prompts) or n_saes
    size = args.array_size or n_saes
    if not 1 <= size <= n_units:
        raise AtlasError(
            f"--array-size {size}: expected 1 to {n_units} (the work units: each SAE's corpus in units of --unit-prompts prompts; a task computes at least one)"
        )
    where = ["--content", str(content.resolve()), "--cache", str(args.cache.resolve()), "--dtype", args.dtype]
    for release in only or []:
        where += ["--release", release]
    compute_args = [*where, "--device", args.device]
    for flag, value in (("--batch-size", args.batch_size), ("--threads", args.threads), ("--replay-memory", args.replay_memory), ("--unit-prompts", args.unit_prompts)):
        if value is not None:
            compute_args += [flag, str(value)]
    render_args = [*where, "--out", str(args.out.resolve())]
    if args.theme is not None:
        render_args += ["--theme", str(args.theme.resolve())]
    if args.quiet:
        compute_args.append("--quiet"), render_args.append("--quiet")
    options = slurm.SlurmOptions(size, args.partition, args.gpus_per_task, args.time, args.cpus_per_task, args.mem, tuple(args.sbatch))
    jobs = slurm.write_jobs(args.dir or args.out.parent / "slurm", options, compute_args, render_args)
    print(f"wrote {jobs.compute} ({size} task(s), {n_saes} SAE(s)), {jobs.render} and {jobs.submit}", file=sys.stderr)
    if not args.submit:
        print(f"submit them with {jobs.submit} (or sae-atlas slurm --submit); logs go to {jobs.dir / 'logs'}", file=sys.stderr)
        return 0
    compute, render = slurm.submit(jobs)
    print(f"submitted compute array job {compute} and render job {render} (runs once every task succeeded); logs in {jobs.dir / 'logs'}", file=sys.stderr)
    print(f"{compute} {render}")
    return 0

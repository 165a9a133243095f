"""compute_releases: per model, two passes over the corpus in batches, each batch feeding every
pending SAE of that model (pass 2 replays pass 1's firing activations from memory where they fit,
so the model usually runs once); then the CE loss and the weights-only parts; one cache entry per SAE.

    plan (sorted SAE jobs, the shard's (SAE, unit) pairs, skip cached) -> per (model, corpus) group:
      corpus tokens -> load model + SAEs -> pass 1 (keep) -> pass 2 (replay) -> CE loss -> weights
      -> write entries
    -> cross-layer neighbours per Set
Each corpus, SAE and Set entry is computed under its lock (`sae_atlas.locks`), so that processes
sharing the cache never compute one entry at once. A corpus longer than one work unit
(`compute.units`) is computed unit by unit instead (`_compute_units`): each unit's passes under
its own lock, then the merge of the SAE's units and the rest under the SAE's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import orjson
import torch
from tqdm import tqdm

from sae_atlas.cache import (
    CacheStore,
    CorruptEntry,
    corpus_key,
    model_identity,
    read_entry,
    sae_key,
    set_key,
    write_entry,
)
from sae_atlas.compute import units
from sae_atlas.compute.correlation import load_kernels
from sae_atlas.compute.options import ComputeOptions, chunk_elements, default_batch_size, entry_budget
from sae_atlas.compute.replay import Replay, release_free_memory, replay_budget, resident_bytes, retained_heap, working_set
from sae_atlas.compute.stats import FeatureStats, SparseActs, bookkeeping_threads
from sae_atlas.backends import CeSae
from sae_atlas.backends.transformer_lens import neuron_hook
from sae_atlas.compute.weights import cosine_neighbours, logit_effects, map_method, umap_neighbour_count, umap_request
from sae_atlas.errors import AtlasError, InputError, Problem
from sae_atlas.locks import Locks
from sae_atlas.manifest import Release, SaeSpec, SetSpec
from sae_atlas.sources.corpus import Corpus, load_corpus, prepend_bos_problem
from sae_atlas.sources.model import load_model, load_tokenizer, resolve_device
from sae_atlas.sources.sae import load_sae
from sae_atlas import stats as statistics

DENSE_THRESHOLD = 0.1  # a feature firing on more than this fraction of tokens counts as dense
CROSS_NEIGHBOURS = 3
CORRELATED_FEATURES = 5


@dataclass
class SaeJob:
    release: Release
    spec: SaeSpec
    key: str

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass
class ComputeReport:
    computed: list[str] = field(default_factory=list)  # SAE ids computed in this run
    cached: list[str] = field(default_factory=list)  # SAE ids whose entry already existed
    sets: list[str] = field(default_factory=list)  # set entries written
    tokens_per_second: float = 0.0
    replayed: int = 0  # (SAE, batch) pairs of pass 2 replayed from memory
    recomputed: int = 0  # (SAE, batch) pairs of pass 2 that ran the model and the encoder again


def plan_jobs(releases: list[Release], dtype: str = "float32") -> list[SaeJob]:
    """Every SAE of every release, once, sorted by id (the order --shard slices)."""
    jobs: dict[str, SaeJob] = {}
    for release in releases:
        for spec in release.saes():
            jobs.setdefault(spec.id, SaeJob(release, spec, sae_key(release, spec, dtype)))
    return [jobs[k] for k in sorted(jobs)]


def shard_units(jobs: list[SaeJob], shard: tuple[int, int] | None, unit_size: int | None = None) -> dict[str, set[int]]:
    """{SAE id: the first prompts of its work units in the shard} (`compute.units.shard_pairs`)."""
    return units.shard_pairs(jobs, shard, lambda job: units.planned_units(job.release, unit_size))


def shard_slice(jobs: list[SaeJob], shard: tuple[int, int] | None, unit_size: int | None = None) -> list[SaeJob]:
    """The SAEs with a work unit in the shard."""
    mine = shard_units(jobs, shard, unit_size)
    return [job for job in jobs if job.id in mine]


def compute_releases(releases: list[Release], cache_root: Path, options: ComputeOptions | None = None) -> ComputeReport:
    options = options or ComputeOptions()
    store = CacheStore(Path(cache_root))
    report = ComputeReport()
    all_jobs = plan_jobs(releases, options.dtype)
    mine = shard_units(all_jobs, options.shard, options.unit_prompts)
    jobs = [job for job in all_jobs if job.id in mine]

    groups: dict[tuple[str, str], list[SaeJob]] = {}
    for job in jobs:
        groups.setdefault((model_identity(job.release), corpus_key(job.release)), []).append(job)

    device: str | None = None
    with retained_heap(), Locks(store.root, quiet=options.quiet) as locks:
        for group in groups.values():
            release = group[0].release
            # Tokenized (or read from the cache) when first needed: after the SAEs are loaded and
            # their maps sent to the map worker, which fits them while the corpus loads; when
            # every SAE is cached, only if the cache lacks it.
            corpus = functools.cache(functools.partial(_locked_corpus, release, store, locks))
            planned = units.planned_units(release, options.unit_prompts)
            ranges = units.clip(planned, corpus().n_prompts) if len(planned) > 1 else planned
            if len(ranges) > 1:
                fresh = [job for job in group if store.sae_entry(job.key) is None]
                if fresh:
                    device = device or resolve_device(options.device)
                    _compute_units(fresh, ranges, mine, corpus(), store, options, device, locks, report)
                group = [job for job in group if job not in fresh]  # cached, or to top up
            device = _compute_whole(group, corpus, store, options, device, locks, report)
            if not (store.corpus_dir(corpus_key(release)) / "meta.json").exists():
                corpus()  # every SAE was cached, but the site reads the corpus's tokens too

        owned = {job.id for job in jobs}
        for release in releases:
            for set_spec in release.sets:
                if len(set_spec.saes) > 1 and min(s.id for s in set_spec.saes) in owned:
                    if _compute_set(release, set_spec, store, options, device or "cpu", locks):
                        report.sets.append(f"{set_spec.saes[0].model_id}/{set_spec.id}")
    return report


def _compute_whole(group: list[SaeJob], corpus: Callable[[], Corpus], store: CacheStore, options: ComputeOptions, device: str | None, locks: Locks, report: ComputeReport) -> str | None:
    """The SAEs of one model and corpus (`corpus()` loads it), each whole under its lock: those
    whose locks are free first, then, when every SAE left is held elsewhere, waiting for one.
    Returns the device used."""
    todo = group
    while todo:
        held = [job for job in todo if _needs_work(job, store) and locks.try_acquire(f"sae-{job.key}")]
        pending, top_up = _classify(held, store, report)
        try:
            if pending or top_up:
                device = device or resolve_device(options.device)
            if pending:
                _compute_group(pending, corpus, store, options, device, report)
            if top_up:
                _top_up(top_up, corpus(), store, options, device, report)
        finally:
            for job in held:
                locks.release(f"sae-{job.key}")
        todo = [job for job in todo if job not in held]
        waiting = [job for job in todo if _needs_work(job, store)]
        for job in todo:
            if job not in waiting:  # cached, by an earlier run or by another process meanwhile
                store.remove_partials(job.key)
                report.cached.append(job.id)
        todo = waiting
        if todo and not held:  # every SAE left is being computed elsewhere
            locks.wait({f"sae-{job.key}": f"SAE {job.id}" for job in todo})
    return device


def _locked_corpus(release: Release, store: CacheStore, locks: Locks) -> Corpus:
    """The release's tokenized corpus, tokenized by one process at a time."""
    key = corpus_key(release)
    with locks.hold(f"corpus-{key}", f"the corpus of {release.id}", lambda: (store.corpus_dir(key) / "meta.json").exists()):
        return load_corpus(release, store.root, lambda: load_tokenizer(release.model))


def _needs_work(job: SaeJob, store: CacheStore) -> bool:
    """Whether the SAE's entry is missing (or corrupt) or needs statistics added or dropped."""
    entry = store.sae_entry(job.key)
    settings = job.release.compute
    return entry is None or bool(statistics.stale(entry.meta, settings) or statistics.surplus(entry.meta, settings))


def _classify(jobs: list[SaeJob], store: CacheStore, report: ComputeReport) -> tuple[list[SaeJob], list[tuple[SaeJob, object]]]:
    """The SAEs (whose locks this process holds) to compute, and those to top up; cached ones are reported."""
    pending, top_up = [], []
    for job in jobs:
        entry = store.sae_entry(job.key)
        if entry is None:
            pending.append(job)
            continue
        # A run killed between writing the entry and deleting its checkpoint leaves both.
        store.remove_partials(job.key)
        if statistics.stale(entry.meta, job.release.compute) or statistics.surplus(entry.meta, job.release.compute):
            top_up.append((job, entry))
        else:
            report.cached.append(job.id)
    return pending, top_up


# -- one model ------------------------------------------------------------------------------------


@dataclass
class _Running:
    job: SaeJob
    sae: object  # sae_atlas.backends.SaeModule
    stats: FeatureStats  # None until the corpus is loaded (`_compute_group`)
    sparse_decode: bool | None = None  # decode from the sparse batch? decided on the first batch
    extra: dict = field(default_factory=dict)  # arrays computed after the passes (correlated features)
    memo: dict = field(default_factory=dict)  # its StatContext's memo, begun before the passes (`_start_maps`)
    first: int = 0  # the first prompt of its prompt range (a work unit's; 0: the whole corpus)
    partial: Path | None = None  # where its state is checkpointed (None: the SAE's checkpoint)


def _compute_group(jobs: list[SaeJob], corpus_of: Callable[[], Corpus], store: CacheStore, options: ComputeOptions, device: str, report: ComputeReport) -> None:
    """The SAEs of one model and corpus (`corpus_of()` loads it). SAEs whose model must be loaded with different
    from-pretrained keyword arguments (SAELens's `model_from_pretrained_kwargs`) form one group each,
    with its own model load and corpus passes."""
    release = jobs[0].release
    batch_size = options.batch_size or default_batch_size(device, release.corpus.context)  # the corpus's prompts are that long
    oom = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", MemoryError))
    try:
        with torch.inference_mode():
            running = [_Running(job, load_sae(job.spec, device, "float32"), None) for job in jobs]
            _check_prepend_bos(release, running)
            # The maps are fitted from here on, beside the corpus's and the model's loads and the
            # passes; the replay budget is taken from the free memory after their requests are out.
            _start_maps(running, options)
            corpus = corpus_of()
            for r in running:
                r.stats = _resumed_stats(r.job, r.sae, corpus, device, store.partial_dir(r.job.key), 0, "checkpoint")
            groups: dict[str, list[_Running]] = {}
            for r in running:
                groups.setdefault(orjson.dumps(r.sae.model_kwargs, option=orjson.OPT_SORT_KEYS).decode(), []).append(r)
            if len(groups) > 1 and not options.quiet:
                for kwargs, members in groups.items():
                    print(f"{release.model.id}: loading the model with {kwargs} for {', '.join(r.job.id for r in members)}", file=sys.stderr)
            for members in groups.values():
                model = load_model(release.model, device, options.dtype, members[0].sae.model_kwargs, options.quiet)
                model.enable_hooks(sorted({h for r in members for h in r.sae.hooks}))
                _check_hooks(model, members)
                _compute_saes(model, members, corpus, store, options, batch_size, report)
                del model
    except oom as e:
        raise AtlasError(f"out of memory on {device} at --batch-size {batch_size} ({e}); rerun with a smaller --batch-size") from e


def _compute_saes(model, running: list["_Running"], corpus: Corpus, store: CacheStore, options: ComputeOptions, batch_size: int, report: ComputeReport) -> None:
    """Both corpus passes, the CE loss and the weights-only parts for SAEs sharing one model."""
    model_id = running[0].job.release.model.id
    device = _memory_device(model)
    replay = _bounded_replay(model_id, model, [r.sae for r in running], corpus, options, batch_size, device)
    started = time.perf_counter()
    done_tokens = _run_pass(1, model, running, corpus, store, options, batch_size, replay)
    release_free_memory()  # what a pass freed goes back to the system, not to the next stage's peak
    done_tokens += _run_pass(2, model, running, corpus, store, options, batch_size, replay)
    release_free_memory()
    elapsed = time.perf_counter() - started
    if elapsed > 0 and done_tokens:
        report.tokens_per_second = done_tokens / elapsed
    _report_replay(model_id, replay, report, options)
    for r in running:
        _correlate_features(r, model, corpus, options, batch_size, replay)
        release_free_memory()
    replay.clear()
    ce_saes = [CeSae(r.job.id, r.sae, r.job.release.compute.ce_prompts) for r in running]
    ce_bar = None if options.quiet else f"{model_id} CE loss"
    ce = model.ce_losses(corpus, ce_saes, batch_size, device, progress=ce_bar)
    desc = f"{model_id} logits, neighbours, map"
    with tqdm(running, desc=desc, unit="sae", disable=options.quiet, file=sys.stderr) as bar:
        for r in bar:
            bar.set_postfix_str(r.job.id)
            _finish(r, model, corpus, store, ce[r.job.id], options)
            report.computed.append(r.job.id)


def _bounded_replay(model_id: str, model, saes: list, corpus: Corpus, options: ComputeOptions, batch_size: int, device: str) -> Replay:
    """The replay store of these SAEs' passes, its budget what is left once the working set they
    need is set aside; the bound on the process's memory is stated unless quiet. The passes' compiled
    kernels are loaded first, so that the memory in use includes them."""
    load_kernels(device)
    in_use = resident_bytes(device)
    ws = working_set(batch_size * corpus.context, corpus.context, [(sae.d_sae, sae.d_out) for sae in saes], int(model.unembedding().shape[0]), device, options.correlation_memory)
    replay = Replay(replay_budget(device, options.replay_memory, ws))
    if not options.quiet:
        before = "" if in_use is None else f"{in_use / 2**20:,.0f} MiB in use + "
        print(
            f"{model_id}: memory bound {((in_use or 0) + replay.budget + ws) / 2**20:,.0f} MiB: {before}replay budget"
            f" {replay.budget / 2**20:,.0f} MiB (--replay-memory) + working set {ws / 2**20:,.0f} MiB (--batch-size, d_sae)",
            file=sys.stderr,
        )
    return replay


def _model_device(model) -> str:
    return str(model.unembedding().device.type)


def _memory_device(model) -> str:
    """The model's device with its index ("cuda:1"): the memory bound is that device's, not the
    current one's."""
    return str(model.unembedding().device)


def _report_replay(model_id: str, replay: Replay, report: ComputeReport, options: ComputeOptions) -> None:
    report.replayed += replay.replayed
    report.recomputed += replay.missed
    total = replay.replayed + replay.missed
    if total and not options.quiet:
        print(
            f"{model_id}: pass 2 replayed {replay.replayed} of {total} SAE batches from memory"
            f" ({replay.peak / 2**20:,.1f} MiB at most, budget {replay.budget / 2**20:,.0f} MiB; --replay-memory)",
            file=sys.stderr,
        )


def _check_prepend_bos(release: Release, running: list["_Running"]) -> None:
    """A text corpus starts its prompts with BOS when `corpus.prepend_bos` (the default) says so;
    each SAE must have been trained that way (SAELens's `prepend_bos`)."""
    problems = []
    for r in running:
        problem = prepend_bos_problem(f"SAE {r.job.id}", r.sae.prepend_bos, release.corpus)
        if problem is not None:
            m = r.job.spec.mark
            problems.append(Problem(m.file, m.line, m.col, problem))
    if problems:
        raise InputError(problems)


def _check_hooks(model, running: list["_Running"]) -> None:
    problems = []
    for r in running:
        job = r.job
        for hook in r.sae.hooks:
            if hook not in model.hook_names:
                m = job.spec.mark
                problems.append(Problem(m.file, m.line, m.col, f"hook {hook!r} is not a hook of model {job.release.model.id!r}; expected e.g. blocks.0.hook_resid_post"))
    if problems:
        raise InputError(problems)


def _neurons(sae) -> str | None:
    """The hook whose dimensions are the SAE's neurons (correlated neurons, neuron alignment) when
    they are not its input's: an MLP-out SAE's `blocks.L.mlp.hook_post`."""
    return neuron_hook(sae.hook_in, sae.hook_out, sae.head_index)


def _neuron_width(job: SaeJob, hook: str) -> int:
    """d_mlp of the neurons' hook, from the model's config (read before the model loads)."""
    from sae_atlas.sources.configs import hook_width, read_model_config

    config = read_model_config(job.release.model)
    width = None if config is None else hook_width(config, hook)
    if not width:
        raise AtlasError(f"{job.id}: the width of {hook} (the MLP neurons of its hook) is not in the config of model {job.release.model.id!r}")
    return int(width)


def _resumed_stats(job: SaeJob, sae, corpus: Corpus, device: str, path: Path, first: int, what: str) -> FeatureStats:
    """The SAE's statistics from the state saved at `path` (a checkpoint, a work unit's state),
    or new ones starting at prompt `first` where there is none or it is unusable."""
    stats = _new_stats(job, sae, corpus, device)
    stats.prompts_done = first
    try:
        entry = read_entry(path)
        if entry is not None:
            stats.load_state(entry.arrays, int(entry.meta["pass"]), int(entry.meta["prompts_done"]))
    except (CorruptEntry, ValueError, KeyError) as e:
        print(f"sae-atlas: discarding unusable {what} {path}: {e}", file=sys.stderr)
        stats = _new_stats(job, sae, corpus, device)
        stats.prompts_done = first
    return stats


def _save_checkpoint(r: _Running, store: CacheStore) -> None:
    meta = {"sae_id": r.job.id, "pass": r.stats.pass_no, "prompts_done": r.stats.prompts_done}
    write_entry(r.partial or store.partial_dir(r.job.key), meta, r.stats.state_arrays())


# -- the passes -----------------------------------------------------------------------------------


def _encode(r: _Running, captured: dict[str, torch.Tensor], skip: int, first_prompt: int) -> Iterator[tuple[torch.Tensor, SparseActs]]:
    """The batch's prompts from `skip` on (the first being `first_prompt`), a few prompts at a time:
    the SAE's dense activations [b, T, F] and their firing entries. On a CPU a call's activations
    stay in cache while the bias, the activation function and the search for firing entries pass
    over them (1.8x faster at 4,096 features than whole batches)."""
    x_all = r.sae.read(captured[r.sae.hook_in][skip:])
    context, n_features = x_all.shape[1], r.sae.d_sae
    step = max(1, chunk_elements(x_all.device) // max(1, context * n_features))
    for lo in range(0, x_all.shape[0], step):
        acts = r.sae.encode(x_all[lo : lo + step].float())
        acts = (acts.to_dense() if acts.layout != torch.strided else acts).float()  # some SAEs encode sparsely
        with bookkeeping_threads():  # a memory-bound pass: see `bookkeeping_threads`
            sparse = SparseActs.from_dense(acts.reshape(-1, acts.shape[-1]), first_prompt + lo, context)
        yield acts, sparse


def _check_sparse_decode(r: _Running, acts: torch.Tensor, sparse: SparseActs) -> None:
    """Decide, on the first part of the first batch, whether the SAE's `decode` accepts a sparse
    batch and gives the dense result (up to float rounding); `r.sparse_decode` records it."""
    n = sparse.n_tokens
    try:
        out = r.sae.decode(sparse.csr()).float().reshape(n, -1)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        r.sparse_decode = False
        return
    dense = r.sae.decode(acts).float().reshape(n, -1)
    scale = float(dense.abs().max()) if dense.numel() else 0.0
    r.sparse_decode = out.shape == dense.shape and torch.allclose(out, dense, rtol=1e-4, atol=1e-5 * max(scale, 1e-12))


def _decode(r: _Running, sparse: SparseActs, x_in: torch.Tensor) -> torch.Tensor:
    """The SAE's reconstruction of the batch, flattened to [B * T, d_out]: decode, plus a skip
    transcoder's skip term of its input `x_in`. With few features firing per token, decoding the
    sparse batch (CSR @ W_dec) is many times cheaper than the dense product; it is used when
    `_check_sparse_decode` found it equal to the dense one."""
    n = sparse.n_tokens
    out = None
    if r.sparse_decode:
        try:
            out = r.sae.decode(sparse.csr()).float().reshape(n, -1)
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            r.sparse_decode = False
    if out is None:
        out = r.sae.decode(sparse.to_dense()).float().reshape(n, -1)
    skip = r.sae.skip(x_in.float())
    return out if skip is None else out + skip.float().reshape(n, -1)


def _windows(acts: SparseActs, settings):
    return functools.partial(acts.windows, before=settings.context_before, after=settings.context_after)


def _run_pass(pass_no: int, model, running: list[_Running], corpus: Corpus, store: CacheStore, options: ComputeOptions, batch_size: int, replay: Replay, end: int | None = None) -> int:
    """One pass over the corpus (up to prompt `end`: a work unit's) for the SAEs in that pass.
    Pass 1 keeps each batch's firing entries in `replay` (within its budget); pass 2 runs the
    model only for the batches not kept there."""
    active = [r for r in running if r.stats.pass_no == pass_no]
    if not active:
        return 0
    n_prompts, context = corpus.n_prompts if end is None else end, corpus.context
    start = min(r.stats.prompts_done for r in active)
    hooks = sorted({h for r in active for h in r.sae.hooks} | ({_neurons(r.sae) for r in active} - {None} if pass_no == 1 else set()))
    tokens_all = corpus.tokens
    device = active[0].stats.device
    bar = tqdm(
        total=(n_prompts - start) * context,
        desc=f"{running[0].job.release.model.id} pass {pass_no}/2",
        unit="tok",
        unit_scale=True,
        disable=options.quiet,
        file=sys.stderr,
    )
    batches = 0
    with bar:
        for p0 in range(start, n_prompts, batch_size):
            nb = min(batch_size, n_prompts - p0)
            todo = []  # (running, first prompt, kept entries or None)
            for r in active:
                skip = r.stats.prompts_done - p0
                if skip >= nb:
                    continue
                first = p0 + max(skip, 0)
                kept = replay.take(r.job.id, first, p0 + nb - first, keep=True) if pass_no == 2 else None
                todo.append((r, first, kept))
            captured = None
            if any(kept is None for _, _, kept in todo):
                tokens = torch.from_numpy(np.array(tokens_all[p0 : p0 + nb])).long().to(device)
                captured = _forward_capture(model, tokens, hooks)
            while todo:  # each batch's entries (and their caches) freed once its statistics are in
                r, first, kept = todo.pop(0)
                st = r.job.release.compute
                if kept is None:
                    parts = []
                    for acts, sparse in _encode(r, captured, first - p0, first):
                        if r.sparse_decode is None:
                            _check_sparse_decode(r, acts, sparse)
                        parts.append(sparse)
                    acts = None  # the last dense part, freed before the statistics
                    sparse = SparseActs.concat(parts)
                else:
                    sparse = kept
                # A batch where features fire densely is handled in runs of prompts (`entry_budget`).
                parts = sparse.split(entry_budget(device))
                if pass_no == 1:
                    n = sparse.n_tokens
                    x_in = r.sae.read(captured[r.sae.hook_in][first - p0 :])
                    target = r.sae.read(captured[r.sae.hook_out][first - p0 :]).float().reshape(n, -1)
                    neurons = _neurons(r.sae)
                    basis = x_in if neurons is None else captured[neurons][first - p0 :]
                    x_hat, basis = _decode(r, sparse, x_in), basis.float().reshape(n, -1)
                    with bookkeeping_threads():
                        for part in parts:
                            t0 = (part.first_prompt - first) * context
                            t1 = t0 + part.n_tokens
                            r.stats.update_pass1(part, _windows(part, st), target[t0:t1], x_hat[t0:t1], basis=basis[t0:t1])
                    replay.add(r.job.id, sparse)
                else:
                    with bookkeeping_threads():
                        for part in parts:
                            r.stats.update_pass2(part, _windows(part, st))
                parts = sparse = kept = None
                r.stats.prompts_done = p0 + nb
            bar.update(nb * context)
            batches += 1
            if options.checkpoint_every and batches % options.checkpoint_every == 0 and p0 + nb < n_prompts:
                for r in active:
                    _save_checkpoint(r, store)
            if options.on_batch is not None:
                options.on_batch(pass_no, p0)
    for r in active:
        r.stats.pass_no, r.stats.prompts_done = pass_no + 1, r.first
        _save_checkpoint(r, store)
    return (n_prompts - start) * context


def _batches(ranges: list[tuple[int, int]], batch_size: int) -> list[tuple[int, int]]:
    """(first prompt, prompts) of the batches of the passes: each prompt range (the corpus, or its
    work units) from its start."""
    return [(p0, min(batch_size, hi - p0)) for lo, hi in ranges for p0 in range(lo, hi, batch_size)]


def _correlate_features(r: _Running, model, corpus: Corpus, options: ComputeOptions, batch_size: int, replay: Replay, ranges: list[tuple[int, int]] | None = None) -> None:
    """The `correlated_features` statistic of one SAE, after pass 2: one scan of the corpus's
    pass-1 entries per block of features (`options.correlation_memory`), each batch replayed from
    memory where pass 1 kept it, otherwise recomputed (the model and the encoder run again, once
    per block: correct, slower). The batches are those of the passes over `ranges` (the work
    units; None: the corpus as one)."""
    from sae_atlas.compute.correlation import correlated_features, feature_blocks

    n_prompts = corpus.n_prompts
    starts = _batches(ranges or [(0, n_prompts)], batch_size)
    kept = sum(replay.peek(r.job.id, p0, nb) is not None for p0, nb in starts)
    n_blocks = len(feature_blocks(r.sae.d_sae, options.correlation_memory))
    if not options.quiet:
        how = "from memory" if kept == len(starts) else f"recomputing {len(starts) - kept} of {len(starts)} batches per scan (--replay-memory)"
        print(f"{r.job.id}: correlated features, {n_blocks} scan(s) of the corpus, {how}", file=sys.stderr)

    def batches() -> Iterator[SparseActs]:
        for p0, nb in starts:
            acts = replay.peek(r.job.id, p0, nb)
            if acts is None:
                tokens = torch.from_numpy(np.array(corpus.tokens[p0 : p0 + nb])).long().to(r.stats.device)
                captured = _forward_capture(model, tokens, sorted(set(r.sae.hooks)))
                acts = SparseActs.concat([sparse for _, sparse in _encode(r, captured, 0, p0)])
            yield from acts.split(entry_budget(r.stats.device))  # in runs of prompts where it fires densely

    index, value = correlated_features(batches, r.sae.d_sae, CORRELATED_FEATURES, options.correlation_memory)
    r.extra.update(corr_feature_index=index, corr_feature_value=value)


def _forward_capture(model, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
    """The activations at `hooks` of one batch (the model's forward stops after the last needed block)."""
    return model.capture(tokens, hooks)


# -- finishing an SAE -----------------------------------------------------------------------------


@dataclass
class StatContext:
    """What a weights- or model-stage statistic (`sae_atlas.stats`) computes from: the SAE, its
    model, the settings, the entry's arrays so far and its meta (which a statistic may extend)."""

    sae: object  # sae_atlas.backends.SaeModule
    model: object  # sae_atlas.backends.ModelBackend
    settings: object  # ComputeSettings
    arrays: dict
    meta: dict
    corpus: Corpus
    options: ComputeOptions
    memo: dict = field(default_factory=dict)

    @property
    def pca_map(self) -> bool:
        return self.options.pca_map

    @property
    def batch_size(self) -> int:
        """Prompts per forward of a model-stage statistic (as in the corpus passes)."""
        return self.options.batch_size or default_batch_size(_model_device(self.model), self.corpus.context)

    def progress(self, what: str) -> str | None:
        """The title of a model-stage statistic's progress bar (None when quiet)."""
        return None if self.options.quiet else f"{self.meta['sae_id']} {what}"

    @functools.cached_property
    def w_dec(self) -> torch.Tensor:
        return _decoder_w(self.sae)

    def neuron_weights(self) -> torch.Tensor | None:
        """For an entry whose neurons are an MLP's (`meta["neurons"]`, an MLP-out SAE): the MLP's
        output weights W_out [d_mlp, d_model], whose rows are what each neuron writes; None otherwise."""
        hook = self.meta.get("neurons")
        if not hook:
            return None
        w_out = self.model.output_map(hook)
        if w_out is None or w_out.shape[1] != self.w_dec.shape[1]:
            raise AtlasError(f"{self.meta['sae_id']}: the output weights of {hook} do not write the SAE's {self.w_dec.shape[1]} dimensions")
        return w_out.to(self.w_dec.device).float()

    def output_map(self) -> torch.Tensor | None:
        """The map of the SAE's output hook into the residual stream (None when there is none)."""
        out_map = self.model.output_map(self.sae.hook_out, self.sae.head_index)
        return None if out_map is not None and out_map.shape[0] != self.w_dec.shape[1] else out_map

    def logit_effects(self) -> tuple:
        """`weights.logit_effects` with the logit histogram: one product W_dec @ M @ W_U per chunk
        serves the `logits` and `logit_histogram` statistics."""
        if "logit_effects" not in self.memo:
            s = self.settings
            self.memo["logit_effects"] = logit_effects(
                self.w_dec, self.output_map(), self.model.unembedding(), s.logits, histogram_bins=s.logit_histogram_bins
            )
        return self.memo["logit_effects"]

    def decoder_knn(self) -> tuple[np.ndarray, np.ndarray]:
        """Each feature's nearest other features by decoder cosine, as many as the neighbours shown
        and the map's neighbour graph need (one search serves both)."""
        if "knn" not in self.memo:
            self.memo["knn"] = _decoder_knn(self.w_dec, self.settings)
        return self.memo["knn"]

    def background_map(self) -> np.ndarray | None:
        """The map the map worker fitted for this SAE since `_start_maps` (None when none did)."""
        sent = self.memo.pop("map_worker", None)
        return None if sent is None else sent[0].take(sent[1])


def _decoder_w(sae) -> torch.Tensor:
    return sae.W_dec.detach().float()


def _decoder_knn(w_dec: torch.Tensor, settings) -> tuple[np.ndarray, np.ndarray]:
    k_map = umap_neighbour_count(w_dec.shape[0], settings.umap_neighbours)
    return cosine_neighbours(w_dec, w_dec, max(settings.neighbours, k_map - 1), exclude_self=True)


def _start_maps(running: list[_Running], options: ComputeOptions) -> None:
    """The UMAP maps of these SAEs sent to the map worker (`maps.MapWorker`, started by
    `api.compute`) as soon as the SAEs are loaded, to be fitted there beside the corpus passes; each
    SAE's StatContext takes its own (`FeatureMap.compute`). Without a worker each map is fitted in
    turn when its SAE is finished."""
    from sae_atlas.stats.feature_map import map_call

    worker = options.map_worker
    if worker is None:
        return
    for r in running:
        s = r.job.release.compute
        w_dec = _decoder_w(r.sae)
        method = map_method(w_dec.shape[0], options.pca_map)
        if method == "umap":
            r.memo["knn"] = _decoder_knn(w_dec, s)
            args, kwargs = map_call(w_dec, s, method, r.memo["knn"])
            worker.start(r.job.id, functools.partial(umap_request, *args, **kwargs))  # built when sent
            r.memo["map_worker"] = (worker, r.job.id)


def _compute_later_stats(ctx: StatContext, todo: list[statistics.Statistic]) -> None:
    """The weights- and model-stage statistics in `todo`, added to ctx.arrays."""
    for stat in todo:
        made = stat.compute(ctx)
        missing = set(stat.arrays) - set(made)
        if missing:
            raise AtlasError(f"statistic {stat.name} did not compute {', '.join(sorted(missing))}")
        ctx.arrays.update(made)


def _finish(r: _Running, model, corpus: Corpus, store: CacheStore, ce: tuple[float | None, float | None], options: ComputeOptions) -> None:
    job, s, sae = r.job, r.job.release.compute, r.sae
    arrays = {**r.stats.feature_arrays(), **r.extra}
    n_tokens = int(r.stats.n_tokens)
    ce_clean, ce_spliced = ce
    stats = r.stats.reconstruction_stats()
    density = arrays["density"]
    stats.update(
        dead=int((arrays["nonzero_count"] == 0).sum()),
        dense=int((density > DENSE_THRESHOLD).sum()),
        dense_threshold=DENSE_THRESHOLD,
        ce_loss_clean=ce_clean,
        ce_loss_spliced=ce_spliced,
        ce_loss_delta=None if ce_clean is None or ce_spliced is None else ce_spliced - ce_clean,
    )
    meta = {
        "sae_id": job.id,
        "release": job.release.id,
        "model": job.spec.model_id,
        "set": job.spec.set_id,
        "layer": job.spec.layer,
        "hook": sae.hook_in,
        "hook_out": sae.hook_out,
        "hook_head_index": sae.head_index,
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "d_out": sae.d_out,
        "model_kwargs": sae.model_kwargs,
        "dtype": options.dtype,
        "device": _model_device(model),  # where the corpus passes ran (`loss_effects: auto` reads it)
        "n_tokens": n_tokens,
        "n_prompts": corpus.n_prompts,
        "context": corpus.context,
        "corpus_key": corpus.key,
        "settings": dataclasses.asdict(s),
        "stats": stats,
    }
    if _neurons(sae) is not None:  # only then: other entries' meta stays as it was
        meta["neurons"] = _neurons(sae)
    wanted = statistics.wanted(meta, s)
    ctx = StatContext(sae, model, s, arrays, meta, corpus, options, r.memo)
    _compute_later_stats(ctx, [stat for stat in wanted if stat.stage not in statistics.CORPUS_STAGES])
    meta["statistics"] = statistics.signatures(wanted, s)
    write_entry(store.sae_dir(job.key), meta, arrays)
    store.remove_partials(job.key)


def _top_up(jobs: list[tuple[SaeJob, object]], corpus: Corpus, store: CacheStore, options: ComputeOptions, device: str, report: ComputeReport) -> None:
    """Entries whose corpus passes are current but which lack statistics computed after them (new,
    of another version, or of other settings) or hold ones no longer wanted: those alone are
    computed or dropped, and the entry rewritten."""
    by_kwargs: dict[str, list] = {}
    with torch.inference_mode():
        for job, entry in jobs:
            sae = load_sae(job.spec, device, "float32")
            by_kwargs.setdefault(orjson.dumps(sae.model_kwargs, option=orjson.OPT_SORT_KEYS).decode(), []).append((job, entry, sae))
        for members in by_kwargs.values():
            release = members[0][0].release
            model = load_model(release.model, device, options.dtype, members[0][2].model_kwargs, options.quiet)
            model.enable_hooks(sorted({h for _, _, sae in members for h in sae.hooks}))
            for job, entry, sae in members:
                settings = job.release.compute
                todo = statistics.stale(entry.meta, settings)
                if any(stat.stage in statistics.CORPUS_STAGES for stat in todo):
                    raise AtlasError(f"{job.id}: cache entry {entry.path} lacks corpus statistics its key covers; delete it to recompute")
                if not options.quiet:
                    computing = f"computing {', '.join(s.name for s in todo)}" if todo else f"dropping {', '.join(statistics.surplus(entry.meta, settings))}"
                    print(f"{job.id}: {computing} (the corpus passes are cached)", file=sys.stderr)
                arrays = {name: np.asarray(a) for name, a in entry.arrays.items()}
                meta = {k: v for k, v in entry.meta.items() if k not in ("format", "files")}
                meta["settings"] = dataclasses.asdict(settings)
                ctx = StatContext(sae, model, settings, arrays, meta, corpus, options)
                _compute_later_stats(ctx, todo)
                kept = statistics.wanted(meta, settings)
                names = set(statistics.arrays_of(kept))
                meta["statistics"] = statistics.signatures(kept, settings)
                write_entry(store.sae_dir(job.key), meta, {k: v for k, v in arrays.items() if k in names or k not in statistics.ALL_ARRAYS})
                report.computed.append(job.id)
            del model


# -- cross-layer neighbours of a Set --------------------------------------------------------------


def _compute_set(release: Release, set_spec: SetSpec, store: CacheStore, options: ComputeOptions, device: str, locks: Locks) -> bool:
    """set/<set_key>/: for each SAE a of the Set (in manifest order), `index_a` i32[F_a, n, 3] and
    `cosine_a` f32[F_a, n, 3]: the 3 most similar decoder directions in each SAE b of the Set
    (slot b == a holds index -1, cosine 0). Returns True if written (by this process)."""
    key = set_key(release, set_spec)
    what = f"the Set {set_spec.saes[0].model_id}/{set_spec.id}"
    with locks.hold(f"set-{key}", what, lambda: store.set_entry(key) is not None) as mine:
        if mine:
            _write_set(release, set_spec, store, key)
        return mine


def _write_set(release: Release, set_spec: SetSpec, store: CacheStore, key: str) -> None:
    saes = list(set_spec.saes)
    with torch.inference_mode():
        decoders = [load_sae(spec, "cpu", "float32").W_dec.detach().float() for spec in saes]
    n = len(saes)
    arrays = {}
    for a, w_a in enumerate(decoders):
        index = np.full((w_a.shape[0], n, CROSS_NEIGHBOURS), -1, np.int32)
        cosine = np.zeros((w_a.shape[0], n, CROSS_NEIGHBOURS), np.float32)
        for b, w_b in enumerate(decoders):
            if a != b and w_a.shape[1] == w_b.shape[1]:
                index[:, b], cosine[:, b] = cosine_neighbours(w_a, w_b, CROSS_NEIGHBOURS, exclude_self=False)
        arrays[f"index_{a}"], arrays[f"cosine_{a}"] = index, cosine
    meta = {"release": release.id, "model": release.model.id, "set": set_spec.id, "sae_ids": [s.id for s in saes]}
    write_entry(store.set_dir(key), meta, arrays)


# -- work units: one SAE's corpus passes spread over processes (`compute.units`) -----------------


@dataclass(frozen=True)
class _Task:
    """The next pass of one work unit of one SAE."""

    job: SaeJob
    sae: object
    unit: tuple[int, int]
    pass_no: int  # 1 or 2

    @property
    def lock(self) -> str:
        return units.unit_lock(self.job.key, *self.unit)


def _unit_pass(store: CacheStore, job: SaeJob, unit: tuple[int, int]) -> int:
    """The pass a unit's state is at: 1 (none yet, or pass 1 under way), 2, or 3 (both done)."""
    try:
        return int(orjson.loads((store.unit_dir(job.key, *unit) / "meta.json").read_bytes())["pass"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def _unit_array(store: CacheStore, job: SaeJob, unit: tuple[int, int], name: str) -> np.ndarray:
    """One array of a unit's state, checked against its digest (the rest is not read). A state
    being replaced by its holder's checkpoint is missing for a moment, or its meta.json read
    before the replacement and its array after: looked for again. The array's bytes are read once,
    so that the bytes checked are the bytes loaded."""
    path = store.unit_dir(job.key, *unit)
    for attempt in range(100):
        try:
            meta = orjson.loads((path / "meta.json").read_bytes())
            data = (path / f"{name}.npy").read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["files"][f"{name}.npy"]:
                raise CorruptEntry(f"{path / name}.npy: checksum mismatch")
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (FileNotFoundError, orjson.JSONDecodeError, CorruptEntry):
            if attempt == 99:
                raise
            time.sleep(0.05)


def _new_stats(job: SaeJob, sae, corpus: Corpus, device: str) -> FeatureStats:
    """The SAE's empty corpus statistics. Reconstruction statistics are of what the SAE writes: d_out
    wide (d_in but for transcoders). Correlated neurons are of its input's dimensions, or of the
    MLP's neurons for an MLP-out SAE."""
    neurons = _neurons(sae)
    basis_dim = sae.d_in if neurons is None else _neuron_width(job, neurons)
    return FeatureStats(sae.d_sae, sae.d_out, corpus.context, job.release.compute, device, basis_dim=basis_dim)


def _compute_units(jobs: list[SaeJob], ranges: list[tuple[int, int]], mine: dict[str, set[int]], corpus: Corpus, store: CacheStore,
                   options: ComputeOptions, device: str, locks: Locks, report: ComputeReport) -> None:
    """The SAEs of one model and corpus whose corpus spans several work units: the units' passes
    (this shard's first, then any other nobody holds), the merge and the finish of each SAE."""
    release = jobs[0].release
    batch_size = options.batch_size or default_batch_size(device, corpus.context)
    with torch.inference_mode():
        running = [_Running(job, load_sae(job.spec, device, "float32"), None) for job in jobs]
        _check_prepend_bos(release, running)
        groups: dict[str, list[_Running]] = {}
        for r in running:
            groups.setdefault(orjson.dumps(r.sae.model_kwargs, option=orjson.OPT_SORT_KEYS).decode(), []).append(r)
        for members in groups.values():
            model = load_model(release.model, device, options.dtype, members[0].sae.model_kwargs, options.quiet)
            model.enable_hooks(sorted({h for r in members for h in r.sae.hooks}))
            _check_hooks(model, members)
            _unit_loop(model, [(r.job, r.sae) for r in members], ranges, mine, corpus, store, options, batch_size, locks, report, device)
            del model


def _unit_loop(model, saes: list[tuple[SaeJob, object]], ranges: list[tuple[int, int]], mine: dict[str, set[int]], corpus: Corpus,
               store: CacheStore, options: ComputeOptions, batch_size: int, locks: Locks, report: ComputeReport, device: str) -> None:
    """Until every SAE of `saes` has its entry: take the best free task (a pass 2 whose pass 1
    this process kept in memory, then this shard's units, then any other: work stealing; pass 1
    before pass 2) with every free task of the same unit and pass (one model forward feeds them
    all), or finish an SAE whose units are all done; when every task left is held by another
    process (or waits for another's pass 1), wait for one of those locks."""
    replay = _bounded_replay(saes[0][0].release.model.id, model, [sae for _, sae in saes], corpus, options, batch_size, device)
    kept: set[tuple[str, int]] = set()  # (SAE id, unit start) whose pass 1 this process ran
    sparse_decode: dict[str, bool | None] = {}
    while True:
        pending = [(job, sae) for job, sae in saes if not (store.sae_dir(job.key) / "meta.json").exists()]
        if not pending:
            report.cached += [job.id for job, _ in saes if job.id not in report.computed]  # finished by others
            break
        state = {(job.id, unit): _unit_pass(store, job, unit) for job, _ in pending for unit in ranges}
        tasks, finishable = [], []
        for job, sae in pending:
            passes = [state[(job.id, unit)] for unit in ranges]
            if min(passes) == 3:
                finishable.append((job, sae))
            tasks += [_Task(job, sae, unit, p) for unit, p in zip(ranges, passes) if p == 1 or (p == 2 and min(passes) >= 2)]
        own = mine.get
        tasks.sort(key=lambda t: (not (t.pass_no == 2 and (t.job.id, t.unit[0]) in kept), t.unit[0] not in (own(t.job.id) or ()), t.pass_no, t.unit, t.job.id))
        held: list[_Task] = []
        for t in tasks:
            if (not held or (t.unit, t.pass_no) == (held[0].unit, held[0].pass_no)) and locks.try_acquire(t.lock):
                held.append(t)
        if held:
            try:
                # Done meanwhile by the process that held it before us?
                todo = [t for t in held if _unit_pass(store, t.job, t.unit) == t.pass_no and not (store.sae_dir(t.job.key) / "meta.json").exists()]
                if todo:
                    _run_unit(model, todo, ranges, corpus, store, options, batch_size, replay, sparse_decode, device)
                    if todo[0].pass_no == 1:
                        kept.update((t.job.id, t.unit[0]) for t in todo)
            finally:
                for t in held:
                    locks.release(t.lock)
            continue
        if finishable:
            for job, sae in finishable:
                done = lambda job=job: (store.sae_dir(job.key) / "meta.json").exists()  # noqa: E731
                with locks.hold(f"sae-{job.key}", f"SAE {job.id}", done) as ours:
                    if ours:
                        _finish_units(job, sae, model, ranges, corpus, store, options, batch_size, replay, device)
                        report.computed.append(job.id)
            continue
        # Every task left is held elsewhere, or waits for a pass 1 held elsewhere.
        busy = {units.unit_lock(job.key, *unit): f"SAE {job.id} prompts {unit[0]}-{unit[1]}" for job, _ in pending for unit in ranges
                if state[(job.id, unit)] < 3 and locks.path(units.unit_lock(job.key, *unit)).exists()}
        if busy:
            locks.wait(busy, lambda state=state: any(_unit_pass(store, job, unit) != state[(job.id, unit)] for job, _ in pending for unit in ranges))
        else:
            time.sleep(0.5)  # a lock was released between the look at the states and the try


def _run_unit(model, tasks: list[_Task], ranges: list[tuple[int, int]], corpus: Corpus, store: CacheStore, options: ComputeOptions,
              batch_size: int, replay: Replay, sparse_decode: dict, device: str) -> None:
    """One pass over one unit's prompts for the SAEs of `tasks` (the same unit and pass), from
    its checkpoint if one was left; pass 2 bins against the SAE's max over all its units."""
    (lo, hi), pass_no = tasks[0].unit, tasks[0].pass_no
    running = []
    for t in tasks:
        path = store.unit_dir(t.job.key, lo, hi)
        stats = _resumed_stats(t.job, t.sae, corpus, device, path, lo, "work unit state")
        if stats.pass_no != pass_no:
            continue
        if pass_no == 2:
            top = torch.zeros_like(stats.max_activation)
            for unit in ranges:
                top = torch.maximum(top, torch.from_numpy(_unit_array(store, t.job, unit, "max_activation")).to(top.device))
            stats.max_activation = top
        running.append(_Running(t.job, t.sae, stats, sparse_decode.get(t.job.id), first=lo, partial=path))
    if running:
        _run_pass(pass_no, model, running, corpus, store, options, batch_size, replay, end=hi)
        release_free_memory()
        sparse_decode.update((r.job.id, r.sparse_decode) for r in running)


def _finish_units(job: SaeJob, sae, model, ranges: list[tuple[int, int]], corpus: Corpus, store: CacheStore, options: ComputeOptions,
                  batch_size: int, replay: Replay, device: str) -> None:
    """Merge the SAE's units in unit order (exact: the state one pass over the corpus gives), then
    as for a whole SAE: correlated features, CE loss, the weights-only parts, the entry."""
    stats = _new_stats(job, sae, corpus, device)
    for unit in ranges:
        part = _new_stats(job, sae, corpus, device)
        entry = read_entry(store.unit_dir(job.key, *unit))
        if entry is None:
            raise AtlasError(f"{job.id}: the state of prompts {unit[0]}-{unit[1]} vanished while merging")
        part.load_state(entry.arrays, int(entry.meta["pass"]), int(entry.meta["prompts_done"]))
        stats.merge(part)
    r = _Running(job, sae, stats)
    _start_maps([r], options)
    _correlate_features(r, model, corpus, options, batch_size, replay, ranges)
    release_free_memory()
    ce_bar = None if options.quiet else f"{job.id} CE loss"
    ce = model.ce_losses(corpus, [CeSae(job.id, sae, job.release.compute.ce_prompts)], batch_size, device, progress=ce_bar)
    _finish(r, model, corpus, store, ce[job.id], options)

"""Command line: argument parsing only. Every command calls one function of `sae_atlas.pipeline`."""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import threading
from pathlib import Path

from sae_atlas.cache import COMPUTE_DTYPES, DEFAULT_DTYPE
from sae_atlas.errors import AtlasError, InputError
from sae_atlas.export import EXPORTERS

DEFAULT_CONTENT = Path("content")
DEFAULT_OUT = Path("build/site")
DEFAULT_CACHE = Path("build/cache")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= I < N")
    return i, n


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """Bytes from e.g. 0, 512M, 4G (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = _SIZE_UNITS.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 0, 512M or 4G") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size >= 0")
    return int(value * scale)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sae-atlas", description="Static site generator for SAE releases.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--content", type=Path, default=DEFAULT_CONTENT, help="content dir with releases/*.yaml")
        sp.add_argument("--quiet", action="store_true", help="no progress bars (CI logs)")

    def dtype_opt(sp: argparse.ArgumentParser, verb: str) -> None:
        sp.add_argument("--dtype", default=DEFAULT_DTYPE, choices=COMPUTE_DTYPES, help=f"model dtype of the statistics {verb} (part of the cache key)")

    def compute_opts(sp: argparse.ArgumentParser, shard: bool = True) -> None:
        sp.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
        dtype_opt(sp, "to compute")
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
        sp.add_argument("--batch-size", type=int, default=None, help="prompts per forward batch")
        sp.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own; 1 is faster on a busy machine)")
        sp.add_argument(
            "--replay-memory", type=_size, default=None, metavar="SIZE",
            help="memory for pass 1's activations, replayed in pass 2 instead of running the model again (e.g. 4G; 0: none; default: 40%% of the free memory less the working set; the peak stays within the memory in use, this and a working set of one batch)",
        )
        sp.add_argument("--release", action="append", default=None, help="only this release (repeatable)")
        sp.add_argument(
            "--unit-prompts", type=_positive, default=None, metavar="N",
            help="prompts per work unit: --shard splits an SAE's corpus into units of N prompts (default: about 4M tokens' worth; every process on one cache must agree)",
        )
        if shard:
            sp.add_argument("--shard", type=_shard, default=None, help="compute slice I of N of the (SAE, work unit) pairs (for schedulers)")

    def render_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", type=Path, default=DEFAULT_OUT)
        sp.add_argument("--theme", type=Path, default=None, help="dir overriding themes/default file by file")

    sp = sub.add_parser("build", help="compute then render")
    common(sp), compute_opts(sp), render_opts(sp)
    sp = sub.add_parser("check", help="validate manifests only")
    common(sp)
    sp = sub.add_parser("compute", help="fill the cache")
    common(sp), compute_opts(sp)
    sp = sub.add_parser("render", help="render the site from the cache (no torch needed)")
    common(sp), render_opts(sp)
    sp.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    dtype_opt(sp, "to render")
    sp.add_argument("--release", action="append", default=None)
    sp = sub.add_parser("serve", help="preview the site with live reload")
    common(sp), render_opts(sp)
    sp.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    dtype_opt(sp, "to render")
    sp.add_argument("--port", type=int, default=8000)
    sp = sub.add_parser("init", help="write a manifest for a release of SAELens's registry")
    sp.add_argument("--sae-lens", required=True, metavar="RELEASE", help="a release of SAELens's pretrained_saes.yaml, e.g. gpt2-small-res-jb")
    sp.add_argument("--layers", default=None, help="only these layers, e.g. 8-9 or 8,9 (default: all)")
    sp.add_argument("--out", type=Path, default=None, help="the manifest to write (default: CONTENT/releases/RELEASE.yaml); never overwritten")
    sp.add_argument("--content", type=Path, default=DEFAULT_CONTENT, help="content dir whose releases/ gets the manifest")
    sp.add_argument("--corpus", default=None, metavar="PATH|DATASET", help="a local .txt/.jsonl file or a hub dataset name (default: the registry's, if it names one)")
    sp = sub.add_parser("new", help="scaffold a project: example manifest, .gitignore, Pages workflow, README")
    sp.add_argument("dir", type=Path, help="the project folder (created if missing); no file in it is overwritten")
    sp = sub.add_parser("import", help="import statistics computed elsewhere into the cache")
    sp.add_argument("format", choices=["neuronpedia"], help="the export's format: neuronpedia (its {modelId}/{sourceId}/ folders)")
    sp.add_argument("dir", type=Path, help="the export folder")
    sp.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    sp.add_argument("--quiet", action="store_true", help="no progress lines (CI logs)")
    sp = sub.add_parser("dump", help="print one feature's computed record as JSON")
    common(sp)
    sp.add_argument("feature", help="MODEL@LAYER-SET:INDEX")
    sp.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    dtype_opt(sp, "to print")
    sp = sub.add_parser("export", help="write the computed statistics in another tool's format")
    common(sp)
    sp.add_argument("format", choices=sorted(EXPORTERS), help="neuronpedia: the files Neuronpedia's admin import reads")
    sp.add_argument("--out", type=Path, required=True, help="the folder to write (replaced atomically)")
    sp.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    dtype_opt(sp, "to export")
    sp.add_argument("--release", action="append", default=None, help="only this release (repeatable)")
    sp = sub.add_parser("slurm", help="write (and --submit) a Slurm array job of compute shards plus a render job after it")
    common(sp), compute_opts(sp, shard=False), render_opts(sp)
    sp.add_argument("manifests", nargs="*", type=Path, metavar="MANIFEST", help="CONTENT/releases/NAME.yaml (default: every release of --content)")
    sp.add_argument("--array-size", type=int, default=None, metavar="N", help="compute tasks, each with --shard I/N (default: one per SAE)")
    sp.add_argument("--partition", default=None, help="Slurm partition of both jobs")
    sp.add_argument("--gpus-per-task", type=int, default=None, metavar="N", help="GPUs of each compute task")
    sp.add_argument("--time", default=None, help="time limit of each job, e.g. 4:00:00")
    sp.add_argument("--cpus-per-task", type=int, default=None, metavar="N")
    sp.add_argument("--mem", default=None, help="memory of each job, e.g. 32G")
    sp.add_argument("--sbatch", action="append", default=[], metavar="OPTION", help="another #SBATCH option for both jobs, e.g. --sbatch=--account=lab (repeatable)")
    sp.add_argument("--dir", type=Path, default=None, help="where the job scripts and logs go (default: slurm/ beside --out)")
    sp.add_argument("--submit", action="store_true", help="submit the jobs with sbatch (otherwise: run DIR/submit.sh)")
    sp = sub.add_parser("deploy", help="publish the site as a commit on a gh-pages branch and push it")
    sp.add_argument("--site", type=Path, default=DEFAULT_OUT, help="the rendered site (default: build/site)")
    sp.add_argument("--branch", default="gh-pages", help="the branch to commit onto (default: gh-pages)")
    sp.add_argument("--remote", default="origin", help="the remote to push to (default: origin)")
    sp.add_argument("--message", "-m", default=None, help="commit message (default: Deploy site: RELEASES from COMMIT)")
    sp.add_argument("--no-push", dest="push", action="store_false", help="only commit on the local branch")
    sp.add_argument("--max-site-size", type=_size, default=None, help=argparse.SUPPRESS)  # tests lower the limits
    sp.add_argument("--max-file-size", type=_size, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from sae_atlas import pipeline

    try:
        return getattr(pipeline, f"cmd_{args.command}")(args) or 0
    except InputError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        n = len(e.problems)
        print(f"sae-atlas: {n} problem{'s' if n != 1 else ''} found; nothing was written", file=sys.stderr)
        return e.exit_code
    except AtlasError as e:
        print(f"sae-atlas: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("sae-atlas: interrupted; the previous site and finished cache entries are intact", file=sys.stderr)
        return 130


def run() -> None:
    """The console script and `python -m sae_atlas`: `main`, then `exit_now` with its exit code."""
    exit_now(main())


def exit_now(code: int) -> None:
    """Exit with `code` without the interpreter's teardown. After a compute, tearing down its heap
    (torch, transformers, numba: 600k objects, collected again and again as modules are cleared)
    takes longer than some commands' work. Every file the commands write is closed before they
    return, so skipping the teardown loses nothing: atexit handlers (temporary directories,
    multiprocessing, logging) still run and stdio is flushed. While a non-daemon thread still runs,
    the interpreter's own exit (which waits for it) is used, and so it is under a profiler, tracer or
    debugger (`python -m cProfile -m sae_atlas`), which may still have work to do when we return."""
    gc.disable()  # no collection of the heap from here on
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written
            pass
    try:  # what C libraries wrote through stdio's buffers, which exit() would flush
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
    os._exit(code)


if __name__ == "__main__":
    run()

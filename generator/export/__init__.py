"""Outputs of the cache: each exporter plans picklable tasks and the render pool writes them.

A task is `(function, args)`: a module-level function called as `function(*args, root)` (in a
worker process, so its arguments are plain picklable data) that writes files under the output root
and returns `(files, bytes)`. The site's data files (`sae_atlas.render.site`) and the Neuronpedia
export (`neuronpedia.py`) run through `run_tasks`; `sae-atlas dump` (`dump.py`) reads one record and
prints it. `EXPORTERS` names the exporters of `sae-atlas export NAME`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

Task = tuple[Callable[..., tuple[int, int]], tuple]

# name -> "module:function" taking (releases, cache, out, dtype=, quiet=, workers=) and returning
# its report; imported only when asked for.
EXPORTERS: dict[str, str] = {
    "neuronpedia": "sae_atlas.export.neuronpedia:export_neuronpedia",
}


def exporter(name: str) -> Callable[..., Any]:
    module, function = EXPORTERS[name].split(":")
    return getattr(importlib.import_module(module), function)


def _progress(total: int, quiet: bool, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, leave=False)


def _run(function, args, root: str) -> tuple[int, int]:
    return function(*args, root)


def run_tasks(tasks: list[Task], root: Path, workers: int, quiet: bool, desc: str, unit: str = "SAE") -> tuple[int, int]:
    """Run every task (in `workers` processes when more than one), with a progress bar; returns the
    total (files, bytes) written."""
    files = size = 0
    if workers <= 1:
        with _progress(len(tasks), quiet, desc, unit) as bar:
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
            with _progress(len(tasks), quiet, desc, unit) as bar:
                for future in as_completed(futures):
                    f, b = future.result()
                    files, size = files + f, size + b
                    bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return files, size

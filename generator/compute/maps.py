"""UMAP maps of decoders: umap-learn's fit of one map from its neighbour graph (`fit`), and a worker
process that fits them beside the compute (`MapWorker`). No torch: the worker imports numpy and
umap-learn alone.

A seeded map's layout epochs are serial, so each map keeps one core busy for its whole fit (about
0.5 s for 2,048 features, tens of seconds at 100k), and umap-learn's import takes about a second
of one core. `sae-atlas compute` starts the worker before it imports torch (`api.compute`): its
import runs beside the compute's own, and the maps of each group's SAEs are fitted there from the
moment the SAEs are loaded, beside the corpus passes, on a core the compute leaves idle (on a GPU
nearly all of them are). Maps in a thread of the compute itself were no faster on a CPU: umap-learn's
import holds the GIL the passes need between their kernels. A map from the worker is the one the
caller's own `fit` gives, byte for byte; should the worker fail, the caller fits the map itself.

    python -m sae_atlas.compute.maps THREADS   # the worker: pickled requests on stdin, results on stdout
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
import types
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

import numpy as np

NOGIL_EPOCH = "_optimize_layout_euclidean_single_epoch_nogil"


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def user_cache_dir() -> Path:
    """sae-atlas under the user's cache directory (XDG_CACHE_HOME, default ~/.cache): what a run
    keeps for the next on this machine (numba's compiled code, transformers' import structure)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sae-atlas"


def numba_cache_dir() -> Path:
    """Where numba keeps UMAP's compiled code between runs: NUMBA_CACHE_DIR when set, else
    numba under `user_cache_dir()`."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    return user_cache_dir() / "numba"


def load_umap():
    """umap-learn with numba's on-disk cache turned on for its compiled functions (umap-learn caches
    almost none of them), so that only the first run on a machine pays their compilation (~10 s)."""
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    from sae_atlas.backends.deferred_imports import import_umap

    import numba  # noqa: F401  (after NUMBA_CACHE_DIR)

    cache_loads_without_refresh()
    with _cached_jit():
        umap = import_umap()  # without scipy.stats and pandas, which a fit on an array never uses
    from numba.core.dispatcher import Dispatcher

    _nogil_layout_epoch()
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("umap", "pynndescent") and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher) and value._cache.__class__.__name__ == "NullCache":
                    value.enable_caching()
    return umap


def cache_loads_without_refresh() -> None:
    """From now on in this process, numba loads code from its on-disk cache without first loading
    every implementation it has for its CPU target. numba refreshes its target before each load
    from the cache, which imports and registers all of them (numpy's array functions, its random
    generators, typed containers...): 0.3-0.5 s of a process's first load, and only its compiler
    reads them. Code from the cache is machine code already: what it links to is numba's runtime
    (initialized here), its C helpers (installed with the target itself), the hash secret's symbols
    (which `numba.cpython.hashing` installs at its import) and, for parallel code, the threading
    layer (which the cached code's own start-up launches). Where the cache misses, numba compiles as
    ever, refreshing its target first. A numba without these internals keeps its own load."""
    from numba.core import caching

    load = getattr(caching.Cache, "load_overload", None)
    if load is None or getattr(load, "without_refresh", False):
        return
    if not all(hasattr(caching.Cache, name) for name in ("_load_overload", "_guard_against_spurious_io_errors")):
        return

    def load_overload(self, sig, target_context):
        import numba.cpython.hashing  # noqa: F401  (the hash secret's symbols)
        from numba.core.runtime import rtsys

        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload.without_refresh = True
    caching.Cache.load_overload = load_overload


@contextlib.contextmanager
def _cached_jit():
    """Within: numba's jit decorators keep what they compile in numba's on-disk cache unless told
    otherwise. umap-learn and pynndescent compile a few functions with explicit signatures at
    import, without the cache, anew in every process; from the cache the worker's start took
    1.12-1.23 s of CPU rather than 1.17-1.28 s (the first load from numba's cache pays for its
    code generator's start, which the compile paid before)."""
    import numba
    from numba.core import decorators

    plain = decorators.jit

    def jit(*args, **kwargs):
        kwargs.setdefault("cache", True)
        return plain(*args, **kwargs)

    decorators.jit, numba.jit = jit, jit
    try:
        yield
    finally:
        decorators.jit, numba.jit = plain, plain


def _nogil_layout_epoch() -> None:
    """umap-learn's serial layout epoch (nearly all of a seeded fit's time) compiled to release the
    GIL, so that the worker's threads fit maps at once. The same function and compiler flags but
    `nogil`, which changes no instruction of its body: the same coordinates. It is compiled under its
    own name, because numba's on-disk cache tells entries apart by function name and signature, not
    by flags, and would hand back umap-learn's GIL-holding build."""
    import numba
    from umap import layouts

    if getattr(layouts._nb_optimize_layout_euclidean_single_epoch, "__name__", "") == NOGIL_EPOCH:
        return
    f = layouts._optimize_layout_euclidean_single_epoch
    g = types.FunctionType(f.__code__, f.__globals__, NOGIL_EPOCH, f.__defaults__, f.__closure__)
    g.__qualname__ = NOGIL_EPOCH
    layouts._nb_optimize_layout_euclidean_single_epoch = numba.njit(g, fastmath=True, parallel=False, nogil=True, cache=True)


def fit(x: np.ndarray, k: int, seed: int, epochs: int, knn_index: np.ndarray, knn_dist: np.ndarray, numba_threads: int) -> np.ndarray:
    """float32 [F, 2]: umap-learn's 2-D map of the unit rows x (cosine metric, n_neighbors k) from
    their neighbour graph (each point first, at distance 0), seeded. umap-learn's parallel numba
    loops run in `numba_threads` threads; they are independent per point, so the count changes no
    coordinate (numba's count is per thread and is given back after)."""
    umap = load_umap()
    import numba

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        metric="cosine",
        random_state=seed,
        n_epochs=epochs,
        n_jobs=1,
        precomputed_knn=(knn_index, knn_dist, None),
    )
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(numba_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reducer.fit_transform(x).astype(np.float32)
    finally:
        numba.set_num_threads(before)


class MapWorker:
    """A child process fitting maps (`fit`) while the caller goes on: `start` queues one request,
    `take` waits for its map. `take` gives None when the worker could not fit it (it failed, or
    died): the caller then fits the map itself, so an error is raised where it would have been
    without the worker. At most one request per thread and one more are with the worker at once,
    the rest wait here, unbuilt when given as a callable: a group of many wide SAEs does not pile
    their decoders up in the worker. The worker ends when `close` closes its input, or when this
    process ends."""

    def __init__(self, threads: int):
        env = dict(os.environ)
        env.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
        self._futures: dict[str, Future] = {}
        self._pending: collections.deque = collections.deque()
        self._window = max(1, threads) + 1
        self._in_flight = 0
        self._sending = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sae_atlas.compute.maps", str(max(1, threads))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        self._reader = threading.Thread(target=self._read, name="sae-atlas map worker", daemon=True)
        self._reader.start()

    def start(self, key: str, request: dict | Callable[[], dict]) -> None:
        """Queue `fit(**request)` under key (`request()` when it is a callable, called when the
        request is sent, in this thread or the one reading the worker's results)."""
        self._futures[key] = Future()
        self._pending.append((key, request))
        self._send()

    def take(self, key: str) -> np.ndarray | None:
        """The map queued under key, or None when none was or the worker did not fit it."""
        future = self._futures.get(key)  # left for the reader to settle until it is
        if future is None:
            return None
        try:
            return future.result()
        finally:
            del self._futures[key]

    def close(self) -> None:
        """End the worker: it exits as its input closes, a fit under way or not; maps not taken
        are dropped. Waited for (a moment), so that its resource use counts in this process's."""
        with self._sending:
            self._pending.clear()
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.close()
        for future in list(self._futures.values()):
            _settle(future, None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)

    def _send(self) -> None:
        """Send queued requests while fewer than the window are with the worker."""
        with self._sending:
            while self._pending and self._in_flight < self._window:
                key, request = self._pending.popleft()
                future = self._futures.get(key)
                try:
                    built = request() if callable(request) else request
                    pickle.dump(("fit", key, built), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    self._proc.stdin.flush()
                    self._in_flight += 1
                except Exception:  # the worker is gone, or the request cannot be built: the caller fits it
                    if future is not None:
                        _settle(future, None)

    def _read(self) -> None:
        try:
            while True:
                status, key, value = pickle.load(self._proc.stdout)
                future = self._futures.get(key)
                if future is not None:
                    _settle(future, value if status == "ok" else None)
                with self._sending:
                    self._in_flight -= 1
                self._send()
        except Exception:  # EOF, a broken pipe, a torn message: the worker is gone
            pass
        finally:
            with self._sending:
                self._pending.clear()
            for future in list(self._futures.values()):
                _settle(future, None)
            self._proc.wait()


def _settle(future: Future, value) -> None:
    with contextlib.suppress(Exception):  # already settled
        future.set_result(value)


def _touch_threading_layer() -> None:
    """Start numba's threading layer (it is chosen at the first parallel call) in this thread."""
    import numba

    @numba.njit(parallel=True, cache=True)
    def _touch(a):  # pragma: no cover (compiled)
        for i in numba.prange(a.shape[0]):
            a[i] += 1.0

    _touch(np.zeros(2))


def _serve(threads: int) -> None:
    """The worker: umap-learn imported at once, then each request on stdin fitted by one of
    `threads` threads, its map (or its error) written to stdout as it is done."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but results goes to the pipe
    # Below the compute's priority: its fits take the cores the compute leaves idle rather than
    # slow its passes (a parallel op waits for its slowest thread; cold benchmark on 2 cores:
    # 7.1-7.6 s at nice 10, 8.0-8.4 s at the compute's own priority).
    with contextlib.suppress(AttributeError, OSError):
        os.nice(10)  # before any thread starts: Linux sets a thread's own, and new threads inherit it
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        with contextlib.suppress(EOFError, OSError, pickle.UnpicklingError):
            while True:
                jobs.put(pickle.load(source))

    # Requests are read from the start, so that the caller's writes never wait on umap-learn's import.
    receiving = threading.Thread(target=receive, name="requests", daemon=True)
    receiving.start()
    load_umap()
    import numba

    _touch_threading_layer()
    # numba's `workqueue` layer (where neither TBB nor OpenMP is installed) cannot take parallel
    # calls from several threads at once: fits then run one at a time.
    one_at_a_time = threading.Lock() if numba.threading_layer() not in ("tbb", "omp") else contextlib.nullcontext()
    writing = threading.Lock()

    def work() -> None:
        while (job := jobs.get()) is not None:
            _, key, request = job
            try:
                with one_at_a_time:
                    reply = ("ok", key, fit(**request, numba_threads=1))
            except Exception as e:
                reply = ("error", key, f"{type(e).__name__}: {e}")
            with writing:
                pickle.dump(reply, sink, protocol=pickle.HIGHEST_PROTOCOL)
                sink.flush()

    for i in range(max(1, threads)):
        threading.Thread(target=work, name=f"map {i}", daemon=True).start()
    receiving.join()
    os._exit(0)  # the caller closed its end: nothing it waits for is left


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

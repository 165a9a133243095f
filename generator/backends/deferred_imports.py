"""Import a package without the modules its import loads but a compute never uses.

`import_transformer_lens()`: TransformerLens imports at module level Hugging Face `datasets` (and
through it `pandas`, `pyarrow`), transformers' model code (`modeling_utils` and the modeling module
of every architecture it can convert, which import torch's dynamo, distributed tensors and sympy),
`pandas` and `pytest`: about 60% of its import time, used only to load a model by name from the hub,
to load a dataset or by its analysis tools.

`import_umap()`: umap-learn imports scikit-learn, whose `sklearn.utils.fixes` imports `scipy.stats`
(1.4 s of CPU) and `pandas` (0.35 s) at module level; `umap.distances`, `sklearn.metrics` and
`sklearn.preprocessing` import `scipy.stats` too. A UMAP fit on a NumPy array uses neither: scipy.stats
only in functions for other data (`scipy.stats.mode`, `rankdata`, discrete-metric parameters), pandas
only for DataFrames (scikit-learn looks for it in `sys.modules` before it tests an input).

Each imports its package with those modules deferred:

- while the package's own modules (for umap: umap's, pynndescent's and sklearn's) are being imported
  (and only for imports that they ask for, in this thread), a deferred module is a stand-in, and a
  name imported from it (`from datasets.load import load_dataset`) a `Deferred`;
- the stand-ins leave `sys.modules` and their parent packages when the import ends, so anything that
  imports them later gets the real modules; a stand-in bound by a requesting module (`import pandas as
  pd`) imports the real module on its first attribute;
- a `Deferred` imports its module on first use (call, attribute, isinstance, subclassing) and then
  rebinds itself, in every requesting module that holds it, to the real object;
- `pytest` (when not already imported) is reported missing to transformer_lens: TransformerLens only
  marks one of its docstrings skipped with it, and does without it.

Nothing changes for whoever imports the package another way (tests, SAELens): it is then the
ordinary import.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import threading
import types
import typing

if typing.TYPE_CHECKING:
    from pathlib import Path


class _Deferral(typing.NamedTuple):
    """What one deferred import defers: `deferred` (matched against module names) and `missing`,
    when `requesters` (top-level packages) import them; the names cached in `lazy` packages' modules
    are cleared when it ends."""

    top: str
    requesters: tuple[str, ...]
    deferred: re.Pattern
    missing: tuple[str, ...] = ()
    lazy: tuple[str, ...] = ()

    def requests(self, module: str) -> bool:
        return any(module == r or module.startswith(r + ".") for r in self.requesters)


TRANSFORMER_LENS = _Deferral(
    "transformer_lens", ("transformer_lens",),
    re.compile(r"^(?:datasets|pandas)(?:\..+)?$|^transformers\.(?:modeling_\w+|models\.\w+\.modeling_\w+)$"),
    missing=("pytest",), lazy=("transformers",),
)
UMAP = _Deferral("umap", ("umap", "pynndescent", "sklearn"), re.compile(r"^(?:pandas|scipy\.stats)(?:\..+)?$"))
# Frames between an import statement and the finder: the import machinery and transformers' lazy
# module (`from transformers import X` imports X's module from transformers.utils.import_utils).
_PASS_THROUGH = ("importlib", "_frozen_importlib", "_frozen_importlib_external", "transformers.utils.import_utils", __name__)
_lock = threading.Lock()


class Deferred:
    """Stands for `getattr(import_module(module), name)` until first used."""

    __slots__ = ("_module", "_name", "_target", "_deferral")

    def __init__(self, module: str, name: str, deferral: _Deferral = TRANSFORMER_LENS):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_target", _UNSET)
        object.__setattr__(self, "_deferral", deferral)

    def _resolve(self):
        target = object.__getattribute__(self, "_target")
        if target is _UNSET:
            module = importlib.import_module(object.__getattribute__(self, "_module"))
            target = getattr(module, object.__getattribute__(self, "_name"))
            object.__setattr__(self, "_target", target)
            _rebind(self, target, object.__getattribute__(self, "_deferral"))
        return target

    def __getattr__(self, name):
        return getattr(self._resolve(), name)

    def __setattr__(self, name, value):
        setattr(self._resolve(), name, value)

    def __call__(self, *args, **kwargs):
        return self._resolve()(*args, **kwargs)

    def __instancecheck__(self, obj):
        return isinstance(obj, self._resolve())

    def __subclasscheck__(self, cls):
        return issubclass(cls, self._resolve())

    def __mro_entries__(self, bases):
        return (self._resolve(),)

    def __or__(self, other):
        return typing.Union[self, other]

    def __ror__(self, other):
        return typing.Union[other, self]

    def __repr__(self):
        return f"<deferred {object.__getattribute__(self, '_module')}.{object.__getattribute__(self, '_name')}>"


_UNSET = object()


def _rebind(proxy: Deferred, target, deferral: _Deferral) -> None:
    """Replace `proxy` by `target` in the globals of every requesting module that holds it."""
    for name, module in list(sys.modules.items()):
        if deferral.requests(name):
            namespace = getattr(module, "__dict__", None) or {}
            for key, value in list(namespace.items()):
                if value is proxy:
                    namespace[key] = target


class _StandIn(types.ModuleType):
    """A deferred module: a `Deferred` per name while its requesters import, the real module's
    attribute afterwards (`__version__` included)."""

    def __getattr__(self, name):
        active = _Finder.active()
        if active and name.startswith("__"):  # the import system's probes
            raise AttributeError(name)
        if active:
            return Deferred(self.__name__, name, _Finder.deferral)
        if self.__name__ in sys.modules and sys.modules[self.__name__] is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []  # a package, so that `datasets.load` is looked up (and stood in for) too
        return module

    def exec_module(self, module):
        pass


class _Finder(importlib.abc.MetaPathFinder):
    """Stands in for the deferred modules that transformer_lens's modules import, in one thread."""

    thread: int | None = None
    deferral: _Deferral = TRANSFORMER_LENS
    created: list[str] = []

    @classmethod
    def active(cls) -> bool:
        return cls.thread == threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        deferral = _Finder.deferral
        if not self.active() or not _requested_by(deferral):
            return None
        if name in deferral.missing:  # not yet imported, or the import system would not ask
            raise ModuleNotFoundError(f"No module named {name!r} (deferred while importing {deferral.top})", name=name)
        if not deferral.deferred.match(name):
            return None
        self.created.append(name)
        return importlib.machinery.ModuleSpec(name, _Loader(), is_package=True)


def _requested_by(deferral: _Deferral) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_PASS_THROUGH):
            return deferral.requests(module)
        frame = frame.f_back
    return False


def import_transformer_lens() -> types.ModuleType:
    """transformer_lens, imported with its deferred modules deferred (once; later calls return it)."""
    if "transformer_lens" not in sys.modules:
        import_transformers()
        with _deferring(TRANSFORMER_LENS):
            import transformer_lens  # a statement, not import_module: `-X importtime` reports it
    import transformer_lens  # once another thread's import of it is complete

    return transformer_lens


def import_umap() -> types.ModuleType:
    """umap (umap-learn), imported with scipy.stats and pandas deferred (once; later calls return it)."""
    if "umap" not in sys.modules:
        with _deferring(UMAP):
            import umap  # a statement: `-X importtime` reports it
    import umap  # once another thread's import of it is complete

    return umap


@contextlib.contextmanager
def _deferring(deferral: _Deferral):
    with _lock:
        if deferral.top in sys.modules:
            yield
            return
        finder = _Finder()
        _Finder.created = []
        _Finder.deferral = deferral
        _Finder.thread = threading.get_ident()
        sys.meta_path.insert(0, finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            _Finder.thread = None
            _withdraw(_Finder.created, deferral)


def _withdraw(names: list[str], deferral: _Deferral) -> None:
    """Take the stand-ins out of sys.modules, and them and the Deferreds the lazy packages' modules
    cached (transformers': `from transformers import X`) out of them, so that later imports and
    attributes are the real ones."""
    for name in names:
        module = sys.modules.get(name)
        if isinstance(module, _StandIn):
            del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if parent and isinstance(getattr(sys.modules.get(parent), "__dict__", {}).get(child), _StandIn):
            delattr(sys.modules[parent], child)
    for name, module in list(sys.modules.items()):
        if any(name == p or name.startswith(p + ".") for p in deferral.lazy):
            namespace = getattr(module, "__dict__", None) or {}
            for key in [k for k, v in namespace.items() if isinstance(v, (Deferred, _StandIn))]:
                del namespace[key]


# -- transformers' import structure ---------------------------------------------------------------
#
# transformers (5.x) builds, on every import, the map of what each of its modules exports (its lazy
# module's "import structure") by reading the source of every module of every model it has: about
# 3,400 files, read twice (by `transformers` itself and by `transformers.models`), 0.4-0.6 s of one
# core before the first tokenizer or model loads. `import_transformers` keeps that map in a file of
# the user's cache, under a fingerprint of the files it was read from (transformers' version, and
# every source file's path, size and modification time), and reads it back while they are unchanged.

IMPORT_UTILS = "transformers.utils.import_utils"


def import_transformers() -> types.ModuleType:
    """transformers, its models' import structure read from the cache when the sources are unchanged
    (once; later calls return it). Whoever imports transformers another way gets the ordinary import."""
    if "transformers" not in sys.modules:
        finder = _ImportUtilsFinder()
        sys.meta_path.insert(0, finder)
        try:
            import transformers  # a statement: `-X importtime` reports it
        finally:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(finder)
    import transformers

    return transformers


class _ImportUtilsFinder(importlib.abc.MetaPathFinder):
    """Finds transformers.utils.import_utils as the path finder does, with a loader that wraps its
    `define_import_structure` once the module has run (and before transformers imports it)."""

    def find_spec(self, name, path=None, target=None):
        if name != IMPORT_UTILS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _WrappingLoader(spec.loader)
        return spec


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        define = getattr(module, "define_import_structure", None)
        if callable(define):
            module.define_import_structure = _cached_import_structure(define)

    def __getattr__(self, name):  # get_code, get_source, is_package...: the wrapped loader's
        return getattr(self.loader, name)


def _cached_import_structure(define):
    """`define` (transformers' define_import_structure), its result for transformers' models
    directory (given as the directory or a file in it) kept on disk under the fingerprint of its
    sources; other directories as before."""
    import functools

    @functools.wraps(define)
    def cached(module_path, prefix=None):
        try:
            directory = _models_directory(module_path)
            if directory is None:
                return define(module_path, prefix)
            store = _import_structure_file(directory, prefix)
            fingerprint = _sources_fingerprint(directory)
        except (OSError, ImportError, AttributeError):
            return define(module_path, prefix)
        kept = _read_pickle(store)
        if isinstance(kept, tuple) and len(kept) == 2 and kept[0] == fingerprint:
            return kept[1]
        structure = define(module_path, prefix)
        _write_pickle(store, (fingerprint, structure))
        return structure

    return cached


def _models_directory(module_path):
    """transformers' models directory when module_path is it or a file directly in it, else None."""
    import os

    path = os.path.abspath(str(module_path))
    if os.path.isfile(path):
        path = os.path.dirname(path)
    spec = sys.modules.get("transformers")
    root = os.path.dirname(os.path.abspath(spec.__file__)) if spec is not None and getattr(spec, "__file__", None) else None
    return path if root is not None and path == os.path.join(root, "models") else None


def _import_structure_file(directory: str, prefix) -> Path:
    import hashlib

    from sae_atlas.compute.maps import user_cache_dir

    key = hashlib.sha256(f"{directory}\0{prefix}".encode()).hexdigest()[:16]
    return user_cache_dir() / "transformers" / f"import-structure-{key}.pickle"


_FINGERPRINTS: dict[str, str] = {}


def _sources_fingerprint(directory: str) -> str:
    """transformers' version, and the relative path, size and modification time of every .py file
    under directory, hashed (once per process: both scans are of one directory)."""
    if directory not in _FINGERPRINTS:
        _FINGERPRINTS[directory] = _fingerprint(directory)
    return _FINGERPRINTS[directory]


def _fingerprint(directory: str) -> str:
    import hashlib
    import os

    h = hashlib.sha256(str(getattr(sys.modules.get("transformers"), "__version__", "")).encode())
    for top, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(top, name)
                st = os.stat(path)
                h.update(f"{os.path.relpath(path, directory)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_pickle(path):
    import pickle

    try:
        return pickle.loads(path.read_bytes())
    except Exception:  # missing, torn or from another Python: computed again
        return None


def _write_pickle(path, value) -> None:
    import os
    import pickle

    with contextlib.suppress(OSError, pickle.PicklingError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)

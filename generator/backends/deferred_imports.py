"""`import transformer_lens` without the packages a compute never uses.

TransformerLens imports at module level Hugging Face `datasets` (and through it `pandas`, `pyarrow`),
transformers' model code (`modeling_utils` and the modeling module of every architecture it can
convert, which import torch's dynamo, distributed tensors and sympy), `pandas` and `pytest`: about
60% of its import time, used only to load a model by name from the hub, to load a dataset or by its
analysis tools. `import_transformer_lens()` imports it with those modules deferred:

- while transformer_lens's own modules are being imported (and only for imports that they ask for,
  in this thread), a deferred module (`datasets`, `datasets.*`, `pandas`, `pandas.*`,
  `transformers.modeling_*`, `transformers.models.*.modeling_*`) is a stand-in, and a name imported
  from it (`from datasets.load import load_dataset`) a `Deferred`;
- the stand-ins leave `sys.modules` and their parent packages when the import ends, so anything that
  imports them later gets the real modules; a stand-in bound by transformer_lens (`import pandas as
  pd`) imports the real module on its first attribute;
- a `Deferred` imports its module on first use (call, attribute, isinstance, subclassing) and then
  rebinds itself, in every transformer_lens module that holds it, to the real object;
- `pytest` (when not already imported) is reported missing: TransformerLens only marks one of its
  docstrings skipped with it, and does without it.

Nothing changes for whoever imports transformer_lens another way (tests, SAELens): it is then the
ordinary import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import threading
import types
import typing

_DEFERRED = re.compile(r"^(?:datasets|pandas)(?:\..+)?$|^transformers\.(?:modeling_\w+|models\.\w+\.modeling_\w+)$")
_MISSING = ("pytest",)
_REQUESTER = "transformer_lens"
# Frames between an import statement and the finder: the import machinery and transformers' lazy
# module (`from transformers import X` imports X's module from transformers.utils.import_utils).
_PASS_THROUGH = ("importlib", "_frozen_importlib", "_frozen_importlib_external", "transformers.utils.import_utils", __name__)
_lock = threading.Lock()


class Deferred:
    """Stands for `getattr(import_module(module), name)` until first used."""

    __slots__ = ("_module", "_name", "_target")

    def __init__(self, module: str, name: str):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_target", _UNSET)

    def _resolve(self):
        target = object.__getattribute__(self, "_target")
        if target is _UNSET:
            module = importlib.import_module(object.__getattribute__(self, "_module"))
            target = getattr(module, object.__getattribute__(self, "_name"))
            object.__setattr__(self, "_target", target)
            _rebind(self, target)
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


def _rebind(proxy: Deferred, target) -> None:
    """Replace `proxy` by `target` in the globals of every transformer_lens module that holds it."""
    for name, module in list(sys.modules.items()):
        if name == _REQUESTER or name.startswith(_REQUESTER + "."):
            namespace = getattr(module, "__dict__", None) or {}
            for key, value in list(namespace.items()):
                if value is proxy:
                    namespace[key] = target


class _StandIn(types.ModuleType):
    """A deferred module: a `Deferred` per name while transformer_lens imports, the real module's
    attribute afterwards."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if _Finder.active():
            return Deferred(self.__name__, name)
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
    created: list[str] = []

    @classmethod
    def active(cls) -> bool:
        return cls.thread == threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if not self.active() or not _requested_by_transformer_lens():
            return None
        if name in _MISSING:  # not yet imported, or the import system would not ask
            raise ModuleNotFoundError(f"No module named {name!r} (deferred while importing transformer_lens)", name=name)
        if not _DEFERRED.match(name):
            return None
        self.created.append(name)
        return importlib.machinery.ModuleSpec(name, _Loader(), is_package=True)


def _requested_by_transformer_lens() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_PASS_THROUGH):
            return module == _REQUESTER or module.startswith(_REQUESTER + ".")
        frame = frame.f_back
    return False


def import_transformer_lens() -> types.ModuleType:
    """transformer_lens, imported with the deferred modules deferred (once; later calls return it)."""
    if "transformer_lens" in sys.modules:
        return sys.modules["transformer_lens"]
    with _lock:
        if "transformer_lens" in sys.modules:
            return sys.modules["transformer_lens"]
        finder = _Finder()
        _Finder.created = []
        _Finder.thread = threading.get_ident()
        sys.meta_path.insert(0, finder)
        try:
            import transformer_lens  # a statement, not import_module: `-X importtime` reports it

            return transformer_lens
        finally:
            sys.meta_path.remove(finder)
            _Finder.thread = None
            _withdraw(_Finder.created)


def _withdraw(names: list[str]) -> None:
    """Take the stand-ins out of sys.modules, and them and the Deferreds transformers' lazy modules
    cached out of transformers' modules, so that later imports and attributes are the real ones."""
    for name in names:
        module = sys.modules.get(name)
        if isinstance(module, _StandIn):
            del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if parent and isinstance(getattr(sys.modules.get(parent), "__dict__", {}).get(child), _StandIn):
            delattr(sys.modules[parent], child)
    for name, module in list(sys.modules.items()):
        if name == "transformers" or name.startswith("transformers."):
            namespace = getattr(module, "__dict__", None) or {}
            for key in [k for k, v in namespace.items() if isinstance(v, (Deferred, _StandIn))]:
                del namespace[key]

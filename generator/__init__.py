"""SAE Atlas: a static site generator for sparse autoencoder releases.

The public Python API (`sae_atlas.api`, documented in docs/API.md) is importable from here:
load_release, load_content, check, compute, render, build, their reports and errors. Names are
resolved on first use, so `import sae_atlas` stays light and never imports torch.

`compute` and `render` are also the names of subpackages (the stages). The import system sets a
subpackage as an attribute of this package, so those two subpackages are made callable: calling
`sae_atlas.compute(...)` runs `sae_atlas.api.compute(...)`, while `sae_atlas.compute.engine` and
`from sae_atlas.compute import ComputeOptions` keep working.
"""

import sys
from types import ModuleType

__version__ = "0.1.0"

# Public name -> the module that defines it.
_API = {
    "load_release": "sae_atlas.api",
    "load_content": "sae_atlas.api",
    "check": "sae_atlas.api",
    "build": "sae_atlas.api",
    "BuildReport": "sae_atlas.api",
    "AtlasError": "sae_atlas.errors",
    "InputError": "sae_atlas.errors",
    "Problem": "sae_atlas.errors",
    "Release": "sae_atlas.manifest",
    "RenderReport": "sae_atlas.render.site",
    "ComputeReport": "sae_atlas.compute.engine",  # imports torch
}
# Subpackages that, called, run the API function of the same name.
_CALLABLE_SUBPACKAGES = ("compute", "render")

__all__ = ["__version__", *_API, *_CALLABLE_SUBPACKAGES]


class _CallablePackage(ModuleType):
    """A subpackage whose call runs sae_atlas.api's function of the same name."""

    def __call__(self, *args, **kwargs):
        from sae_atlas import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name in _CALLABLE_SUBPACKAGES and type(value) is ModuleType:
            value.__class__ = _CallablePackage  # the import system sets each subpackage here once
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    import importlib

    if name in _CALLABLE_SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")  # set as an attribute (callable) on import
    if name not in _API:
        raise AttributeError(f"module 'sae_atlas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_CALLABLE_SUBPACKAGES))

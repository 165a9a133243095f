"""The compute stage: one pass over the corpus per model feeds all its SAEs -> cache entries.

The engine's names are imported on first use, so that a module of this package that needs no
torch (`maps`, the map worker's) imports none."""

from sae_atlas.compute.options import ComputeOptions

__all__ = ["ComputeOptions", "ComputeReport", "compute_releases", "plan_jobs", "shard_slice"]

_ENGINE = ("ComputeReport", "compute_releases", "plan_jobs", "shard_slice")


def __getattr__(name: str):
    import importlib

    if name in _ENGINE:
        return getattr(importlib.import_module("sae_atlas.compute.engine"), name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    return sorted({*globals(), *__all__})

"""The compute stage: one pass over the corpus per model feeds all its SAEs -> cache entries."""

from sae_atlas.compute.engine import ComputeReport, compute_releases, plan_jobs, shard_slice
from sae_atlas.compute.options import ComputeOptions

__all__ = ["ComputeOptions", "ComputeReport", "compute_releases", "plan_jobs", "shard_slice"]

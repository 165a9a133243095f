"""The compute stage: one pass over the corpus per model feeds all its SAEs -> cache entries."""

from generator.compute.engine import ComputeReport, compute_releases, plan_jobs, shard_slice
from generator.compute.options import ComputeOptions

__all__ = ["ComputeOptions", "ComputeReport", "compute_releases", "plan_jobs", "shard_slice"]

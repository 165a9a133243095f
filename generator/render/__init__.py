"""Render stage: cache + releases -> static site (pages, data shards, theme files), written atomically."""

from sae_atlas.render.site import RenderReport, render_site

__all__ = ["RenderReport", "render_site"]

"""Checks of releases against the files they name, before any model is loaded (no torch)."""

from __future__ import annotations

from generator.manifest import Release


def validate_sources(releases: list[Release]) -> None:
    """Raise InputError with every problem found. (Placeholder: filled in with the full checks.)"""
    return None

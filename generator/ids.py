"""SAE and feature ids, and the site's URL paths. The one place that builds them."""

from __future__ import annotations

import re
from dataclasses import dataclass

SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]*\Z")
_SAE_ID = re.compile(r"^(?P<model>[a-z0-9][a-z0-9_.-]*)@(?P<layer>\d+)-(?P<set>[a-z0-9][a-z0-9_.-]*)")
_FEATURE_ID = re.compile(r"^(?P<sae>[^:]+):(?P<index>\d+)")


@dataclass(frozen=True, order=True)
class SaeId:
    model: str
    layer: int
    set: str

    def __str__(self) -> str:
        return f"{self.model}@{self.layer}-{self.set}"

    @property
    def slug(self) -> str:
        """The SAE's directory name inside its model: `LAYER-SET`."""
        return f"{self.layer}-{self.set}"


def parse_sae_id(text: str) -> SaeId:
    m = _SAE_ID.fullmatch(text)
    if not m:
        raise ValueError(f"not an SAE id: {text!r}; expected MODEL@LAYER-SET, e.g. gpt2-small@9-res-jb")
    return SaeId(m["model"], int(m["layer"]), m["set"])


def parse_feature_id(text: str) -> tuple[SaeId, int]:
    m = _FEATURE_ID.fullmatch(text)
    if not m:
        raise ValueError(f"not a feature id: {text!r}; expected MODEL@LAYER-SET:INDEX, e.g. gpt2-small@9-res-jb:123")
    return parse_sae_id(m["sae"]), int(m["index"])


# Site paths, relative to the site root, always naming the .html file (works from file://).
def home_path() -> str:
    return "index.html"


def release_path(release: str) -> str:
    return f"{release}/index.html"


def set_path(model: str, set_id: str) -> str:
    return f"{model}/{set_id}/index.html"


def sae_path(sae: SaeId) -> str:
    return f"{sae.model}/{sae.slug}/index.html"


def prompts_path(model: str, release: str | None = None) -> str:
    """The prompt view of a model's (first) corpus, or of the corpus that `release` brings."""
    return f"{model}/prompts.html" if release is None else f"{model}/prompts-{release}.html"


def list_path(release: str, list_id: str) -> str:
    return f"{release}/lists/{list_id}.html"


def feature_path(sae: SaeId, index: int) -> str:
    return f"{sae_path(sae)}#{index}"


def relative(from_page: str, to_path: str) -> str:
    """Page-relative link from one site path (a file) to another."""
    depth = from_page.count("/")
    return "../" * depth + to_path

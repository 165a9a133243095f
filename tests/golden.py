"""Golden-output site: a tiny synthetic release rendered and compared with committed expected output.

`make golden` (python -m tests.golden --update) regenerates tests/golden/expected after a deliberate
template or format change, so the change shows up in review as a readable diff.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from sae_atlas.manifest import ComputeSettings
from sae_atlas.render import render_site

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = Path(__file__).parent / "golden" / "expected"
SKIP = ("static/",)  # theme files are copied verbatim; the theme's own tests cover them


def _synthetic():
    spec = importlib.util.spec_from_file_location("synthetic_release", ROOT / "bench" / "synthetic_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_golden(out: Path) -> None:
    synthetic = _synthetic()
    settings = ComputeSettings(
        top_k=3, intervals=2, per_interval=2, logits=3, logit_histogram_bins=5, neighbours=3, context_before=3, context_after=2,
        loss_effects=True,
    )
    release = synthetic.synthetic_release(
        n_saes=2, d_sae=6, prompts=8, context=12, vocab_size=120, settings=settings,
        release_id="golden", model_id="golden-model", set_id="res-g",
        description="A *golden* release: [docs](https://example.org/docs).",
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        synthetic.build_synthetic_cache(cache, release, d_sae=6, vocab_size=120, seed=7)
        render_site([release], cache=cache, out=out, quiet=True)


def site_files(site: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file() and not p.relative_to(site).as_posix().startswith(SKIP)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite tests/golden/expected")
    args = parser.parse_args(argv)
    if not args.update:
        parser.error("nothing to do; pass --update")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        render_golden(site)
        shutil.rmtree(EXPECTED, ignore_errors=True)
        for rel, data in site_files(site).items():
            (EXPECTED / rel).parent.mkdir(parents=True, exist_ok=True)
            (EXPECTED / rel).write_bytes(data)
    print(f"wrote {EXPECTED.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

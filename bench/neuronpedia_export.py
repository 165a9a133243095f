"""Neuronpedia export speed against rendering the site, on the same synthetic cache (no torch).

Writes a synthetic cache (`synthetic_release.py`), then times `export_neuronpedia` and
`render_site` on it, both in one process, and prints features/s of each and their ratio.

    python bench/neuronpedia_export.py                 # 1 SAE x 4,096 features, 512 prompts x 128
    python bench/neuronpedia_export.py --d-sae 1024
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic_release  # noqa: E402

from sae_atlas.export.neuronpedia import export_neuronpedia  # noqa: E402
from sae_atlas.render import render_site  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="np-export-bench-"))
    try:
        release = synthetic_release.synthetic_release(n_saes=1, d_sae=args.d_sae, prompts=args.prompts, context=128, vocab_size=5000)
        synthetic_release.build_synthetic_cache(root / "cache", release, args.d_sae, 5000)
        started = time.perf_counter()
        report = export_neuronpedia([release], root / "cache", root / "np", quiet=True, workers=args.workers)
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        render_site([release], cache=root / "cache", out=root / "site", quiet=True, workers=args.workers)
        render_s = time.perf_counter() - started
        print(f"export: {report.features:,} features ({report.skipped} dead) in {export_s:.1f} s, "
              f"{args.d_sae / export_s:,.0f} features/s, {report.bytes / 1e6:.1f} MB in {report.files} files")
        print(f"render: {render_s:.1f} s, {args.d_sae / render_s:,.0f} features/s")
        print(f"export / render time: {export_s / render_s:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

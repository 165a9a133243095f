"""Extra compute time of the per-example statistics (direct feature attribution, loss effects) on a
random local model: a release with one residual-stream SAE and one attn.hook_z SAE, computed on the
CPU with `loss_effects: true`; prints the whole compute's time, the time in each statistic and
its ratio to the rest of the compute (corpus passes, CE loss, weights-only statistics) of the same run.

Run: python bench/model_stats_cost.py [--d-model 128] [--vocab 2048] [--prompts 256] [--context 128]
(defaults: the test fixture's size, d_model 16, its 300-token vocabulary, 32 prompts of 16).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_atlas import stats as statistics  # noqa: E402
from sae_atlas.cache import CacheStore, sae_key  # noqa: E402
from sae_atlas.compute import ComputeOptions, compute_releases  # noqa: E402
from sae_atlas.manifest import load_content  # noqa: E402
from tests.fixtures import FIXTURE_COMPUTE, build_fixture_content  # noqa: E402

SETS = (
    ("res-st", "blocks.{layer}.hook_resid_post", "standard", (1,)),
    ("att-st", "blocks.{layer}.attn.hook_z", "standard", (1,)),
)


def timed_statistics(spent: dict) -> None:
    """Wrap the model-stage statistics' compute so that their time adds up in `spent`."""
    for stat in statistics.REGISTRY:
        if stat.stage == "model":
            def compute(ctx, stat=stat, inner=stat.compute):
                start = time.perf_counter()
                try:
                    return inner(ctx)
                finally:
                    spent[stat.name] = spent.get(stat.name, 0.0) + time.perf_counter() - start

            stat.compute = compute


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=0, help="model vocabulary (default: the fixture tokenizer's)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--d-sae", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=FIXTURE_COMPUTE["top_k"])
    args = parser.parse_args(argv)
    compute = {**FIXTURE_COMPUTE, "top_k": args.top_k, "loss_effects": True}
    spent: dict = {}
    timed_statistics(spent)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        content = build_fixture_content(
            root, n_prompts=args.prompts, context=args.context, d_sae=args.d_sae, corpus="tokens", sets=SETS,
            compute=compute, explanations=False, d_model=args.d_model, d_vocab=args.vocab,
        )
        releases = load_content(content)
        start = time.perf_counter()
        compute_releases(releases, root / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True))
        total = time.perf_counter() - start
        store = CacheStore(root / "cache")
        examples = sum(int((np.asarray(store.sae_entry(sae_key(r, s))["top_prompt"]) >= 0).sum()) for r in releases for s in r.saes())
    print(f"d_model {args.d_model}, {args.prompts} prompts x {args.context} tokens, {args.d_sae} features x 2 SAEs, "
          f"top_k {args.top_k}: {examples} top examples")
    dfa, loss = spent.get("dfa", 0.0), spent.get("loss_effects", 0.0)
    rest = total - dfa - loss
    print(f"compute {total:.1f} s, of which dfa {dfa:.2f} s (1 SAE), loss_effects {loss:.2f} s (2 SAEs)")
    print(f"against the rest of the compute ({rest:.1f} s): dfa {dfa / rest:.2f}x, loss_effects {loss / rest:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Runs SAEDashboard's feature computation on the benchmark's model, SAE and tokens.

Executed by compute_vs_saedashboard.py inside SAEDashboard's own venv (it pins an older
transformer-lens than the project), so it imports nothing from the project. It mirrors how
`sae_dashboard.neuronpedia.neuronpedia_runner` drives the computation for Neuronpedia: the same
layout (top 20, 5 quantile groups of 5, activation and logit histograms, logit tables, feature
tables), one `SaeVisRunner` per batch of `n_features_at_a_time` features, model activations cached
on disk after the first batch. Only `SaeVisRunner.run` is timed; the JSON conversion for Neuronpedia
is not (that is the analogue of our render stage).

Writes one JSON file: timings and, for the first `--check` features, max activation, density and the
(prompt, position) of the top example.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def load_model(model_dir: Path):
    import torch
    from safetensors.torch import load_file
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    fields = set(HookedTransformerConfig.__dataclass_fields__)
    cfg = {k: v for k, v in json.loads((model_dir / "config.json").read_text()).items() if k in fields}
    model = HookedSAETransformer(HookedTransformerConfig(**cfg))
    state = load_file(str(model_dir / "model.safetensors"))
    # Attention masks are buffers whose saved shape differs between transformer-lens versions.
    state = {k: v for k, v in state.items() if not k.endswith((".mask", ".IGNORE"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.endswith((".mask", ".IGNORE"))] + list(unexpected)
    if bad:
        raise SystemExit(f"model state dict does not match: {bad[:5]}")
    model.eval()
    torch.set_grad_enabled(False)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--sae", type=Path, required=True)
    ap.add_argument("--tokens", type=Path, required=True)
    ap.add_argument("--prompts", type=int, required=True)
    ap.add_argument("--features", type=int, required=True, help="run the first N features")
    ap.add_argument("--check", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    # NeuronpediaRunnerConfig defaults.
    ap.add_argument("--n-features-at-a-time", type=int, default=128)
    ap.add_argument("--n-prompts-in-forward-pass", type=int, default=32)
    ap.add_argument("--quantile-feature-batch-size", type=int, default=64)
    ap.add_argument("--no-feature-tables", action="store_true", help="turn FeatureTablesConfig's tables off (0.8.0 still computes its correlations)")
    ap.add_argument("--warmup-prompts", type=int, default=0, help="first run the first batch on this many prompts, untimed")
    ap.add_argument("--repeat", type=int, default=1, help="run everything this many times (each with a fresh activation cache); the fastest counts")
    args = ap.parse_args()

    import numpy as np
    import torch
    from sae_lens import SAE
    from sae_dashboard.components_config import (
        ActsHistogramConfig,
        Column,
        FeatureTablesConfig,
        LogitsHistogramConfig,
        LogitsTableConfig,
        SequencesConfig,
    )
    from sae_dashboard.layout import SaeVisLayoutConfig
    from sae_dashboard.sae_vis_data import SaeVisConfig
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    t0 = time.perf_counter()
    model = load_model(args.model)
    sae = SAE.load_from_disk(str(args.sae), device="cpu")
    tokens = torch.from_numpy(np.load(args.tokens)[: args.prompts].astype(np.int64))
    hook = sae.cfg.metadata.hook_name
    load_s = time.perf_counter() - t0

    features = list(range(args.features))
    batches = [features[i : i + args.n_features_at_a_time] for i in range(0, len(features), args.n_features_at_a_time)]

    def run(batch: list[int], prompts, cache_dir: str):
        # SAEDashboard 0.8.0 needs a FeatureTablesConfig (SaeVisRunner reads its n_rows) and updates
        # its correlation coefficients whatever the layout says; "off" only leaves the tables out.
        off = dict(neuron_alignment_table=False, correlated_neurons_table=False, correlated_features_table=False)
        tables = [FeatureTablesConfig(n_rows=3, **(off if args.no_feature_tables else {}))]
        layout = SaeVisLayoutConfig(
            columns=[
                Column(
                    SequencesConfig(
                        stack_mode="stack-all",
                        buffer=None,  # type: ignore[arg-type]
                        compute_buffer=True,
                        n_quantiles=5,
                        top_acts_group_size=20,
                        quantile_group_size=5,
                    ),
                    ActsHistogramConfig(),
                    LogitsHistogramConfig(),
                    LogitsTableConfig(),
                    *tables,
                )
            ]
        )
        cfg = SaeVisConfig(
            hook_point=hook,
            features=batch,
            minibatch_size_features=args.n_features_at_a_time,
            minibatch_size_tokens=args.n_prompts_in_forward_pass,
            quantile_feature_batch_size=args.quantile_feature_batch_size,
            verbose=False,
            device="cpu",
            feature_centric_layout=layout,
            perform_ablation_experiments=False,
            dtype="float32",
            cache_dir=Path(cache_dir),
            ignore_tokens=set(),
            ignore_positions=[],
        )
        return SaeVisRunner(cfg).run(encoder=sae, model=model, tokens=prompts)

    warmup_s = 0.0
    if args.warmup_prompts:
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="saedashboard-warmup-") as cache_dir:
            run(batches[0], tokens[: args.warmup_prompts], cache_dir)
        warmup_s = time.perf_counter() - t
    runs = []
    checked: dict[int, dict] = {}
    for _ in range(max(1, args.repeat)):
        batch_seconds = []
        with tempfile.TemporaryDirectory(prefix="saedashboard-acts-") as cache_dir:
            for batch in batches:
                t = time.perf_counter()
                data = run(batch, tokens, cache_dir)
                batch_seconds.append(time.perf_counter() - t)
                stats = data.feature_stats
                for j, feat in enumerate(batch):
                    if feat >= args.check:
                        continue
                    top = data.feature_data_dict[feat].sequence_data.seq_group_data[0].seq_data[0]
                    checked[feat] = {
                        "max_activation": float(stats.max[j]),
                        "density": float(stats.frac_nonzero[j]),
                        "top_prompt": int(top.original_index),
                        "top_position": int(top.qualifying_token_index),
                    }
                del data
        runs.append(batch_seconds)
    batch_seconds = min(runs, key=sum)

    import sae_dashboard

    args.out.write_text(
        json.dumps(
            {
                "version": getattr(sae_dashboard, "__version__", "unknown"),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "load_seconds": load_s,
                "batch_seconds": batch_seconds,
                "all_runs": runs,
                "warmup_seconds": warmup_s,
                "feature_tables": not args.no_feature_tables,
                "features": len(features),
                "n_tokens": int(tokens.numel()),
                "features_per_batch": args.n_features_at_a_time,
                "checked": {str(k): v for k, v in sorted(checked.items())},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Loading what a manifest names: models, SAEs, corpora, explanations."""

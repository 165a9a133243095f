from sae_atlas.cli import run

run()

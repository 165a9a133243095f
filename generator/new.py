"""`sae-atlas new DIR`: scaffold a project in a researcher's own repository.

Writes SCAFFOLD_FILES under DIR (created if missing): a commented example manifest, a .gitignore, a
GitHub Pages workflow (compute in CI, or render from a cache computed elsewhere) and a README with
the next commands. DIR may already hold other files (an existing repository); if it holds any file
the scaffold would write, nothing is written (NewError, exit 2): the user's files are never
overwritten.
"""

from __future__ import annotations

from pathlib import Path

from sae_atlas import __version__
from sae_atlas.errors import AtlasError

MANIFEST = Path("content/releases/my-release.yaml")


class NewError(AtlasError):
    """`new` cannot scaffold DIR (a file is in the way): exit 2, nothing written."""

    exit_code = 2


EXAMPLE_MANIFEST = """\
# An SAE Atlas release: one manifest per release, in content/releases/. Paths are relative to this
# file. `sae-atlas check` validates it (every problem as file:line:col) without loading any weights.
# For a release of SAELens's registry, `sae-atlas init --sae-lens RELEASE` (e.g. gpt2-small-res-jb)
# writes a manifest like this one, with every SAE named.

release: my-release                 # the release's id: a URL slug, unique across releases and models
title: My SAEs                      # shown on the home page and the release page
description: |                      # optional; Markdown, rendered and sanitized
  Sparse autoencoders on the residual stream of *my model*.
authors: [Ada Lovelace]             # optional
links: {paper: https://example.org/paper, code: https://example.org/code}   # optional: label -> URL

model:
  id: my-model                      # the model's id: a URL slug (the site's MODEL/ folder)
  path: ../models/my-model          # a local model directory: config.json (HookedTransformerConfig
                                    # fields), model.safetensors and a tokenizer (save_pretrained)
  # Or a model by its TransformerLens name, instead of `path:`:
  # transformer_lens: gpt2-small

corpus:
  path: ../corpus/my-corpus.txt     # .txt (documents separated by blank lines) or .jsonl
                                    # ({"text": ...} or pre-tokenized {"tokens": [...]} per line)
  # Or a dataset of the Hugging Face hub by name (its `text` column is streamed), instead of `path:`:
  # dataset: roneneldan/TinyStories
  prompts: 1024                     # prompts the statistics are computed over (4096 or more for a release)
  context: 128                      # tokens per prompt, BOS included; at most the model's n_ctx
  # prepend_bos: false              # for SAEs trained without BOS (SAELens's prepend_bos); default true

sets:                               # a Set: the same hook and method across layers
  - id: res                         # a URL slug; an SAE's id is MODEL@LAYER-SET, e.g. my-model@0-res
    title: Residual stream
    description: Standard SAEs after each block.   # optional; Markdown
    hook: blocks.{layer}.hook_resid_post           # a TransformerLens hook name; {layer} is each SAE's layer
    saes:
      - layer: 0
        path: ../saes/res/0         # a directory written by SAELens's save_model (cfg.json + weights)
      # An SAE of SAELens's registry, by release and id, instead of `path:`:
      # - layer: 8
      #   sae_lens: {release: gpt2-small-res-jb, id: blocks.8.hook_resid_pre}

# Optional: feature explanations, one JSON object per line:
# {"sae": "my-model@0-res", "index": 3, "text": "fires on dates", "author": "me", "score": 0.7}
# explanations: ../explanations/my-release.jsonl

# Optional: compute settings (the defaults are shown). Changing one recomputes the release.
# compute:
#   top_k: 20                       # top activating examples per feature
#   intervals: 5                    # activation intervals sampled from
#   per_interval: 5                 # examples per interval
#   histogram_bins: 50              # bins of the activation histogram
#   logits: 10                      # top positive and negative logits
#   logit_histogram_bins: 50        # bins of a feature's logit effects over the whole vocabulary
#   neighbours: 10                  # decoder-cosine neighbours
#   context_before: 24              # tokens shown before an example's token
#   context_after: 8                # tokens shown after it
#   umap_neighbours: 15             # UMAP n_neighbors of the feature map
#   umap_epochs: 200                # UMAP n_epochs
#   seed: 0                         # seed of the map and the interval samples
#   ce_prompts: 32                  # prompts of the CE loss with the SAE spliced in (0: none)
#   prompt_view: 256                # the first N corpus prompts get the prompt view (MODEL/prompts.html)
#   prompt_features: 3              # features kept per token and SAE in the prompt view
#   loss_effects: auto              # loss effect of each top example's tokens: auto (on CUDA), true, false

# Optional: curated feature lists, each a page of feature cards linked from the release page.
# lists:
#   - id: dates                     # a URL slug -> RELEASE/lists/dates.html
#     title: Date features
#     description: Features that fire on *dates*.   # optional; Markdown
#     features: [my-model@0-res:3, my-model@0-res:17]   # MODEL@LAYER-SET:INDEX of this release
"""

GITIGNORE = """\
# sae-atlas: the cache (build/cache) and the site (build/site) are rebuilt by `sae-atlas build`
build/
.venv/
venv/
__pycache__/
*.py[cod]
.pytest_cache/
.ipynb_checkpoints/
.DS_Store
"""

# ${{ }} is GitHub's expression syntax; the template is written verbatim (no formatting).
PAGES_WORKFLOW = """\
# Publish the atlas to GitHub Pages (Settings > Pages > Source: GitHub Actions).
#
# Two ways, chosen by ATLAS_MODE (a manual run's `mode` input, else the repository variable
# ATLAS_MODE under Settings > Secrets and variables > Actions > Variables, else "compute"):
#
#   compute  CI computes the cache and renders the site (`sae-atlas build`). Fine for small models:
#            GitHub's runners have no GPU, so the CPU build of torch is installed from TORCH_INDEX_URL
#            (the default index would pull the multi-gigabyte CUDA build). build/cache is kept
#            between runs by actions/cache, so unchanged SAEs are not recomputed.
#
#   render   A GPU machine elsewhere computes the cache; CI only renders it (no torch installed).
#            On the GPU machine, with the same sae-atlas version as SAE_ATLAS below:
#              sae-atlas compute --device cuda
#              tar -czf atlas-cache.tar.gz -C build/cache .
#              gh release create atlas-cache atlas-cache.tar.gz      # later: gh release upload atlas-cache atlas-cache.tar.gz --clobber
#            This workflow downloads that release asset (ATLAS_CACHE_TAG / ATLAS_CACHE_ASSET) into
#            build/cache and runs `sae-atlas render`. To pass the cache as an artifact of another
#            workflow run instead, replace the download step with actions/download-artifact@v4
#            (its `run-id` and `github-token` inputs) and unpack it the same way.
#            Render with the --dtype the cache was computed with (default float32).
#
# In both ways the files the manifests name by local path (model, SAEs, corpus) must be in the
# repository (e.g. with Git LFS): check reads them and the cache keys are digests of them. Models,
# SAEs and corpora named by TransformerLens, SAELens or dataset name need only their config files,
# which are fetched.

name: Publish the atlas

on:
  push:
    branches: [main]
  workflow_dispatch:
    inputs:
      mode:
        description: "compute: compute the cache in CI (CPU torch); render: render a cache computed elsewhere"
        type: choice
        options: [compute, render]
        default: compute

permissions:
  contents: read
  pages: write
  id-token: write

concurrency:
  group: pages
  cancel-in-progress: false

env:
  ATLAS_MODE: ${{ inputs.mode || vars.ATLAS_MODE || 'compute' }}
  # The package, pinned to the version that wrote this workflow (a cache is read by the version
  # that computed it); raise it when you upgrade.
  SAE_ATLAS: sae-atlas==__VERSION__
  # PyTorch's index of CPU-only wheels (set the repository variable TORCH_INDEX_URL to its address);
  # used only in compute mode. Unset, pip installs the default torch build (CUDA, several GB).
  TORCH_INDEX_URL: ${{ vars.TORCH_INDEX_URL }}
  # The release (tag) and asset holding the cache, in render mode.
  ATLAS_CACHE_TAG: ${{ vars.ATLAS_CACHE_TAG || 'atlas-cache' }}
  ATLAS_CACHE_ASSET: ${{ vars.ATLAS_CACHE_ASSET || 'atlas-cache.tar.gz' }}

jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"

      # -- compute: CPU torch, the compute extra, `sae-atlas build` --------------------------------
      - name: Install sae-atlas with CPU torch
        if: env.ATLAS_MODE == 'compute'
        run: |
          python -m pip install --upgrade pip
          if [ -n "$TORCH_INDEX_URL" ]; then
            python -m pip install torch --index-url "$TORCH_INDEX_URL"
          else
            echo "::warning::the repository variable TORCH_INDEX_URL is not set: installing the default torch build (CUDA, several GB)"
            python -m pip install torch
          fi
          python -m pip install "$SAE_ATLAS[compute]"
      - name: Keep the compute cache between runs
        if: env.ATLAS_MODE == 'compute'
        uses: actions/cache@v4
        with:
          path: build/cache
          key: sae-atlas-cache-${{ hashFiles('content/**') }}
          restore-keys: sae-atlas-cache-
      - name: Compute and render
        if: env.ATLAS_MODE == 'compute'
        run: sae-atlas build --device cpu --quiet

      # -- render: no torch, the cache from a release asset, `sae-atlas render` --------------------
      - name: Install sae-atlas (render only, no torch)
        if: env.ATLAS_MODE == 'render'
        run: |
          python -m pip install --upgrade pip
          python -m pip install "$SAE_ATLAS"
      - name: Download the cache computed elsewhere
        if: env.ATLAS_MODE == 'render'
        env:
          GH_TOKEN: ${{ github.token }}
        run: |
          gh release download "$ATLAS_CACHE_TAG" --pattern "$ATLAS_CACHE_ASSET" --dir "$RUNNER_TEMP"
          mkdir -p build/cache
          tar -xzf "$RUNNER_TEMP/$ATLAS_CACHE_ASSET" -C build/cache
      - name: Render
        if: env.ATLAS_MODE == 'render'
        run: sae-atlas render --quiet

      - uses: actions/configure-pages@v5
      - uses: actions/upload-pages-artifact@v3
        with:
          path: build/site

  deploy:
    needs: build
    runs-on: ubuntu-latest
    environment:
      name: github-pages
      url: ${{ steps.deployment.outputs.page_url }}
    steps:
      - id: deployment
        uses: actions/deploy-pages@v4
"""

PROJECT_README = """\
# My SAEs

An atlas of sparse autoencoders, built with SAE Atlas (`pip install sae-atlas`):
every feature of every SAE as a static website.

## Set up
```sh
python -m venv .venv && . .venv/bin/activate
pip install torch --index-url CPU_INDEX   # CPU_INDEX: PyTorch's CPU wheel index; or any CUDA build
pip install "sae-atlas[compute]"                                     # `pip install sae-atlas` renders only
```

## The next three commands
1. Edit `content/releases/my-release.yaml` (every key is explained in its comments): your model,
   corpus and SAEs. `sae-atlas init --sae-lens RELEASE` writes a manifest for a release of
   SAELens's registry instead.
2. `sae-atlas check` validates the manifests: every problem as `file:line:col`, nothing computed.
3. `sae-atlas build` computes the statistics (cached in `build/cache`, resumable) and renders the
   site into `build/site`; add `--device cuda` on a GPU.

Then preview it with `sae-atlas serve` (http://localhost:8000, live reload), or open
`build/site/index.html` directly, and publish it with `sae-atlas deploy` (the `gh-pages` branch).

## GitHub Pages
`.github/workflows/pages.yml` publishes the site on every push to `main`, in one of two ways (see
its comments): it computes in CI on a CPU (`ATLAS_MODE=compute`, for small models), or it renders
a cache computed on a GPU machine and uploaded as a release asset (`ATLAS_MODE=render`, no torch in CI):
```sh
sae-atlas compute --device cuda
tar -czf atlas-cache.tar.gz -C build/cache .
gh release create atlas-cache atlas-cache.tar.gz
```
Either way, what the manifest names by local path (model, SAEs, corpus) must be in the repository
(e.g. with Git LFS): the cache entries are found by digests of those files. Models, SAEs and
corpora named by TransformerLens, SAELens or dataset name need no files.
"""

# Relative path -> text, in the order they are written and listed.
SCAFFOLD_FILES: dict[Path, str] = {
    MANIFEST: EXAMPLE_MANIFEST,
    Path(".gitignore"): GITIGNORE,
    Path(".github/workflows/pages.yml"): PAGES_WORKFLOW.replace("__VERSION__", __version__),
    Path("README.md"): PROJECT_README,
}


def _in_the_way(root: Path) -> list[Path]:
    """The scaffold's paths under `root` that exist already (any kind of file), and the folders on
    their way that are files."""
    found: list[Path] = []
    for rel in SCAFFOLD_FILES:
        path = root / rel
        folders = [root / parent for parent in reversed(rel.parents) if parent != Path(".")]
        found += [f for f in folders if f.exists() and not f.is_dir() and f not in found]
        if path.exists() or path.is_symlink():
            found.append(path)
    return found


def new_project(directory: Path) -> list[Path]:
    """Write the scaffold under `directory`; returns the paths written. NewError, and nothing
    written, if `directory` is not a directory or holds one of the scaffold's files."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise NewError(f"{root} is a file; expected a directory (new or empty of the scaffold's files)")
    existing = _in_the_way(root)
    if existing:
        names = ", ".join(str(p) for p in existing)
        raise NewError(f"{names} already exist{'s' if len(existing) == 1 else ''}; nothing was written (the scaffold never overwrites a file)")
    written: list[Path] = []
    try:
        for rel, text in SCAFFOLD_FILES.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as f:  # "x": a file created meanwhile is not overwritten
                f.write(text)
            written.append(path)
    except OSError as e:
        raise AtlasError(f"writing the scaffold failed: {e}; written so far: {', '.join(map(str, written)) or 'nothing'}") from e
    return written


def next_steps(directory: Path) -> str:
    """What to type next, for the message `new` prints."""
    steps = [f"cd {directory}"] if Path(directory) != Path(".") else []
    steps += [
        f"edit {MANIFEST}   # its comments explain every key",
        "sae-atlas check    # validate the manifest",
        "sae-atlas build    # compute the cache and render build/site",
        "sae-atlas serve    # preview; `sae-atlas deploy` publishes build/site to gh-pages",
    ]
    return "next:\n" + "".join(f"  {step}\n" for step in steps)

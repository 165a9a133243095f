"""Print the top activating contexts of demo SAE features, to find and check interpretable ones.

    .venv/bin/python content/demo/inspect_features.py res 0            # rank latents of tiny-2l@0-res
    .venv/bin/python content/demo/inspect_features.py res 0 17 301     # show latents 17 and 301

Uses the prompts the site shows: the first PROMPTS windows of the corpus, packed like the build.
Ranking favours latents whose top activations share one token (easy to verify by eye); phrase and
context features need the listing of their examples.
"""

import sys
from collections import Counter

import torch
from sae_lens import SAE

from train import CORPUS, LAYERS, MODEL_NAME, N_CTX, RECIPES, SAE_DIR, load_model, read_documents, token_windows

PROMPTS = 2048
TOP = 20


@torch.no_grad()
def feature_activations(model, sae, windows: torch.Tensor, hook: str) -> torch.Tensor:
    out = []
    for i in range(0, len(windows), 64):
        _, cache = model.run_with_cache(windows[i : i + 64], names_filter=hook)
        out.append(sae.encode(cache[hook]))
    return torch.cat(out)  # [prompts, ctx, d_sae]


def context(tokenizer, windows, prompt: int, position: int, before: int = 12, after: int = 3) -> str:
    row = windows[prompt].tolist()
    left = tokenizer.decode(row[max(0, position - before) : position])
    here = tokenizer.decode([row[position]])
    right = tokenizer.decode(row[position + 1 : position + 1 + after])
    return f"{left}[[{here}]]{right}".replace("\n", "\\n")


def main() -> None:
    set_id, layer = sys.argv[1], int(sys.argv[2])
    indices = [int(i) for i in sys.argv[3:]]
    recipe = next(r for r in RECIPES if r.set_id == set_id)
    assert layer in LAYERS
    torch.set_num_threads(2)
    model = load_model()
    tokenizer = model.tokenizer
    windows = token_windows(tokenizer, read_documents())[:PROMPTS]
    sae = SAE.load_from_disk(SAE_DIR / set_id / str(layer))
    hook = recipe.hook.format(layer=layer)
    acts = feature_activations(model, sae, windows, hook)
    flat = acts.reshape(-1, acts.shape[-1])
    density = (flat > 0).float().mean(dim=0)
    values, where = flat.topk(TOP, dim=0)  # [TOP, d_sae]
    tokens = windows.reshape(-1)
    print(f"{MODEL_NAME}@{layer}-{set_id} on {len(windows)} prompts of {CORPUS.name}")
    if not indices:
        purity = []
        for i in range(flat.shape[1]):
            if values[0, i] <= 0:
                continue
            counts = Counter(tokens[where[:, i]].tolist())
            token, count = counts.most_common(1)[0]
            purity.append((count / TOP, density[i].item(), i, tokenizer.decode([token])))
        purity.sort(key=lambda p: (-p[0], p[1]))
        for share, dens, i, token in purity[:60]:
            print(f"{i:5d} share {share:.2f} density {dens:.4f} token {token!r}")
        return
    for i in indices:
        print(f"\n== {MODEL_NAME}@{layer}-{set_id}:{i} density {density[i]:.4f} max {values[0, i]:.3f}")
        for value, flat_index in zip(values[:, i].tolist(), where[:, i].tolist()):
            prompt, position = divmod(flat_index, N_CTX)
            print(f"  {value:7.3f}  {context(tokenizer, windows, prompt, position)}")


if __name__ == "__main__":
    main()

"""Tiny, deterministic, offline fixtures: a random 2-layer model dir, SAELens SAE dirs, corpora and a
release manifest. Plain functions so that any test (compute, render, browser) can build them.

    content = build_fixture_content(tmp_path)            # -> tmp_path/content (releases/tiny.yaml ...)
    releases = sae_atlas.manifest.load_content(content)

Everything is seeded: the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import yaml

RELEASE_ID = "tiny-demo"
MODEL_ID = "tiny-2l"
SPECIAL_TOKEN = "<|endoftext|>"

_WORDS = (
    "the a cat dog bird sat ran flew on under over mat tree house red blue green small big happy sad "
    "Tom Lily saw found played with ball box sun moon and then it was day night <b>bold</b> & \"quoted\" "
    "café naïve 42 7 ! ? , ."
).split()

# (set id, hook template, architecture, layers) of the fixture release.
FIXTURE_SETS = (
    ("res-st", "blocks.{layer}.hook_resid_post", "standard", (0, 1)),
    ("res-tk", "blocks.{layer}.hook_resid_post", "topk", (1,)),
    ("mlp-jr", "blocks.{layer}.hook_mlp_out", "jumprelu", (0,)),
    ("att-st", "blocks.{layer}.attn.hook_z", "standard", (1,)),
)

# Small compute settings so a full fixture compute takes seconds.
FIXTURE_COMPUTE = {
    "top_k": 6,
    "intervals": 3,
    "per_interval": 2,
    "histogram_bins": 8,
    "logits": 4,
    "neighbours": 3,
    "context_before": 4,
    "context_after": 2,
    "umap_neighbours": 5,
    "ce_prompts": 4,
}


def model_config(d_vocab: int, n_ctx: int = 64, d_model: int = 16, n_layers: int = 2) -> dict:
    return {
        "n_layers": n_layers,
        "d_model": d_model,
        "n_ctx": n_ctx,
        "d_head": 4,
        "n_heads": d_model // 4,
        "d_mlp": 2 * d_model,
        "d_vocab": d_vocab,
        "act_fn": "gelu",
        "normalization_type": "LN",
        "seed": 0,
    }


def fixture_text(n_docs: int = 40, words_per_doc: int = 60, seed: int = 0) -> str:
    """Documents separated by blank lines (the .txt corpus format)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        n = rng.randint(words_per_doc // 2, words_per_doc)
        docs.append(" ".join(rng.choice(_WORDS) for _ in range(n)))
    return "\n\n".join(docs) + "\n"


def make_tokenizer(directory: Path, text: str, vocab_size: int = 320):
    """Train a tiny byte-level BPE tokenizer (strings round-trip) and save it with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL_TOKEN, eos_token=SPECIAL_TOKEN, unk_token=SPECIAL_TOKEN
    )
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return fast


def make_model_dir(directory: Path, text: str | None = None, seed: int = 0, n_ctx: int = 64, n_layers: int = 2, d_model: int = 16, d_vocab: int = 0):
    """A random HookedTransformer (2 layers of width 16 unless told) in the local model format, its
    vocabulary the tokenizer's or `d_vocab` when larger (ids past the tokenizer are padding).
    Returns (model, tokenizer)."""
    import torch
    from safetensors.torch import save_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    directory = Path(directory)
    tokenizer = make_tokenizer(directory, text or fixture_text())
    cfg_dict = model_config(d_vocab=max(len(tokenizer), d_vocab), n_ctx=n_ctx, d_model=d_model, n_layers=n_layers)
    torch.manual_seed(seed)
    model = HookedTransformer(HookedTransformerConfig(**cfg_dict))
    with torch.no_grad():
        # Larger-than-init weights so activations and logits are not all near zero.
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3)
    model.eval()
    # Written as the HookedTransformerConfig's own fields (plus a key a loader must ignore).
    full = {k: v for k, v in model.cfg.to_dict().items() if _json_ok(v)}
    full["atlas_fixture_note"] = "unknown keys are dropped on load"
    (directory / "config.json").write_text(json.dumps(full, indent=1, sort_keys=True, default=str))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    return model, tokenizer


def _json_ok(v: object) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def make_sae(d_in: int, d_sae: int, architecture: str = "standard", hook: str = "", seed: int = 0, hook_z: bool = False):
    """A random SAELens SAE; one feature is made dead (never fires) for dead-count tests."""
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    kw = dict(d_in=d_in, d_sae=d_sae, reshape_activations="hook_z" if hook_z else "none")
    if architecture == "standard":
        sae = StandardSAE(StandardSAEConfig(**kw))
    elif architecture == "topk":
        sae = TopKSAE(TopKSAEConfig(**kw, k=max(1, d_sae // 8)))
    elif architecture == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(**kw))
    else:
        raise ValueError(architecture)
    sae.cfg.metadata.hook_name = hook
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_in**0.5)
        sae.b_enc.copy_(-0.3 - 0.5 * torch.rand(d_sae, generator=g))
        sae.b_dec.copy_(0.01 * torch.randn(d_in, generator=g))
        if architecture != "topk":
            sae.b_enc[0] = -1e4  # dead feature
        if architecture == "jumprelu":
            sae.threshold.copy_(0.05 + 0.1 * torch.rand(d_sae, generator=g))
    return sae


def make_sae_dir(directory: Path, d_in: int, d_sae: int, architecture: str, hook: str, seed: int = 0, hook_z: bool = False):
    sae = make_sae(d_in, d_sae, architecture, hook, seed, hook_z)
    Path(directory).mkdir(parents=True, exist_ok=True)
    sae.save_model(str(directory))
    return sae


def make_corpus(path: Path, kind: str = "txt", text: str | None = None, tokens: list[list[int]] | None = None) -> Path:
    """kind: 'txt' (blank-line separated), 'jsonl' ({"text"} per doc) or 'tokens' ({"tokens"} per prompt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "txt":
        path.write_text(text or fixture_text(), encoding="utf-8")
    elif kind == "jsonl":
        docs = [d.strip("\n") for d in re.split(r"\n\s*\n", text or fixture_text()) if d.strip()]
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    elif kind == "tokens":
        assert tokens is not None
        path.write_text("".join(json.dumps({"tokens": [int(t) for t in row]}) + "\n" for row in tokens), encoding="utf-8")
    else:
        raise ValueError(kind)
    return path


def random_token_rows(n_prompts: int, context: int, d_vocab: int, seed: int = 0, repeat: int = 0) -> list[list[int]]:
    """Random pre-tokenized prompts; with repeat=R the first R prompts are copied to the end (exact ties)."""
    rng = random.Random(seed)
    rows = [[rng.randrange(1, d_vocab) for _ in range(context)] for _ in range(n_prompts - repeat)]
    return rows + [list(r) for r in rows[:repeat]]


def build_fixture_content(
    root: Path,
    n_prompts: int = 32,
    context: int = 16,
    d_sae: int = 64,
    corpus: str = "txt",
    sets: tuple = FIXTURE_SETS,
    compute: dict | None = None,
    release_id: str = RELEASE_ID,
    model_id: str = MODEL_ID,
    explanations: bool = True,
    d_model: int = 16,
    d_vocab: int = 0,
) -> Path:
    """Write a complete content dir under root/content and return it:
    releases/<release>.yaml, models/<model>/, saes/<set>/<layer>/, corpus/, explanations/."""
    content = Path(root) / "content"
    text = fixture_text(n_docs=max(8, n_prompts * context // 25 + 4))
    model, tokenizer = make_model_dir(content / "models" / model_id, text, n_ctx=max(64, context), d_model=d_model, d_vocab=d_vocab)
    cfg = model.cfg
    corpus_file = {"txt": "corpus/stories.txt", "jsonl": "corpus/stories.jsonl", "tokens": "corpus/tokens.jsonl"}[corpus]
    rows = random_token_rows(n_prompts, context, cfg.d_vocab, repeat=min(2, n_prompts // 4)) if corpus == "tokens" else None
    make_corpus(content / corpus_file, corpus, text=text, tokens=rows)

    manifest_sets = []
    seed = 0
    for set_id, hook, arch, layers in sets:
        entries = []
        for layer in layers:
            seed += 1
            hook_z = hook.endswith("hook_z")
            d_in = cfg.n_heads * cfg.d_head if hook_z else cfg.d_model
            rel = f"saes/{set_id}/{layer}"
            make_sae_dir(content / rel, d_in, d_sae, arch, hook.format(layer=layer), seed=seed, hook_z=hook_z)
            entries.append({"layer": layer, "path": "../" + rel})  # relative to the manifest
        manifest_sets.append({"id": set_id, "title": f"{set_id} ({arch})", "hook": hook, "saes": entries})

    manifest = {
        "release": release_id,
        "title": "Tiny demo SAEs",
        "description": "A *random* model with random SAEs, for tests.",
        "authors": ["Test Author"],
        "links": {"code": "https://example.org/code"},
        "model": {"id": model_id, "path": f"../models/{model_id}"},
        "corpus": {"path": "../" + corpus_file, "prompts": n_prompts, "context": context},
        "sets": manifest_sets,
        "compute": dict(FIXTURE_COMPUTE if compute is None else compute),
    }
    if explanations and manifest_sets:
        first = f"{model_id}@{sets[0][3][0]}-{sets[0][0]}"
        lines = [
            {"sae": first, "index": 1, "text": "fires on **animals** <script>x</script>", "author": "tester", "score": 0.5},
            {"sae": first, "index": 2, "text": "punctuation", "author": "tester", "score": None},
        ]
        (content / "explanations").mkdir(parents=True, exist_ok=True)
        (content / "explanations" / f"{release_id}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        manifest["explanations"] = f"../explanations/{release_id}.jsonl"
    (content / "releases").mkdir(parents=True, exist_ok=True)
    (content / "releases" / f"{release_id}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return content


def make_release_dir(tmp_path: Path, **kwargs) -> Path:
    """Alias of build_fixture_content: the content dir of a tiny release under tmp_path."""
    return build_fixture_content(tmp_path, **kwargs)


# -- independent reference loaders and a wider release (cross-layer sets, mlp.hook_post) ------------

WIDE_RELEASE_ID = "wide-demo"
WIDE_MODEL_ID = "wide-3l"
# (set id, hook template, architecture, ((layer, d_sae), ...)) of the wide release: a residual Set
# over three layers of different widths (every SAE has a previous and/or next one) and SAEs on the
# MLP's hidden activations (d_in = d_mlp, written to the residual stream through W_out).
WIDE_SETS = (
    ("res-x", "blocks.{layer}.hook_resid_post", "standard", ((0, 24), (1, 40), (2, 32))),
    ("mlp-post", "blocks.{layer}.mlp.hook_post", "standard", ((0, 48), (2, 40))),
    ("mlp-post-tk", "blocks.{layer}.mlp.hook_post", "topk", ((1, 32),)),
)


def load_reference_model(directory: Path):
    """A HookedTransformer built here from a local model dir (config.json fields + model.safetensors),
    with TransformerLens alone: the reference that brute-force expectations are computed with."""
    import dataclasses

    import torch
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    raw = json.loads((Path(directory) / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init} - {"dtype", "device"}
    cfg = HookedTransformerConfig(**{k: v for k, v in raw.items() if k in fields}, device="cpu", dtype=torch.float32)
    model = HookedTransformer(cfg)
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")), strict=True)
    return model.eval()


def load_reference_sae(directory: Path):
    """An SAE loaded from a local SAELens dir by SAELens itself (float32, CPU)."""
    from sae_lens import SAE

    return SAE.load_from_disk(str(directory), device="cpu", dtype="float32").eval()


def build_wide_content(root: Path, n_prompts: int = 12, context: int = 8, sets: tuple = WIDE_SETS, compute: dict | None = None) -> Path:
    """root/content with one release (WIDE_RELEASE_ID) on a random 3-layer model: Sets whose SAEs
    differ in width per layer (WIDE_SETS), over a pre-tokenized corpus with repeated prompts."""
    content = Path(root) / "content"
    text = fixture_text(n_docs=12)
    n_layers = 1 + max(layer for *_, entries in sets for layer, _ in entries)
    model, _ = make_model_dir(content / "models" / WIDE_MODEL_ID, text, n_ctx=max(64, context), n_layers=n_layers)
    cfg = model.cfg
    rows = random_token_rows(n_prompts, context, cfg.d_vocab, seed=5, repeat=min(2, n_prompts // 4))
    make_corpus(content / "corpus" / "tokens.jsonl", "tokens", tokens=rows)
    widths = {"hook_z": cfg.n_heads * cfg.d_head, "mlp.hook_post": cfg.d_mlp}
    manifest_sets, seed = [], 100
    for set_id, hook, arch, entries in sets:
        d_in = next((w for suffix, w in widths.items() if hook.endswith(suffix)), cfg.d_model)
        saes = []
        for layer, d_sae in entries:
            seed += 1
            rel = f"saes/{set_id}/{layer}"
            make_sae_dir(content / rel, d_in, d_sae, arch, hook.format(layer=layer), seed=seed, hook_z=hook.endswith("hook_z"))
            saes.append({"layer": layer, "path": "../" + rel})
        manifest_sets.append({"id": set_id, "title": f"{set_id} ({arch})", "hook": hook, "saes": saes})
    manifest = {
        "release": WIDE_RELEASE_ID,
        "title": "Wide demo SAEs",
        "description": "A random 3-layer model with SAEs of several widths, for tests.",
        "authors": ["Test Author"],
        "model": {"id": WIDE_MODEL_ID, "path": f"../models/{WIDE_MODEL_ID}"},
        "corpus": {"path": "../corpus/tokens.jsonl", "prompts": n_prompts, "context": context},
        "sets": manifest_sets,
        "compute": dict(FIXTURE_COMPUTE if compute is None else compute),
    }
    (content / "releases").mkdir(parents=True, exist_ok=True)
    (content / "releases" / f"{WIDE_RELEASE_ID}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return content


def residual_directions(model, hook: str, w_dec):
    """Each SAE decoder row written into the residual stream, f64 numpy [F, d_model], from the
    model's own weights: identity for residual-basis hooks, W_O per head for attn.hook_z (z is
    (head, d_head) flattened), W_out for mlp.hook_post."""
    import numpy as np

    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook)
    assert m, f"not a block hook: {hook}"
    block, name = model.blocks[int(m.group(1))], m.group(2)
    w = np.asarray(w_dec, dtype=np.float64)
    if name in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out"):
        return w
    if name == "attn.hook_z":
        w_o = block.attn.W_O.detach().double().numpy()  # [n_heads, d_head, d_model]
        return np.einsum("fhd,hdm->fm", w.reshape(w.shape[0], *w_o.shape[:2]), w_o)
    if name == "mlp.hook_post":
        return w @ block.mlp.W_out.detach().double().numpy()
    raise AssertionError(f"no residual direction for {hook}")

"""A model whose d_vocab exceeds its tokenizer (Pythia: 50,304 vs 50,277): logit tables, labels,
token lookup and `dump` name the ids without a string `<id N>`, and only those.

The fixture model has 16 unembedding columns past the tokenizer; three of them are scaled up so
that they surely rank among every feature's top or bottom logits. Expected logit ids come from
W_dec @ W_U read straight from the weight files; expected strings from the tokenizer itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from tests.conftest import sae_atlas
from tests.fixtures import fixture_text, make_corpus, make_sae_dir, make_tokenizer, model_config

PADDING = 16
SCALED = 3  # padded columns made large
LOGITS = 6
LAYER = 1
HOOK = f"blocks.{LAYER}.hook_resid_post"


def make_padded_model_dir(directory: Path, text: str):
    """A 2-layer HookedTransformer with d_vocab = len(tokenizer) + PADDING, in the local model format."""
    import torch
    from safetensors.torch import save_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = make_tokenizer(directory, text)
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**model_config(d_vocab=len(tokenizer) + PADDING)))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3)
        model.unembed.W_U[:, -SCALED:] *= 25.0
    config = {k: v for k, v in model.cfg.to_dict().items() if isinstance(v, (int, float, str, bool, type(None)))}
    (directory / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    return model, tokenizer


def write_padded_release(content: Path, release: str, title: str, corpus: dict, compute: dict) -> None:
    """content/releases/<release>.yaml: the padded model and its one SAE (res-pd, layer LAYER) on `corpus`."""
    manifest = {
        "release": release,
        "title": title,
        "model": {"id": "pad-2l", "path": "../models/pad-2l"},
        "corpus": corpus,
        "sets": [{"id": "res-pd", "hook": "blocks.{layer}.hook_resid_post", "saes": [{"layer": LAYER, "path": f"../saes/res/{LAYER}"}]}],
        "compute": compute,
    }
    (content / "releases").mkdir(parents=True, exist_ok=True)
    (content / "releases" / f"{release}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


@pytest.fixture(scope="module")
def padded_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("padded")
    content = root / "content"
    text = fixture_text(n_docs=30)
    model, tokenizer = make_padded_model_dir(content / "models" / "pad-2l", text)
    make_corpus(content / "corpus" / "stories.txt", "txt", text=text)
    make_sae_dir(content / "saes" / "res" / str(LAYER), model.cfg.d_model, 32, "standard", HOOK, seed=3)
    write_padded_release(content, "padded", "Padded vocabulary", {"path": "../corpus/stories.txt", "prompts": 12, "context": 16}, {
        "top_k": 4, "intervals": 2, "per_interval": 2, "histogram_bins": 6, "logits": LOGITS,
        "neighbours": 3, "context_before": 3, "context_after": 2, "umap_neighbours": 5, "ce_prompts": 2,
    })
    cache, site = root / "cache", root / "site"
    run = sae_atlas("build", "--content", content, "--cache", cache, "--out", site, "--quiet", "--device", "cpu", cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    return content, cache, site, tokenizer


def expected_logit_ids(content: Path) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom LOGITS token ids of W_dec @ W_U per feature, from the weight files."""
    from safetensors.numpy import load_file

    w_dec = load_file(str(content / "saes" / "res" / str(LAYER) / "sae_weights.safetensors"))["W_dec"].astype(np.float64)
    w_u = load_file(str(content / "models" / "pad-2l" / "model.safetensors"))["unembed.W_U"].astype(np.float64)
    logits = w_dec @ w_u
    order = np.argsort(logits, axis=1)
    return order[:, ::-1][:, :LOGITS], order[:, :LOGITS]


def expected_string(tokenizer, token: int) -> str:
    if token >= len(tokenizer):
        return f"<id {token}>"
    return tokenizer.decode([token], clean_up_tokenization_spaces=False)


def data_payload(path: Path) -> list:
    text = path.read_bytes()
    return orjson.loads(b"[" + text[text.index(b"(") + 1 : text.rindex(b")")] + b"]")


def test_dump_names_exactly_the_padded_ids_and_matches_brute_force_logits(padded_build):
    from sae_atlas.export.dump import dump_feature
    from sae_atlas.manifest import load_content

    content, cache, site, tokenizer = padded_build
    top, bottom = expected_logit_ids(content)
    releases = load_content(content)
    n_tok = len(tokenizer)
    seen_padded = seen_real = 0
    for index in range(top.shape[0]):
        feature = f"pad-2l@{LAYER}-res-pd:{index}"
        if index < 2:  # the command itself, as a user runs it
            run = sae_atlas("dump", feature, "--content", content, "--cache", cache)
            assert run.returncode == 0, run.stderr
            record = json.loads(run.stdout)
        else:
            record = dump_feature(releases, cache, feature)
        for key, ids in (("positive_logits", top[index]), ("negative_logits", bottom[index])):
            got = record[key]
            assert [x["token"] for x in got] == ids.tolist()
            for x in got:
                assert x["token_string"] == expected_string(tokenizer, x["token"])
                seen_padded += x["token"] >= n_tok
                seen_real += x["token"] < n_tok
    assert seen_padded and seen_real, "the fixture must put padded and real ids among the logits"


def test_pages_data_show_padded_ids_in_logit_tables_and_labels(padded_build):
    content, cache, site, tokenizer = padded_build
    top, bottom = expected_logit_ids(content)
    data = site / "pad-2l" / f"{LAYER}-res-pd" / "data"
    (summary,) = data_payload(data / "summary.js")
    records = [r for shard in sorted((data / "f").glob("*.js")) for r in data_payload(shard)[1]]
    assert [r["i"] for r in records] == list(range(top.shape[0]))
    n_tok = len(tokenizer)
    padded_strings = {f"<id {t}>" for t in range(n_tok, n_tok + PADDING)}
    for record, pos_ids, neg_ids in zip(records, top, bottom):
        for pairs, ids in ((record["pos"], pos_ids), (record["neg"], neg_ids)):
            assert [s for s, _ in pairs] == [expected_string(tokenizer, int(t)) for t in ids]
        label = summary["label"][record["i"]]
        assert label == " ".join(expected_string(tokenizer, int(t)) for t in pos_ids[:3])
    shown = {s for r in records for s, _ in r["pos"] + r["neg"]}
    assert shown & padded_strings and shown - padded_strings
    # Nothing in any real token's string looks like a padded id.
    assert not any(s.startswith("<id ") for s in {expected_string(tokenizer, t) for t in range(n_tok)})
    page = (site / "pad-2l" / f"{LAYER}-res-pd" / "index.html").read_text()
    assert "float32" in page


def test_render_accepts_corpus_token_ids_past_the_tokenizer(tmp_path):
    """Pre-tokenized prompts may hold ids the tokenizer has no string for: the corpus shards, peak
    tokens (token lookup) and logit tables name them `<id N>`."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import synthetic_release

    from sae_atlas.cache import CacheStore, corpus_key, sae_key
    from sae_atlas.manifest import ComputeSettings
    from sae_atlas.render import render_site

    settings = ComputeSettings(top_k=3, intervals=2, per_interval=2, logits=3, neighbours=3, context_before=2, context_after=1)
    release = synthetic_release.synthetic_release(n_saes=1, d_sae=8, prompts=6, context=8, vocab_size=50, settings=settings)
    cache = tmp_path / "cache"
    synthetic_release.build_synthetic_cache(cache, release, d_sae=8, vocab_size=50)
    store = CacheStore(cache)
    corpus_dir = store.corpus_dir(corpus_key(release))
    vocab = json.loads((corpus_dir / "vocab.json").read_text())
    short = vocab[:40]  # the tokenizer knows ids 0..39; ids 40..49 are padding
    entry_dir = store.sae_dir(sae_key(release, release.saes()[0]))
    _rewrite(corpus_dir, "vocab.json", json.dumps(short).encode())
    tokens = np.load(corpus_dir / "tokens.npy")
    tokens[0, :] = np.arange(40, 48)  # a whole prompt of padded ids
    _rewrite(corpus_dir, "tokens.npy", _npy(tokens))
    pos = np.load(entry_dir / "pos_logit_token.npy")
    pos[:, 0] = 45
    _rewrite(entry_dir, "pos_logit_token.npy", _npy(pos))
    top_prompt, top_position = np.load(entry_dir / "top_prompt.npy"), np.load(entry_dir / "top_position.npy")
    top_prompt[0, 0], top_position[0, 0] = 0, 3  # feature 0 peaks on padded id 43
    _rewrite(entry_dir, "top_prompt.npy", _npy(top_prompt))
    _rewrite(entry_dir, "top_position.npy", _npy(top_position))

    site = tmp_path / "site"
    render_site([release], cache=cache, out=site, quiet=True)
    (prompts,) = data_payload(next((site / "corpus").rglob("0000.js")))[1:]
    assert prompts[0] == [f"<id {t}>" for t in range(40, 48)]
    data = site / release.model.id / f"0-{release.sets[0].id}" / "data"
    (summary,) = data_payload(data / "summary.js")
    assert summary["peak_tokens"][0][0] == "<id 43>"
    assert all(label.split(" ")[0:2] == ["<id", "45>"] for label in summary["label"])


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _rewrite(entry_dir: Path, name: str, data: bytes) -> None:
    """Replace one file of a cache entry and its checksum in meta.json."""
    import hashlib

    (entry_dir / name).write_bytes(data)
    meta = json.loads((entry_dir / "meta.json").read_text())
    meta["files"][name] = hashlib.sha256(data).hexdigest()
    (entry_dir / "meta.json").write_text(json.dumps(meta))


def test_a_pretokenized_corpus_with_padded_ids_computes_and_dumps_them(tmp_path):
    """Ids past the tokenizer but below the model's d_vocab are valid model input: `check`,
    `compute` and `dump` accept them, and the examples show them as `<id N>`."""
    content = tmp_path / "content"
    text = fixture_text(n_docs=20)
    model, tokenizer = make_padded_model_dir(content / "models" / "pad-2l", text)
    n_tok = len(tokenizer)
    rng = np.random.default_rng(0)
    rows = [[int(t) for t in rng.integers(1, n_tok + PADDING, size=12)] for _ in range(8)]
    rows[0][5] = n_tok + 2  # a padded id for sure
    make_corpus(content / "corpus" / "tokens.jsonl", "tokens", tokens=rows)
    make_sae_dir(content / "saes" / "res" / str(LAYER), model.cfg.d_model, 16, "standard", HOOK, seed=3)
    write_padded_release(content, "padded-tokens", "Padded ids in the corpus", {"path": "../corpus/tokens.jsonl", "prompts": 8, "context": 12},
                         {"top_k": 30, "context_before": 11, "context_after": 0, "umap_neighbours": 4, "ce_prompts": 0})
    cache = tmp_path / "cache"
    assert sae_atlas("check", "--content", content).returncode == 0
    run = sae_atlas("compute", "--content", content, "--cache", cache, "--quiet", "--device", "cpu")
    assert run.returncode == 0, run.stderr[-3000:]
    seen = {}
    for index in range(16):
        dump = sae_atlas("dump", f"pad-2l@{LAYER}-res-pd:{index}", "--content", content, "--cache", cache)
        assert dump.returncode == 0, dump.stderr
        for example in json.loads(dump.stdout)["top_examples"]:
            row = rows[example["prompt"]]
            start = example["position"] - len(example["tokens"]) + 1
            assert example["tokens"] == row[start : example["position"] + 1]
            seen.update(zip(example["tokens"], example["token_strings"]))
    padded = {t: s for t, s in seen.items() if t >= n_tok}
    assert padded and all(s == f"<id {t}>" for t, s in padded.items())
    assert all(s == expected_string(tokenizer, t) for t, s in seen.items() if t < n_tok)

"""Loading by name with the hub offline: a TransformerLens model by its official name, SAEs through the
SAELens registry (the SAELens cfg format and two conversion loaders) and a corpus by `dataset:` name,
all from a Hugging Face hub cache laid out by tests/hub_fixtures.py.

The engine runs as a user runs it (`sae-atlas compute`, `dump`, `build` in subprocesses, HF_HUB_OFFLINE=1).
The expected numbers come from TransformerLens and SAELens called directly, in another subprocess with
the same environment, over the token rows that the engine cached.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests import hub_fixtures as hf
from tests.conftest import ROOT, sae_atlas
from tests.fixtures import FIXTURE_COMPUTE
from tests.hubcache import HubCache

PROMPTS, CONTEXT = 24, 16
MISSING_DATASET = "nobody/absent-corpus"
EXACT_REL = 1e-4

GPT2_SAES = {  # SAE id -> (set, layer, hook template, SAELens release, SAELens id)
    "gpt2-small@8-res-jb": ("res-jb", 8, "blocks.{layer}.hook_resid_pre", hf.RES_JB_RELEASE, "blocks.8.hook_resid_pre"),
    "gpt2-small@9-res-jb": ("res-jb", 9, "blocks.{layer}.hook_resid_pre", hf.RES_JB_RELEASE, "blocks.9.hook_resid_pre"),
    "gpt2-small@5-att-kk": ("att-kk", 5, "blocks.{layer}.attn.hook_z", hf.KK_RELEASE, "blocks.5.hook_z"),
}
PYTHIA_SAES = {
    "pythia-70m-deduped@3-res-dl": ("res-dl", 3, "blocks.{layer}.hook_resid_post", hf.DL_RELEASE, hf.dl_sae_id(3, 10)),
}
MODEL_OF = {"gpt2-small": "gpt2-small", "pythia-70m-deduped": "pythia-70m-deduped"}  # model id -> TransformerLens name


# --- the hub cache and the content ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> tuple[HubCache, list[str]]:
    """Every fixture repo in one hub cache; returns (hub, the dataset's documents in order)."""
    hub = HubCache(tmp_path_factory.mktemp("hub") / "hf")
    hf.add_gpt2(hub)
    hf.add_pythia(hub)
    hf.add_res_jb(hub, layers=(8, 9))
    hf.add_hook_z_kk(hub, layer=5)
    hf.add_dictionary_learning(hub, trainer=10)
    docs = hf.add_text_dataset(hub, hf.DATASET)
    return hub, docs


def _manifest(release: str, model_id: str, saes: dict, dataset: str = hf.DATASET) -> dict:
    sets: dict[str, dict] = {}
    for set_id, layer, hook, sl_release, sl_id in saes.values():
        s = sets.setdefault(set_id, {"id": set_id, "title": set_id, "hook": hook, "saes": []})
        s["saes"].append({"layer": layer, "sae_lens": {"release": sl_release, "id": sl_id}})
    return {
        "release": release,
        "title": f"{release} by name",
        "model": {"id": model_id, "transformer_lens": MODEL_OF[model_id]},
        "corpus": {"dataset": dataset, "prompts": PROMPTS, "context": CONTEXT},
        "sets": list(sets.values()),
        "compute": dict(FIXTURE_COMPUTE),
    }


def _content(root: Path, *manifests: dict) -> Path:
    content = root / "content"
    (content / "releases").mkdir(parents=True)
    for m in manifests:
        (content / "releases" / f"{m['release']}.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    return content


@pytest.fixture(scope="module")
def computed(hub, tmp_path_factory) -> tuple[Path, Path]:
    """`sae-atlas compute` of a gpt2-small release (res-jb 8, 9; hook-z-kk 5) and a Pythia release (dictionary_learning)."""
    root = tmp_path_factory.mktemp("by-name")
    content = _content(root, _manifest("gpt2-by-name", "gpt2-small", GPT2_SAES), _manifest("pythia-by-name", "pythia-70m-deduped", PYTHIA_SAES))
    cache = root / "cache"
    run = sae_atlas("compute", "--quiet", "--device", "cpu", "--content", content, "--cache", cache, cwd=root, env=hub[0].env())
    assert run.returncode == 0, run.stderr[-4000:]
    return content, cache


def _entries(cache: Path) -> dict[str, Path]:
    """SAE id -> its cache entry directory, read from each entry's meta.json."""
    return {json.loads((d / "meta.json").read_text())["sae_id"]: d for d in sorted((cache / "sae").iterdir()) if not d.name.endswith(".partial")}


def _tokens(cache: Path, entry: Path) -> np.ndarray:
    key = json.loads((entry / "meta.json").read_text())["corpus_key"]
    return np.load(cache / "corpus" / key / "tokens.npy")


# --- the brute-force reference, with TransformerLens and SAELens directly ---------------------------

REFERENCE = r'''
import json, sys
import numpy as np, torch
from sae_lens import SAE
from transformer_lens import HookedTransformer
from transformers import AutoTokenizer

jobs, docs, out = json.loads(sys.argv[1]), json.loads(open(sys.argv[2]).read()), sys.argv[3]
arrays, models = {}, {}
for i, job in enumerate(jobs):
    sae = SAE.from_pretrained(job["release"], job["id"], device="cpu")
    kwargs = sae.cfg.metadata.model_from_pretrained_kwargs or {}
    key = (job["model"], json.dumps(kwargs, sort_keys=True))
    if key not in models:
        # As SAELens loads the model an SAE was trained on (sae_lens.load_model, and its warning).
        models[key] = HookedTransformer.from_pretrained_no_processing(job["model"], device="cpu", **kwargs).eval()
    model = models[key]
    hook = sae.cfg.metadata.hook_name
    tokens = torch.from_numpy(np.load(job["tokens"]).astype(np.int64))
    with torch.no_grad():
        _, acts_cache = model.run_with_cache(tokens, names_filter=[hook])
        acts = sae.encode(acts_cache[hook].float()).float()
        w_dec = sae.W_dec.float()
        if hook.endswith("attn.hook_z"):  # the concatenated heads' z -> the residual stream through W_O
            layer = int(hook.split(".")[1])
            w_o = model.blocks[layer].attn.W_O.float()  # [heads, d_head, d_model]
            w_dec = torch.einsum("fhd,hdm->fm", w_dec.reshape(w_dec.shape[0], *w_o.shape[:2]), w_o)
        logits = w_dec @ model.W_U.float()
    arrays[f"acts_{i}"] = acts.numpy()
    arrays[f"logits_{i}"] = logits.numpy()
    # The corpus as documented: BOS + documents joined by EOS, tokenized one by one, cut into rows.
    tok = AutoTokenizer.from_pretrained(model.cfg.tokenizer_name)
    stream = []
    for n, doc in enumerate(docs):
        stream += ([tok.eos_token_id] if n else []) + tok(doc, add_special_tokens=False)["input_ids"]
    p, t = tokens.shape
    arrays[f"rows_{i}"] = np.array([[tok.bos_token_id] + stream[r * (t - 1):(r + 1) * (t - 1)] for r in range(p)])
    arrays[f"d_vocab_{i}"] = np.array([model.cfg.d_vocab, len(tok)])
np.savez(out, **arrays)
'''


@pytest.fixture(scope="module")
def reference(hub, computed, tmp_path_factory) -> dict[str, dict]:
    """Per SAE id: acts [P, T, F], logits [F, d_vocab], the expected corpus rows, (d_vocab, tokenizer size)."""
    _, cache = computed
    entries = _entries(cache)
    ids = sorted({**GPT2_SAES, **PYTHIA_SAES})
    assert sorted(entries) == ids
    jobs = []
    for sae_id in ids:
        _, _, _, release, sl_id = {**GPT2_SAES, **PYTHIA_SAES}[sae_id]
        model_id = sae_id.split("@")[0]
        key = json.loads((entries[sae_id] / "meta.json").read_text())["corpus_key"]
        jobs.append({"model": MODEL_OF[model_id], "release": release, "id": sl_id, "tokens": str(cache / "corpus" / key / "tokens.npy")})
    tmp = tmp_path_factory.mktemp("reference")
    (tmp / "docs.json").write_text(json.dumps(hub[1]))
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE, json.dumps(jobs), str(tmp / "docs.json"), str(tmp / "ref.npz")],
        env={**os.environ, **hub[0].env()}, capture_output=True, text=True, timeout=600, cwd=tmp,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    z = np.load(tmp / "ref.npz")
    return {
        sae_id: {"acts": z[f"acts_{i}"], "logits": z[f"logits_{i}"], "rows": z[f"rows_{i}"], "vocab": tuple(z[f"d_vocab_{i}"])}
        for i, sae_id in enumerate(ids)
    }


def _ranked(acts: np.ndarray, feature: int) -> list[tuple[float, int, int]]:
    """(activation, prompt, position) of every firing token: highest first, then earliest prompt and position."""
    a = acts[:, :, feature]
    prompts, positions = np.nonzero(a > 0)
    order = sorted(zip((-a[prompts, positions]).tolist(), prompts.tolist(), positions.tolist()))
    return [(-v, p, q) for v, p, q in order]


# --- the tests -----------------------------------------------------------------------------------------


def test_the_dataset_corpus_is_its_documents_packed_in_order(computed, reference):
    _, cache = computed
    for sae_id, entry in _entries(cache).items():
        tokens = _tokens(cache, entry)
        assert tokens.shape == (PROMPTS, CONTEXT)
        np.testing.assert_array_equal(tokens, reference[sae_id]["rows"], err_msg=sae_id)


def test_the_padded_vocabulary_is_the_models_not_the_tokenizers(reference):
    d_vocab, tokenizer = reference["pythia-70m-deduped@3-res-dl"]["vocab"]
    assert d_vocab == tokenizer + hf.PYTHIA_VOCAB_PADDING
    assert reference["pythia-70m-deduped@3-res-dl"]["logits"].shape[1] == d_vocab


def test_top_examples_density_and_logits_in_the_cache_match_brute_force(computed, reference):
    _, cache = computed
    k, n_logits = FIXTURE_COMPUTE["top_k"], FIXTURE_COMPUTE["logits"]
    for sae_id, entry in _entries(cache).items():
        ref = reference[sae_id]
        acts, logits = ref["acts"], ref["logits"]
        arrays = {p.stem: np.load(p) for p in entry.glob("*.npy")}
        live = 0
        for f in range(acts.shape[2]):
            where = f"{sae_id}:{f}"
            ranked = _ranked(acts, f)[:k]
            n = len(ranked)
            live += n > 0
            np.testing.assert_allclose(arrays["top_value"][f, :n], [v for v, _, _ in ranked], rtol=EXACT_REL, err_msg=where)
            assert [(int(p), int(q)) for p, q in zip(arrays["top_prompt"][f, :n], arrays["top_position"][f, :n])] == [(p, q) for _, p, q in ranked], where
            assert (arrays["top_prompt"][f, n:] == -1).all(), where
        firing = (acts > 0).reshape(-1, acts.shape[2])
        np.testing.assert_array_equal(arrays["nonzero_count"], firing.sum(0), err_msg=sae_id)
        np.testing.assert_allclose(arrays["density"], firing.mean(0), rtol=1e-6, err_msg=sae_id)
        np.testing.assert_allclose(arrays["max_activation"], acts.reshape(-1, acts.shape[2]).max(0).clip(min=0), rtol=EXACT_REL, err_msg=sae_id)
        order = np.argsort(-logits, axis=1, kind="stable")[:, :n_logits]
        np.testing.assert_array_equal(arrays["pos_logit_token"], order, err_msg=sae_id)
        np.testing.assert_allclose(arrays["pos_logit_value"], np.take_along_axis(logits, order, 1), rtol=1e-4, atol=1e-5, err_msg=sae_id)
        order = np.argsort(logits, axis=1, kind="stable")[:, :n_logits]
        np.testing.assert_array_equal(arrays["neg_logit_token"], order, err_msg=sae_id)
        np.testing.assert_allclose(arrays["neg_logit_value"], np.take_along_axis(logits, order, 1), rtol=1e-4, atol=1e-5, err_msg=sae_id)
        assert live > acts.shape[2] // 4, f"{sae_id}: only {live} live features; the fixture should fire"
        assert arrays["nonzero_count"][0] == 0  # the fixture's dead feature


def test_dump_prints_top_examples_density_and_logits_matching_brute_force(hub, computed, reference):
    content, cache = computed
    before = FIXTURE_COMPUTE["context_before"]
    for sae_id, ref in sorted(reference.items()):
        acts, logits, tokens = ref["acts"], ref["logits"], ref["rows"]
        index = int(np.argmax((acts > 0).sum((0, 1))))  # the feature that fires most
        run = sae_atlas("dump", f"{sae_id}:{index}", "--content", content, "--cache", cache, cwd=cache.parent, env=hub[0].env())
        assert run.returncode == 0, run.stderr[-2000:]
        record = json.loads(run.stdout)
        assert (record["sae"], record["index"]) == (sae_id, index)
        ranked = _ranked(acts, index)
        assert math.isclose(record["density"], (acts[:, :, index] > 0).mean(), rel_tol=EXACT_REL)
        assert math.isclose(record["max_activation"], ranked[0][0], rel_tol=EXACT_REL)
        got = [(e["prompt"], e["position"]) for e in record["top_examples"]]
        assert got == [(p, q) for _, p, q in ranked[: len(got)]], sae_id
        for e, (value, p, q) in zip(record["top_examples"], ranked):
            assert math.isclose(e["activation"], value, rel_tol=EXACT_REL)
            start = max(0, q - before)
            assert e["tokens"] == tokens[p, start : start + len(e["tokens"])].tolist()
        top = np.argsort(-logits[index], kind="stable")[: len(record["positive_logits"])]
        assert [x["token"] for x in record["positive_logits"]] == top.tolist()
        assert np.allclose([x["value"] for x in record["positive_logits"]], logits[index, top], rtol=1e-4, atol=1e-5)


def _one_line_input_error(hub, tmp_path: Path, dataset: str) -> str:
    """`sae-atlas compute` of a release whose corpus is `dataset`: exit 2, one line at the manifest's
    `dataset:` value, no traceback, nothing computed. Returns that line."""
    content = _content(tmp_path, _manifest("bad-corpus", "gpt2-small", dict(list(GPT2_SAES.items())[:1]), dataset=dataset))
    run = sae_atlas("compute", "--quiet", "--device", "cpu", "--content", content, "--cache", tmp_path / "cache", cwd=tmp_path, env=hub[0].env())
    assert run.returncode == 2, run.output[-3000:]
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if dataset in line]
    assert len(lines) == 1, run.stderr
    manifest = content / "releases" / "bad-corpus.yaml"
    line_no = next(i for i, text in enumerate(manifest.read_text().splitlines(), 1) if dataset in text)
    assert lines[0].startswith(f"{manifest}:{line_no}:"), lines[0]
    assert not list((tmp_path / "cache").glob("sae/*"))
    return lines[0]


def test_a_dataset_missing_from_the_offline_cache_is_one_clear_line(hub, tmp_path):
    line = _one_line_input_error(hub, tmp_path, MISSING_DATASET)
    assert "not in the Hugging Face cache" in line
    assert f"hf download {MISSING_DATASET} --repo-type dataset" in line


def test_a_dataset_without_a_text_column_is_one_clear_line(hub, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"content": ["no text column here"] * 8}), path)
    hub[0].add_file("nobody/code-corpus", "data/train-00000-of-00001.parquet", path, repo_type="dataset")
    line = _one_line_input_error(hub, tmp_path, "nobody/code-corpus")
    assert 'no "text" string column' in line


def test_the_tokenizer_is_the_one_transformer_lens_names(hub, tmp_path):
    """By name, the tokenizer is TransformerLens's `tokenizer_name`; a model that names none, or one missing
    from the offline cache, is an input error."""
    hub_cache, _ = hub
    # A TransformerLens-format model config (as NeelNanda's repos have) without a tokenizer name.
    neel = {"d_model": 16, "n_layers": 1, "d_mlp": 64, "d_head": 4, "n_heads": 4, "n_ctx": 32, "d_vocab": 50,
            "act_fn": "solu_ln", "attn_only": True, "normalization_type": "LN"}
    hub_cache.add("NeelNanda/Attn_Only_1L512W_C4_Code", "config.json", json.dumps(neel).encode())
    script = (
        "import sys\n"
        "from transformers import AutoTokenizer\n"
        "from sae_atlas.errors import InputError\n"
        "from sae_atlas.manifest import ModelSpec\n"
        "from sae_atlas.sources.model import load_tokenizer\n"
        "got = load_tokenizer(ModelSpec(id='g', transformer_lens='gpt2-small'))\n"
        "want = AutoTokenizer.from_pretrained('gpt2')\n"
        "assert got.get_vocab() == want.get_vocab() and got.bos_token_id == want.bos_token_id, 'gpt2 tokenizer differs'\n"
        "for name in ('attn-only-1l', 'gpt2-medium'):\n"
        "    try:\n"
        "        load_tokenizer(ModelSpec(id='m', transformer_lens=name))\n"
        "    except InputError as e:\n"
        "        print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT), **hub_cache.env()},
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'attn-only-1l' names no tokenizer" in done.stdout, done.stdout + done.stderr[-2000:]
    # A model that is not in the cache, offline: an input error naming it, not a traceback.
    assert "cannot load the tokenizer of TransformerLens model 'gpt2-medium'" in done.stdout, done.stdout + done.stderr[-2000:]


def test_build_of_a_registry_release_from_the_hub_cache(hub, computed, reference, tmp_path):
    """`sae-atlas build` of gpt2-small-res-jb layers 8-9, cold, end to end; the site's peaks are the brute force's."""
    content = _content(tmp_path, _manifest(hf.RES_JB_RELEASE, "gpt2-small", dict(list(GPT2_SAES.items())[:2])))
    site = tmp_path / "site"
    run = sae_atlas("build", "--quiet", "--device", "cpu", "--content", content, "--out", site, "--cache", tmp_path / "cache", cwd=tmp_path, env=hub[0].env())
    assert run.returncode == 0, run.stderr[-4000:]
    print(f"\nsae-atlas build of {hf.RES_JB_RELEASE} layers 8-9 from the hub cache: {run.seconds:.1f} s wall")
    from tests.test_e2e import data_call

    for sae_id in list(GPT2_SAES)[:2]:
        layer = sae_id.split("@")[1].split("-")[0]
        page = site / "gpt2-small" / f"{layer}-res-jb" / "index.html"
        assert page.is_file(), page
        name, (summary,) = data_call(page.parent / "data" / "summary.js")
        acts = reference[sae_id]["acts"]
        assert summary["sae"] == sae_id and summary["d_sae"] == acts.shape[2]
        np.testing.assert_allclose(summary["max"], acts.reshape(-1, acts.shape[2]).max(0).clip(min=0), rtol=6e-4, atol=1e-6)

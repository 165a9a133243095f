"""Checks of a release against its files (sources/validate.py, sources/configs.py), without torch.

The fixture files are written directly: a HookedTransformerConfig-style config.json, safetensors
files written with the safetensors library, a word-level tokenizer (one token per word) and SAE
directories laid out as SAELens save_model writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from sae_atlas.errors import InputError, Problem
from sae_atlas.manifest import Mark, ModelSpec, Release, SaeLensRef, SaeSpec, load_content
from sae_atlas.sources.configs import (
    ConfigError,
    HubFileMissing,
    hook_width,
    read_model_config,
    read_sae_config,
    safetensors_header,
    sae_hook_name,
    transformer_lens_official_name,
    valid_hooks,
)
from sae_atlas.sources.validate import validate_sources
from tests.hubcache import HubCache

WORDS = [f"w{i}" for i in range(40)]
CONFIG = {
    "n_layers": 2,
    "d_model": 16,
    "d_head": 4,
    "n_heads": 4,
    "d_mlp": 32,
    "n_ctx": 32,
    "d_vocab": len(WORDS) + 2,
    "act_fn": "gelu",
    "normalization_type": "LN",
}


def write_tokenizer(directory: Path, bos: bool = True) -> None:
    """tokenizer.json + tokenizer_config.json as save_pretrained writes them (BOS = EOS = <|endoftext|>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "[UNK]"}
    if not bos:
        del special["bos_token"]
    (directory / "tokenizer_config.json").write_text(json.dumps(special))


def write_model(directory: Path, config: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = dict(CONFIG, **(config or {}))
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file({"embed.W_E": np.zeros((cfg["d_vocab"], cfg["d_model"]), np.float32)}, str(directory / "model.safetensors"))
    write_tokenizer(directory)


def write_sae(directory: Path, d_in: int, hook: str, d_sae: int = 8, architecture: str = "standard") -> None:
    """The files SAELens 6 `save_model` writes (cfg.json keys as it writes them)."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "hook_z" if hook.endswith("hook_z") else "none",
        "metadata": {"sae_lens_version": "6.0.0", "sae_lens_training_version": "6.0.0", "hook_name": hook},
        "architecture": architecture,
    }
    (directory / "cfg.json").write_text(json.dumps(cfg))
    tensors = {
        "W_enc": np.zeros((d_in, d_sae), np.float32),
        "W_dec": np.zeros((d_sae, d_in), np.float32),
        "b_enc": np.zeros(d_sae, np.float32),
        "b_dec": np.zeros(d_in, np.float32),
    }
    save_file(tensors, str(directory / "sae_weights.safetensors"))


def document(n_words: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n_words))


DEFAULT_SETS = [
    {"id": "res", "hook": "blocks.{layer}.hook_resid_pre", "saes": [{"layer": 0}, {"layer": 1}]},
    {"id": "att", "hook": "blocks.{layer}.attn.hook_z", "saes": [{"layer": 1}]},
    {"id": "mlp", "hook": "blocks.{layer}.mlp.hook_post", "saes": [{"layer": 0}]},
]


def make_content(
    tmp_path: Path,
    *,
    sets: list[dict] | None = None,
    corpus: str | bytes | None = None,
    corpus_name: str = "stories.txt",
    prompts: int = 3,
    context: int = 8,
    model_config: dict | None = None,
    model: dict | None = None,
    explanations: str | None = None,
) -> Path:
    """A content dir with one release. SAE entries without a path get an SAE dir that fits their hook."""
    content = tmp_path / "content"
    write_model(content / "models/tiny", model_config)
    if corpus is None:
        corpus = document(10) + "\n\n" + document(10, 10) + "\n"  # 21 tokens with the separator
    corpus_file = content / "corpus" / corpus_name
    corpus_file.parent.mkdir(parents=True, exist_ok=True)
    corpus_file.write_bytes(corpus if isinstance(corpus, bytes) else corpus.encode("utf-8"))
    manifest_sets = []
    for spec in sets if sets is not None else DEFAULT_SETS:
        entries = []
        for entry in spec["saes"]:
            entry = dict(entry)
            if "path" not in entry and "sae_lens" not in entry:
                hook = spec["hook"].format(layer=entry["layer"])
                d_in = hook_width(CONFIG, hook) or CONFIG["d_model"]
                rel = f"saes/{spec['id']}/{entry['layer']}"
                write_sae(content / rel, d_in, hook)
                entry["path"] = f"../{rel}"
            entries.append(entry)
        manifest_sets.append({**spec, "saes": entries})
    manifest = {
        "release": "demo",
        "model": model or {"id": "tiny", "path": "../models/tiny"},
        "corpus": {"path": f"../corpus/{corpus_name}", "prompts": prompts, "context": context},
        "sets": manifest_sets,
    }
    if explanations is not None:
        (content / "explanations.jsonl").write_text(explanations)
        manifest["explanations"] = "../explanations.jsonl"
    (content / "releases").mkdir(parents=True, exist_ok=True)
    (content / "releases/demo.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return content


def check(content: Path) -> tuple[Release, list[Problem]]:
    [release] = load_content(content)
    try:
        validate_sources([release])
    except InputError as e:
        return release, e.problems
    return release, []


def at(mark: Mark, message: str) -> Problem:
    return Problem(mark.file, mark.line, mark.col, message)


def sae(release: Release, set_id: str, layer: int) -> SaeSpec:
    return next(s for s in release.saes() if s.set_id == set_id and s.layer == layer)


# --- a good release ----------------------------------------------------------------------------


def test_valid_release_passes(tmp_path):
    assert check(make_content(tmp_path))[1] == []


def test_corpus_of_exactly_the_needed_tokens_passes(tmp_path):
    # 2 documents of 10 words + 1 separator = 21 tokens = 3 prompts x (8 - 1) tokens after BOS.
    assert check(make_content(tmp_path, prompts=3, context=8))[1] == []


def test_without_bos_every_prompt_needs_context_tokens(tmp_path):
    content = make_content(tmp_path, prompts=3, context=7)
    write_tokenizer(content / "models/tiny", bos=False)
    assert check(content)[1] == []
    content = make_content(tmp_path, prompts=3, context=8)
    write_tokenizer(content / "models/tiny", bos=False)
    assert [p.message.split(":")[0] for p in check(content)[1]] == ["corpus stories.txt has 21 tokens; expected at least 24 (3 prompts x 8 tokens)"]


# --- model, layers, hooks ----------------------------------------------------------------------


def test_layer_outside_the_model(tmp_path):
    sets = [{"id": "res", "hook": "blocks.{layer}.hook_resid_pre", "saes": [{"layer": 0}, {"layer": 2}]}]
    release, problems = check(make_content(tmp_path, sets=sets))
    assert problems == [at(sae(release, "res", 2).mark_of("layer"), "layer 2 is outside model 'tiny', which has 2 layers; expected 0 to 1")]


def test_unknown_hook_is_reported_once_per_set_with_a_suggestion(tmp_path):
    sets = [{"id": "res", "hook": "blocks.{layer}.hook_resid_pree", "saes": [{"layer": 0, "path": "../models"}, {"layer": 1, "path": "../models"}]}]
    content = make_content(tmp_path, sets=sets)
    write_sae(content / "saes/x", 16, "blocks.0.hook_resid_pre")
    text = (content / "releases/demo.yaml").read_text().replace("../models\n", "../saes/x\n")
    (content / "releases/demo.yaml").write_text(text)
    release, problems = check(content)
    hook_mark = release.sets[0].mark_of("hook")
    assert problems == [at(hook_mark, "hook 'blocks.0.hook_resid_pree' does not exist in model 'tiny'; did you mean 'blocks.0.hook_resid_pre'?")]


def test_mlp_hooks_do_not_exist_in_attention_only_models(tmp_path):
    sets = [{"id": "mlp", "hook": "blocks.{layer}.hook_mlp_out", "saes": [{"layer": 0}]}]
    release, problems = check(make_content(tmp_path, sets=sets, model_config={"attn_only": True, "d_mlp": None}))
    assert [p.message.split(";")[0] for p in problems] == ["hook 'blocks.0.hook_mlp_out' does not exist in model 'tiny'"]


def test_sae_width_must_match_the_hook(tmp_path):
    content = make_content(tmp_path)
    write_sae(content / "saes/mlp/0", 16, "blocks.0.mlp.hook_post")  # d_mlp is 32
    release, problems = check(content)
    assert problems == [
        at(
            sae(release, "mlp", 0).mark_of("path"),
            "SAE d_in is 16 but hook 'blocks.0.mlp.hook_post' of model 'tiny' has width 32; expected d_in = 32",
        )
    ]


def test_sae_config_hook_must_match_the_set_hook(tmp_path):
    content = make_content(tmp_path)
    write_sae(content / "saes/res/1", 16, "blocks.0.hook_resid_pre")
    release, problems = check(content)
    assert problems == [
        at(
            sae(release, "res", 1).mark_of("path"),
            "SAE cfg.json says it reads 'blocks.0.hook_resid_pre' but set 'res' puts it on 'blocks.1.hook_resid_pre'; "
            "expected the same hook (check the layer and the set's hook)",
        )
    ]


def write_transcoder(directory: Path, hook: str, hook_out: str, d_in: int, d_out: int, architecture: str = "transcoder") -> None:
    """A transcoder as SAELens 6 `save_model` writes it: d_out, metadata.hook_name_out, W_dec [d_sae, d_out]."""
    write_sae(directory, d_in, hook, architecture=architecture)
    cfg = json.loads((directory / "cfg.json").read_text())
    cfg["d_out"] = d_out
    cfg["metadata"]["hook_name_out"] = hook_out
    (directory / "cfg.json").write_text(json.dumps(cfg))
    tensors = {"W_enc": np.zeros((d_in, 8), np.float32), "W_dec": np.zeros((8, d_out), np.float32), "b_enc": np.zeros(8, np.float32), "b_dec": np.zeros(d_out, np.float32)}
    save_file(tensors, str(directory / "sae_weights.safetensors"))


def test_transcoder_output_hook_and_width_are_checked(tmp_path):
    sets = [{"id": "tc", "hook": "blocks.{layer}.ln2.hook_normalized", "saes": [{"layer": 0, "path": "../saes/tc0"}, {"layer": 1, "path": "../saes/tc1"}]}]
    content = tmp_path / "content"
    write_transcoder(content / "saes/tc0", "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", 16, 32)  # hook_mlp_out is d_model = 16 wide
    write_transcoder(content / "saes/tc1", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_outt", 16, 16, "jumprelu_skip_transcoder")
    release, problems = check(make_content(tmp_path, sets=sets))
    assert problems == [
        at(sae(release, "tc", 0).mark_of("path"), "SAE d_out is 32 but output hook 'blocks.0.hook_mlp_out' of model 'tiny' has width 16; expected d_out = 16"),
        at(
            sae(release, "tc", 1).mark_of("path"),
            "SAE cfg.json: the output hook 'blocks.1.hook_mlp_outt' does not exist in model 'tiny'; did you mean 'blocks.1.hook_mlp_out'?",
        ),
    ]


def test_a_transcoder_that_fits_passes(tmp_path):
    sets = [{"id": "tc", "hook": "blocks.{layer}.ln2.hook_normalized", "saes": [{"layer": 1, "path": "../saes/tc1"}]}]
    write_transcoder(tmp_path / "content/saes/tc1", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", 16, 16, "skip_transcoder")
    assert check(make_content(tmp_path, sets=sets))[1] == []


def test_refused_and_unknown_architectures_are_named_with_the_reason(tmp_path):
    from sae_atlas.sources.architectures import ARCHITECTURES, architecture_info

    content = make_content(tmp_path)
    write_sae(content / "saes/res/0", 16, "blocks.0.hook_resid_pre", architecture="temporal")
    write_sae(content / "saes/res/1", 16, "blocks.1.hook_resid_pre", architecture="hypersparse")
    release, problems = check(content)
    assert problems == [
        at(
            sae(release, "res", 0).mark_of("path"),
            f"SAE cfg.json has architecture 'temporal', which SAE Atlas refuses: {ARCHITECTURES['temporal'].refused}; expected an SAE of a supported architecture",
        ),
        at(
            sae(release, "res", 1).mark_of("path"),
            f"SAE cfg.json has architecture 'hypersparse', which SAE Atlas refuses: {architecture_info('hypersparse').refused}; "
            "expected an SAE of a supported architecture",
        ),
    ]
    assert "does not know this architecture" in problems[1].message


def test_an_sae_on_one_head_reads_d_head_wide_activations(tmp_path):
    sets = [{"id": "att", "hook": "blocks.{layer}.attn.hook_z", "saes": [{"layer": 0, "path": "../saes/h0"}, {"layer": 1, "path": "../saes/h1"}]}]
    content = tmp_path / "content"
    for layer, d_in in ((0, CONFIG["d_head"]), (1, CONFIG["d_head"] * CONFIG["n_heads"])):
        write_sae(content / f"saes/h{layer}", d_in, f"blocks.{layer}.attn.hook_z")
        cfg = json.loads((content / f"saes/h{layer}/cfg.json").read_text())
        cfg["metadata"]["hook_head_index"] = 2
        (content / f"saes/h{layer}/cfg.json").write_text(json.dumps(cfg))
    release, problems = check(make_content(tmp_path, sets=sets))
    assert problems == [
        at(sae(release, "att", 1).mark_of("path"), "SAE d_in is 16 but head 2 of hook 'blocks.1.attn.hook_z' of model 'tiny' has width 4; expected d_in = 4")
    ]


def test_missing_sae_config(tmp_path):
    content = make_content(tmp_path)
    (content / "saes/res/0/cfg.json").unlink()
    release, problems = check(content)
    assert problems == [at(sae(release, "res", 0).mark_of("path"), "SAE directory has no cfg.json; expected a directory written by SAELens save_model")]


def test_sae_config_that_is_not_json(tmp_path):
    content = make_content(tmp_path)
    (content / "saes/res/0/cfg.json").write_text('{"d_in": 16,\n oops}')
    release, problems = check(content)
    assert problems == [
        at(
            sae(release, "res", 0).mark_of("path"),
            "SAE cfg.json is not valid JSON (Expecting property name enclosed in double quotes at line 2, column 2); "
            "expected the cfg.json SAELens save_model writes",
        )
    ]


def test_truncated_sae_weights(tmp_path):
    content = make_content(tmp_path)
    weights = content / "saes/att/1/sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-4])
    release, problems = check(content)
    assert problems == [
        at(
            sae(release, "att", 1).mark_of("path"),
            f"SAE weights: sae_weights.safetensors is truncated ({len(data) - 4} bytes; its header describes {len(data)}); expected a complete safetensors file",
        )
    ]


def test_sae_weights_that_are_not_safetensors(tmp_path):
    content = make_content(tmp_path)
    (content / "saes/res/0/sae_weights.safetensors").write_bytes(b"PK\x03\x04 a zip, not safetensors")
    release, problems = check(content)
    [problem] = problems
    assert problem.message.startswith("SAE weights: sae_weights.safetensors is truncated or not a safetensors file")


def test_sae_weights_that_disagree_with_the_config(tmp_path):
    content = make_content(tmp_path)
    save_file({"W_enc": np.zeros((16, 4), np.float32)}, str(content / "saes/res/0/sae_weights.safetensors"))
    release, problems = check(content)
    assert [p.message for p in problems] == ["SAE W_enc has shape [16, 4] but cfg.json says d_in=16, d_sae=8; expected [16, 8]"]


def test_truncated_model_weights(tmp_path):
    content = make_content(tmp_path)
    weights = content / "models/tiny/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    release, problems = check(content)
    [problem] = problems
    assert problem == at(release.model.mark_of("path"), problem.message)
    assert problem.message.startswith("model weights: model.safetensors is truncated")


def test_model_config_missing_fields(tmp_path):
    content = make_content(tmp_path)
    cfg = json.loads((content / "models/tiny/config.json").read_text())
    del cfg["n_layers"]
    (content / "models/tiny/config.json").write_text(json.dumps(cfg))
    release, problems = check(content)
    assert problems == [at(release.model.mark_of("path"), "model config.json: 'n_layers' is missing; expected a whole number >= 1")]


def test_model_directory_without_config_or_tokenizer(tmp_path):
    content = make_content(tmp_path)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (content / "models/tiny" / name).unlink()
    release, problems = check(content)
    mark = release.model.mark_of("path")
    assert problems == [
        at(mark, "model directory has no config.json; expected the HookedTransformerConfig fields as JSON"),
        at(mark, "model directory has no tokenizer (tokenizer.json); expected a tokenizer saved with save_pretrained"),
    ]


def test_context_longer_than_the_model_allows(tmp_path):
    release, problems = check(make_content(tmp_path, prompts=1, context=20, model_config={"n_ctx": 16}))
    assert problems == [at(release.corpus.mark_of("context"), "corpus.context is 20 but model 'tiny' has n_ctx 16; expected at most 16")]


# --- corpus ------------------------------------------------------------------------------------


def test_corpus_too_short_for_the_requested_prompts(tmp_path):
    release, problems = check(make_content(tmp_path, prompts=3, context=9))
    assert problems == [
        at(
            release.corpus.mark_of("prompts"),
            "corpus stories.txt has 21 tokens; expected at least 24 (3 prompts x 8 tokens after BOS): "
            "lower corpus.prompts or corpus.context, or add text",
        )
    ]


def test_empty_corpus(tmp_path):
    release, problems = check(make_content(tmp_path, corpus="\n  \n\n"))
    assert problems == [at(release.corpus.mark_of("path"), "corpus stories.txt is empty; expected documents separated by blank lines")]


def test_corpus_that_is_not_utf8(tmp_path):
    corpus = (document(10) + "\n\n" + document(10) + "\n").encode() + b"caf\xe9\n"
    release, problems = check(make_content(tmp_path, corpus=corpus))
    assert problems == [at(release.corpus.mark_of("path"), "stories.txt:4:4 is not UTF-8 (byte 0xe9); expected UTF-8 text")]


def test_jsonl_text_corpus_counts_one_document_per_line(tmp_path):
    lines = json.dumps({"text": document(10)}) + "\n\n" + json.dumps({"text": document(10, 3)}) + "\n"
    assert check(make_content(tmp_path, corpus=lines, corpus_name="c.jsonl"))[1] == []
    assert len(check(make_content(tmp_path, corpus=lines, corpus_name="c.jsonl", context=9))[1]) == 1


def test_invalid_json_lines_are_reported_with_line_numbers(tmp_path):
    lines = [json.dumps({"text": document(30)}), "{not json", json.dumps(["a list"]), json.dumps({"txt": "x"})]
    release, problems = check(make_content(tmp_path, corpus="\n".join(lines) + "\n", corpus_name="c.jsonl"))
    mark = release.corpus.mark_of("path")
    assert problems == [
        at(mark, "c.jsonl:2:2 is not valid JSON (Expecting property name enclosed in double quotes); expected one JSON object per line"),
        at(mark, 'c.jsonl:3:1 holds a JSON list; expected an object with "text" or "tokens"'),
        at(mark, 'c.jsonl:4:1 has no "text"; expected {"text": "..."} or {"tokens": [...]} on every line'),
    ]


def test_many_bad_lines_are_summarised(tmp_path):
    corpus = "\n".join(["{"] * 20) + "\n"
    _, problems = check(make_content(tmp_path, corpus=corpus, corpus_name="c.jsonl"))
    assert len(problems) == 6
    assert "c.jsonl: more bad lines follow (only the first 5 are listed); expected every line valid" in {p.message for p in problems}


def _token_lines(rows: list[list[int]]) -> str:
    return "".join(json.dumps({"tokens": r}) + "\n" for r in rows)


def test_pre_tokenized_corpus_needs_prompts_lines_of_context_tokens(tmp_path):
    rows = [[2, 3, 4, 5]] * 3
    assert check(make_content(tmp_path, corpus=_token_lines(rows), corpus_name="t.jsonl", prompts=3, context=4))[1] == []
    release, problems = check(make_content(tmp_path, corpus=_token_lines(rows), corpus_name="t.jsonl", prompts=4, context=4))
    assert problems == [
        at(release.corpus.mark_of("prompts"), "corpus t.jsonl has 3 pre-tokenized prompts; expected at least corpus.prompts = 4")
    ]


def test_pre_tokenized_lines_must_be_long_enough_and_in_the_vocabulary(tmp_path):
    rows = [[2, 3, 4, 5], [2, 3], [2, 3, 4, 999], [2, 3, 4, -1]]
    release, problems = check(make_content(tmp_path, corpus=_token_lines(rows), corpus_name="t.jsonl", prompts=1, context=4))
    mark = release.corpus.mark_of("path")
    assert problems == [
        at(mark, "t.jsonl:2:1 has 2 tokens; expected at least corpus.context = 4"),
        at(mark, "t.jsonl:3:1 has the token id 999; expected ids from 0 to 41 (the model's d_vocab is 42)"),
        at(mark, "t.jsonl:4:1 has the token id -1; expected ids from 0 to 41 (the model's d_vocab is 42)"),
    ]


# --- SAELens refs and TransformerLens names ----------------------------------------------------


def _gpt2_sets(release_name: str, sae_id: str, layer: int = 1) -> list[dict]:
    return [{"id": "res-jb", "hook": "blocks.{layer}.hook_resid_pre", "saes": [{"layer": layer, "sae_lens": {"release": release_name, "id": sae_id}}]}]


GPT2 = {"id": "gpt2-small", "transformer_lens": "gpt2-small"}


@pytest.fixture
def hub(tmp_path, monkeypatch) -> HubCache:
    """A hub cache holding the configs of gpt2, pythia-70m-deduped and gpt2-small-res-jb SAEs, offline."""
    from tests.test_validate_names import HF_CONFIGS, gpt2_hub

    cache = gpt2_hub(tmp_path)
    cache.add("EleutherAI/pythia-70m-deduped", "config.json", json.dumps(HF_CONFIGS["EleutherAI/pythia-70m-deduped"]).encode())
    for key, value in cache.env().items():
        monkeypatch.setenv(key, value)
    return cache


def test_sae_lens_reference_to_a_known_sae_passes(tmp_path, hub):
    content = make_content(tmp_path, model=GPT2, sets=_gpt2_sets("gpt2-small-res-jb", "blocks.1.hook_resid_pre"))
    assert check(content)[1] == []


def test_unknown_sae_lens_release_and_id(tmp_path, hub):
    sets = _gpt2_sets("gpt2-small-res-jbb", "x")
    sets[0]["saes"].append({"layer": 2, "sae_lens": {"release": "gpt2-small-res-jb", "id": "blocks.2.hook_resid_pree"}})
    release, problems = check(make_content(tmp_path, model=GPT2, sets=sets))
    first, second = release.saes()
    assert problems == [
        at(first.mark_of("sae_lens.release"), "'gpt2-small-res-jbb' is not a SAELens release; did you mean 'gpt2-small-res-jb'?"),
        at(second.mark_of("sae_lens.id"), "'blocks.2.hook_resid_pree' is not an SAE of SAELens release 'gpt2-small-res-jb'; did you mean 'blocks.2.hook_resid_pre'?"),
    ]


def test_sae_lens_release_of_another_model(tmp_path, hub):
    model = {"id": "p70d", "transformer_lens": "pythia-70m-deduped"}
    release, problems = check(make_content(tmp_path, model=model, sets=_gpt2_sets("gpt2-small-res-jb", "blocks.1.hook_resid_pre")))
    assert [p.message for p in problems] == [
        "SAELens release 'gpt2-small-res-jb' is for model 'gpt2-small' but this release uses 'pythia-70m-deduped'; expected SAEs of the release's model"
    ]


def test_layers_of_known_transformer_lens_models_are_checked(tmp_path, hub):
    release, problems = check(make_content(tmp_path, model=GPT2, sets=_gpt2_sets("gpt2-small-res-jb", "blocks.1.hook_resid_pre", layer=12)))
    assert [p.message for p in problems] == ["layer 12 is outside model 'gpt2-small', which has 12 layers; expected 0 to 11"]


def test_unknown_transformer_lens_model(tmp_path, hub):
    model = {"id": "gpt2-small", "transformer_lens": "gpt2-smal"}
    release, problems = check(make_content(tmp_path, model=model, sets=_gpt2_sets("gpt2-small-res-jb", "blocks.1.hook_resid_pre")))
    assert problems == [at(release.model.mark_of("transformer_lens"), "model.transformer_lens 'gpt2-smal' is not a TransformerLens model; did you mean 'gpt2-small'?")]


# --- explanations and many problems ------------------------------------------------------------


def test_explanations_must_name_features_of_the_release(tmp_path):
    lines = [
        {"sae": "tiny@0-res", "index": 3, "text": "fine", "author": "a", "score": 0.5},
        {"sae": "tiny@0-rex", "index": 3, "text": "typo"},
        {"sae": "tiny@0-res", "index": 8, "text": "too far"},
        {"sae": "tiny@0-res", "index": 1},
    ]
    release, problems = check(make_content(tmp_path, explanations="".join(json.dumps(x) + "\n" for x in lines)))
    mark = release.mark_of("explanations")
    assert problems == [
        at(mark, "explanations.jsonl:2:1 names the SAE 'tiny@0-rex', which is not in this release; did you mean 'tiny@0-res'?"),
        at(mark, 'explanations.jsonl:3:1 has "index" 8 but tiny@0-res has 8 features; expected an index below 8'),
        at(mark, 'explanations.jsonl:4:1 has no "text"; expected the explanation as a string'),
    ]


def test_every_problem_of_a_release_is_reported_at_once(tmp_path):
    sets = [{"id": "res", "hook": "blocks.{layer}.hook_resid_pre", "saes": [{"layer": 0}, {"layer": 5}]}]
    content = make_content(tmp_path, sets=sets, prompts=100)
    (content / "saes/res/0/sae_weights.safetensors").write_bytes(b"")
    _, problems = check(content)
    assert [p.message.split(" ")[0:2] for p in problems] == [["corpus", "stories.txt"], ["SAE", "weights:"], ["layer", "5"]]


# --- the real formats --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_release(tmp_path_factory) -> Path:
    """The shared fixture release: a TransformerLens model dir and SAEs written by SAELens save_model."""
    fixtures = pytest.importorskip("tests.fixtures")
    return fixtures.build_fixture_content(tmp_path_factory.mktemp("real"))


def test_release_written_by_transformer_lens_and_sae_lens_passes(real_release):
    validate_sources(load_content(real_release))


def test_sae_lens_cfg_json_layout_is_read(real_release):
    [release] = load_content(real_release)
    for spec in release.saes():
        cfg = read_sae_config(spec)
        assert sae_hook_name(cfg) == spec.hook
        assert cfg["d_in"] == hook_width(read_model_config(release.model), spec.hook)
        header = safetensors_header(spec.path / "sae_weights.safetensors")
        assert header["W_enc"]["shape"] == [cfg["d_in"], cfg["d_sae"]]


# --- configs.py units --------------------------------------------------------------------------


def test_valid_hooks_follow_the_config():
    hooks = valid_hooks(CONFIG)
    assert {"hook_embed", "hook_pos_embed", "blocks.1.hook_resid_mid", "blocks.0.attn.hook_pattern", "blocks.1.ln2.hook_scale", "ln_final.hook_normalized"} <= hooks
    assert "blocks.2.hook_resid_pre" not in hooks
    attn_only = valid_hooks(dict(CONFIG, attn_only=True, d_mlp=None))
    assert not {h for h in attn_only if "mlp" in h or "resid_mid" in h or "ln2" in h}
    rotary = valid_hooks(dict(CONFIG, positional_embedding_type="rotary", normalization_type=None))
    assert "hook_pos_embed" not in rotary and "blocks.0.attn.hook_rot_q" in rotary and "ln_final.hook_scale" not in rotary


def test_hook_widths():
    gqa = dict(CONFIG, n_key_value_heads=2)
    assert hook_width(CONFIG, "blocks.0.hook_resid_post") == 16
    assert hook_width(CONFIG, "blocks.0.mlp.hook_pre") == 32
    assert hook_width(CONFIG, "blocks.0.attn.hook_z") == 16
    assert hook_width(gqa, "blocks.0.attn.hook_k") == 8
    assert hook_width(CONFIG, "blocks.0.attn.hook_pattern") is None
    assert hook_width(CONFIG, "blocks.9.hook_resid_post") is None
    assert hook_width({"n_layers": 1, "d_model": 8, "d_head": 2}, "blocks.0.mlp.hook_post") == 32  # d_mlp defaults to 4 d_model


def test_safetensors_header_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(path))
    assert safetensors_header(path)["a"]["shape"] == [3]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="longer than its header says"):
        safetensors_header(path)


def test_read_sae_config_of_a_pretrained_reference(hub):
    spec = SaeSpec("gpt2-small", "res-jb", 3, "blocks.3.hook_resid_pre", sae_lens=SaeLensRef("gpt2-small-res-jb", "blocks.3.hook_resid_pre"))
    cfg = read_sae_config(spec)
    assert cfg is not None and cfg["model"] == "gpt2-small" and cfg["pretrained"] is True
    # The pre-6 cfg.json upgraded as SAELens upgrades it, with the registry's overrides applied.
    assert sae_hook_name(cfg) == "blocks.3.hook_resid_pre" and cfg["d_in"] == 768 and cfg["architecture"] == "standard"
    assert cfg["metadata"]["model_from_pretrained_kwargs"] == {"center_writing_weights": True}
    assert read_sae_config(SaeSpec("m", "s", 0, "h", sae_lens=SaeLensRef("no-such-release", "x"))) is None


def test_transformer_lens_names_resolve_aliases_without_importing_it(hub):
    assert transformer_lens_official_name("gpt2-small") == "gpt2"
    assert transformer_lens_official_name("nope-model") is None
    assert read_model_config(ModelSpec("g", transformer_lens="gpt2-small"))["n_layers"] == 12
    assert read_model_config(ModelSpec("x", transformer_lens="nope-model")) is None
    with pytest.raises(HubFileMissing, match="HF_HUB_OFFLINE") as missing:
        read_model_config(ModelSpec("x", transformer_lens="meta-llama/Llama-2-7b-hf"))
    assert (missing.value.repo_id, missing.value.filename) == ("meta-llama/Llama-2-7b-hf", "config.json")


def test_token_count_agrees_with_the_corpus_loader(real_release, tmp_path):
    """The most prompts the loader can cut from the corpus pass; one more is reported as too short."""
    import dataclasses
    import shutil

    from sae_atlas.sources.corpus import tokenize_corpus
    from sae_atlas.sources.model import load_tokenizer

    [release] = load_content(real_release)
    tokenizer = load_tokenizer(release.model)
    probe = dataclasses.replace(release, corpus=dataclasses.replace(release.corpus, prompts=100_000))
    available = len(tokenize_corpus(probe, tokenizer))
    assert 0 < available < 100_000
    content = tmp_path / "content"
    shutil.copytree(real_release, content)
    manifest = content / "releases" / release.source.name
    text = manifest.read_text()
    for prompts, ok in ((available, True), (available + 1, False)):
        manifest.write_text(text.replace(f"prompts: {release.corpus.prompts}", f"prompts: {prompts}"))
        try:
            validate_sources(load_content(content))
            passed = True
        except InputError as e:
            assert [p.message.split(" has ")[0] for p in e.problems] == ["corpus stories.txt"]
            passed = False
        assert passed is ok, prompts


def test_file_problems_of_good_manifests_are_reported_with_another_manifests_mistakes(real_release, tmp_path):
    import shutil

    from sae_atlas.errors import InputError
    from sae_atlas.pipeline import load_releases

    content = tmp_path / "content"
    shutil.copytree(real_release, content)
    weights = next(content.glob("saes/*/*/sae_weights.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10])  # a file problem in the good manifest
    (content / "releases" / "other.yaml").write_text("release: other\nbogus: 1\n")  # a broken manifest
    with pytest.raises(InputError) as caught:
        load_releases(content)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "other.yaml:2:1: unknown key 'bogus'" in text
    assert "tiny-demo.yaml" in text and "truncated" in text.lower()


def test_a_local_sae_trained_on_another_model_is_reported(tmp_path, hub):
    sets = [{"id": "res", "hook": "blocks.{layer}.hook_resid_pre", "saes": [{"layer": 1, "path": "../saes/p1"}, {"layer": 2, "path": "../saes/g2"}]}]
    content = tmp_path / "content"
    write_sae(content / "saes/p1", 512, "blocks.1.hook_resid_pre")
    write_sae(content / "saes/g2", 768, "blocks.2.hook_resid_pre")
    for name, model in (("p1", "pythia-70m-deduped"), ("g2", "gpt2-small")):
        cfg = json.loads((content / f"saes/{name}/cfg.json").read_text())
        cfg["metadata"]["model_name"] = model
        (content / f"saes/{name}/cfg.json").write_text(json.dumps(cfg))
    release, problems = check(make_content(tmp_path, model=GPT2, sets=sets))
    assert problems == [
        at(
            sae(release, "res", 1).mark_of("path"),
            "SAE cfg.json was trained on model 'pythia-70m-deduped' but this release uses 'gpt2-small'; expected SAEs of the release's model",
        )
    ]

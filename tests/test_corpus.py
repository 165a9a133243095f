"""Corpora (txt, jsonl text, jsonl tokens) -> token arrays, and the explanations loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sae_atlas.cache import CacheStore, corpus_key
from sae_atlas.errors import InputError
from sae_atlas.manifest import CorpusSpec, ModelSpec, Release
from sae_atlas.sources.corpus import load_corpus, pack_documents, read_text_documents, tokenize_corpus
from sae_atlas.sources.explanations import Explanation, load_explanations
from sae_atlas.sources.model import load_tokenizer
from tests.fixtures import fixture_text, make_corpus, make_tokenizer

TEXT = "the cat sat\non the mat\n\n\nTom saw a dog\n\ncafé <b>naïve</b> & \"quoted\"\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model")
    make_tokenizer(d, fixture_text())
    return d


def _release(model_dir: Path, corpus: Path, prompts: int = 4, context: int = 6) -> Release:
    return Release(
        id="r", title="r", model=ModelSpec("m", path=model_dir), corpus=CorpusSpec(path=corpus, prompts=prompts, context=context),
        sets=(), source=corpus,
    )


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    path = make_corpus(tmp_path / "c.txt", "txt", text=TEXT)
    assert list(read_text_documents(path)) == ["the cat sat\non the mat", "Tom saw a dog", 'café <b>naïve</b> & "quoted"']


def test_pack_joins_documents_with_separator_and_starts_prompts_with_bos():
    tokens = pack_documents([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], prompts=10, context=4, bos=0, separator=99)
    np.testing.assert_array_equal(tokens, [[0, 1, 2, 3], [0, 99, 4, 5], [0, 99, 6, 7], [0, 8, 9, 10]])
    assert tokens.dtype == np.int32
    assert pack_documents([[1, 2, 3, 4, 5]], prompts=1, context=2, bos=None, separator=None).tolist() == [[1, 2]]


def test_txt_and_jsonl_text_give_the_same_tokens(tmp_path, model_dir):
    tok = load_tokenizer(ModelSpec("m", path=model_dir))
    txt = tokenize_corpus(_release(model_dir, make_corpus(tmp_path / "c.txt", "txt", text=TEXT)), tok)
    jsonl = tokenize_corpus(_release(model_dir, make_corpus(tmp_path / "c.jsonl", "jsonl", text=TEXT)), tok)
    np.testing.assert_array_equal(txt, jsonl)
    assert txt.shape[1] == 6 and (txt[:, 0] == tok.bos_token_id).all()
    stream = []
    for doc in read_text_documents(tmp_path / "c.txt"):
        stream += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert txt[:, 1:].reshape(-1).tolist() == stream[: txt[:, 1:].size]


def test_pretokenized_prompts_are_used_exactly_as_given(tmp_path, model_dir):
    rows = [[5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6]]
    path = make_corpus(tmp_path / "t.jsonl", "tokens", tokens=rows)
    tok = load_tokenizer(ModelSpec("m", path=model_dir))
    tokens = tokenize_corpus(_release(model_dir, path, prompts=5, context=6), tok)
    np.testing.assert_array_equal(tokens, [rows[0][:6], rows[1]])


def test_bad_token_lines_report_path_line_and_col(tmp_path, model_dir):
    path = tmp_path / "t.jsonl"
    path.write_text('{"tokens": [1, 2, 3, 4, 5, 6]}\n{"tokens": [1, 2]}\n{"tokens": [1, 2, 3, 4, 5, 99999]}\n{"tokens": [1,\n')
    tok = load_tokenizer(ModelSpec("m", path=model_dir))
    with pytest.raises(InputError) as e:
        tokenize_corpus(_release(model_dir, path, prompts=9, context=6), tok)
    text = str(e.value)
    assert f"{path}:4:" in text  # the JSON error stops reading


def test_token_range_and_length_problems_are_all_reported(tmp_path, model_dir):
    path = tmp_path / "t.jsonl"
    path.write_text('{"tokens": [1, 2, 3, 4, 5, 6]}\n{"tokens": [1, 2]}\n{"tokens": [1, 2, 3, 4, 5, 99999]}\n')
    tok = load_tokenizer(ModelSpec("m", path=model_dir))
    with pytest.raises(InputError) as e:
        tokenize_corpus(_release(model_dir, path, prompts=9, context=6), tok)
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"{path}:2:1: prompt has 2 tokens")
    assert lines[1].startswith(f"{path}:3:1: token id 99999 out of range")


def test_corpus_entry_is_cached_with_vocab(tmp_path, model_dir):
    release = _release(model_dir, make_corpus(tmp_path / "c.txt", "txt", text=fixture_text()))
    tok = load_tokenizer(release.model)
    corpus = load_corpus(release, tmp_path / "cache", lambda: tok)
    assert corpus.tokens.shape == (4, 6) and corpus.key == corpus_key(release)
    assert len(corpus.vocab) == len(tok) and corpus.vocab[tok(" cat", add_special_tokens=False)["input_ids"][0]] == " cat"
    store = CacheStore(tmp_path / "cache")
    np.testing.assert_array_equal(store.corpus(corpus.key)["tokens"], corpus.tokens)
    again = load_corpus(release, tmp_path / "cache", lambda: pytest.fail("tokenizer loaded for a cached corpus"))
    np.testing.assert_array_equal(again.tokens, corpus.tokens)
    assert again.vocab == corpus.vocab


def test_vocab_strings_round_trip_unicode(model_dir):
    tok = load_tokenizer(ModelSpec("m", path=model_dir))
    ids = tok("café naïve", add_special_tokens=False)["input_ids"]
    from sae_atlas.sources.corpus import vocab_strings

    vocab = vocab_strings(tok)
    assert tok.decode(ids) == "café naïve"
    assert "".join(vocab[i] for i in ids).startswith("caf")


def _decoded_alone(tok) -> list[str]:
    """Every id through transformers' own decode, one id per sequence (the reference)."""
    return [tok.batch_decode([[i]], clean_up_tokenization_spaces=False)[0] for i in range(len(tok))]


def test_vocab_strings_match_transformers_decode_for_every_id(model_dir, tmp_path):
    from sae_atlas.sources.corpus import rust_decoder, vocab_strings

    tok = load_tokenizer(ModelSpec("m", path=model_dir))
    assert rust_decoder(tok) is not None  # the fast path is the one under test
    assert vocab_strings(tok) == _decoded_alone(tok)
    # Added tokens, special and not, past the trained vocabulary; the byte-level alphabet covers
    # ids that decode alone to partial UTF-8 sequences.
    tok.add_tokens(["<added>", " spaced added"])
    tok.add_special_tokens({"additional_special_tokens": ["<|special|>"]})
    tok.save_pretrained(str(tmp_path / "added"))
    grown = load_tokenizer(ModelSpec("m", path=tmp_path / "added"))
    strings = vocab_strings(grown)
    assert len(strings) == len(tok) and strings == _decoded_alone(grown)
    assert strings[-3:] == ["<added>", " spaced added", "<|special|>"]


def test_vocab_strings_of_a_tokenizer_overriding_decode_go_through_it(model_dir):
    from sae_atlas.sources.corpus import rust_decoder, vocab_strings

    tok = load_tokenizer(ModelSpec("m", path=model_dir))
    base = type(tok)
    marked = type("Marked", (base,), {"_decode": lambda self, token_ids, **kw: "<" + base._decode(self, token_ids, **kw) + ">"})
    tok.__class__ = marked
    assert rust_decoder(tok) is None
    assert vocab_strings(tok) == _decoded_alone(tok) and all(s.startswith("<") for s in vocab_strings(tok))


def test_explanations_load_by_sae_and_index(tmp_path):
    path = tmp_path / "e.jsonl"
    lines = [
        {"sae": "m@1-res", "index": 3, "text": "**cats**", "author": "a", "score": 0.5},
        {"sae": "m@1-res", "index": 3, "text": "felines", "author": "b", "score": None},
        {"sae": "m@0-res", "index": 0, "text": "x"},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    got = load_explanations(path)
    assert got[("m@1-res", 3)] == [Explanation("**cats**", "a", 0.5), Explanation("felines", "b", None)]
    assert got[("m@0-res", 0)] == [Explanation("x", "", None)]


def test_bad_explanation_lines_report_path_line_and_col(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"sae": "m@1-res", "index": 3, "text": "ok"}\n'
        '{"sae": "m@1-res", "index": -1, "text": "bad"}\n'
        '{"sae": "m@1-res", "index": 1, "text": "x", "score": "high"}\n'
        '{"sae": "m@1-res", "index": 1, "txt": "x"}\n'
        '{"sae": "m@1-res", "index": 1,, "text": "x"}\n'
    )
    with pytest.raises(InputError) as e:
        load_explanations(path)
    lines = str(e.value).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"{path}:2:20: ") and "index" in lines[0]
    assert lines[1].startswith(f"{path}:3:45: ") and "score" in lines[1]
    assert lines[2].startswith(f"{path}:4:") and "text" in lines[2]
    assert lines[3].startswith(f"{path}:5:31: invalid JSON")

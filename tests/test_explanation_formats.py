"""Explanations in the formats of the tools that make them: Neuronpedia's explanation export and
EleutherAI delphi's output, each detected from its layout, with scores and the explainer model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from sae_atlas.errors import InputError
from sae_atlas.manifest import SaeSpec
from sae_atlas.sources.explanations import Explanation, detect_format, load_explanations

SAES = [SaeSpec("gpt2-small", "res-jb", 5, "blocks.5.hook_resid_pre"), SaeSpec("gpt2-small", "res-jb", 6, "blocks.6.hook_resid_pre")]


def np_row(index: str, text: str, **extra) -> dict:
    return {"id": "c1", "modelId": "gpt2-small", "layer": "6-res-jb", "index": index, "description": text, "authorId": "u1", **extra}


def write_delphi(root: Path) -> Path:
    """delphi's results folder: explanations/, scores/detection and scores/fuzz, run_config.json."""
    (root / "explanations").mkdir(parents=True)
    (root / "explanations" / "layers.5_latent12.txt").write_text(json.dumps("the word cat"))
    (root / "explanations" / "layers.6_latent3.txt").write_text(json.dumps("dates <script>x</script>"))
    (root / "run_config.json").write_text(json.dumps({"explainer_model": "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"}))
    detection = [  # 3 of the 4 judged examples correct; one without a prediction is left out
        {"str_tokens": [" a"], "activations": [0.0], "distance": -1, "activating": False, "prediction": False, "probability": 0.1, "correct": True},
        {"str_tokens": [" cat"], "activations": [3.0], "distance": 0, "activating": True, "prediction": True, "probability": 0.9, "correct": True},
        {"str_tokens": [" dog"], "activations": [0.0], "distance": -1, "activating": False, "prediction": True, "probability": 0.6, "correct": False},
        {"str_tokens": [" cats"], "activations": [2.0], "distance": 1, "activating": True, "prediction": True, "probability": 0.8, "correct": True},
        {"str_tokens": [" x"], "activations": [0.0], "distance": -1, "activating": False, "prediction": None, "probability": None, "correct": None},
    ]
    fuzz = [{"str_tokens": [" cat"], "activating": True, "prediction": False, "correct": False}, {"str_tokens": [" b"], "activating": False, "prediction": False, "correct": True}]
    for name, rows in (("detection", detection), ("fuzz", fuzz)):
        (root / "scores" / name).mkdir(parents=True)
        (root / "scores" / name / "layers.5_latent12.txt").write_text(json.dumps(rows))
    return root


def test_neuronpedia_rows_are_detected_and_read_with_model_type_and_score(tmp_path):
    path = tmp_path / "expl.jsonl"
    rows = [np_row("7", "cats", explanationModelName="gpt-4o-mini", typeName="oai_token-act-pair", scoreV1=0.4, scoreV2=None), np_row("8", "dogs")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(path) == "neuronpedia"
    assert load_explanations(path) == {
        ("gpt2-small@6-res-jb", 7): [Explanation("cats", "gpt-4o-mini · oai_token-act-pair", 0.4, (("scoreV1", 0.4),))],
        ("gpt2-small@6-res-jb", 8): [Explanation("dogs", "", None, ())],
    }


def test_a_neuronpedia_explanations_folder_of_gzip_batches_is_read_in_batch_order(tmp_path):
    folder = tmp_path / "explanations"
    folder.mkdir()
    for n, text in ((10, "second"), (2, "first")):
        (folder / f"batch-{n}.jsonl.gz").write_bytes(gzip.compress((json.dumps(np_row("1", text)) + "\n").encode()))
    assert detect_format(folder) == "neuronpedia"
    assert [e.text for e in load_explanations(folder)[("gpt2-small@6-res-jb", 1)]] == ["first", "second"]


def test_our_jsonl_is_still_ours(tmp_path):
    path = tmp_path / "ours.jsonl"
    path.write_text(json.dumps({"sae": "gpt2-small@6-res-jb", "index": 1, "text": "t", "author": "a", "score": 0.5}) + "\n")
    assert detect_format(path) == "atlas"
    assert load_explanations(path) == {("gpt2-small@6-res-jb", 1): [Explanation("t", "a", 0.5)]}


def test_delphi_output_is_detected_with_accuracy_per_scorer(tmp_path):
    root = write_delphi(tmp_path / "run")
    assert detect_format(root) == "delphi"
    found = load_explanations(root, SAES)
    author = "delphi · hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
    assert found == {
        ("gpt2-small@5-res-jb", 12): [Explanation("the word cat", author, 0.75, (("detection", 0.75), ("fuzz", 0.5)))],
        ("gpt2-small@6-res-jb", 3): [Explanation("dates <script>x</script>", author, None, ())],
    }
    # The explanations folder alone (no scores beside it) reads too.
    assert load_explanations(root / "explanations", SAES)[("gpt2-small@5-res-jb", 12)][0].text == "the word cat"


def problems(path: Path, saes=()) -> list[str]:
    with pytest.raises(InputError) as e:
        load_explanations(path, saes)
    return [str(p) for p in e.value.problems]


def test_malformed_neuronpedia_rows_are_reported_at_line_and_column(tmp_path):
    path = tmp_path / "expl.jsonl"
    bad_score = json.dumps(np_row("2", "x", scoreV1="high"))
    no_text = json.dumps({k: v for k, v in np_row("3", "x").items() if k != "description"})
    cut = '{"description": "x", "modelId": '  # 32 characters: the value is missing at column 33
    path.write_text(json.dumps(np_row("1", "ok")) + "\n" + bad_score + "\n" + no_text + "\n" + cut + "\n")
    assert problems(path) == [
        f'{path}:2:{bad_score.index(chr(34) + "scoreV1") + 1}: "scoreV1" is not a number; expected a number or null',
        f'{path}:3:1: missing or non-string "description"; expected the explanation text',
        f"{path}:4:33: invalid JSON (Expecting value); expected one object per line",
    ]


def test_malformed_delphi_files_are_reported(tmp_path):
    root = write_delphi(tmp_path / "run")
    (root / "explanations" / "layers.6_latent4.txt").write_text('"unclosed')
    (root / "explanations" / "layers.9_latent1.txt").write_text('"no SAE on layer 9"')
    (root / "scores" / "fuzz" / "layers.5_latent12.txt").write_text('[{"prediction": true, "correct": "yes"}]')
    assert problems(root, SAES) == [
        f"{root}/explanations/layers.6_latent4.txt:1:1: invalid JSON (Unterminated string starting at); expected the explanation as a JSON string",
        f"{root}/explanations/layers.9_latent1.txt:1:1: module 'layers.9' names no single SAE of this release by its layer; expected a module such as layers.L with one SAE on layer L",
        f"{root}/scores/fuzz/layers.5_latent12.txt:1:1: an example has \"correct\" 'yes'; expected true or false",
    ]

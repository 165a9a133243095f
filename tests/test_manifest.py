"""Manifest loading: valid manifests become dataclasses; every mistake is reported at file:line:col."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sae_atlas.cli import main
from sae_atlas.errors import InputError, Problem
from sae_atlas.ids import SaeId
from sae_atlas.manifest import ComputeSettings, Mark, SaeLensRef, load_content, load_release

VALID = """\
release: demo
title: Demo SAEs
description: Some *text*.
authors: [A. Author, B. Author]
links: {paper: https://example.org/paper, code: https://example.org/code}
model:
  id: tiny
  path: ../models/tiny
corpus:
  path: ../corpus/stories.txt
  prompts: 64
  context: 16
sets:
  - id: res
    title: Residual
    description: One per layer.
    hook: blocks.{layer}.hook_resid_pre
    saes:
      - {layer: 0, path: ../saes/res/0}
      - {layer: 1, sae_lens: {release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}}
explanations: ../explanations/demo.jsonl
compute: {top_k: 5, seed: 3}
"""


def _content(tmp_path: Path) -> Path:
    """A content dir whose referenced files exist (the loader only checks existence)."""
    content = tmp_path / "content"
    for d in ("releases", "models/tiny", "saes/res/0", "corpus", "explanations"):
        (content / d).mkdir(parents=True, exist_ok=True)
    (content / "corpus/stories.txt").write_text("a story\n")
    (content / "explanations/demo.jsonl").write_text("")
    return content


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = _content(tmp_path) / "releases" / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def edit(old: str, new: str, base: str = VALID) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(InputError) as info:
        load_release(path)
    return info.value.problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def at(path: Path, line: int, col: int, message: str) -> Problem:
    return Problem(str(path), line, col, message)


# --- valid manifests ---------------------------------------------------------------------------


def test_valid_manifest_round_trips_to_dataclasses(tmp_path):
    path = write(tmp_path, VALID)
    content = path.parent.parent
    release = load_release(path)
    assert release.id == "demo"
    assert release.title == "Demo SAEs"
    assert release.description == "Some *text*."
    assert release.authors == ("A. Author", "B. Author")
    assert release.links == (("paper", "https://example.org/paper"), ("code", "https://example.org/code"))
    assert release.source == path.resolve()
    assert release.model.id == "tiny"
    assert release.model.path == (content / "models/tiny").resolve()
    assert release.model.transformer_lens is None
    assert release.corpus.path == (content / "corpus/stories.txt").resolve()
    assert (release.corpus.dataset, release.corpus.prompts, release.corpus.context) == (None, 64, 16)
    assert release.explanations == (content / "explanations/demo.jsonl").resolve()
    assert release.compute == ComputeSettings(top_k=5, seed=3)
    [res] = release.sets
    assert (res.id, res.title, res.description, res.hook_template) == ("res", "Residual", "One per layer.", "blocks.{layer}.hook_resid_pre")
    first, second = release.saes()
    assert first.sae_id == SaeId("tiny", 0, "res") and first.id == "tiny@0-res"
    assert first.hook == "blocks.0.hook_resid_pre"
    assert first.path == (content / "saes/res/0").resolve() and first.sae_lens is None
    assert second.hook == "blocks.1.hook_resid_pre" and second.path is None
    assert second.sae_lens == SaeLensRef("gpt2-small-res-jb", "blocks.1.hook_resid_pre")


def test_marks_point_at_the_values_in_the_manifest(tmp_path):
    path = write(tmp_path, VALID)
    release = load_release(path)
    first, second = release.saes()
    assert release.mark == Mark(str(path), 1, 1)
    assert release.model.mark == Mark(str(path), 7, 3)
    assert release.corpus.mark_of("prompts") == Mark(str(path), 11, 12)
    assert release.sets[0].mark_of("hook") == Mark(str(path), 17, 11)
    assert first.mark_of("layer") == Mark(str(path), 19, 17)
    assert first.mark_of("path") == Mark(str(path), 19, 26)
    assert second.mark_of("sae_lens.id") == Mark(str(path), 20, 63)
    assert release.mark_of("explanations") == Mark(str(path), 21, 15)
    # Absent keys fall back to the object's own position.
    assert release.model.mark_of("transformer_lens") == release.model.mark


def test_optional_fields_take_their_defaults(tmp_path):
    path = write(
        tmp_path,
        """\
        release: demo
        model: {id: gpt2-small, transformer_lens: gpt2-small}
        corpus: {dataset: roneneldan/TinyStories}
        sets:
          - id: res-jb
            hook: blocks.{layer}.hook_resid_pre
            saes: [{layer: 3, sae_lens: {release: gpt2-small-res-jb, id: blocks.3.hook_resid_pre}}]
        """,
    )
    release = load_release(path)
    assert release.title == "demo" and release.description == "" and release.authors == () and release.links == ()
    assert release.explanations is None and release.compute == ComputeSettings()
    assert release.model.transformer_lens == "gpt2-small" and release.model.path is None
    assert (release.corpus.path, release.corpus.dataset, release.corpus.prompts, release.corpus.context) == (
        None,
        "roneneldan/TinyStories",
        4096,
        128,
    )
    assert release.sets[0].title == "res-jb" and release.sets[0].description == ""


def test_text_fields_keep_what_was_written(tmp_path):
    path = write(tmp_path, edit("title: Demo SAEs", "title: 2024"))
    assert load_release(path).title == "2024"


def test_fixed_hook_is_allowed_for_a_single_sae(tmp_path):
    text = edit("hook: blocks.{layer}.hook_resid_pre", "hook: hook_embed")
    text = edit("      - {layer: 1, sae_lens: {release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}}\n", "", text)
    release = load_release(write(tmp_path, text))
    assert release.saes()[0].hook == "hook_embed"


# --- one mistake each ----------------------------------------------------------------------------


def test_yaml_syntax_error_reports_the_parser_position(tmp_path):
    path = write(tmp_path, edit("  prompts: 64", "  prompts: [64"))
    assert only_problem(path) == at(
        path, 12, 10, "invalid YAML (while parsing a flow sequence: expected ',' or ']', but got ':'); expected valid YAML syntax"
    )


def test_bad_indentation_is_a_yaml_error(tmp_path):
    path = write(tmp_path, edit("  id: tiny\n", "  id: tiny\n   oops: 1\n"))
    problem = only_problem(path)
    assert (problem.line, problem.col) == (8, 8)
    assert problem.message == "invalid YAML (mapping values are not allowed here); expected valid YAML syntax"


def test_unknown_key_suggests_the_closest_one(tmp_path):
    path = write(tmp_path, edit("title: Demo SAEs", "titel: Demo SAEs"))
    assert only_problem(path) == at(path, 2, 1, "unknown key 'titel' in the manifest; did you mean 'title'?")


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path):
    path = write(tmp_path, edit("  prompts: 64", "  prompts: 64\n  xyzzy: 1"))
    assert only_problem(path) == at(path, 12, 3, "unknown key 'xyzzy' in corpus; expected one of: path, dataset, prompts, context, prepend_bos")


def test_unknown_key_in_an_sae_entry(tmp_path):
    path = write(tmp_path, edit("{layer: 0, path: ../saes/res/0}", "{layer: 0, path: ../saes/res/0, hok: x}"))
    assert only_problem(path) == at(path, 19, 41, "unknown key 'hok' in sets[0].saes[0]; expected one of: layer, path, sae_lens")


def test_theme_is_not_a_manifest_key(tmp_path):
    path = write(tmp_path, VALID + "theme: dark\n")
    assert only_problem(path) == at(path, 23, 1, "unknown key 'theme' in the manifest; expected one of: " + ", ".join(
        ["release", "title", "description", "authors", "links", "model", "corpus", "sets", "explanations", "compute", "lists", "source"]
    ))


def test_text_where_a_number_is_expected(tmp_path):
    path = write(tmp_path, edit("prompts: 64", 'prompts: "lots"'))
    assert only_problem(path) == at(path, 11, 12, "corpus.prompts is the text 'lots'; expected a whole number >= 1")


@pytest.mark.parametrize(
    "value, described",
    [("0", "0"), ("-5", "-5"), ("4.5", "the number 4.5"), ("true", "true/false (true)"), ("[1]", "a list"), ("", "empty")],
)
def test_prompts_must_be_a_positive_whole_number(tmp_path, value, described):
    path = write(tmp_path, edit("prompts: 64", f"prompts: {value}"))
    expected = f"corpus.prompts is {described}; expected a whole number >= 1"
    assert only_problem(path) == at(path, 11, 12 if value else 11, expected)


def test_context_needs_room_for_bos_and_a_token(tmp_path):
    path = write(tmp_path, edit("context: 16", "context: 1"))
    assert only_problem(path) == at(path, 12, 12, "corpus.context is 1; expected a whole number >= 2")


def test_negative_layer(tmp_path):
    path = write(tmp_path, edit("{layer: 0,", "{layer: -1,"))
    assert only_problem(path) == at(path, 19, 17, "sets[0].saes[0].layer is -1; expected a whole number >= 0")


def test_missing_required_fields_are_all_reported(tmp_path):
    path = write(tmp_path, "title: only a title\n")
    example = "expected release: my-saes (see the manifest format in the README)"
    assert problems_of(path) == [at(path, 1, 1, f"the manifest is missing '{k}'; {example}") for k in ("corpus", "model", "release", "sets")]


def test_missing_model_id(tmp_path):
    path = write(tmp_path, edit("  id: tiny\n", ""))
    assert only_problem(path) == at(path, 7, 3, "model is missing 'id'; expected model: {id: gpt2-small, transformer_lens: gpt2-small}")


@pytest.mark.parametrize(
    "old, new, line, col, name",
    [
        ("release: demo", "release: Demo", 1, 10, "release 'Demo'"),
        ("  id: tiny", "  id: tiny model", 7, 7, "model.id 'tiny model'"),
        ("  - id: res", "  - id: -res", 14, 9, "sets[0].id '-res'"),
        ("  - id: res", "  - id: res/x", 14, 9, "sets[0].id 'res/x'"),
    ],
)
def test_ids_must_be_slugs(tmp_path, old, new, line, col, name):
    path = write(tmp_path, edit(old, new))
    example = {"release": "my-saes", "model.id": "gpt2-small"}.get(name.split(" ")[0], "res-jb")
    expected = f"{name} is not a valid id; expected a slug of lowercase letters, digits, '.', '_' or '-' that starts with a letter or digit, e.g. {example}"
    assert only_problem(path) == at(path, line, col, expected)


def test_id_with_a_trailing_newline_is_not_a_slug(tmp_path):
    path = write(tmp_path, edit("release: demo", "release: |\n  demo"))
    assert only_problem(path).message.startswith("release 'demo\n' is not a valid id")


def test_reserved_ids_are_rejected(tmp_path):
    path = write(tmp_path, edit("  id: tiny", "  id: static"))
    assert only_problem(path) == at(path, 7, 7, "model.id 'static' is reserved for the site's own files; expected another id")


def test_release_id_equal_to_its_model_id(tmp_path):
    path = write(tmp_path, edit("  id: tiny", "  id: demo"))
    assert only_problem(path) == at(
        path, 1, 10, "release 'demo' has the same id as its model; expected distinct ids (releases and models share the site's top level)"
    )


def test_duplicate_layers_in_a_set_are_duplicate_sae_ids(tmp_path):
    path = write(tmp_path, edit("{layer: 1, sae_lens", "{layer: 0, sae_lens"))
    assert only_problem(path) == at(path, 20, 17, "duplicate SAE id 'tiny@0-res' (layer 0 first at line 19); expected each layer once per set")


def test_duplicate_set_ids_within_a_model(tmp_path):
    extra = "  - id: res\n    hook: hook_embed\n    saes: [{layer: 0, path: ../saes/res/0}]\n"
    path = write(tmp_path, edit("explanations:", extra + "explanations:"))
    assert only_problem(path) == at(path, 21, 9, "duplicate set id 'res' (first at line 14); expected each set id once per model")


def test_duplicate_keys_are_reported(tmp_path):
    path = write(tmp_path, edit("  context: 16", "  context: 16\n  context: 32"))
    assert only_problem(path) == at(path, 13, 3, "duplicate key 'context' in corpus (first at line 12); expected each key once")


def test_sae_with_both_path_and_sae_lens(tmp_path):
    path = write(tmp_path, edit("{layer: 0, path: ../saes/res/0}", "{layer: 0, path: ../saes/res/0, sae_lens: {release: r, id: i}}"))
    assert only_problem(path) == at(path, 19, 41, "sets[0].saes[0] has both 'path' and 'sae_lens'; expected exactly one of them")


def test_sae_with_neither_path_nor_sae_lens(tmp_path):
    path = write(tmp_path, edit("{layer: 0, path: ../saes/res/0}", "{layer: 0}"))
    assert only_problem(path) == at(
        path, 19, 9, "sets[0].saes[0] has neither 'path' nor 'sae_lens'; expected exactly one of them, e.g. path: saes/res/0 or sae_lens: {release: R, id: ID}"
    )


def test_sae_lens_ref_needs_release_and_id(tmp_path):
    path = write(tmp_path, edit("{release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}", "{release: gpt2-small-res-jb}"))
    assert only_problem(path) == at(
        path, 20, 30, "sets[0].saes[1].sae_lens is missing 'id'; expected {release: gpt2-small-res-jb, id: blocks.1.hook_resid_pre}"
    )


def test_model_with_both_sources(tmp_path):
    path = write(tmp_path, edit("  path: ../models/tiny", "  path: ../models/tiny\n  transformer_lens: gpt2"))
    assert only_problem(path) == at(path, 9, 3, "model has both 'transformer_lens' and 'path'; expected exactly one of them")


def test_corpus_with_neither_source(tmp_path):
    path = write(tmp_path, edit("  path: ../corpus/stories.txt\n", ""))
    assert only_problem(path) == at(
        path, 10, 3, "corpus has neither 'path' nor 'dataset'; expected exactly one of them, e.g. path: corpus/stories.txt or dataset: NAME"
    )


def test_paths_that_do_not_exist_are_all_reported(tmp_path):
    text = VALID.replace("../models/tiny", "../models/nope").replace("../corpus/stories.txt", "../corpus/nope.txt")
    text = text.replace("../saes/res/0", "../saes/res/9").replace("../explanations/demo.jsonl", "../explanations/nope.jsonl")
    path = write(tmp_path, text)
    why = "does not exist (paths are relative to the manifest)"
    assert problems_of(path) == [
        at(path, 8, 9, f"model.path '../models/nope' {why}; expected a model directory with config.json, model.safetensors and tokenizer files"),
        at(path, 10, 9, f"corpus.path '../corpus/nope.txt' {why}; expected a local .txt or .jsonl file"),
        at(path, 19, 26, f"sets[0].saes[0].path '../saes/res/9' {why}; expected an SAE directory written by SAELens save_model (cfg.json + sae_weights.safetensors)"),
        at(path, 21, 15, f"explanations '../explanations/nope.jsonl' {why}; expected a .jsonl file of {{sae, index, text, author, score}}, Neuronpedia's explanation export or delphi's output folder"),
    ]


def test_model_path_must_be_a_directory(tmp_path):
    path = write(tmp_path, edit("../models/tiny", "../corpus/stories.txt"))
    assert only_problem(path) == at(
        path, 8, 9, "model.path '../corpus/stories.txt' is a file; expected a model directory with config.json, model.safetensors and tokenizer files"
    )


def test_corpus_path_must_be_txt_or_jsonl(tmp_path):
    path = write(tmp_path, edit("../corpus/stories.txt", "../corpus/stories.csv"))
    assert only_problem(path) == at(path, 10, 9, "corpus.path '../corpus/stories.csv' is not a .txt or .jsonl file; expected a local .txt or .jsonl file")


def test_hub_name_in_corpus_path_suggests_dataset(tmp_path):
    path = write(tmp_path, edit("../corpus/stories.txt", "roneneldan/TinyStories"))
    assert only_problem(path).message == (
        "corpus.path 'roneneldan/TinyStories' is not a .txt or .jsonl file; expected a local .txt or .jsonl file; "
        "for a hub dataset write `dataset: roneneldan/TinyStories`"
    )


def test_hook_template_without_layer_for_several_saes(tmp_path):
    path = write(tmp_path, edit("hook: blocks.{layer}.hook_resid_pre", "hook: blocks.0.hook_resid_pre"))
    assert only_problem(path) == at(
        path, 17, 11, "sets[0].hook 'blocks.0.hook_resid_pre' has no {layer} but the set has 2 SAEs; expected a template like blocks.{layer}.hook_resid_pre"
    )


@pytest.mark.parametrize(
    "template, message",
    [
        ("blocks.{l}.hook_resid_pre", "has the placeholder {l}; expected only {layer}, e.g. blocks.{layer}.hook_resid_pre"),
        ("blocks.{layer.hook_resid_pre", "is not a valid template (expected '}' before end of string); expected e.g. blocks.{layer}.hook_resid_pre"),
    ],
)
def test_hook_template_placeholders(tmp_path, template, message):
    path = write(tmp_path, edit("hook: blocks.{layer}.hook_resid_pre", f"hook: '{template}'"))
    assert only_problem(path) == at(path, 17, 11, f"sets[0].hook '{template}' {message}")


def test_compute_settings_are_typed(tmp_path):
    path = write(tmp_path, edit("compute: {top_k: 5, seed: 3}", "compute: {top_k: five, neighbours: 0, topk: 3}"))
    assert problems_of(path) == [
        at(path, 22, 18, "compute.top_k is the text 'five'; expected a whole number >= 1"),
        at(path, 22, 36, "compute.neighbours is 0; expected a whole number >= 1"),
        at(path, 22, 39, "unknown key 'topk' in compute; did you mean 'top_k'?"),
    ]


@pytest.mark.parametrize("written, value", [("auto", "auto"), ("'auto'", "auto"), ("true", True), ("false", False)])
def test_loss_effects_is_auto_true_or_false(tmp_path, written, value):
    path = write(tmp_path, edit("compute: {top_k: 5, seed: 3}", f"compute: {{top_k: 5, loss_effects: {written}}}"))
    assert load_release(path).compute == ComputeSettings(top_k=5, loss_effects=value)


def test_loss_effects_defaults_to_auto(tmp_path):
    path = write(tmp_path, VALID)
    assert load_release(path).compute.loss_effects == "auto"


def test_loss_effects_reports_other_values_with_line_and_column(tmp_path):
    path = write(tmp_path, edit("compute: {top_k: 5, seed: 3}", "compute: {loss_effects: 1, top_k: x}"))
    assert problems_of(path) == [
        at(path, 22, 25, "compute.loss_effects is the number 1; expected auto, true or false"),
        at(path, 22, 35, "compute.top_k is the text 'x'; expected a whole number >= 1"),
    ]
    path = write(tmp_path, edit("compute: {top_k: 5, seed: 3}", "compute: {top_k: 5, loss_effects: Auto}"))
    assert only_problem(path) == at(path, 22, 35, "compute.loss_effects is the text 'Auto'; expected auto, true or false")
    path = write(tmp_path, edit("compute: {top_k: 5, seed: 3}", "compute: {top_k: 5, loss_effects: [true]}"))
    assert only_problem(path) == at(path, 22, 35, "compute.loss_effects is a list; expected auto, true or false")


def test_compute_must_be_a_mapping(tmp_path):
    path = write(tmp_path, edit("compute: {top_k: 5, seed: 3}", "compute: fast"))
    assert only_problem(path) == at(path, 22, 10, "compute is the text 'fast'; expected a mapping, e.g. compute: {top_k: 20}")


def test_links_must_be_http_urls(tmp_path):
    path = write(tmp_path, edit("https://example.org/paper", "javascript:alert(1)"))
    assert only_problem(path) == at(path, 5, 16, "links.paper 'javascript:alert(1)' is not an http(s) URL; expected a URL starting with https://")


def test_authors_must_be_a_list(tmp_path):
    path = write(tmp_path, edit("authors: [A. Author, B. Author]", "authors: A. Author"))
    assert only_problem(path) == at(path, 4, 10, "authors is the text 'A. Author'; expected a list, e.g. authors: [Jane Doe, John Roe]")


def test_sets_must_be_a_non_empty_list(tmp_path):
    text = VALID.split("sets:")[0] + "sets: []\n"
    path = write(tmp_path, text)
    assert only_problem(path) == at(
        path, 13, 7, "sets is an empty list; expected at least one entry, e.g. sets: [{id: res, hook: ..., saes: [...]}]"
    )


def test_model_must_be_a_mapping(tmp_path):
    path = write(tmp_path, edit("model:\n  id: tiny\n  path: ../models/tiny", "model: tiny"))
    assert only_problem(path) == at(
        path, 6, 8, "model is the text 'tiny'; expected a mapping, e.g. model: {id: gpt2-small, transformer_lens: gpt2-small}"
    )


def test_empty_manifest(tmp_path):
    path = write(tmp_path, "# nothing yet\n")
    assert only_problem(path) == at(path, 1, 1, "the manifest is empty; expected a mapping with release, model, corpus and sets")


def test_manifest_that_is_a_list(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert only_problem(path) == at(
        path, 1, 1, "the manifest is a list; expected a mapping, e.g. release: my-saes (see the manifest format in the README)"
    )


def test_non_utf8_manifest_reports_the_byte_position(tmp_path):
    path = write(tmp_path, VALID)
    path.write_bytes(VALID.encode().replace(b"Demo SAEs", b"Demo \xff SAEs"))
    assert only_problem(path) == at(path, 2, 13, "the manifest is not UTF-8 (byte 0xff); expected UTF-8 text")


def test_several_mistakes_are_reported_in_one_run(tmp_path):
    text = edit("release: demo", "release: Demo")
    text = edit("prompts: 64", "prompts: lots", text)
    text = edit("{layer: 0,", "{layer: -1,", text)
    text = edit("compute: {top_k: 5, seed: 3}", "compute: {top_k: 5, sed: 3}", text)
    path = write(tmp_path, text)
    assert [(p.line, p.col) for p in problems_of(path)] == [(1, 10), (11, 12), (19, 17), (22, 21)]


# --- across manifests ----------------------------------------------------------------------------


def _second(content: Path, text: str, name: str = "other.yaml") -> Path:
    path = content / "releases" / name
    path.write_text(text)
    return path


OTHER = edit("release: demo", "release: other", edit("  - id: res\n", "  - id: mlp\n"))


def test_load_content_returns_releases_sorted_by_id(tmp_path):
    first = write(tmp_path, edit("release: demo", "release: zeta"))
    _second(first.parent.parent, OTHER)
    assert [r.id for r in load_content(first.parent.parent)] == ["other", "zeta"]


def test_two_releases_with_the_same_id(tmp_path):
    first = write(tmp_path, VALID)
    second = _second(first.parent.parent, edit("  - id: res\n", "  - id: mlp\n"))
    with pytest.raises(InputError) as info:
        load_content(first.parent.parent)
    assert info.value.problems == [
        at(second, 1, 10, f"release id 'demo' is also used by {first}:1:10; expected release ids unique across manifests")
    ]


def test_release_id_equal_to_a_model_id_of_another_manifest(tmp_path):
    first = write(tmp_path, VALID)
    second = _second(first.parent.parent, edit("  id: tiny", "  id: big", edit("release: other", "release: tiny", OTHER)))
    with pytest.raises(InputError) as info:
        load_content(first.parent.parent)
    assert info.value.problems == [
        at(first, 7, 7, f"model id 'tiny' is also a release id at {second}:1:10; expected model and release ids to differ"),
    ]


def test_the_same_set_on_the_same_model_in_two_releases(tmp_path):
    first = write(tmp_path, VALID)
    second = _second(first.parent.parent, edit("release: demo", "release: other"))
    with pytest.raises(InputError) as info:
        load_content(first.parent.parent)
    assert info.value.problems == [
        at(second, 14, 9, f"set 'res' of model 'tiny' is also defined at {first}:14:9; expected set ids unique per model across releases")
    ]


def test_one_model_id_for_two_different_models(tmp_path):
    first = write(tmp_path, VALID)
    second = _second(first.parent.parent, edit("  path: ../models/tiny", "  transformer_lens: gpt2-small", OTHER))
    with pytest.raises(InputError) as info:
        load_content(first.parent.parent)
    assert info.value.problems == [
        at(second, 7, 7, f"model 'tiny' names a different model than at {first}:7:7; expected one transformer_lens name or path per model id")
    ]


def test_set_id_that_is_an_sae_directory_of_the_same_model(tmp_path):
    first = write(tmp_path, VALID)
    _second(first.parent.parent, edit("  - id: res\n", "  - id: 0-res\n", edit("release: demo", "release: other")))
    with pytest.raises(InputError) as info:
        load_content(first.parent.parent)
    [problem] = info.value.problems
    assert problem.message == f"set id '0-res' of model 'tiny' is also the directory of the SAE at {first}:19:17; expected a set id that is not LAYER-SET"


def test_problems_of_every_manifest_are_reported_together(tmp_path):
    first = write(tmp_path, edit("prompts: 64", "prompts: 0"))
    second = _second(first.parent.parent, edit("context: 16", "context: x", OTHER))
    with pytest.raises(InputError) as info:
        load_content(first.parent.parent)
    assert [(p.file, p.line) for p in info.value.problems] == [(str(first), 11), (str(second), 12)]


def test_content_without_manifests(tmp_path):
    (tmp_path / "releases").mkdir()
    with pytest.raises(InputError) as info:
        load_content(tmp_path)
    assert [p.message for p in info.value.problems] == ["no manifests found; expected releases/*.yaml"]


def test_yml_extension_is_reported(tmp_path):
    first = write(tmp_path, VALID)
    (first.parent / "extra.yml").write_text("release: x\n")
    with pytest.raises(InputError) as info:
        load_content(first.parent.parent)
    assert [p.message for p in info.value.problems] == ["manifest has the extension '.yml'; expected '.yaml'"]


def test_missing_content_directory(tmp_path):
    with pytest.raises(InputError) as info:
        load_content(tmp_path / "nope")
    assert info.value.problems[0].message == "no such directory; expected a content directory with releases/*.yaml"


# --- the check command ---------------------------------------------------------------------------


def test_check_exits_2_listing_every_problem_and_writes_nothing(tmp_path, capsys, monkeypatch):
    text = edit("prompts: 64", "prompts: lots", edit("title: Demo SAEs", "titel: Demo SAEs"))
    path = write(tmp_path, text)
    content = path.parent.parent
    before = sorted(p for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--content", str(content)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{path}:2:1: unknown key 'titel' in the manifest; did you mean 'title'?" in err
    assert f"{path}:11:12: corpus.prompts is the text 'lots'; expected a whole number >= 1" in err
    assert err.strip().endswith("2 problems found; nothing was written")
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_corpus_prepend_bos_is_a_boolean_defaulting_to_true(tmp_path):
    from sae_atlas.manifest import load_release

    assert load_release(write(tmp_path, VALID)).corpus.prepend_bos is True
    assert load_release(write(tmp_path, edit("  prompts: 64", "  prompts: 64\n  prepend_bos: false"))).corpus.prepend_bos is False
    path = write(tmp_path, edit("  prompts: 64", "  prompts: 64\n  prepend_bos: maybe"))
    assert only_problem(path) == at(path, 12, 16, "corpus.prepend_bos is the text 'maybe'; expected true or false")

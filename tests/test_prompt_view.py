"""The prompt view, curated feature lists and embeds: manifest `lists:` (parsing and every error at
file:line:col), the per-prompt data files against the cache arrays, the list data files against the
cache, the embed pages' metadata, and that every link they hold resolves inside the site."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from sae_atlas.cache import CacheStore, corpus_key, sae_key
from sae_atlas.errors import InputError
from sae_atlas.ids import SaeId
from sae_atlas.manifest import ListFeature, ListSpec, Mark, load_release
from sae_atlas.render import render_site
from tests.test_manifest import VALID, at, edit, only_problem, problems_of, write
from tests.test_render import computed_site, data_payload

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import synthetic_release  # noqa: E402

LISTS = """\
lists:
  - id: induction
    title: Induction features
    description: "Features that *copy*."
    features: [tiny@0-res:3, tiny@1-res:17]
  - id: second
    features:
      - tiny@1-res:2
"""


def sig4(x) -> np.ndarray:
    """4 significant digits, computed here with numpy's string formatting (independent of round_sig)."""
    return np.array([float(f"{v:.4g}") for v in np.asarray(x, dtype=np.float64).ravel()]).reshape(np.shape(x))


# --- manifest `lists:` -------------------------------------------------------------------------------


def test_lists_parse_into_specs_with_positions(tmp_path):
    path = write(tmp_path, VALID + LISTS)
    release = load_release(path)
    first, second = release.lists
    assert (first.id, first.title, first.description) == ("induction", "Induction features", "Features that *copy*.")
    assert first.features == (ListFeature(SaeId("tiny", 0, "res"), 3), ListFeature(SaeId("tiny", 1, "res"), 17))
    assert [f.id for f in first.features] == ["tiny@0-res:3", "tiny@1-res:17"]
    assert str(first.features[1].mark) == f"{path}:27:30"
    assert second.title == "second" and second.description == "" and second.features[0].mark.line == 30
    assert load_release(write(tmp_path, VALID)).lists == ()


@pytest.mark.parametrize(
    "old, new, line, col, message",
    [
        ("tiny@1-res:17]", "tiny@2-res:17]", 27, 30,
         "lists[0].features[1] names the SAE 'tiny@2-res', which this release does not define; did you mean 'tiny@1-res'?"),
        ("tiny@1-res:17]", "tiny@1-res]", 27, 30,
         "lists[0].features[1] 'tiny@1-res' is not a feature id; expected MODEL@LAYER-SET:INDEX, e.g. tiny@0-res:12"),
        ("tiny@1-res:17]", "tiny@0-res:3]", 27, 30,
         "lists[0].features[1] 'tiny@0-res:3' is listed twice (first at line 27); expected each feature once per list"),
        ("  - id: second", "  - id: induction", 28, 9,
         "duplicate list id 'induction' (first at line 24); expected each list id once per release"),
        ("  - id: induction", "  - id: Induction!", 24, 9,
         "lists[0].id 'Induction!' is not a valid id; expected a slug of lowercase letters, digits, '.', '_' or '-' "
         "that starts with a letter or digit, e.g. induction"),
        ("    features: [tiny@0-res:3, tiny@1-res:17]", "    features: []", 27, 15,
         "lists[0].features is an empty list; expected at least one entry, e.g. [tiny@0-res:12]"),
        ("    title: Induction features\n", "    title: Induction features\n    colour: red\n", 26, 5,
         "unknown key 'colour' in lists[0]; expected one of: id, title, description, features"),
    ],
)
def test_list_mistakes_are_reported_at_their_position(tmp_path, old, new, line, col, message):
    path = write(tmp_path, VALID + edit(old, new, LISTS))
    assert only_problem(path) == at(path, line, col, message)


def test_lists_must_be_a_list_of_mappings_with_features(tmp_path):
    path = write(tmp_path, VALID + "lists: {a: 1}\n")
    assert only_problem(path) == at(path, 23, 8, "lists is a mapping; expected a list, e.g. lists: [{id: induction, "
                                                 "title: Induction features, features: [MODEL@LAYER-SET:INDEX]}]")
    path = write(tmp_path, VALID + "lists:\n  - id: x\n")
    assert only_problem(path) == at(path, 24, 5, "lists[0] is missing 'features'; expected {id: induction, title: Induction features, features: [...]}")


def test_unknown_sae_is_not_reported_when_the_sets_themselves_are_wrong(tmp_path):
    path = write(tmp_path, edit("hook: blocks.{layer}.hook_resid_pre", "hook: blocks.{lyr}.hook_resid_pre") + LISTS)
    assert all("lists" not in p.message for p in problems_of(path))


# --- a synthetic site with lists and two corpora of one model -----------------------------------------


D_SAE, PROMPTS, CONTEXT, VOCAB = 20, 10, 8, 90


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(releases, cache, site): release `syn-a` (2 SAEs, a list) and `syn-b` (same model, another
    corpus and set), rendered from synthetic cache entries."""
    from sae_atlas.manifest import ComputeSettings

    settings = ComputeSettings(top_k=4, intervals=2, per_interval=2, logits=3, neighbours=2, context_before=2, context_after=1, prompt_view=6)
    a = synthetic_release.synthetic_release(n_saes=2, d_sae=D_SAE, prompts=PROMPTS, context=CONTEXT, vocab_size=VOCAB,
                                            settings=settings, release_id="syn-a", model_id="syn-model", set_id="res-a")
    b = synthetic_release.synthetic_release(n_saes=1, d_sae=D_SAE, prompts=PROMPTS + 2, context=CONTEXT, vocab_size=VOCAB,
                                            settings=settings, release_id="syn-b", model_id="syn-model", set_id="res-b")
    picks = (ListFeature(SaeId("syn-model", 1, "res-a"), 7), ListFeature(SaeId("syn-model", 0, "res-a"), 0))
    a = dataclasses.replace(a, lists=(ListSpec("picks", "Picked <b>features</b>", picks, "Some *markdown* <script>x</script>"),))
    root = tmp_path_factory.mktemp("synthetic-lists")
    for n, release in enumerate((a, b)):
        synthetic_release.build_synthetic_cache(root / "cache", release, d_sae=D_SAE, vocab_size=VOCAB, seed=n + 3)
    render_site([a, b], cache=root / "cache", out=root / "site", quiet=True)
    return [a, b], root / "cache", root / "site"


def _arrays(cache: Path, release, spec) -> dict:
    return CacheStore(cache).sae_entry(sae_key(release, spec)).arrays


def test_a_list_file_holds_each_feature_card_from_the_cache(synthetic):
    (a, _), cache, site = synthetic
    name, (obj,) = data_payload(site / "syn-a/lists/picks.js")
    assert name == "featureList" and obj["id"] == "picks"
    assert obj["corpus"] == f"../../corpus/{corpus_key(a)}/"
    assert (obj["context_before"], obj["context_after"]) == (2, 1)
    specs = {s.layer: s for s in a.saes()}
    assert [(c["sae"], c["i"]) for c in obj["features"]] == [("syn-model@1-res-a", 7), ("syn-model@0-res-a", 0)]
    for card in obj["features"]:
        layer = int(card["sae"].split("@")[1].split("-")[0])
        arr = _arrays(cache, a, specs[layer])
        i = card["i"]
        assert card["href"] == f"../../syn-model/{layer}-res-a/index.html"
        assert card["max"] == pytest.approx(float(arr["max_activation"][i]), rel=1e-3)
        assert card["density"] == pytest.approx(float(arr["density"][i]), rel=1e-3)
        used = [k for k in range(arr["top_prompt"].shape[1]) if arr["top_prompt"][i, k] >= 0][:3]
        assert [e[:2] for e in card["top"]] == [[int(arr["top_prompt"][i, k]), int(arr["top_position"][i, k])] for k in used]
        assert [e[2] for e in card["top"]] == pytest.approx(list(sig4(arr["top_value"][i, used])), rel=1e-6)
        # The label is the summary's (top positive-logit tokens; no explanations here).
        _, (summary,) = data_payload(site / f"syn-model/{layer}-res-a/data/summary.js")
        assert card["label"] == summary["label"][i]
    page = (site / "syn-a/lists/picks.html").read_text()
    assert 'data-list="picks.js"' in page and 'data-prompts="../../syn-model/prompts.html"' in page
    assert "Picked &lt;b&gt;features&lt;/b&gt;" in page and "<em>markdown</em>" in page and "<script>x" not in page
    release_page = (site / "syn-a/index.html").read_text()
    assert 'href="../syn-a/lists/picks.html"' in release_page and "2 features" in release_page


def test_a_list_feature_past_the_sae_width_is_an_input_error_at_its_position(synthetic, tmp_path):
    (a, b), cache, _ = synthetic
    bad = ListFeature(SaeId("syn-model", 1, "res-a"), D_SAE, mark=Mark("manifest.yaml", 12, 7))
    broken = dataclasses.replace(a, lists=(ListSpec("picks", "Picks", (bad,)),))
    with pytest.raises(InputError) as info:
        render_site([broken, b], cache=cache, out=tmp_path / "site", quiet=True)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.col) == ("manifest.yaml", 12, 7)
    assert problem.message == (f"feature syn-model@1-res-a:{D_SAE} of list 'picks' is out of range: syn-model@1-res-a has "
                               f"{D_SAE} features; expected an index from 0 to {D_SAE - 1}")
    assert not (tmp_path / "site").exists()


def test_one_prompt_view_per_corpus_of_a_model(synthetic):
    (a, b), cache, site = synthetic
    first = (site / "syn-model/prompts.html").read_text()
    second = (site / "syn-model/prompts-syn-b.html").read_text()
    assert f'data-corpus="../corpus/{corpus_key(a)}/"' in first and 'data-n-prompts="10"' in first
    assert f'data-corpus="../corpus/{corpus_key(b)}/"' in second and 'data-n-prompts="12"' in second
    assert 'data-data="prompts/"' in first and 'data-data="prompts-syn-b/"' in second
    assert 'data-viewed="6"' in first and 'data-setting="compute.prompt_view"' in first
    assert sorted(p.name for p in (site / "syn-model/prompts").iterdir()) == [f"{p:04d}.js" for p in range(6)]
    _, (_, obj) = data_payload(site / "syn-model/prompts/0002.js")
    assert [s["sae"] for s in obj["saes"]] == ["syn-model@0-res-a", "syn-model@1-res-a"]
    _, (_, obj) = data_payload(site / "syn-model/prompts-syn-b/0005.js")
    assert [s["sae"] for s in obj["saes"]] == ["syn-model@0-res-b"]
    assert 'data-prompts="../prompts-syn-b.html"' in (site / "syn-model/0-res-b/index.html").read_text()
    assert 'data-prompts="../prompts.html"' in (site / "syn-model/1-res-a/index.html").read_text()


def test_embed_pages_carry_what_the_card_needs_and_the_site_csp(synthetic):
    (a, _), _, site = synthetic
    base_csp = re.search(r'<meta http-equiv="Content-Security-Policy"[^>]*>', (site / "syn-a/index.html").read_text())[0]
    for layer in (0, 1):
        embed = (site / f"syn-model/{layer}-res-a/embed.html").read_text()
        _, (summary,) = data_payload(site / f"syn-model/{layer}-res-a/data/summary.js")
        assert base_csp in embed and "<script>" not in embed
        attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', embed))
        assert attrs["sae"] == summary["sae"] and int(attrs["d-sae"]) == summary["d_sae"]
        assert int(attrs["shard-size"]) == summary["shard_size"] and int(attrs["pps"]) == summary["prompts_per_shard"]
        assert attrs["corpus"] == summary["corpus"] and attrs["data"] == "data/"
        assert (int(attrs["context-before"]), int(attrs["context-after"])) == (summary["context_before"], summary["context_after"])
        assert attrs["prompts"] == "../prompts.html" and attrs["sae-href"] == "index.html"
        assert "summary.js" not in embed
    sae_page = (site / "syn-model/0-res-a/index.html").read_text()
    assert 'data-embed="embed.html"' in sae_page and 'data-copy-target="fv-embed-code"' in sae_page


# --- the fixture release, computed for real -----------------------------------------------------------


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    return computed_site(tmp_path_factory)


def test_prompt_files_hold_each_saes_features_per_token_from_the_cache(computed):
    releases, cache, site = computed
    (release,) = releases
    model = release.model.id
    specs = sorted(release.saes(), key=lambda s: (s.layer, s.set_id))
    store = CacheStore(cache)
    n_prompts = store.corpus(corpus_key(release))["tokens"].shape[0]
    viewed = min(release.compute.prompt_view, n_prompts)
    files = sorted((site / model / "prompts").iterdir())
    assert [p.name for p in files] == [f"{p:04d}.js" for p in range(viewed)]
    summaries = {s.id: data_payload(site / model / s.sae_id.slug / "data/summary.js")[1][0] for s in specs}
    for prompt in (0, 1, viewed - 1):
        name, (number, obj) = data_payload(site / model / "prompts" / f"{prompt:04d}.js")
        assert name == "promptView" and number == prompt == obj["prompt"]
        assert [s["sae"] for s in obj["saes"]] == [s.id for s in specs]
        for spec, s in zip(specs, obj["saes"]):
            arr = store.sae_entry(sae_key(release, spec)).arrays
            feature, value = np.asarray(arr["prompt_feature"][prompt]), np.asarray(arr["prompt_value"][prompt])
            assert s["href"] == f"{spec.sae_id.slug}/index.html"
            assert len(s["f"]) == feature.shape[0]
            for t, pairs in enumerate(s["f"]):
                keep = feature[t] >= 0
                assert [p[0] for p in pairs] == feature[t][keep].tolist()
                assert [p[1] for p in pairs] == pytest.approx(list(sig4(value[t][keep])), rel=1e-6)
            summary = summaries[spec.id]
            used = sorted(set(feature[feature >= 0].tolist()))
            assert s["labels"] == {str(f): summary["expl"][f] or summary["label"][f] for f in used}


def test_prompt_view_page_and_links_resolve(computed):
    releases, _, site = computed
    model = releases[0].model.id
    page = site / model / "prompts.html"
    html = page.read_text()
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', html))
    assert (page.parent / attrs["corpus"] / "0000.js").is_file()
    assert (page.parent / attrs["data"] / "0000.js").is_file()
    for href in re.findall(r'href="([^"#]+)', html):
        assert (page.parent / unquote(urlsplit(href).path)).is_file(), href
    _, (_, obj) = data_payload(site / model / "prompts" / "0000.js")
    for s in obj["saes"]:
        assert (page.parent / s["href"]).is_file()
    for sae_page in site.glob(f"{model}/*/index.html"):
        text = sae_page.read_text()
        if 'id="sae-app"' in text:
            prompts = re.search(r'data-prompts="([^"]+)"', text)[1]
            assert (sae_page.parent / prompts).resolve() == page.resolve()
            assert (sae_page.parent / "embed.html").is_file()

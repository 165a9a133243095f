"""`sae-atlas init --sae-lens RELEASE`: a manifest for a SAELens registry release that `check` accepts.

Expected ids, links and Neuronpedia ids are read from SAELens's pretrained_saes.yaml directly.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import sae_atlas
from tests.fixtures import fixture_text
from tests.hub_fixtures import add_gpt2, add_res_jb
from tests.hubcache import HubCache


@pytest.fixture(scope="module")
def registry() -> dict:
    (location,) = importlib.util.find_spec("sae_lens").submodule_search_locations
    return yaml.safe_load((Path(location) / "pretrained_saes.yaml").read_text())


def _corpus(root: Path) -> Path:
    path = root / "corpus" / "text.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fixture_text(n_docs=20))
    return path


def test_init_writes_a_manifest_for_layers_8_9_that_check_accepts(tmp_path, registry):
    content = tmp_path / "content"
    corpus = _corpus(tmp_path)
    run = sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "8-9", "--content", content, "--corpus", corpus, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    path = content / "releases" / "gpt2-small-res-jb.yaml"
    manifest = yaml.safe_load(path.read_text())
    entry = registry["gpt2-small-res-jb"]
    assert manifest["release"] == "gpt2-small-res-jb"
    assert manifest["model"] == {"id": "gpt2-small", "transformer_lens": entry["model"]}
    assert manifest["links"] == entry["links"]
    assert manifest["corpus"]["path"] == "../../corpus/text.txt"
    (res,) = manifest["sets"]
    assert res["id"] == "res-jb" and res["hook"] == "blocks.{layer}.hook_resid_pre"
    assert res["saes"] == [
        {"layer": layer, "sae_lens": {"release": "gpt2-small-res-jb", "id": f"blocks.{layer}.hook_resid_pre"}} for layer in (8, 9)
    ]
    assert {f"blocks.{layer}.hook_resid_pre" for layer in (8, 9)} <= {e["id"] for e in entry["saes"]}
    assert "# " in path.read_text()  # comments say what to edit

    # check reads the model's and the SAEs' configs from the hub cache: offline, only they are there.
    # The cached stand-in for gpt2 has n_ctx 64, so the prompts are made shorter than init's 128.
    path.write_text(path.read_text().replace("context: 128", "context: 32"))
    hub = HubCache(tmp_path / "hf")
    add_gpt2(hub)
    add_res_jb(hub, layers=(8, 9))
    check = sae_atlas("check", "--content", content, cwd=tmp_path, env=hub.env())
    assert check.returncode == 0, check.stderr
    assert "1 release(s), 2 SAE(s)" in check.stderr


def test_layers_as_a_list_equal_the_range_and_unknown_layers_are_refused(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "8-9", "--out", a).returncode == 0
    assert sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "8,9", "--out", b).returncode == 0
    assert a.read_text() == b.read_text()
    run = sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "8,40", "--out", tmp_path / "c.yaml")
    assert run.returncode == 2 and "no SAE on layer 40" in run.stderr and "0-11" in run.stderr
    assert not (tmp_path / "c.yaml").exists()
    run = sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "9-8", "--out", tmp_path / "c.yaml")
    assert run.returncode == 2 and "--layers" in run.stderr and "Traceback" not in run.stderr


def test_init_never_overwrites_a_file(tmp_path):
    out = tmp_path / "mine.yaml"
    out.write_text("release: mine\n")
    run = sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--out", out)
    assert run.returncode == 2 and "already exists" in run.stderr and str(out) in run.stderr
    assert out.read_text() == "release: mine\n"


def test_an_unknown_release_gets_a_did_you_mean(tmp_path):
    run = sae_atlas("init", "--sae-lens", "gpt2-small-res-j", "--content", tmp_path / "content")
    assert run.returncode == 2 and "'gpt2-small-res-jb'" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "content").exists()


def test_without_a_known_dataset_the_corpus_is_a_placeholder_that_check_reports(tmp_path):
    content = tmp_path / "content"
    assert sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "8", "--content", content).returncode == 0
    text = (content / "releases" / "gpt2-small-res-jb.yaml").read_text()
    assert "# corpus: {dataset: NAME" in text and "\ncorpus:" not in text
    check = sae_atlas("check", "--content", content)
    assert check.returncode == 2 and "missing 'corpus'" in check.stderr


def test_the_corpus_is_the_dataset_the_registry_or_the_cached_sae_config_names(tmp_path, registry):
    # The registry's config overrides name it for gpt2-small-mlp-tm.
    out = tmp_path / "mlp.yaml"
    assert sae_atlas("init", "--sae-lens", "gpt2-small-mlp-tm", "--layers", "0", "--out", out).returncode == 0
    expected = registry["gpt2-small-mlp-tm"]["config_overrides"]["dataset_path"]
    assert yaml.safe_load(out.read_text())["corpus"]["dataset"] == expected
    # For gpt2-small-res-jb it is in each SAE's cfg.json, here in a hub cache laid out by the test.
    entry = registry["gpt2-small-res-jb"]
    path = next(e["path"] for e in entry["saes"] if e["id"] == "blocks.8.hook_resid_pre")
    hub = HubCache(tmp_path / "hf")
    hub.add(entry["repo_id"], f"{path}/cfg.json", json.dumps({"d_in": 768, "dataset_path": "org/some-text"}).encode())
    out = tmp_path / "res.yaml"
    assert sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "8", "--out", out, env=hub.env()).returncode == 0
    assert yaml.safe_load(out.read_text())["corpus"]["dataset"] == "org/some-text"


@pytest.mark.parametrize(
    "release, layers, set_id, hook",
    [
        ("gpt2-small-hook-z-kk", "3", "att-kk", "blocks.{layer}.attn.hook_z"),
        ("gpt2-small-mlp-tm", "3", "mlp-tm", "blocks.{layer}.hook_mlp_out"),
        ("mwhanna-qwen3-4b-transcoders", "3", "tc-mwhanna", "blocks.{layer}.mlp.hook_in"),  # as SAELens's mwhanna loader says
    ],
)
def test_sets_are_named_by_hook_kind_and_the_release(tmp_path, registry, release, layers, set_id, hook):
    out = tmp_path / "m.yaml"
    assert sae_atlas("init", "--sae-lens", release, "--layers", layers, "--out", out).returncode == 0
    (s,) = yaml.safe_load(out.read_text())["sets"]
    assert (s["id"], s["hook"]) == (set_id, hook)
    ids = {e["id"] for e in registry[release]["saes"]}
    assert [x["sae_lens"]["id"] for x in s["saes"]] and all(x["sae_lens"]["id"] in ids for x in s["saes"])


def test_a_registry_whose_ids_are_not_hooks_gets_layers_from_the_ids_and_a_hook_to_check(tmp_path, registry):
    from sae_atlas.scaffold import scaffold

    release = "gemma-scope-2b-pt-res-canonical"
    sc = scaffold(release)
    expected = {}
    for e in registry[release]["saes"]:
        layer, width, _ = e["id"].split("/")  # layer_N/width_W/canonical
        expected.setdefault(width, {})[int(layer.removeprefix("layer_"))] = e["id"]
    got = {s.id: {sae.layer: sae.sae_id for sae in s.saes} for s in sc.sets}
    assert sorted(got.values(), key=str) == sorted(expected.values(), key=str)
    assert all(not s.hook_from_id and s.hook_template == "blocks.{layer}.hook_resid_post" for s in sc.sets)
    assert len({s.id for s in sc.sets}) == len(sc.sets)


def test_pages_of_an_initialised_release_link_to_neuronpedia(tmp_path, registry):
    """The manifest from `init`, with a synthetic cache in place of a compute, renders SAE pages
    that link to the registry's Neuronpedia ids."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import synthetic_release

    from sae_atlas.manifest import load_content
    from sae_atlas.render import render_site

    content = tmp_path / "content"
    corpus = _corpus(tmp_path)
    assert sae_atlas("init", "--sae-lens", "gpt2-small-res-jb", "--layers", "8-9", "--content", content, "--corpus", corpus).returncode == 0
    (release,) = load_content(content)
    cache, site = tmp_path / "cache", tmp_path / "site"
    synthetic_release.build_synthetic_cache(cache, release, d_sae=8, vocab_size=60)
    render_site([release], cache=cache, out=site, quiet=True)
    neuronpedia = {e["id"]: e["neuronpedia"] for e in registry["gpt2-small-res-jb"]["saes"]}
    for spec in release.saes():
        page = (site / "gpt2-small" / f"{spec.layer}-res-jb" / "index.html").read_text()
        assert f'href="https://www.neuronpedia.org/{neuronpedia[spec.sae_lens.id]}"' in page

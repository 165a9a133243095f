"""Round trip: a computed release exported in Neuronpedia's layout (`export neuronpedia`), mirrored
back (`source: {neuronpedia_export: DIR}`) and rendered shows the same feature views as the
original build.

Both sides are read as `sae-atlas dump` records of their caches and as the data/f shard records
the front end reads. Every number compared is equal exactly: the export writes the cache's f32
values (and the f16 windows widened to f32) as JSON numbers, which the mirror reads back into the
same dtypes. What differs by design is compared by what it shows: the mirror's corpus is one prompt
per activation row, so prompt numbers, token ids and absolute positions are its own (the tokens
around the example's token and their values are the same), and its cached prompts are padded to
the longest row with the empty token (which the site leaves out; tests/browser/test_roundtrip.py
compares the rendered views)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import yaml

from sae_atlas.cli import main
from sae_atlas.export.dump import dump_feature
from sae_atlas.export.neuronpedia import export_neuronpedia
from sae_atlas.manifest import load_content
from sae_atlas.render import render_site
from tests.fixtures import build_fixture_content
from tests.test_export_neuronpedia import BATCH, COMPUTE, D_SAE, SETS

# What Neuronpedia's layout cannot carry, absent on the mirror: dump keys and shard record keys.
NOT_CARRIED_DUMP = ("histogram", "logit_histogram")  # its bar heights have no bin edges to rebuild ours from
NOT_CARRIED_SHARD = ("hist", "lh", "loss")  # (loss effects: no column; this release computes none either)
# Compared field by field below; nothing else in a live feature's dump record.
COMPARED = {
    "sae", "index", "max_activation", "density", "top_examples", "interval_examples", "positive_logits", "negative_logits",
    "neighbours", "correlated_features", "correlated_neurons", "aligned_neurons", "umap",
}


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    from sae_atlas.compute import ComputeOptions, compute_releases

    root = tmp_path_factory.mktemp("np-roundtrip")
    content = build_fixture_content(root, n_prompts=16, context=12, d_sae=D_SAE, corpus="tokens", sets=SETS, compute=COMPUTE)
    original = load_content(content)
    compute_releases(original, root / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True))
    export_neuronpedia(original, root / "cache", root / "np", quiet=True, batch_size=BATCH)
    (root / "mirror" / "releases").mkdir(parents=True)
    manifest = {"release": "tiny-mirror", "source": {"neuronpedia_export": str(root / "np")}, "compute": COMPUTE}
    (root / "mirror" / "releases" / "tiny-mirror.yaml").write_text(yaml.safe_dump(manifest))
    assert main(["compute", "--content", str(root / "mirror"), "--cache", str(root / "mcache"), "--quiet"]) == 0
    mirror = load_content(root / "mirror")
    render_site(original, cache=root / "cache", out=root / "site", quiet=True)
    render_site(mirror, cache=root / "mcache", out=root / "msite", quiet=True)
    return root, original, mirror


def _dumps(roundtrip, spec) -> list[tuple[dict, dict]]:
    root, original, mirror = roundtrip
    feature = lambda i: f"{spec.id}:{i}"  # noqa: E731
    return [(dump_feature(original, root / "cache", feature(i)), dump_feature(mirror, root / "mcache", feature(i))) for i in range(D_SAE)]


def _shards(site: Path, spec) -> dict[int, dict]:
    out = {}
    for path in sorted((site / spec.model_id / f"{spec.layer}-{spec.set_id}" / "data" / "f").glob("*.js")):
        text = path.read_text()
        out.update({rec["i"]: rec for rec in orjson.loads("[" + text[text.index("(") + 1 : -3] + "]")[1]})
    return out


def _view(example: dict, mirrored: bool) -> dict:
    """An example as its view shows it: the value, the tokens around its token with their values
    (and attributions), and where its token sits among them."""
    pairs = list(zip(example["token_strings"], example["activations"], example.get("dfa") or [None] * len(example["tokens"])))
    if mirrored:  # the mirror's prompts are padded to the longest row with the empty token
        while pairs and pairs[-1][0] == "" and pairs[-1][1] == 0:
            pairs.pop()
    before = COMPUTE["context_before"]
    return {"activation": example["activation"], "at": example["position"] - max(0, example["position"] - before), "window": pairs}


def _dead(record: dict) -> bool:
    return record["density"] == 0


def test_the_mirror_has_the_originals_saes(roundtrip):
    _, original, mirror = roundtrip
    assert sorted(s.id for s in mirror[0].saes()) == sorted(s.id for s in original[0].saes())


@pytest.mark.parametrize("n", range(len(SETS)))
def test_live_features_dump_the_same_numbers(roundtrip, n):
    spec = roundtrip[1][0].saes()[n]
    live = 0
    for a, b in _dumps(roundtrip, spec):
        if _dead(a):
            continue
        live += 1
        assert set(a) - set(NOT_CARRIED_DUMP) == COMPARED == set(b), a["index"]
        for key in ("max_activation", "density", "neighbours", "correlated_features", "correlated_neurons", "aligned_neurons", "umap"):
            assert a[key] == b[key], (a["index"], key)
        for key in ("positive_logits", "negative_logits"):  # token ids are each corpus's own
            assert [(x["token_string"], x["value"]) for x in a[key]] == [(x["token_string"], x["value"]) for x in b[key]], key
        assert [_view(e, False) for e in a["top_examples"]] == [_view(e, True) for e in b["top_examples"]], a["index"]
        assert a["top_examples"]
        assert [(g["lo"], g["hi"], [_view(e, False) for e in g["examples"]]) for g in a["interval_examples"]] == [
            (g["lo"], g["hi"], [_view(e, True) for e in g["examples"]]) for g in b["interval_examples"]
        ], a["index"]
    assert live > D_SAE // 2


def test_attention_examples_keep_their_attribution(roundtrip):
    spec = next(s for s in roundtrip[1][0].saes() if s.hook.endswith("attn.hook_z"))
    pairs = [(a, b) for a, b in _dumps(roundtrip, spec) if not _dead(a)]
    assert all(e["dfa"] for a, _ in pairs for e in a["top_examples"])
    assert [[_view(e, False)["window"] for e in a["top_examples"]] for a, _ in pairs] == [
        [_view(e, True)["window"] for e in b["top_examples"]] for _, b in pairs
    ]


@pytest.mark.parametrize("n", range(len(SETS)))
def test_dead_features_are_empty_on_the_mirror(roundtrip, n):
    """The export skips dead features (skipped_indexes.json): their decoder-side statistics
    (logits, neighbours, alignment, map position) are not carried."""
    spec = roundtrip[1][0].saes()[n]
    dead = [(a, b) for a, b in _dumps(roundtrip, spec) if _dead(a)]
    for a, b in dead:
        assert a["max_activation"] == 0 and a["top_examples"] == []
        assert (b["max_activation"], b["density"], b["top_examples"], b["positive_logits"], b["neighbours"]) == (0, 0, [], [], [])
        assert b["umap"] == {"x": 0, "y": 0, "cluster": 0}


@pytest.mark.parametrize("n", range(len(SETS)))
def test_shard_records_match_but_for_what_the_layout_cannot_carry(roundtrip, n):
    root, original, _ = roundtrip
    spec = original[0].saes()[n]
    a, b = _shards(root / "site", spec), _shards(root / "msite", spec)
    assert sorted(a) == sorted(b) == list(range(D_SAE))
    for i, rec in a.items():
        if rec["density"] == 0:
            continue
        assert set(rec) - set(NOT_CARRIED_SHARD) == set(b[i]), i
        assert not set(NOT_CARRIED_SHARD) & set(b[i])
        assert "hist" in rec
        for key in ("max", "density", "nb", "cf", "cn", "al"):
            assert rec.get(key) == b[i].get(key), (i, key)
    # Explanations: Neuronpedia's description is plain text (the markdown's formatting is not
    # carried); the author and score come back as the explainer's name and scoreV1.
    shown = lambda e: (" ".join(re.sub("<[^>]+>", " ", e["html"]).split()), e["author"], e["score"])  # noqa: E731
    explained = {i: [shown(e) for e in rec["expl"]] for i, rec in a.items() if rec.get("expl")}
    assert explained == {i: [shown(e) for e in rec["expl"]] for i, rec in b.items() if rec.get("expl")}
    assert explained == ({1: [("fires on animals", "tester", 0.5)], 2: [("punctuation", "tester", None)]} if n == 0 else {})


def test_the_mirror_has_no_prompt_view_features(roundtrip):
    """The prompt view's features of each prompt (MODEL/prompts/NNNN.js) are not carried; the
    mirror's prompt page shows the rows' text only."""
    root, original, _ = roundtrip
    model = original[0].model.id
    assert any((root / "site" / model / "prompts").glob("*.js"))
    assert not (root / "msite" / model / "prompts").exists()

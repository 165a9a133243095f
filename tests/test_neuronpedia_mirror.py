"""Mirroring from Neuronpedia: an export written here in Neuronpedia's layout, imported and rendered.

Expected values come from the rows this file writes, never from the importer."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import orjson
import pytest

from sae_atlas.export.dump import dump_feature
from sae_atlas.cli import main
from sae_atlas.errors import InputError
from sae_atlas.manifest import load_content, load_release
from sae_atlas.mirror import import_release
from sae_atlas.render import render_site

MODEL, SOURCE = "gpt2-small", "6-res-jb"
SAE = f"{MODEL}@{SOURCE}"
TOKENS = ["<|endoftext|>", " The", " cat", " sat", " on", " the", " mat", ".", " It", " was", "</script><img src=x onerror=alert(1)>", "!"]


def feature_row(index: int, max_act: float, frac: float, neighbours: list[int], cosines: list[float]) -> dict:
    return {
        "modelId": MODEL, "layer": SOURCE, "index": str(index), "maxActApprox": max_act, "frac_nonzero": frac,
        "pos_str": [" cat", " dog"], "pos_values": [0.9, 0.5], "neg_str": [" the"], "neg_values": [-0.7],
        "freq_hist_data_bar_heights": [3, 2, 1], "freq_hist_data_bar_values": [0.1, 0.2, 0.3],
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "topkCosSimIndices": neighbours, "topkCosSimValues": cosines,
        "umap_x": 1.0 + index, "umap_y": 2.0 * index, "umap_cluster": index % 2, "umap_log_feature_sparsity": -2.0,
        "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
        "correlated_features_indices": [], "correlated_features_pearson": [], "correlated_features_l1": [],
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
    }


def activation_row(index: int, tokens: list[str], values: list[float], bin_min=-1, bin_max=-1, contains=-1) -> dict:
    peak = max(range(len(values)), key=lambda t: values[t])
    return {
        "modelId": MODEL, "layer": SOURCE, "index": str(index), "tokens": tokens, "values": values,
        "maxValue": values[peak], "maxValueTokenIndex": peak, "minValue": min(values),
        "binMin": bin_min, "binMax": bin_max, "binContains": contains,
    }


def write_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows)))


def peaked(n: int, at: int, peak: float) -> list[float]:
    return [peak if t == at else (peak / 4 if t == at - 1 else 0.0) for t in range(n)]


# Features 0, 1, 2, 4; feature 3 is dead (skipped_indexes.json); feature 1 has no cosine neighbours.
FEATURES = [
    feature_row(0, 5.0, 0.01, [0, 2, 4], [1.0, 0.6, 0.3]),
    feature_row(1, 3.0, 0.002, [], []),
    feature_row(2, 8.0, 0.05, [2, 0], [1.0, 0.6]),
    # As Neuronpedia's export writes them, without UMAP columns: the map comes from the explanation row.
    {k: v for k, v in feature_row(4, 1.5, 0.2, [4, 1], [1.0, 0.2]).items() if not k.startswith("umap_")},
]
UMAP_4 = (-3.0, 0.5, 1)
ACTIVATIONS = {
    0: [activation_row(0, TOKENS, peaked(12, 2, 4.0)), activation_row(0, TOKENS, peaked(12, 6, 5.0)),
        activation_row(0, TOKENS[:8], peaked(8, 5, 1.2), 1.0, 2.0, 0.25)],
    1: [activation_row(1, TOKENS, peaked(12, 9, 3.0))],
    2: [activation_row(2, TOKENS, peaked(12, 1, 8.0)), activation_row(2, TOKENS, peaked(12, 10, 2.5), 2.0, 3.0, 0.1)],
    4: [activation_row(4, TOKENS, peaked(12, 4, 1.5))],
}


def write_export(root: Path) -> Path:
    sae = root / MODEL / SOURCE
    sae.mkdir(parents=True)
    (sae / "release.jsonl").write_text(json.dumps({"name": "res-jb", "description": "JB"}) + "\n")
    (sae / "model.jsonl").write_text(json.dumps({"id": MODEL, "layers": 12}) + "\n")
    (sae / "sourceset.jsonl").write_text(json.dumps({"modelId": MODEL, "name": "res-jb"}) + "\n")
    cfg = {"hook_name": "blocks.6.hook_resid_pre", "architecture": "standard", "d_in": 768, "d_sae": 6}  # 5: dead, no row
    (sae / "source.jsonl").write_text(json.dumps({"id": SOURCE, "modelId": MODEL, "setName": "res-jb", "saelensConfig": cfg, "num_prompts": 100, "num_tokens_in_prompt": 128}) + "\n")
    write_gz(sae / "features" / "batch-0.jsonl.gz", FEATURES[:2])
    write_gz(sae / "features" / "batch-1.jsonl.gz", FEATURES[2:])
    rows = [r for i in sorted(ACTIVATIONS) for r in ACTIVATIONS[i]]
    write_gz(sae / "activations" / "batch-0.jsonl.gz", rows[:3])
    write_gz(sae / "activations" / "batch-1.jsonl.gz", rows[3:])
    write_gz(sae / "explanations" / "batch-0.jsonl.gz", [
        {"modelId": MODEL, "layer": SOURCE, "index": "2", "description": "cats <script>alert(1)</script>sitting", "explanationModelName": "gpt-4o-mini", "typeName": "oai_token-act-pair", "scoreV1": 0.5},
        {"id": "e4", "modelId": MODEL, "layer": SOURCE, "index": "4", "authorId": "u", "description": "warmth", "embedding": None,
         "typeName": None, "explanationModelName": None, "umap_x": UMAP_4[0], "umap_y": UMAP_4[1], "umap_cluster": UMAP_4[2], "umap_log_feature_sparsity": -1.0},
    ])
    (sae / "skipped_indexes.json").write_text(json.dumps({"skipped_indexes": [3]}))
    return root


def write_manifest(content: Path, export: Path) -> Path:
    (content / "releases").mkdir(parents=True, exist_ok=True)
    path = content / "releases" / "jb-mirror.yaml"
    path.write_text(f"release: jb-mirror\ntitle: A mirror\nsource:\n  neuronpedia_export: {export}\n")
    return path


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mirror")
    export = write_export(tmp / "export")
    write_manifest(tmp / "content", export)
    releases = load_content(tmp / "content")
    cache, site = tmp / "cache", tmp / "site"
    assert main(["compute", "--content", str(tmp / "content"), "--cache", str(cache), "--quiet"]) == 0
    render_site(releases, cache=cache, out=site, quiet=True)
    return releases, cache, site


def shard_records(site: Path) -> dict[int, dict]:
    out = {}
    for path in sorted((site / MODEL / SOURCE / "data" / "f").glob("*.js")):
        text = path.read_text()
        args = orjson.loads("[" + text[text.index("(") + 1 : -3] + "]")
        out.update({rec["i"]: rec for rec in args[1]})
    return out


def test_the_manifest_names_the_exports_model_and_sets(mirrored):
    (release,) = mirrored[0]
    assert release.model.id == MODEL
    assert [(s.id, [x.layer for x in s.saes]) for s in release.sets] == [("res-jb", [6])]


def test_no_torch_is_imported_by_import_build_and_render(tmp_path):
    import subprocess

    export = write_export(tmp_path / "export")
    write_manifest(tmp_path / "content", export)
    cache, content, out = str(tmp_path / "c"), str(tmp_path / "content"), str(tmp_path / "site")
    code = (
        "import sys; from sae_atlas.cli import main; "
        f"assert main(['import', 'neuronpedia', {str(export)!r}, '--cache', {cache!r}, '--quiet']) == 0; "
        f"assert main(['build', '--content', {content!r}, '--cache', {cache!r}, '--out', {out!r}, '--quiet']) == 0; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_site_has_the_sae_pages(mirrored):
    site = mirrored[2]
    for page in ("index.html", "jb-mirror/index.html", f"{MODEL}/res-jb/index.html", f"{MODEL}/{SOURCE}/index.html"):
        assert (site / page).is_file(), page
    page = (site / MODEL / SOURCE / "index.html").read_text()
    assert "blocks.6.hook_resid_pre" in page
    assert 'href="https://www.neuronpedia.org/gpt2-small/6-res-jb"' in page  # where it is mirrored from


def test_the_record_holds_the_rows_numbers(mirrored):
    releases, cache, _ = mirrored
    for row in FEATURES:
        i = int(row["index"])
        rec = dump_feature(releases, cache, f"{SAE}:{i}")
        assert rec["max_activation"] == pytest.approx(row["maxActApprox"])
        assert rec["density"] == pytest.approx(row["frac_nonzero"])
        top = sorted((r for r in ACTIVATIONS[i] if r["binMin"] == -1), key=lambda r: -r["maxValue"])
        assert [e["activation"] for e in rec["top_examples"]] == pytest.approx([r["maxValue"] for r in top])
        for e, r in zip(rec["top_examples"], top):
            p, before = r["maxValueTokenIndex"], 24
            start, stop = max(0, p - before), min(len(r["tokens"]), p + 9)
            assert e["position"] == p
            assert e["token_strings"][: stop - start] == r["tokens"][start:stop]
            assert e["activations"][: stop - start] == pytest.approx(r["values"][start:stop], abs=1e-2)
        samples = [r for r in ACTIVATIONS[i] if r["binMin"] != -1]
        got = [e for group in rec.get("interval_examples", []) for e in group["examples"]]
        assert sorted(e["activation"] for e in got) == pytest.approx(sorted(r["maxValue"] for r in samples))
        for e in got:  # each sample sits in the interval holding its activation
            group = next(g for g in rec["interval_examples"] if e in g["examples"])
            assert group["lo"] < e["activation"] <= group["hi"] + 1e-6
        assert [(x["token_string"], x["value"]) for x in rec["positive_logits"]] == [(t, pytest.approx(v)) for t, v in zip(row["pos_str"], row["pos_values"])]
        assert [(x["token_string"], x["value"]) for x in rec["negative_logits"]] == [(t, pytest.approx(v)) for t, v in zip(row["neg_str"], row["neg_values"])]
        expected_nb = [(j, c) for j, c in zip(row["topkCosSimIndices"], row["topkCosSimValues"]) if j != i]
        assert [(x["index"], x["cosine"]) for x in rec["neighbours"]] == [(j, pytest.approx(c)) for j, c in expected_nb]
        x, y, cluster = (row["umap_x"], row["umap_y"], row["umap_cluster"]) if "umap_x" in row else UMAP_4
        assert (rec["umap"]["x"], rec["umap"]["y"], rec["umap"]["cluster"]) == (pytest.approx(x), pytest.approx(y), cluster)


def test_the_dead_features_have_nothing(mirrored):
    releases, cache, site = mirrored
    for i in (3, 5):  # in skipped_indexes.json; past the last row, within saelensConfig's d_sae
        rec = dump_feature(releases, cache, f"{SAE}:{i}")
        assert rec["max_activation"] == 0 and rec["density"] == 0 and rec["top_examples"] == []
        assert shard_records(site)[i]["max"] == 0
    assert "6 features" in (site / MODEL / SOURCE / "index.html").read_text()


def test_what_the_rows_lack_is_absent_not_an_error(mirrored):
    records = shard_records(mirrored[2])
    assert sorted(records) == [0, 1, 2, 3, 4, 5]
    for rec in records.values():
        for key in ("hist", "cf", "cn", "al", "lh", "dfa", "loss"):
            assert key not in rec
    assert records[1]["nb"] == []
    assert [j for j, _ in records[0]["nb"]] == [2, 4]


def test_the_exports_explanations_show_with_their_model_and_score(mirrored):
    rec = shard_records(mirrored[2])[2]
    (expl,) = rec["expl"]
    assert expl["author"] == "gpt-4o-mini · oai_token-act-pair" and expl["score"] == pytest.approx(0.5)
    assert expl["scores"] == [["scoreV1", 0.5]]
    assert "<script" not in expl["html"] and "cats" in expl["html"]


def test_the_map_uses_the_rows_umap_coordinates(mirrored):
    text = (mirrored[2] / MODEL / SOURCE / "data" / "summary.js").read_text()
    summary = orjson.loads(text[text.index("(") + 1 : -3])
    xs = [1.0, 2.0, 3.0, 0.0, UMAP_4[0], 0.0]  # 3 and 5 are dead (0); feature 4's from its explanation row
    lo, hi = min(xs), max(xs)
    assert summary["x"] == pytest.approx([(x - lo) / (hi - lo) for x in xs], abs=1e-3)


def test_check_accepts_the_manifest(mirrored, tmp_path):
    export = write_export(tmp_path / "export")
    write_manifest(tmp_path / "content", export)
    assert main(["check", "--content", str(tmp_path / "content")]) == 0


# -- bad input --------------------------------------------------------------------------------------


def corrupt(tmp_path: Path, rows: list[str], folder: str = "features") -> tuple[Path, Path]:
    """An export whose `folder/batch-1.jsonl.gz` holds the raw `rows`; (its manifest, that file)."""
    export = write_export(tmp_path / "export")
    target = export / MODEL / SOURCE / folder / "batch-1.jsonl.gz"
    target.write_bytes(gzip.compress("\n".join(rows).encode() + b"\n"))
    return write_manifest(tmp_path / "content", export), target


def import_problems(manifest: Path, cache: Path) -> list[str]:
    with pytest.raises(InputError) as e:
        import_release(load_release(manifest), cache, quiet=True)
    assert not cache.exists() or not any(cache.rglob("meta.json")), "a partial cache entry was written"
    return [str(p) for p in e.value.problems]


def test_a_bad_json_line_is_reported_at_its_line_and_column(tmp_path):
    good = json.dumps(FEATURES[2])
    bad = '{"modelId": "gpt2-small", "index": }'
    manifest, target = corrupt(tmp_path, [good, bad])
    # The column of the "}" where a value was expected (36), counted by hand.
    assert bad.index("}") + 1 == 36
    assert import_problems(manifest, tmp_path / "cache") == [f"{target}:2:36: invalid JSON (Expecting value); expected one object per line"]


def test_a_missing_field_and_a_wrong_type_are_reported_each(tmp_path):
    missing = dict(FEATURES[2])
    del missing["maxActApprox"]
    wrong = {**FEATURES[3], "frac_nonzero": "0.2"}
    line = json.dumps(wrong)
    manifest, target = corrupt(tmp_path, [json.dumps(missing), line])
    assert import_problems(manifest, tmp_path / "cache") == [
        f'{target}:1:1: feature row lacks "maxActApprox"; expected a number',
        f'{target}:2:{line.index(chr(34) + "frac_nonzero") + 1}: "frac_nonzero" is str; expected a number',
    ]


def test_an_activation_row_with_a_bad_peak_is_reported(tmp_path):
    row = {**ACTIVATIONS[4][0], "maxValueTokenIndex": 40}
    line = json.dumps(row)
    manifest, target = corrupt(tmp_path, [line], "activations")
    assert import_problems(manifest, tmp_path / "cache") == [
        f'{target}:1:{line.index(chr(34) + "maxValueTokenIndex") + 1}: "maxValueTokenIndex" 40 is outside the 12 tokens; expected a token index'
    ]


def test_an_example_is_its_qualifying_token_and_keeps_its_attribution(tmp_path):
    """Neuronpedia's rows name the example's own token (qualifyingTokenIndex), which need not be
    the row's peak; its direct feature attribution (dfaValues) targets that token."""
    export = write_export(tmp_path / "export")
    source = export / MODEL / SOURCE / "source.jsonl"
    row = json.loads(source.read_text())
    row["saelensConfig"]["hook_name"] = "blocks.6.attn.hook_z"  # DFA is shown for attention SAEs
    source.write_text(json.dumps(row) + "\n")
    values = [0.0, 0.5, 0.0, 2.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # qualifying 2.0 at 3, peak 3.0 at 5
    dfa = [0.25, -0.5, 0.0, 1.5] + [0.0] * 8
    mine = {**activation_row(1, TOKENS, values), "qualifyingTokenIndex": 3, "dfaValues": dfa, "dfaTargetIndex": 3, "dfaMaxValue": 1.5}
    rows = [r for i in sorted(ACTIVATIONS) for r in ACTIVATIONS[i]][3:]
    write_gz(export / MODEL / SOURCE / "activations" / "batch-1.jsonl.gz", [mine if r["index"] == "1" else r for r in rows])
    write_manifest(tmp_path / "content", export)
    (release,) = load_content(tmp_path / "content")
    import_release(release, tmp_path / "c", quiet=True)
    (e,) = dump_feature([release], tmp_path / "c", f"{SAE}:1")["top_examples"]
    assert (e["position"], e["activation"]) == (3, 2.0)
    assert e["token_strings"] == TOKENS and e["activations"] == values and e["dfa"] == dfa  # 24 tokens before: the whole row
    other = dump_feature([release], tmp_path / "c", f"{SAE}:2")["top_examples"][0]  # a row without DFA: zeros
    assert other["dfa"] == [0.0] * 10  # its peak at 1 and the 8 tokens after it


def test_an_activation_row_with_a_bad_qualifying_token_is_reported(tmp_path):
    line = json.dumps({**ACTIVATIONS[4][0], "qualifyingTokenIndex": 12})
    manifest, target = corrupt(tmp_path, [line], "activations")
    assert import_problems(manifest, tmp_path / "cache") == [
        f'{target}:1:{line.index(chr(34) + "qualifyingTokenIndex") + 1}: "qualifyingTokenIndex" 12 is outside the 12 tokens; expected a token index'
    ]


def test_a_manifest_with_source_and_model_is_an_error(tmp_path):
    export = write_export(tmp_path / "export")
    path = write_manifest(tmp_path / "content", export)
    path.write_text(path.read_text() + "model: {id: x, transformer_lens: gpt2-small}\n")
    with pytest.raises(InputError) as e:
        load_release(path)
    assert [str(p) for p in e.value.problems] == [
        f"{path}:5:1: 'model' with 'source'; expected one of them: a mirrored release takes its model from the export"
    ]


def test_a_source_without_sae_folders_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    path = write_manifest(tmp_path / "content", tmp_path / "empty")
    with pytest.raises(InputError) as e:
        load_release(path)
    (problem,) = e.value.problems
    assert (problem.line, problem.col) == (4, 23) and "has no SAE folder" in problem.message


def test_a_delphi_run_named_by_the_manifest_shows_its_scores_on_the_mirror(tmp_path):
    export = write_export(tmp_path / "export")
    run = tmp_path / "delphi"
    (run / "explanations").mkdir(parents=True)
    (run / "explanations" / "layers.6_latent0.txt").write_text(json.dumps("cats"))
    (run / "scores" / "detection").mkdir(parents=True)
    rows = [{"prediction": True, "correct": True}, {"prediction": False, "correct": False}, {"prediction": True, "correct": True}, {"prediction": True, "correct": True}]
    (run / "scores" / "detection" / "layers.6_latent0.txt").write_text(json.dumps(rows))
    path = write_manifest(tmp_path / "content", export)
    path.write_text(path.read_text() + f"explanations: {run}\n")
    assert main(["check", "--content", str(tmp_path / "content")]) == 0
    assert main(["build", "--content", str(tmp_path / "content"), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "site"), "--quiet"]) == 0
    (expl,) = shard_records(tmp_path / "site")[0]["expl"]
    assert expl["author"] == "delphi" and expl["scores"] == [["detection", 0.75]]
    # A broken score file is a check error at its own position.
    (run / "scores" / "detection" / "layers.6_latent0.txt").write_text("[{")
    assert main(["check", "--content", str(tmp_path / "content")]) == 2


def test_a_mirror_can_have_lists_of_its_features(tmp_path):
    path = write_manifest(tmp_path / "content", write_export(tmp_path / "export"))
    path.write_text(path.read_text() + f"lists:\n  - {{id: picks, title: Picks, features: ['{SAE}:2', '{SAE}:0']}}\n")
    assert main(["build", "--content", str(tmp_path / "content"), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "site"), "--quiet"]) == 0
    text = (tmp_path / "site" / "jb-mirror" / "lists" / "picks.js").read_text()
    cards = orjson.loads(text[text.index("(") + 1 : -3])["features"]
    assert [(c["i"], c["max"]) for c in cards] == [(2, 8.0), (0, 5.0)]
    path.write_text(path.read_text().replace(f"'{SAE}:0'", f"'{MODEL}@7-res-jb:0'"))
    with pytest.raises(InputError) as e:
        load_release(path)
    assert "7-res-jb" in str(e.value)


def test_the_import_command_reports_bad_rows_and_exits_2(tmp_path, capsys):
    manifest, target = corrupt(tmp_path, ['{"modelId": 3}'])
    assert main(["import", "neuronpedia", str(tmp_path / "export"), "--cache", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'{target}:1:2: "modelId" is int; expected a string\n')
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("meta.json"))
    assert main(["import", "neuronpedia", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c")]) == 1


def test_the_python_api_imports_a_mirror_when_asked_to_compute(tmp_path):
    from sae_atlas import api

    write_manifest(tmp_path / "content", write_export(tmp_path / "export"))
    report = api.compute(tmp_path / "content", tmp_path / "c", quiet=True)
    assert report.cached == [SAE] and report.computed == []
    assert dump_feature(load_content(tmp_path / "content"), tmp_path / "c", f"{SAE}:2")["max_activation"] == 8.0


def test_two_layers_of_a_set_share_the_mirrors_corpus(tmp_path):
    import shutil

    export = write_export(tmp_path / "export")
    shutil.copytree(export / MODEL / SOURCE, export / MODEL / "7-res-jb")
    write_manifest(tmp_path / "content", export)
    (release,) = load_content(tmp_path / "content")
    assert [(s.id, [x.layer for x in s.saes]) for s in release.sets] == [("res-jb", [6, 7])]
    assert main(["build", "--content", str(tmp_path / "content"), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "site"), "--quiet"]) == 0
    assert (tmp_path / "site" / MODEL / "7-res-jb" / "index.html").is_file()
    a = dump_feature([release], tmp_path / "c", f"{SAE}:0")["top_examples"]
    b = dump_feature([release], tmp_path / "c", f"{MODEL}@7-res-jb:0")["top_examples"]
    n_rows = sum(len(rows) for rows in ACTIVATIONS.values())  # the first SAE's prompts come first
    assert [e["prompt"] + n_rows for e in a] == [e["prompt"] for e in b]
    assert [e["token_strings"] for e in a] == [e["token_strings"] for e in b]

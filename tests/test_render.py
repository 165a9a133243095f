"""The render stage: cache -> pages + data shards, escaped, sanitized, deterministic and atomic."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from sae_atlas.cache import CacheStore, corpus_key, sae_key
from sae_atlas.export.dump import dump_feature
from sae_atlas.errors import AtlasError
from sae_atlas.manifest import ComputeSettings, load_content
from sae_atlas.render import render_site, shards
from sae_atlas.render.markup import render_markdown, safe_href
from sae_atlas.render.sitemodel import neuronpedia_href
from tests import packed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import synthetic_release  # noqa: E402

HOSTILE = "</script><script>alert(1)</script>"
_BUILT: dict[str, tuple] = {}


def data_payload(path: Path) -> tuple[str, list]:
    """(function name, JSON arguments) of an `AtlasData.name(args);` data file."""
    text = path.read_bytes()
    assert text.startswith(b"AtlasData.") and text.endswith(b");\n"), path
    name = text[len(b"AtlasData.") : text.index(b"(")].decode()
    return name, orjson.loads(b"[" + text[text.index(b"(") + 1 : -3] + b"]")


def computed_site(tmp_path_factory) -> tuple[list, Path, Path]:
    """(releases, cache, site) of the fixture release, computed for real and rendered once per run."""
    if "computed" not in _BUILT:
        from sae_atlas.compute import ComputeOptions, compute_releases
        from tests.fixtures import build_fixture_content

        root = tmp_path_factory.mktemp("computed")
        releases = load_content(build_fixture_content(root))
        cache = root / "cache"
        compute_releases(releases, cache, ComputeOptions(device="cpu", quiet=True, pca_map=True))
        site = root / "site"
        render_site(releases, cache=cache, out=site, quiet=True)
        _BUILT["computed"] = (releases, cache, site)
    return _BUILT["computed"]


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    return computed_site(tmp_path_factory)


def _hostile_release(**overrides):
    settings = ComputeSettings(top_k=4, intervals=2, per_interval=2, histogram_bins=6, logits=3, neighbours=3,
                               context_before=3, context_after=2)
    kwargs = dict(
        n_saes=2, d_sae=40, prompts=24, context=10, vocab_size=300, settings=settings,
        description=f"Hello *world* {HOSTILE} <img src=x onerror=alert(2)> [bad](javascript:alert(3)) [ok](https://example.org)",
    )
    kwargs.update(overrides)
    release = synthetic_release.synthetic_release(**kwargs)
    return release, kwargs


@pytest.fixture()
def synthetic(tmp_path):
    """A small synthetic cache with hostile token strings, title, description and explanations."""

    release, kw = _hostile_release()
    expl = tmp_path / "explanations.jsonl"
    sae0 = release.saes()[0].id
    lines = [
        {"sae": sae0, "index": 3, "text": f"fires on **dogs** `{HOSTILE}` {HOSTILE}", "author": HOSTILE, "score": 0.5},
        {"sae": sae0, "index": 3, "text": "<img src=x onerror=alert(1)> [x](javascript:alert(1))", "author": "b", "score": None},
    ]
    expl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    release = dataclasses.replace(release, title=f"Title {HOSTILE}", explanations=expl,
                                  links=(("paper", "https://example.org/p"), ("evil", "javascript:alert(1)")))
    cache = tmp_path / "cache"
    synthetic_release.build_synthetic_cache(cache, release, kw["d_sae"], kw["vocab_size"])
    return release, cache


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- URL contract and data formats -----------------------------------------------------------------


def test_pages_exist_for_every_release_set_and_sae(computed):
    releases, cache, site = computed
    assert (site / "index.html").is_file() and (site / "search-index.js").is_file()
    for release in releases:
        assert (site / release.id / "index.html").is_file()
        for s in release.sets:
            assert (site / release.model.id / s.id / "index.html").is_file()
            for sae in s.saes:
                page = site / sae.model_id / f"{sae.layer}-{sae.set_id}"
                assert (page / "index.html").is_file()
                assert (page / "data" / "summary.js").is_file()
                assert (page / "data" / "f" / "0000.js").is_file()
    for name in ("style.css", "app.js", "theme.js"):
        assert (site / "static" / name).is_file()


def test_summary_names_the_mlp_neurons_of_an_mlp_out_sae_and_nothing_for_others(computed):
    """The feature view's neuron panes say "MLP neuron" when the summary names the neurons' hook:
    for an SAE on blocks.L.hook_mlp_out, whose entry correlated the MLP's neurons; no other."""
    releases, cache, site = computed
    store = CacheStore(cache)
    kinds = set()
    for spec in releases[0].saes():
        _, (summary,) = data_payload(site / spec.model_id / f"{spec.layer}-{spec.set_id}" / "data" / "summary.js")
        meta = store.sae_entry(sae_key(releases[0], spec)).meta
        if spec.hook == f"blocks.{spec.layer}.hook_mlp_out":
            assert summary["neurons"] == meta["neurons"] == f"blocks.{spec.layer}.mlp.hook_post", spec.id
        else:
            assert "neurons" not in summary and "neurons" not in meta, spec.id
        kinds.add("neurons" in summary)
    assert kinds == {True, False}


def test_shards_parse_and_match_the_cache(computed):
    releases, cache, site = computed
    release = releases[0]
    store = CacheStore(cache)
    vocab = store.vocab(corpus_key(release))
    for spec in release.saes():
        data = site / spec.model_id / f"{spec.layer}-{spec.set_id}" / "data"
        name, (summary,) = data_payload(data / "summary.js")
        assert name == "summary" and summary["sae"] == spec.id
        entry = store.sae_entry(sae_key(release, spec))
        d_sae = entry.meta["d_sae"]
        assert summary["d_sae"] == d_sae and len(summary["max"]) == d_sae and len(summary["label"]) == d_sae
        assert all(0 <= v <= 1 for v in summary["x"] + summary["y"])
        assert [layer["sae"] for layer in summary["layers"]] == sorted(
            (s.id for s in release.saes() if s.set_id == spec.set_id), key=lambda i: int(i.split("@")[1].split("-")[0])
        )
        seen = []
        for shard_file in sorted((data / "f").glob("*.js")):
            name, (shard, records) = data_payload(shard_file)
            assert name == "features" and shard_file.name == f"{shard:04d}.js"
            assert all(r["i"] // summary["shard_size"] == shard for r in records)
            seen += [r["i"] for r in records]
        assert seen == list(range(d_sae))

        index = int(np.argmax(entry["max_activation"]))
        _, (_, records) = data_payload(data / "f" / f"{index // summary['shard_size']:04d}.js")
        record = next(r for r in records if r["i"] == index)
        dumped = dump_feature(releases, cache, f"{spec.id}:{index}")
        assert record["max"] == pytest.approx(dumped["max_activation"], rel=1e-3)
        assert len(record["top"]) == len(dumped["top_examples"])
        assert packed.ints(record["hist"]) == dumped["histogram"]["counts"]
        assert [p[0] for p in record["pos"]] == [x["token_string"] for x in dumped["positive_logits"]]
        before = entry.meta["settings"]["context_before"]
        for ex, d in zip(record["top"], dumped["top_examples"]):
            prompt, position, activation, *pairs = ex
            assert (prompt, position) == (d["prompt"], d["position"])
            assert activation == pytest.approx(d["activation"], rel=1e-3)
            # (slot, q): token position - context_before + slot has activation * q / 100, q >= 1 if non-zero
            dense = {position - before + slot: activation * q / 100 for slot, q in zip(pairs[0::2], pairs[1::2])}
            dense[position] = activation
            window_start = max(0, d["position"] - before)
            for t, a in enumerate(d["activations"]):
                assert (window_start + t in dense) == (a != 0)
                assert dense.get(window_start + t, 0) == pytest.approx(a, rel=2e-3, abs=0.01 * abs(activation))
            # the prompt's token strings come from the corpus shards
            pps = summary["prompts_per_shard"]
            corpus_file = (data.parent / summary["corpus"] / f"{prompt // pps:04d}.js").resolve()
            name, (shard_no, prompts) = data_payload(corpus_file)
            assert name == "prompts" and shard_no == prompt // pps
            tokens = prompts[prompt % pps]
            assert tokens[window_start : window_start + len(d["token_strings"])] == d["token_strings"]
    assert len(vocab) > 0


def test_a_records_top_example_text_is_its_prompts_tokens_around_the_peak(computed):
    """`tt` (docs/ARCHITECTURE.md "Site") read with the documented code and vocab.js gives, for every
    top example, the cache corpus's tokens from position - text_context to position + text_context
    (clipped to the prompt), so that the feature view needs no prompt file to show them."""
    releases, cache, site = computed
    release = releases[0]
    store = CacheStore(cache)
    tokens = np.load(store.corpus_dir(corpus_key(release)) / "tokens.npy")
    vocab = store.vocab(corpus_key(release))
    checked = 0
    for spec in release.saes():
        data = site / spec.model_id / f"{spec.layer}-{spec.set_id}" / "data"
        _, (summary,) = data_payload(data / "summary.js")
        k = summary["text_context"]
        assert k == 5  # what an example row shows before it is widened (the ±5 of top_examples.js)
        name, (ranked,) = data_payload((data.parent / summary["corpus"] / "vocab.js").resolve())
        assert name == "vocab"
        for shard_file in sorted((data / "f").glob("*.js")):
            for record in data_payload(shard_file)[1][1]:
                if not record["top"]:
                    assert "tt" not in record
                    continue
                windows = packed.text(record["tt"], record["top"], k)
                for (prompt, position, *_), (lo, ranks, ended) in zip(record["top"], windows):
                    hi = min(tokens.shape[1] - 1, position + k)
                    assert lo == max(0, position - k)
                    assert [ranked[r] for r in ranks] == [vocab[t] for t in tokens[prompt, lo : hi + 1]]
                    assert ended == (hi == tokens.shape[1] - 1)
                    checked += 1
    assert checked > 50


def test_cross_layer_neighbours_link_adjacent_layers(computed):
    releases, cache, site = computed
    data = site / "tiny-2l" / "0-res-st" / "data"
    _, (_, records) = data_payload(data / "f" / "0000.js")
    xnb = [x for r in records for x in r["xnb"]]
    assert xnb, "the fixture's res-st set has layers 0 and 1"
    _, (summary,) = data_payload(data / "summary.js")
    for layer, index, cosine in xnb:
        target = summary["layers"][layer]
        assert target["sae"] == "tiny-2l@1-res-st"
        assert (data.parent / target["href"]).resolve() == (site / "tiny-2l" / "1-res-st" / "index.html").resolve()
        assert isinstance(index, int) and -1 <= cosine <= 1


def test_explanations_are_sanitized_markdown_in_records_and_text_in_summary(computed):
    releases, cache, site = computed
    release = releases[0]
    explained = {}
    for line in release.explanations.read_text().splitlines():
        row = json.loads(line)
        explained.setdefault((row["sae"], row["index"]), row)
    (sae_id, index), row = sorted(explained.items())[0]
    sae = next(s for s in release.saes() if s.id == sae_id)
    data = site / sae.model_id / f"{sae.layer}-{sae.set_id}" / "data"
    _, (summary,) = data_payload(data / "summary.js")
    assert summary["expl"][index]
    _, (_, records) = data_payload(data / "f" / f"{index // summary['shard_size']:04d}.js")
    record = next(r for r in records if r["i"] == index)
    assert record["expl"] and "<script" not in record["expl"][0]["html"]


# --- escaping and sanitizing -----------------------------------------------------------------------


def test_hostile_strings_are_escaped_in_data_and_pages(synthetic, tmp_path):
    release, cache = synthetic
    out = tmp_path / "site"
    render_site([release], cache=cache, out=out, quiet=True)
    for path in out.rglob("*"):
        if not path.is_file() or path.parts[len(out.parts)] == "static":
            continue
        text = path.read_bytes()
        assert b"<script>alert" not in text, path
        assert b"onerror" not in text and b"javascript:" not in text, path
        if path.suffix == ".js":
            for raw in (b"<", b">", b"&", "\u2028".encode(), "\u2029".encode()):
                assert raw not in text, (path, raw)
            data_payload(path)  # still valid JSON
    # the strings survive, escaped: token strings in the corpus shards, the author in feature records
    corpus_text = b"".join(p.read_bytes() for p in (out / "corpus").rglob("*.js"))
    assert b"\\u003c/script\\u003e\\u003cscript\\u003e" in corpus_text
    index_html = (out / "index.html").read_text()
    assert "Title &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in index_html
    release_html = (out / release.id / "index.html").read_text()
    assert '<a href="https://example.org" rel="noopener noreferrer">ok</a>' in release_html
    assert "<em>world</em>" in release_html


def test_explanations_from_the_manifest_are_sanitized(synthetic, tmp_path):
    release, cache = synthetic
    out = tmp_path / "site"
    render_site([release], cache=cache, out=out, quiet=True)
    sae = release.saes()[0]
    data = out / sae.model_id / f"{sae.layer}-{sae.set_id}" / "data"
    _, (summary,) = data_payload(data / "summary.js")
    assert summary["expl"][3] == f"fires on dogs {HOSTILE}"  # plain text; escaped in the file
    _, (_, records) = data_payload(data / "f" / f"{3 // summary['shard_size']:04d}.js")
    expl = next(r for r in records if r["i"] == 3)["expl"]
    assert expl[0]["html"].startswith("<p>fires on <strong>dogs</strong> <code>&lt;/script&gt;&lt;script&gt;")
    assert expl[0]["author"] == HOSTILE  # text for textContent; escaped in the file
    for e in expl:
        assert "<script" not in e["html"] and "onerror" not in e["html"] and "javascript:" not in e["html"]


def test_lone_surrogates_and_nul_in_token_strings_become_replacement_characters(synthetic, tmp_path):
    release, cache = synthetic
    vocab = shards.load_vocab(str(CacheStore(cache).corpus_dir(corpus_key(release))))
    assert vocab[6] == "\ufffd" and vocab[7] == "\ufffd"  # "\ud800" and "\x00" in HOSTILE_TOKENS
    assert all("\x00" not in s and not any(0xD800 <= ord(c) <= 0xDFFF for c in s) for s in vocab)


def test_markdown_is_sanitized_with_a_strict_allow_list():
    html = str(render_markdown(
        "# T\n\n<script>alert(1)</script><iframe src=x></iframe><img src=x onerror=alert(1)>"
        "<a href=\"javascript:alert(1)\">j</a> [d](data:text/html,x) [m](mailto:a@b.c) [r](../x.html)"
        " <span style=\"color:red\" onclick=\"x()\">s</span>"
    ))
    for bad in ("<script", "alert(1)</", "<iframe", "<img", "onerror", "javascript:", "data:", "style=", "onclick"):
        assert bad not in html, bad
    assert 'href="mailto:a@b.c"' in html and 'href="../x.html"' in html and "<h1>T</h1>" in html
    assert safe_href("javascript:alert(1)") is None and safe_href("JaVaScRiPt:x") is None
    assert safe_href("https://a.org/x") == "https://a.org/x" and safe_href("docs/x.html") == "docs/x.html"


def test_json_escaping_and_rounding():
    assert shards.to_json(["</script>&\u2028\u2029"]) == b'["\\u003c/script\\u003e\\u0026\\u2028\\u2029"]'
    values = np.array([1.23456, -0.000123456, 123456.7, 0.0, np.float16(1.2998046875), 1e-9], dtype=np.float64)
    assert shards.round_sig(values).tolist() == [1.235, -0.0001235, 123500.0, 0.0, 1.3, 1e-9]
    assert orjson.dumps(shards.round_sig(np.float32([0.1, 2.675])).tolist()) == b"[0.1,2.675]"


# --- determinism, atomicity, errors ----------------------------------------------------------------


def test_two_renders_are_byte_identical(synthetic, tmp_path):
    release, cache = synthetic
    render_site([release], cache=cache, out=tmp_path / "a", quiet=True)
    render_site([release], cache=cache, out=tmp_path / "b", quiet=True, workers=2)
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")


def test_a_render_failing_midway_leaves_the_previous_site_unchanged(synthetic, tmp_path, monkeypatch):
    release, cache = synthetic
    out = tmp_path / "site"
    render_site([release], cache=cache, out=out, quiet=True)
    (out / "marker.txt").write_text("previous site")
    before = _snapshot(out)
    calls = []

    def failing(job, root):
        calls.append(job.sae_id)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(job, root)

    original = shards.write_sae_data
    monkeypatch.setattr(shards, "write_sae_data", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        render_site([release], cache=cache, out=out, quiet=True)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cache", "site", "explanations.jsonl"])


def test_missing_cache_entry_names_the_sae_and_says_to_compute(synthetic, tmp_path):
    release, cache = synthetic
    import shutil

    spec = release.saes()[1]
    shutil.rmtree(CacheStore(cache).sae_dir(sae_key(release, spec)))
    with pytest.raises(AtlasError) as e:
        render_site([release], cache=cache, out=tmp_path / "site", quiet=True)
    assert spec.id in str(e.value) and "sae-atlas compute" in str(e.value)
    assert not (tmp_path / "site").exists()


def test_render_does_not_import_torch(computed, tmp_path):
    releases, cache, site = computed
    content = releases[0].source.parent.parent
    code = (
        "import sys\n"
        "from sae_atlas.cli import main\n"
        f"rc = main(['render', '--quiet', '--content', {str(content)!r}, '--cache', {str(cache)!r}, '--out', {str(tmp_path / 'site')!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'render imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert _snapshot(tmp_path / "site") == _snapshot(site)


# --- themes ----------------------------------------------------------------------------------------


def test_a_user_theme_overrides_one_template_and_one_static_file(synthetic, tmp_path):
    release, cache = synthetic
    theme = tmp_path / "theme"
    (theme / "templates").mkdir(parents=True)
    (theme / "static").mkdir()
    (theme / "templates" / "index.html").write_text(
        '{% extends "base.html" %}{% block content %}<p class="custom-home">{{ releases | length }} custom</p>{% endblock %}'
    )
    (theme / "static" / "style.css").write_text("body { color: hotpink; }\n")
    out = tmp_path / "site"
    render_site([release], cache=cache, out=out, theme=theme, quiet=True)
    assert '<p class="custom-home">1 custom</p>' in (out / "index.html").read_text()
    assert (out / "static" / "style.css").read_text() == "body { color: hotpink; }\n"
    assert (out / "static" / "app.js").read_bytes() == _joined(_default_parts())
    # the other templates still come from the default theme
    assert "Sets and SAEs" in (out / release.id / "index.html").read_text()


DEFAULT_APP = ROOT / "themes" / "default" / "static" / "app"
# The documented load order of static/app.js (docs/ARCHITECTURE.md, "Front end").
APP_ORDER = ["core.js", "charts.js", "search.js", "map.js", "list.js", "lookup.js", "sae-page.js"]


# Parts outside the fixed order, loaded after it by path (docs/ARCHITECTURE.md, "Front end").
OTHER_PARTS = ["embed.js", "lists.js", "prompts.js"]


def _default_parts() -> list[tuple[str, Path]]:
    panes = sorted(p.name for p in (DEFAULT_APP / "panes").glob("*.js"))
    names = APP_ORDER + OTHER_PARTS + ["panes/" + name for name in panes] + ["boot.js"]
    return [(name, DEFAULT_APP / name) for name in names]


def _joined(parts: list[tuple[str, Path]]) -> bytes:
    return b"".join(b"/* ---- app/" + name.encode() + b" ---- */\n" + path.read_bytes() for name, path in parts)


def test_app_js_is_the_default_parts_in_order_and_the_parts_are_not_copied(computed):
    releases, cache, site = computed
    parts = _default_parts()
    assert {name for name, _ in parts} == {p.relative_to(DEFAULT_APP).as_posix() for p in DEFAULT_APP.rglob("*.js")}
    assert (site / "static" / "app.js").read_bytes() == _joined(parts)
    assert not (site / "static" / "app").exists()


def test_a_theme_replaces_one_front_end_part_and_adds_a_pane(synthetic, tmp_path):
    release, cache = synthetic
    theme = tmp_path / "theme"
    (theme / "static" / "app" / "panes").mkdir(parents=True)
    logits = theme / "static" / "app" / "panes" / "logits.js"
    logits.write_text("Atlas.pane({name: 'logits', order: 50, render: function () { return null; }});  // theme logits\n")
    extra = theme / "static" / "app" / "panes" / "attribution.js"
    extra.write_text("Atlas.pane({name: 'attribution', order: 65, render: function () { return null; }});\n")
    out = tmp_path / "site"
    render_site([release], cache=cache, out=out, theme=theme, quiet=True)
    app = (out / "static" / "app.js").read_bytes()
    panes = sorted([p.name for p in (DEFAULT_APP / "panes").glob("*.js")] + ["attribution.js"])
    assert panes.index("attribution.js") == 2  # after activation.js and aligned_neurons.js, before correlated_features.js
    source = {"panes/logits.js": logits, "panes/attribution.js": extra}
    names = APP_ORDER + OTHER_PARTS + ["panes/" + name for name in panes] + ["boot.js"]
    expected = [(name, source.get(name, DEFAULT_APP / name)) for name in names]
    assert app == _joined(expected)
    assert b"// theme logits" in app and (DEFAULT_APP / "panes" / "logits.js").read_bytes() not in app
    assert not (out / "static" / "app").exists()


def test_a_theme_with_its_own_whole_app_js_keeps_it(synthetic, tmp_path):
    release, cache = synthetic
    theme = tmp_path / "theme"
    (theme / "static").mkdir(parents=True)
    (theme / "static" / "app.js").write_text("/* a theme's own front end */\n")
    out = tmp_path / "site"
    render_site([release], cache=cache, out=out, theme=theme, quiet=True)
    assert (out / "static" / "app.js").read_text() == "/* a theme's own front end */\n"


# --- serve -----------------------------------------------------------------------------------------


def test_serve_injects_live_reload_and_re_renders_on_theme_change(synthetic, tmp_path):
    import threading
    import urllib.request

    from sae_atlas.render.serve import LiveState, Watcher, make_server

    release, cache = synthetic
    out, theme = tmp_path / "site", tmp_path / "theme"
    (theme / "static").mkdir(parents=True)
    (theme / "static" / "extra.css").write_text("a {}\n")

    def render():
        render_site([release], cache=cache, out=out, theme=theme, quiet=True)

    render()
    live = LiveState()
    watcher = Watcher([theme], render, live)
    server = make_server(out, 0, live)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        page = urllib.request.urlopen(base + "index.html").read()
        assert b'<script src="/__atlas/live-reload.js"></script>\n</body>' in page
        assert b"__atlas" not in (out / "index.html").read_bytes()  # only the served copy has it
        assert urllib.request.urlopen(base + "__atlas/live-reload.js").read().startswith(b"/*")
        assert urllib.request.urlopen(base + "__atlas/version.js").read() == b"AtlasLive.version(1);\n"
        assert not watcher.check()
        (theme / "static" / "extra.css").write_text("a { color: red; }\n")
        assert watcher.check()
        assert urllib.request.urlopen(base + "static/extra.css").read() == b"a { color: red; }\n"
        assert urllib.request.urlopen(base + "__atlas/version.js").read() == b"AtlasLive.version(2);\n"
    finally:
        server.shutdown()
        server.server_close()


# --- dtype, hooks, registry links ------------------------------------------------------------------


def test_sae_keys_differ_per_dtype_and_default_to_float32():
    release, _ = _hostile_release()
    spec = release.saes()[0]
    keys = {dtype: sae_key(release, spec, dtype) for dtype in ("float32", "bfloat16", "float16")}
    assert len(set(keys.values())) == 3
    assert sae_key(release, spec) == keys["float32"]


def _move_to_dtype(cache: Path, release, dtype: str) -> None:
    """Re-file every SAE entry of a float32 cache as computed with `dtype` (meta included)."""
    store = CacheStore(cache)
    for spec in release.saes():
        src, dst = store.sae_dir(sae_key(release, spec)), store.sae_dir(sae_key(release, spec, dtype))
        src.rename(dst)
        meta = json.loads((dst / "meta.json").read_text())
        (dst / "meta.json").write_text(json.dumps({**meta, "dtype": dtype}))


def test_render_and_dump_use_the_entries_of_the_requested_dtype(synthetic, tmp_path):
    release, cache = synthetic
    _move_to_dtype(cache, release, "bfloat16")
    spec = release.saes()[0]
    with pytest.raises(AtlasError) as e:
        render_site([release], cache=cache, out=tmp_path / "site", quiet=True)
    assert spec.id in str(e.value) and "--dtype bfloat16" in str(e.value)
    with pytest.raises(AtlasError) as e:
        dump_feature([release], cache, f"{spec.id}:0", dtype="float16")
    assert "--dtype float16" in str(e.value) and "computed with --dtype bfloat16" in str(e.value)

    render_site([release], cache=cache, out=tmp_path / "site", quiet=True, dtype="bfloat16")
    page = (tmp_path / "site" / spec.model_id / f"{spec.layer}-{spec.set_id}" / "index.html").read_text()
    assert '<tr><th scope="row">dtype</th><td>bfloat16</td></tr>' in page
    assert dump_feature([release], cache, f"{spec.id}:0", dtype="bfloat16")["index"] == 0


def test_cli_render_and_dump_name_the_dtype_that_was_computed(computed, tmp_path):
    releases, cache, site = computed
    content = releases[0].source.parent.parent
    from tests.conftest import sae_atlas

    run = sae_atlas("render", "--quiet", "--content", content, "--cache", cache, "--out", tmp_path / "s", "--dtype", "bfloat16")
    assert run.returncode == 1 and "--dtype float32" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "s").exists()
    sae = releases[0].saes()[0]
    run = sae_atlas("dump", f"{sae.id}:0", "--content", content, "--cache", cache, "--dtype", "float16")
    assert run.returncode == 1 and "computed with --dtype float32" in run.stderr
    run = sae_atlas("dump", f"{sae.id}:0", "--content", content, "--cache", cache, "--dtype", "float32")
    assert run.returncode == 0 and json.loads(run.stdout)["sae"] == sae.id
    page = (site / sae.model_id / f"{sae.layer}-{sae.set_id}" / "index.html").read_text()
    assert '<tr><th scope="row">dtype</th><td>float32</td></tr>' in page


def test_sae_page_says_reads_and_writes_for_a_transcoder(synthetic, tmp_path):
    release, cache = synthetic
    store = CacheStore(cache)
    transcoder, plain = release.saes()
    entry = store.sae_dir(sae_key(release, transcoder))
    meta = json.loads((entry / "meta.json").read_text())
    meta.update(hook=transcoder.hook, hook_out=f"blocks.{transcoder.layer}.hook_mlp_out", architecture="transcoder")
    (entry / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "site"
    render_site([release], cache=cache, out=out, quiet=True)

    def page(spec):
        return (out / spec.model_id / f"{spec.layer}-{spec.set_id}" / "index.html").read_text()

    reads_writes = f"reads <code>{transcoder.hook}</code>, writes <code>blocks.{transcoder.layer}.hook_mlp_out</code>"
    assert page(transcoder).count(reads_writes) == 2  # the heading line and the configuration table
    assert f"reads <code>{plain.hook}</code>" in page(plain) and "writes" not in page(plain)


def _registry() -> dict:
    """SAELens's pretrained_saes.yaml, read directly."""
    import importlib.util

    import yaml

    (location,) = importlib.util.find_spec("sae_lens").submodule_search_locations
    return yaml.safe_load((Path(location) / "pretrained_saes.yaml").read_text())


def test_sae_pages_link_to_neuronpedia_where_the_registry_gives_an_id(tmp_path):
    settings = ComputeSettings(top_k=3, intervals=2, per_interval=2, logits=3, neighbours=3, context_before=2, context_after=1)
    # The synthetic release's SAEs are `sae_lens: {release: gpt2-small-res-jb, id: blocks.L.hook_resid_pre}`.
    release = synthetic_release.synthetic_release(
        n_saes=2, d_sae=8, prompts=6, context=8, vocab_size=50, settings=settings, model_id="gpt2-small", set_id="res-jb"
    )
    assert {s.sae_lens.release for s in release.saes()} == {"gpt2-small-res-jb"}
    cache, out = tmp_path / "cache", tmp_path / "site"
    synthetic_release.build_synthetic_cache(cache, release, d_sae=8, vocab_size=50)
    render_site([release], cache=cache, out=out, quiet=True)
    registry = {e["id"]: e for e in _registry()["gpt2-small-res-jb"]["saes"]}
    for spec in release.saes():
        expected = "https://www.neuronpedia.org/" + registry[spec.sae_lens.id]["neuronpedia"]
        page = (out / spec.model_id / f"{spec.layer}-{spec.set_id}" / "index.html").read_text()
        assert f'<a href="{expected}" rel="noopener">Neuronpedia</a>' in page
        assert expected.endswith(f"/gpt2-small/{spec.layer}-res-jb")
    # A release the registry does not know gets no link (nor does a local SAE).
    hostile, _ = _hostile_release()
    assert all(neuronpedia_href(s) is None for s in hostile.saes())
    assert neuronpedia_href(dataclasses.replace(release.saes()[0], sae_lens=None, path=tmp_path)) is None

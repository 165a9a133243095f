"""The SAE page front end on a small hand-made site that follows docs/ARCHITECTURE.md ("Site"),
independent of the render stage: templates rendered directly, data files written by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jinja2
import pytest

from sae_atlas.render import pages
from tests.browser import harness

pytestmark = pytest.mark.browser

THEME = Path(__file__).resolve().parents[2] / "themes" / "default"
SAE_ID = "tiny-2l@1-res-td"
N_FEATURES, SHARD_SIZE = 40, 8
N_PROMPTS, CONTEXT, PROMPTS_PER_SHARD = 32, 24, 4
CONTEXT_BEFORE, CONTEXT_AFTER = 6, 3
DEAD = 5
HOSTILE = '<img src=x onerror=alert(1)>'
VOCAB = [" the", " cat", "\n", " sat", HOSTILE, " on", "  ", "mat", "&amp;", "</script>", " dog", "."]


def _token(prompt: int, position: int) -> str:
    return VOCAB[(prompt * 7 + position * 3) % len(VOCAB)]


def _example(feature: int, k: int) -> list:
    """[prompt, position, activation, slot, q]: the token before the peak (window slot
    CONTEXT_BEFORE - 1) has half the peak's activation (q = 50 hundredths)."""
    prompt, position = (feature + k * 5) % N_PROMPTS, 8 + (feature + k) % 10
    peak = round(2.0 + feature / 10 - k * 0.1, 3)
    return [prompt, position, peak, CONTEXT_BEFORE - 1, 50]


def _record(i: int) -> dict:
    if i == DEAD:
        return {"i": i, "max": 0, "density": 0, "hist": [0] * 50, "pos": [], "neg": [],
                "nb": [], "xnb": [], "top": [], "intervals": [], "expl": []}
    top = [_example(i, k) for k in range(4)]
    return {
        "i": i, "max": top[0][2], "density": round(0.001 * (i + 1), 6),
        "hist": [max(0, 30 - b) for b in range(50)],
        "pos": [[" cat", 1.5], [HOSTILE, 0.9]], "neg": [[" dog", -1.1]],
        "nb": [[(i + 1) % N_FEATURES, 0.8], [(i + 2) % N_FEATURES, 0.5]],
        "xnb": [[0, 3, 0.7]],  # summary.layers[0], its feature 3
        "top": top,
        "intervals": [[_example(i, 9)], [], [_example(i, 8)]],  # thirds of [0, max]; the middle one empty
        "expl": [{"html": "<p>cats <strong>sitting</strong></p>", "author": "test", "score": 0.5}] if i % 2 == 0 else [],
    }


def _js(call: str, *args) -> str:
    return "AtlasData.%s(%s);\n" % (call, ",".join(json.dumps(a) for a in args))


def _render(env: jinja2.Environment, name: str, out: Path, **ctx) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(env.get_template(name).render(**ctx), encoding="utf-8")


def build_site(site: Path, theme: Path | None = None) -> Path:
    """The hand-made site; static/app.js is the default theme's parts joined, with `theme`'s over them."""
    shutil.copytree(THEME / "static", site / "static", ignore=lambda d, names: ["app"] if Path(d) == THEME / "static" else [])
    (site / "static" / "app.js").write_bytes(pages.app_js(theme))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(THEME / "templates")), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    _render(env, "base.html", site / "index.html", title="Home", root="", page_kind="home", crumbs=[])
    sae_dir = site / "tiny-2l" / "1-res-td"
    records = [_record(i) for i in range(N_FEATURES)]
    (sae_dir / "data" / "f").mkdir(parents=True)
    for shard in range(N_FEATURES // SHARD_SIZE):
        (sae_dir / "data" / "f" / f"{shard:04d}.js").write_text(
            _js("features", shard, records[shard * SHARD_SIZE:(shard + 1) * SHARD_SIZE]), encoding="utf-8")
    corpus = site / "corpus" / "k1"
    corpus.mkdir(parents=True)
    for shard in range(N_PROMPTS // PROMPTS_PER_SHARD):
        rows = [[_token(p, t) for t in range(CONTEXT)] for p in range(shard * PROMPTS_PER_SHARD, (shard + 1) * PROMPTS_PER_SHARD)]
        (corpus / f"{shard:04d}.js").write_text(_js("prompts", shard, rows), encoding="utf-8")
    summary = {
        "sae": SAE_ID, "d_sae": N_FEATURES, "shard_size": SHARD_SIZE, "corpus": "../../corpus/k1/",
        "prompts_per_shard": PROMPTS_PER_SHARD, "context_before": CONTEXT_BEFORE, "context_after": CONTEXT_AFTER,
        "max": [r["max"] for r in records], "density": [r["density"] for r in records],
        "x": [(i % 7) / 6 for i in range(N_FEATURES)], "y": [(i // 7) / 5 for i in range(N_FEATURES)],
        "cluster": [i % 3 for i in range(N_FEATURES)],
        "label": ["cat sat" if i != DEAD else "" for i in range(N_FEATURES)],
        "expl": ["cats sitting" if i % 2 == 0 else None for i in range(N_FEATURES)],
        "peak_tokens": [[_token(e[0], e[1]) for e in r["top"]] for r in records],
        "layers": [{"sae": "tiny-2l@0-res-td", "href": "../0-res-td/index.html"}],
    }
    (sae_dir / "data" / "summary.js").write_text(_js("summary", summary), encoding="utf-8")
    (site / "search-index.js").write_text(_js("search", {"docs": [
        {"id": "release:tiny-demo", "kind": "release", "title": "Tiny demo", "text": "tiny-2l", "href": "index.html"},
        {"id": "sae:" + SAE_ID, "kind": "sae", "title": SAE_ID, "text": "blocks.1.hook_resid_pre", "href": "tiny-2l/1-res-td/index.html"},
    ]}), encoding="utf-8")
    _render(env, "sae.html", sae_dir / "index.html", title=SAE_ID, root="../../", page_kind="sae",
            crumbs=[{"title": "Home", "href": "../../index.html"}, {"title": SAE_ID, "href": "index.html"}],
            sae={"id": SAE_ID, "model": "tiny-2l", "hook": "blocks.1.hook_resid_pre", "layer": 1,
                 "architecture": "standard", "d_sae": N_FEATURES, "dtype": "float32", "corpus": "stories"},
            stats={"l0": 3.5, "dead": 1, "dense": 0, "explained_variance": 0.9, "mse": 0.01, "ce_loss_delta": None},
            snippet='from sae_lens import SAE\nsae = SAE.load_from_disk("x")  # <not html>',
            links=[{"title": "paper", "href": "https://example.org"}],
            set_saes=[{"id": "tiny-2l@0-res-td", "href": "../0-res-td/index.html", "label": "L0"},
                      {"id": SAE_ID, "href": "index.html", "label": "L1"}])
    return sae_dir / "index.html"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frontend-site")
    build_site(root)
    return root


@pytest.fixture(scope="module")
def browser(site, chromium_browser):
    return chromium_browser  # the run's one Chromium: a second Playwright driver cannot start beside it


@pytest.fixture
def open_page(browser, site):
    pages = []

    def opener(path: str = "tiny-2l/1-res-td/index.html", base: str | None = None, **ctx):
        context = browser.new_context(**ctx)
        page = context.new_page()
        guard = harness.Guard(allowed_origin=base or "file://")
        guard.attach(page)
        page.goto((base or site.as_uri() + "/") + path)
        pages.append((context, guard))
        return page, guard

    yield opener
    for context, _ in pages:
        context.close()


def _ready(page) -> None:
    page.wait_for_selector("body[data-ready=true]")


def test_feature_permalink_opens_and_keys_step(open_page):
    page, guard = open_page("tiny-2l/1-res-td/index.html#12")
    _ready(page)
    page.wait_for_selector(".fv-examples .ex")
    assert page.text_content("#fv-title") == "Feature 12"
    assert page.locator(".fv-examples .ex").count() == 4
    assert page.locator(".fv-expl strong").text_content() == "sitting"
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#fv-title').textContent === 'Feature 13'")
    assert page.evaluate("() => location.hash") == "#13"
    page.keyboard.press("k")
    page.wait_for_function("() => document.querySelector('#fv-title').textContent === 'Feature 12'")
    page.click("#fv-next")
    page.wait_for_function("() => location.hash === '#13'")
    guard.assert_clean()


def test_a_fragment_navigation_shows_its_feature_once_and_back_returns(open_page):
    """popstate (fired during the navigation) and hashchange (queued after it) both arrive; one routes."""
    page, guard = open_page("tiny-2l/1-res-td/index.html#12")
    _ready(page)
    page.wait_for_selector(".fv-examples .ex")
    before = page.evaluate("() => Atlas.page.generation")
    # popstate routes synchronously, inside the assignment
    assert page.evaluate("() => { location.hash = '#20'; return document.querySelector('#fv-title').textContent; }") == "Feature 20"
    page.wait_for_timeout(300)  # the hashchange has fired by now
    assert page.evaluate("() => Atlas.page.generation") == before + 1
    page.wait_for_selector(".fv-examples .ex")
    page.go_back()
    page.wait_for_function("() => document.querySelector('#fv-title').textContent === 'Feature 12'")
    page.wait_for_timeout(300)
    assert page.evaluate("() => Atlas.page.generation") == before + 2
    guard.assert_clean()


def test_token_strings_are_text_never_markup(open_page):
    page, guard = open_page("tiny-2l/1-res-td/index.html#0")
    _ready(page)
    page.wait_for_selector(".fv-examples .ex")
    assert page.locator("#fv-body img").count() == 0
    chips = page.locator(".logit-table .tok-chip").all_text_contents()
    assert HOSTILE in chips
    text = page.locator(".fv-examples").text_content()
    assert HOSTILE in text and "</script>" in text
    assert page.text_content("#sae-snippet").endswith("# <not html>")
    guard.assert_clean()


def test_examples_shade_tokens_and_context_toggle_widens(open_page):
    page, guard = open_page("tiny-2l/1-res-td/index.html#3")
    _ready(page)
    page.wait_for_selector(".fv-examples .ex")
    first = page.locator(".fv-examples .ex").first
    assert first.locator(".tok-max").count() == 1
    assert first.locator(".tok-on").count() == 2
    narrow = first.locator(".tok").count()
    page.select_option(".ex-controls select", "16")
    wide = page.locator(".fv-examples .ex").first.locator(".tok").count()
    assert wide > narrow
    assert page.locator(".fv-examples .tok-unknown").count() > 0  # beyond the stored window
    page.select_option(".ex-controls select", "all")
    assert page.locator(".fv-examples .ex").first.locator(".tok").count() == CONTEXT_BEFORE + 1 + CONTEXT_AFTER
    # the empty middle third is left out; bounds are thirds of the max (2.3), highest first
    assert page.locator(".fv-intervals .interval-range").all_text_contents() == ["Activation 1.533 – 2.3", "Activation 0 – 0.7667"]
    guard.assert_clean()


def test_dead_feature_shows_no_activations(open_page):
    page, guard = open_page("tiny-2l/1-res-td/index.html#%d" % DEAD)
    _ready(page)
    page.wait_for_selector(".notice-dead")
    assert "No activations" in page.text_content(".notice-dead")
    assert page.locator(".fv-examples").count() == 0
    guard.assert_clean()


def test_list_filters_and_sorts(open_page):
    page, guard = open_page()
    _ready(page)
    page.fill("#list-filter", "cats sitting")
    page.wait_for_function("() => document.querySelector('#list-count').textContent.startsWith('20 of')")
    page.fill("#list-filter", "")
    page.click(".flist-head [data-sort=max]")
    page.wait_for_function("() => document.querySelector('.frow:not([hidden]) .col-idx').textContent === '39'")
    assert page.get_attribute(".flist-head [data-sort=max]", "aria-sort") == "descending"
    page.click(".frow:not([hidden]) >> nth=1")
    page.wait_for_function("() => location.hash === '#38'")
    guard.assert_clean()


def test_token_lookup_lists_features_peaking_on_token(open_page):
    page, guard = open_page()
    _ready(page)
    page.fill("#token-lookup", "DOG")  # case and the leading space are ignored
    page.wait_for_selector("#token-lookup-results li")
    assert "peak on" in page.text_content("#token-lookup-count")
    page.fill("#token-lookup", "\\n")  # a typed backslash-n finds the newline token
    page.wait_for_function("() => document.querySelector('#token-lookup-count').textContent.includes('peak on')")
    page.fill("#token-lookup", "zzz-not-a-token")
    page.wait_for_function("() => document.querySelector('#token-lookup-count').textContent.startsWith('No feature')")
    guard.assert_clean()


def test_map_hover_shows_tooltip_and_click_opens(open_page):
    page, guard = open_page(viewport={"width": 1300, "height": 900})
    _ready(page)
    page.locator("#map-canvas").scroll_into_view_if_needed()
    box = page.locator("#map-canvas").bounding_box()
    xy = page.evaluate("""() => { const m = AtlasData.page.map; return [m.sx(9), m.sy(9)]; }""")
    page.mouse.move(box["x"] + xy[0], box["y"] + xy[1])
    page.wait_for_selector("#map-tooltip:not([hidden])")
    assert page.text_content("#map-tooltip").startswith("#9")
    page.mouse.click(box["x"] + xy[0], box["y"] + xy[1])
    page.wait_for_function("() => location.hash === '#9'")
    page.select_option("#map-colour", "density")
    page.click("#map-zoom-in")
    guard.assert_clean()


def test_global_search_keyboard_navigates(open_page):
    page, guard = open_page()
    _ready(page)
    page.click("#global-search")
    page.keyboard.type("tiny demo")
    page.wait_for_selector(".search-result")
    page.keyboard.press("ArrowDown")
    assert page.get_attribute(".search-result >> nth=0", "aria-selected") == "true"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/index.html") and "tiny-2l" not in page.url
    guard.assert_clean()


def test_theme_toggle_persists(open_page):
    page, guard = open_page(color_scheme="light")
    _ready(page)
    page.click(".theme-toggle")
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    page.reload()
    _ready(page)
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    guard.assert_clean()


def test_works_under_a_server_sub_path(open_page, site):
    with harness.serve_site(site) as base:
        page, guard = open_page(base=base, path="tiny-2l/1-res-td/index.html#2")
        _ready(page)
        page.wait_for_selector(".fv-examples .ex")
        assert page.text_content("#fv-title") == "Feature 2"
        guard.assert_clean()


def test_packed_columns_read_back_what_the_render_stage_packed(open_page):
    """Atlas.unpackInts / unpackExampleValues / unpackText (the front end) against the render stage's
    packer (generator/render/packing.py), two implementations of docs/ARCHITECTURE.md's packed columns,
    over numbers of every code length (1 to 5 characters) and negative q."""
    from sae_atlas.render import packing

    page, guard = open_page()
    _ready(page)
    numbers = [0, 1, 59, 60, 61, 1799, 1800, 1801, 52259, 52260, 1_000_000, 10_000_000, 123_456_789]
    assert page.evaluate("s => Atlas.unpackInts(s)", packing.pack(numbers)) == numbers
    values = [[[0, 3, 32], [100, -5, -100]], [[], []], [[7], [1]]]
    assert page.evaluate("s => Atlas.unpackExampleValues(s)", packing.pack_example_values(values)) == values
    # tt: ranks of the tokens around each peak; '.' after a prompt's last token
    top = [[4, 1, 2.0], [9, 20, 1.5], [2, 6, 1.0]]
    windows = [[0, [5, 70, 2000, 0, 1, 2, 3], False], [15, [9] * 11, False], [1, [61, 62, 63, 64, 65, 66, 67], True]]
    tt = "".join(packing.pack(r) + ("." if ended else "") for _, r, ended in windows)
    assert page.evaluate("a => Atlas.unpackText(a[0], a[1], 5)", [tt, top]) == windows
    guard.assert_clean()


def test_an_example_row_over_a_partial_row_shows_only_what_it_has_every_token_of(open_page):
    """A row of some of a prompt's tokens (the record's text around its top examples' peaks): an example
    inside it is drawn, one reaching outside it says its text is unavailable (never blank tokens)."""
    page, guard = open_page()
    _ready(page)
    drawn = page.evaluate("""() => {
      const row = []; for (let t = 10; t <= 20; t++) row[t] = 'w' + t; row.length = 22; row.partial = true;
      const draw = (pos) => Atlas.exampleRow([3, pos, 1.0, 0, [], []], row, { max: 1, contextBefore: 6, contextAfter: 3, ctxMode: '5' });
      return [draw(15), draw(19), draw(30)].map(r => r.querySelector('.ex-text').textContent);
    }""")
    assert drawn[0] == "…" + "".join(f"w{t}" for t in range(10, 21)) + "…"
    assert drawn[1] == drawn[2] == "Text unavailable for prompt 3."
    guard.assert_clean()

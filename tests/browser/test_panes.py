"""The feature view's panes one by one, the token layers, and a theme's extra pane, on the hand-made site
of test_frontend_unit (templates rendered directly, data files written by hand). Each pane's render is
called in the page with a record written here, and what it returns is read back as text and classes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.browser import harness
from tests.browser import test_frontend_unit as site_kit

pytestmark = pytest.mark.browser

PAGE = "tiny-2l/1-res-td/index.html"
# A theme's extra pane, between the neighbours (60) and the top examples (70).
EXTRA_PANE = """Atlas.pane({
  name: 'extra', order: 65,
  render: function (page, rec, ctx) {
    if (ctx.dead) return null;
    var s = Atlas.section('Extra statistic', 'fv-extra');
    s.appendChild(Atlas.el('p', null, 'feature ' + rec.i));
    return s;
  }
});
"""
# A token layer registered by a page script after app.js: for features not divisible by 3, top example k
# gets -(k + 1) / 2 one token before its peak and k + 1 at the peak.
LAYER_SCRIPT = """Atlas.tokenLayer({
  name: 'test', label: 'Test layer', order: 10,
  values: function (rec, kind, k) {
    if (kind !== 'top' || rec.i % 3 === 0) return null;
    var ex = rec.top[k], out = {};
    out[ex[1] - 1] = -(k + 1) / 2;
    out[ex[1]] = k + 1;
    return out;
  }
});
"""
DEFAULT_PANES = [
    "activation", "explanations", "dead", "histogram", "density", "logit_histogram", "logits", "neighbours",
    "correlated_features", "correlated_neurons", "aligned_neurons", "top_examples", "intervals",
]

# Renders pane NAME for the record REC (ctx as the feature view computes it) into a detached <div>, or
# returns null when the pane renders nothing.
RENDER = """([name, rec]) => {
  const page = Atlas.page, pane = Atlas.panes().find(p => p.name === name);
  const ld = typeof rec.log_density === 'number' ? rec.log_density : (rec.density > 0 ? Math.log10(rec.density) : null);
  const ctx = { dead: !(rec.max > 0), logDensity: ld, gen: -1 };
  const node = pane.render(page, rec, ctx);
  if (!node) return null;
  const box = document.createElement('div');
  box.appendChild(node);
  window.__pane = { box: box, node: box.firstElementChild, rec: rec, ctx: ctx, pane: pane };
  return box.innerHTML;
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("panes-site")
    theme = root / "theme"
    (theme / "static" / "app" / "panes").mkdir(parents=True)
    (theme / "static" / "app" / "panes" / "extra.js").write_text(EXTRA_PANE, encoding="utf-8")
    out = root / "site"
    page = site_kit.build_site(out, theme=theme)
    (out / "static" / "test-layer.js").write_text(LAYER_SCRIPT, encoding="utf-8")
    html = page.read_text(encoding="utf-8")
    assert html.count("</body>") == 1
    page.write_text(html.replace("</body>", '<script src="../../static/test-layer.js"></script>\n</body>'), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def browser(site, chromium_browser):
    return chromium_browser  # the run's one Chromium: a second Playwright driver cannot start beside it


@pytest.fixture
def view(browser, site):
    """Opens the SAE page at a feature; yields (page, guard) and checks the guard afterwards."""
    opened = []

    def opener(feature: int = 1):
        context = browser.new_context()
        page = context.new_page()
        guard = harness.Guard(allowed_origin="file://")
        guard.attach(page)
        page.goto(site.as_uri() + f"/{PAGE}#{feature}")
        page.wait_for_selector("body[data-ready=true]")
        opened.append((context, guard))
        return page

    yield opener
    for context, guard in opened:
        guard.assert_clean()
        context.close()


def _render(page, name: str, rec: dict):
    return page.evaluate(RENDER, [name, rec])


def _texts(page, selector: str) -> list[str]:
    return page.evaluate("(sel) => Array.from(window.__pane.box.querySelectorAll(sel)).map(n => n.textContent)", selector)


def _live(**fields) -> dict:
    rec = {"i": 3, "max": 2.5, "density": 0.0045, "log_density": None, "hist": [], "pos": [], "neg": [], "nb": [],
           "xnb": [], "top": [], "intervals": [], "expl": []}
    rec.update(fields)
    return rec


DEAD_REC = {"i": site_kit.DEAD, "max": 0, "density": 0, "log_density": None, "hist": [0] * 50, "pos": [], "neg": [],
            "nb": [], "xnb": [], "top": [], "intervals": [], "expl": []}


def test_panes_are_registered_in_order_with_the_themes_pane_between(view):
    page = view()
    names = page.evaluate("() => Atlas.panes().map(p => p.name)")
    assert names == DEFAULT_PANES[:11] + ["extra"] + DEFAULT_PANES[11:]
    page.wait_for_selector(".fv-examples .ex")
    classes = page.evaluate("() => Array.from(document.querySelectorAll('#fv-body > *')).map(n => n.className)")
    assert classes == ["fv-facts", "fv-label", "fv-charts", "fv-two", "fv-two", "fv-section fv-extra",
                       "fv-section fv-examples", "fv-section fv-intervals"]
    assert page.text_content(".fv-extra p") == "feature 1"
    # the charts group holds both charts; the logits group both tables
    groups = page.evaluate("() => Array.from(document.querySelectorAll('#fv-body > div')).map(d => Array.from(d.children).map(c => c.className))")
    assert groups == [["fv-section chart", "fv-section chart"], ["fv-section logits logits-pos", "fv-section logits logits-neg"],
                          ["fv-section", "fv-section"]]


def test_activation_pane_shows_the_key_numbers(view):
    page = view()
    assert _render(page, "activation", _live()) is not None
    live = [0.001 * (i + 1) for i in range(site_kit.N_FEATURES) if i != site_kit.DEAD]
    percentile = round(100 * sum(math.log10(d) <= math.log10(0.0045) for d in live) / len(live))
    assert _texts(page, "dt") == ["Max activation", "Density", "Density percentile", "Cluster"]
    assert _texts(page, "dd") == ["2.5", "0.45%", f"{percentile}%", str(3 % 3)]
    # a dead feature still has its numbers, and no percentile
    _render(page, "activation", DEAD_REC)
    assert _texts(page, "dt") == ["Max activation", "Density", "Cluster"]
    assert _texts(page, "dd")[:2] == ["0", "0"]


def test_dead_pane_shows_only_for_a_dead_feature(view):
    page = view()
    assert _render(page, "dead", _live()) is None
    assert "No activations." in _render(page, "dead", DEAD_REC)


def test_explanations_pane_shows_cards_else_the_top_tokens_else_nothing(view):
    page = view()
    _render(page, "explanations", _live(expl=[{"html": "<p>one <em>x</em></p>", "author": "ann", "score": 0.25},
                                              {"html": "<p>two</p>"}]))
    assert _texts(page, ".expl-text") == ["one x", "two"]
    assert _texts(page, ".expl-meta") == ["ann · score 0.25"]
    _render(page, "explanations", _live())
    assert _texts(page, ".fv-label") == ["Top tokens: cat sat"]  # the summary's label of feature 3
    assert _render(page, "explanations", DEAD_REC) is None  # no explanation, no label


def test_explanations_pane_names_each_score_and_keeps_their_names_inert(view):
    page = view()
    hostile = "<img src=x onerror=alert(1)>"
    _render(page, "explanations", _live(expl=[{"html": "<p>cats</p>", "author": "delphi · llama", "score": 0.75,
                                               "scores": [["detection", 0.75], [hostile, 0.5]]}]))
    assert _texts(page, ".expl-meta") == [f"delphi · llama · detection 0.75 · {hostile} 0.5"]
    assert page.evaluate("() => window.__pane.box.querySelectorAll('img').length") == 0


def test_histogram_pane_draws_the_non_zero_bins(view):
    page = view()
    hist = [3, 0, 1, 2]
    _render(page, "histogram", _live(hist=hist))
    assert page.evaluate("() => window.__pane.box.querySelectorAll('rect.bar').length") == sum(1 for c in hist if c)
    assert _texts(page, ".chart-caption") == [f"{sum(hist)} non-zero activations"]
    assert _texts(page, "h3") == ["Activation histogram"]
    assert _render(page, "histogram", _live(hist=[])) is None
    assert _render(page, "histogram", DEAD_REC) is None


def test_density_pane_marks_this_feature(view):
    page = view()
    _render(page, "density", _live())
    assert _texts(page, "h3") == ["Density vs. this SAE"]
    assert _texts(page, ".marker-label") == ["this feature 0.45%"]
    assert _render(page, "density", DEAD_REC) is None


def test_logits_pane_shows_both_tables(view):
    page = view()
    _render(page, "logits", _live(pos=[[" up", 1.5], ["x", 0.25]], neg=[[" down", -1.125]]))
    assert _texts(page, "h3") == ["Positive logits", "Negative logits"]
    assert _texts(page, ".logit-table td.num") == ["+1.5", "+0.25", "-1.125"]
    assert _texts(page, ".tok-chip") == [" up", "x", " down"]
    _render(page, "logits", _live(neg=[[" down", -1.0]]))
    assert _texts(page, "h3") == ["Positive logits", "Negative logits"]  # an empty side still shows
    assert _render(page, "logits", _live()) is None


def test_neighbours_pane_links_this_sae_and_other_layers(view):
    page = view()
    _render(page, "neighbours", _live(nb=[[4, 0.75], [7, 0.5]], xnb=[["tiny-2l@0-res-td", "../0-res-td/index.html", 3, 0.625]]))
    assert _texts(page, "h3") == ["Decoder neighbours", "Other layers"]
    hrefs = page.evaluate("() => Array.from(window.__pane.box.querySelectorAll('a.nb-link')).map(a => a.getAttribute('href'))")
    assert hrefs == ["#4", "#7", "../0-res-td/index.html#3"]
    assert _texts(page, ".nb-cos") == ["0.75", "0.5", "0.625"]
    _render(page, "neighbours", _live(nb=[[4, 0.75]]))
    assert _texts(page, "h3") == ["Decoder neighbours"]
    assert _render(page, "neighbours", _live()) is None


def test_a_shard_record_is_decoded_into_the_form_the_panes_read(view):
    """docs/ARCHITECTURE.md "Site": examples [prompt, position, activation, slot, q, ...] with token
    position - context_before + slot at activation * q / 100; intervals as thirds etc. of [0, max]."""
    page = view()
    before = 6
    summary = {"context_before": before, "layers": [{"sae": "tiny-2l@0-res-td", "href": "../0-res-td/index.html"}]}
    raw = {"i": 7, "max": 3.0, "density": 0.001, "hist": [4, 1], "extra": [1, 2],
           "top": [[5, 3, 2.0, 4, 50, 8, 125], [9, 20, 1.5]],
           "intervals": [[[6, 10, 0.5, 0, 3]], [], []], "xnb": [[0, 4, 0.5]]}
    got = page.evaluate("([raw, S]) => Atlas.decodeRecord(raw, S)", [raw, summary])
    # peak at 3, window slot 0 is token 3 - 6 = -3: slots 4 and 8 are tokens 1 and 5; the window start clips to 0
    assert got["top"] == [[5, 3, 2.0, 0, [1, 5], [1.0, 2.5]], [9, 20, 1.5, 14, [], []]]
    assert got["intervals"] == [{"lo": 0, "hi": 1.0, "ex": [[6, 10, 0.5, 4, [0], [0.015]]]}]
    assert got["xnb"] == [["tiny-2l@0-res-td", "../0-res-td/index.html", 4, 0.5]]
    assert math.isclose(got["log_density"], math.log10(0.001)) and got["expl"] == []
    assert (got["i"], got["max"], got["density"], got["hist"], got["extra"]) == (7, 3.0, 0.001, [4, 1], [1, 2])
    dead = page.evaluate("([raw, S]) => Atlas.decodeRecord(raw, S)", [{"i": 1, "max": 0, "density": 0, "top": [], "intervals": []}, summary])
    assert dead["log_density"] is None and dead["top"] == [] and dead["intervals"] == [] and dead["xnb"] == []


def test_logit_histogram_pane_charts_the_vocabularys_logit_effects(view):
    page = view()
    counts = [2, 0, 5, 1]
    _render(page, "logit_histogram", _live(lh=[-1.5, 2.25, counts]))
    assert _texts(page, "h3") == ["Logit effects"]
    assert page.evaluate("() => window.__pane.box.querySelectorAll('rect.bar').length") == 3
    titles = page.evaluate("() => Array.from(window.__pane.box.querySelectorAll('rect.bar title')).map(t => t.textContent)")
    assert titles == ["-1.5 – -0.5625: 2", "0.375 – 1.313: 5", "1.313 – 2.25: 1"]  # bins over [min, max]
    assert _texts(page, ".chart-caption") == ["all 8 vocabulary tokens, -1.5 to 2.25"]
    assert _render(page, "logit_histogram", _live(lh=None)) is None
    assert _render(page, "logit_histogram", _live()) is None


def test_logit_histogram_sits_above_the_logit_tables(view):
    page = view()
    order = page.evaluate("() => Atlas.panes().map(p => [p.name, p.group || null])")
    names = [n for n, _ in order]
    assert names.index("logit_histogram") == names.index("logits") - 1
    assert dict(order)["logit_histogram"] is None  # its own full-width row, not a cell of the tables' grid


def test_correlated_features_pane_links_features_with_their_r(view):
    page = view()
    _render(page, "correlated_features", _live(cf=[[3, 0.875], [9, 0.25]]))
    assert _texts(page, "h3") == ["Correlated features"]
    hrefs = page.evaluate("() => Array.from(window.__pane.box.querySelectorAll('a.nb-link')).map(a => a.getAttribute('href'))")
    assert hrefs == ["#3", "#9"]
    assert _texts(page, ".nb-idx") == ["#3", "#9"]
    assert _texts(page, ".nb-label")[0] == "cat sat"  # the summary's label of feature 3
    assert _texts(page, ".nb-cos") == ["r 0.875", "r 0.25"]
    assert _render(page, "correlated_features", _live(cf=[])) is None
    assert _render(page, "correlated_features", _live()) is None


def test_correlated_and_aligned_neuron_panes_list_dimensions(view):
    page = view()
    _render(page, "correlated_neurons", _live(cn=[[12, 0.5], [700, -0.125]]))
    assert _texts(page, "h3") == ["Correlated neurons"]
    assert _texts(page, "th") == ["dimension", "r"]
    assert _texts(page, "td") == ["12", "0.5", "700", "-0.125"]
    _render(page, "aligned_neurons", _live(al=[[5, 0.25, 0.125], [2, -0.0625, 0.03125]]))
    assert _texts(page, "h3") == ["Neuron alignment"]
    assert _texts(page, "th") == ["dimension", "weight", "% of L1"]
    assert _texts(page, "td") == ["5", "+0.25", "12.5%", "2", "-0.0625", "3.125%"]
    assert page.evaluate("() => window.__pane.pane.group") == "correlations"
    assert page.evaluate("() => Atlas.groups.correlations") == "fv-two"
    for name, key in (("correlated_neurons", "cn"), ("aligned_neurons", "al")):
        assert _render(page, name, _live(**{key: []})) is None
        assert _render(page, name, _live()) is None


def test_neuron_panes_of_an_mlp_out_sae_say_they_list_the_mlps_neurons(view):
    page = view()
    page.evaluate("() => { Atlas.page.S.neurons = 'blocks.0.mlp.hook_post'; }")  # as summary.js has it for such an SAE
    try:
        _render(page, "correlated_neurons", _live(cn=[[12, 0.5], [700, -0.125]]))
        assert _texts(page, "th") == ["MLP neuron", "r"]
        assert _texts(page, "td") == ["12", "0.5", "700", "-0.125"]
        assert _texts(page, ".chart-caption") == ["neurons of the MLP (blocks.0.mlp.hook_post), by Pearson r with this feature"]
        _render(page, "aligned_neurons", _live(al=[[5, 0.25, 0.125]]))
        assert _texts(page, "h3") == ["Neuron alignment"]
        assert _texts(page, "th") == ["MLP neuron", "weight", "% of L1"]
        assert _texts(page, ".chart-caption") == ["neurons of the MLP (blocks.0.mlp.hook_post), by W_out row \u00b7 decoder direction"]
    finally:
        page.evaluate("() => { delete Atlas.page.S.neurons; }")
    _render(page, "correlated_neurons", _live(cn=[[12, 0.5]]))
    assert _texts(page, "th") == ["dimension", "r"] and _texts(page, ".chart-caption") == []


TOKENS = ["a", "b", " c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"]
# prompt 0, peak at 2 with 3.0, window from 1: offsets [0] -> position 1 at 1.5
EXAMPLE = [0, 2, 3.0, 1, [0], [1.5]]


def _tokens(page) -> list[dict]:
    return page.evaluate("""() => Array.from(window.__pane.box.querySelectorAll('.tok')).map(t => ({
        text: t.textContent, cls: t.className, a: t.style.getPropertyValue('--a'), title: t.title }))""")


def test_top_examples_pane_renders_its_rows_once_text_arrives(view):
    page = view()
    assert _render(page, "top_examples", DEAD_REC) is None
    assert _render(page, "top_examples", _live()) is None
    _render(page, "top_examples", _live(max=4.0, top=[EXAMPLE]))
    assert _texts(page, ".examples") == ["Loading text…"]
    assert page.evaluate("() => window.__pane.node.querySelectorAll('.ex-controls select').length") == 1  # no layer for feature 3
    page.evaluate("""(tokens) => { const p = window.__pane, page = Atlas.page;
        const fake = Object.assign(Object.create(page), { rowOf: (prompt) => prompt === 0 ? tokens : null, ctxMode: 'all' });
        p.pane.onText(fake, p.rec, p.node, p.ctx); }""", TOKENS)
    toks = _tokens(page)
    # the stored window: context_before tokens before the peak (clipped at 0) to context_after after it
    assert [t["text"] for t in toks] == TOKENS[0:2 + site_kit.CONTEXT_AFTER + 1]
    by = {t["text"]: t for t in toks}
    assert by["b"]["a"] == f"{1.5 / 4.0:.3f}" and "tok-on" in by["b"]["cls"] and "tok-hi" not in by["b"]["cls"]
    assert by[" c"]["a"] == f"{3.0 / 4.0:.3f}" and {"tok-on", "tok-hi", "tok-max"} <= set(by[" c"]["cls"].split())
    assert by["a"]["cls"] == "tok" and by["a"]["title"] == '"a" · 0'
    assert by["b"]["title"] == '"b" · 1.5'
    assert _texts(page, ".ex-meta") == ["prompt 0"]


def test_top_examples_show_each_text_as_its_prompt_arrives(view):
    """Rows whose prompt file has not come yet are pending (and marked loading); an arrival replaces
    only its own rows; a prompt whose file failed says so."""
    page = view()
    second = [1, 2, 2.0, 1, [], []]
    third = [2, 2, 1.0, 1, [], []]
    _render(page, "top_examples", _live(max=4.0, top=[EXAMPLE, second, third]))
    run = """([tokens, arrived]) => { const p = window.__pane;
        const fake = Object.assign(Object.create(Atlas.page), { ctxMode: 'all',
          rowOf: (prompt) => arrived.includes(prompt) ? (prompt === 2 ? null : tokens) : undefined });
        p.pane.onText(fake, p.rec, p.node, p.ctx);
        return Array.from(p.node.querySelectorAll('.examples .ex')); }"""
    page.evaluate(f"() => {{ window.__run = {run}; }}")
    page.evaluate("(a) => { window.__rows1 = window.__run(a); }", [TOKENS, [1]])
    assert _texts(page, ".ex-text") == ["Loading text…", "".join(TOKENS[0:2 + site_kit.CONTEXT_AFTER + 1]) + "…", "Loading text…"]
    assert page.evaluate("() => window.__pane.node.querySelectorAll('.examples .ex.loading').length") == 2
    page.evaluate("(a) => { window.__rows2 = window.__run(a); }", [TOKENS, [1, 2]])
    assert _texts(page, ".ex-text") == ["Loading text…", "".join(TOKENS[0:2 + site_kit.CONTEXT_AFTER + 1]) + "…",
                                        "Text unavailable for prompt 2."]
    # the rows already drawn are kept, the arrived one replaced in place
    assert page.evaluate("() => window.__rows1[0] === window.__rows2[0] && window.__rows1[1] === window.__rows2[1] "
                         "&& window.__rows1[2] !== window.__rows2[2]")
    page.evaluate("(a) => window.__run(a)", [TOKENS, [0, 1, 2]])
    assert page.evaluate("() => window.__pane.node.querySelectorAll('.loading').length") == 0
    assert _texts(page, ".ex-meta") == ["prompt 0", "prompt 1", "prompt 2"]


def test_intervals_pane_waits_for_its_text_then_lists_the_slices_highest_first(view):
    page = view()
    assert _render(page, "intervals", _live()) is None
    assert _render(page, "intervals", DEAD_REC) is None
    intervals = [{"lo": 0, "hi": 1.25, "ex": [EXAMPLE]}, {"lo": 1.25, "hi": 2.5, "ex": []}]
    _render(page, "intervals", _live(top=[EXAMPLE], intervals=intervals))
    run = """(ready) => { const p = window.__pane;
        const fake = Object.assign(Object.create(Atlas.page), { rowOf: () => null, intervalsReady: ready });
        p.pane.onText(fake, p.rec, p.node, p.ctx); }"""
    page.evaluate(run, False)
    assert _texts(page, ".pending") == ["Loading text…"]
    page.evaluate(run, True)
    assert _texts(page, ".interval-range") == ["Activation 1.25 – 2.5", "Activation 0 – 1.25"]
    assert _texts(page, ".interval .muted.small") == [" · 0 examples", "No tokens in this interval.", " · 1 example"]
    assert _texts(page, ".ex-text") == ["Text unavailable for prompt 0."]


def test_a_token_layer_shades_the_examples_by_its_signed_values(view):
    page = view(4)
    page.wait_for_selector(".fv-examples .ex .tok")
    shade = page.locator(".ex-controls select[aria-label='What the example tokens are shaded by']")
    assert shade.locator("option").all_text_contents() == ["Activation", "Test layer"]
    rec = page.evaluate("() => Atlas.page.rec")
    activation_classes = page.evaluate("() => Array.from(document.querySelectorAll('.fv-examples .ex .tok')).map(t => t.className)")
    shade.select_option("test")
    scale = max(k + 1 for k in range(len(rec["top"])))
    for k, ex in enumerate(rec["top"]):
        row = page.locator(".fv-examples .examples .ex").nth(k)
        toks = row.evaluate("""(row) => Array.from(row.querySelectorAll('.tok')).map(t => ({
            text: t.textContent, cls: t.className.split(' '), a: t.style.getPropertyValue('--a'), title: t.title }))""")
        lo = ex[1] - 5  # the default context: 5 tokens each side of the peak
        peak, before = toks[ex[1] - lo], toks[ex[1] - 1 - lo]
        assert "tok-on" in peak["cls"] and "tok-max" in peak["cls"] and peak["a"] == f"{max(0.06, (k + 1) / scale):.3f}"
        assert "tok-neg" in before["cls"] and before["a"] == f"{max(0.06, (k + 1) / 2 / scale):.3f}"
        assert before["title"].endswith(" · Test layer " + _fmt(-(k + 1) / 2))
        others = [t for n, t in enumerate(toks) if n not in (ex[1] - lo, ex[1] - 1 - lo)]
        assert all("tok-on" not in t["cls"] and "tok-neg" not in t["cls"] for t in others)
    # the interval samples have no values of this layer: unshaded
    assert page.locator(".fv-intervals .tok-on, .fv-intervals .tok-neg").count() == 0
    shade.select_option("activation")
    assert page.evaluate("() => Array.from(document.querySelectorAll('.fv-examples .ex .tok')).map(t => t.className)") == activation_classes


def test_the_shade_selector_is_absent_where_no_layer_has_values(view):
    page = view(3)
    page.wait_for_selector(".fv-examples .ex .tok")
    assert page.locator(".ex-controls select").count() == 1


def test_render_tokens_makes_clickable_tokens(view):
    page = view()
    clicked = page.evaluate("""(tokens) => {
        const box = document.createElement('div'), got = [];
        document.body.appendChild(box);
        Atlas.renderTokens(box, tokens, { lo: 1, hi: 3, values: { 2: 1 }, scale: 2, onToken: (t) => got.push(t) });
        const spans = box.querySelectorAll('.tok');
        spans[2].click();
        spans[0].dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' }));
        const out = { got: got, texts: Array.from(spans).map(s => s.textContent), roles: Array.from(spans).map(s => s.getAttribute('role')),
                      a: spans[1].style.getPropertyValue('--a') };
        box.remove();
        return out;
    }""", TOKENS)
    assert clicked == {"got": [3, 1], "texts": TOKENS[1:4], "roles": ["button"] * 3, "a": "0.500"}


def _fmt(v: float) -> str:
    """The front end's number format for values of a few significant digits."""
    return json.dumps(float(f"{v:.4g}")).removesuffix(".0")


# -- the per-example token layers (dfa.js, loss_effects.js) ----------------------------------------

# Prompt 0's example peaking at position 4 ("e"); its window starts at 0 (context_before 6).
LAYER_EXAMPLE = [0, 4, 3.0, 0, [3], [1.5]]
SHADE = "What the example tokens are shaded by"


def _layer_tokens(page, rec: dict, shade: str) -> dict:
    """The top examples pane of `rec` with the example text arrived and `shade` chosen: the shade
    selector's options and each shown token {text: {cls, a, title}}."""
    _render(page, "top_examples", rec)
    options = page.evaluate(f"""() => Array.from(window.__pane.node.querySelectorAll("select[aria-label='{SHADE}'] option"))
        .map(o => o.textContent)""")
    page.evaluate("""([tokens, shade]) => { const p = window.__pane, page = Atlas.page;
        const fake = Object.assign(Object.create(page), { rowOf: (prompt) => prompt === 0 ? tokens : null, ctxMode: 'all',
            shade: shade, layerCache: null });
        p.pane.onText(fake, p.rec, p.node, p.ctx); }""", [TOKENS, shade])
    return options, {t["text"]: {**t, "cls": set(t["cls"].split())} for t in _tokens(page)}


def test_dfa_layer_shades_the_source_tokens_and_marks_the_strongest(view):
    page = view()
    assert [l for l in page.evaluate("() => Atlas.tokenLayers().map(l => l.name)") if l != "test"] == ["dfa", "loss_effects"]
    rec = _live(max=4.0, top=[LAYER_EXAMPLE], dfa=[[[1, 2, 4], [0.5, -0.25, 2.0]]])
    options, by = _layer_tokens(page, rec, "dfa")
    assert options == ["Activation", "Attribution (DFA)"]
    assert [t for t in by] == TOKENS[0:8]
    assert "tok-on" in by["b"]["cls"] and by["b"]["a"] == f"{0.5 / 2.0:.3f}" and by["b"]["title"] == '"b" · 0 · Attribution (DFA) 0.5'
    assert "tok-neg" in by[" c"]["cls"] and by[" c"]["a"] == f"{0.25 / 2.0:.3f}"
    assert by[" c"]["title"] == '" c" · 0 · Attribution (DFA) -0.25'
    assert {"tok-on", "tok-max", "tok-layer-peak"} <= by["e"]["cls"] and by["e"]["a"] == "1.000"
    # Tokens without a value are not shaded, activation or not; only the strongest is marked.
    assert by["d"]["cls"] == {"tok"} and by["d"]["title"] == '"d" · 1.5'
    assert sum("tok-layer-peak" in t["cls"] for t in by.values()) == 1
    # By activation, no layer shading and no layer peak.
    _, plain = _layer_tokens(page, rec, "activation")
    assert "tok-on" in plain["d"]["cls"] and not any(t["cls"] & {"tok-neg", "tok-layer-peak"} for t in plain.values())


def test_loss_effects_layer_shades_helped_tokens_blue_and_hurt_ones_red(view):
    page = view()
    rec = _live(max=4.0, top=[LAYER_EXAMPLE], loss=[[[3, 4, 5], [0.2, -0.1, 0.05]]])
    options, by = _layer_tokens(page, rec, "loss_effects")
    assert options == ["Activation", "Loss effect"]
    assert "tok-helps" in by["d"]["cls"] and by["d"]["a"] == "1.000"
    assert by["d"]["title"] == '"d" · 1.5 · loss effect +0.2 (helps predict the next token)'
    assert "tok-hurts" in by["e"]["cls"] and by["e"]["a"] == "0.500" and "tok-max" in by["e"]["cls"]
    assert by["e"]["title"] == '"e" · 3 · loss effect -0.1 (hurts predicting the next token)'
    assert "tok-helps" in by["f"]["cls"] and by["f"]["a"] == "0.250"
    assert not any(t["cls"] & {"tok-on", "tok-neg", "tok-layer-peak"} for t in by.values())
    assert all(t["cls"] == {"tok"} for k, t in by.items() if k not in ("d", "e", "f"))
    # Both layers listed, in order, when the record has both columns.
    options, _ = _layer_tokens(page, {**rec, "dfa": [[[4], [1.0]]]}, "dfa")
    assert options == ["Activation", "Attribution (DFA)", "Loss effect"]


def test_example_values_are_percents_of_the_columns_scale(view):
    """docs/ARCHITECTURE.md "Site": `loss` holds [offsets, q] per top example, the value q / 100 * loss_s."""
    page = view()
    rec = {"top": [[5, 3, 2.0, 1, [], []], [9, 20, 1.5, 14, [], []]], "loss": [[[0, 2], [100, -25]], [[1], [50]]], "loss_s": 0.8}
    got = page.evaluate("(rec) => [0, 1, 2].map(k => Atlas.exampleValues('loss')(rec, 'top', k))", rec)
    assert got[0] == {"1": 0.8, "3": -0.2} and got[1] == {"15": 0.4} and got[2] is None
    # Without a scale (a theme's own column), the values are taken as they are.
    plain = page.evaluate("(rec) => Atlas.exampleValues('loss')(rec, 'top', 0)", {**rec, "loss_s": None})
    assert plain == {"1": 100, "3": -25}

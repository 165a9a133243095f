"""Hostile text executes nothing: a release whose corpus, token strings, manifest text, links and
explanations carry script tags, handler attributes, javascript: links, </script> breaks, template
syntax and odd Unicode is built and every page is opened from file:// in headless Chromium. No dialog,
console error, page error, outside request, handler attribute or javascript: URL may appear, and the
hostile strings must show as plain visible text where the site shows that text."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from tests.browser.harness import Guard
from tests.fixtures import SPECIAL_TOKEN, _json_ok, model_config

pytestmark = pytest.mark.browser

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
ATTR = '" onmouseover="alert(1)'
JS_URL = "javascript:alert(1)"
BREAK = "</script><script>alert(1)</script>"
TEMPLATE = "{{ 7*7 }}"
RTL, ZWSP, LSEP, PSEP = "\u202e", "\u200b", "\u2028", "\u2029"
HOSTILE = (SCRIPT, IMG, ATTR, JS_URL, BREAK, TEMPLATE)
ODD = (f"{RTL}gnp.exe{RTL}", f"zero{ZWSP}width", "nul\x00byte", f"line{LSEP}sep", f"para{PSEP}sep")

MODEL, RELEASE, SET = "evil-model", "hostile", "res"
HOOK = "blocks.{layer}.hook_resid_post"
SAE0, SAE1 = f"{MODEL}@0-{SET}", f"{MODEL}@1-{SET}"
# An attention-output SAE, so that the direct feature attribution layer is on the page too.
ATT_SET, ATT_HOOK = "att-z", "blocks.{layer}.attn.hook_z"
SAE_ATT = f"{MODEL}@1-{ATT_SET}"
TITLE = f"Atlas {SCRIPT} {ATTR} {TEMPLATE} {RTL}txet{ZWSP}"
SET_TITLE = f"Set {IMG} {BREAK}"
AUTHOR = f"Mallory {ATTR}"
LINK_NAME = f"paper {SCRIPT}"
LIST_TITLE = f"List {SCRIPT} {ATTR}"
EXPL_CODE = f"fires on **{SCRIPT}** and `{BREAK}` {IMG} [click]({JS_URL}) {TEMPLATE}"
CSP = 'http-equiv="Content-Security-Policy"'

# Every attribute or script in the DOM that could run code: on* handlers, javascript: URLs, inline scripts.
DANGEROUS_DOM = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const name = a.name.toLowerCase();
      const value = a.value.replace(/[\\s\\u0000-\\u001f]/g, '').toLowerCase();
      if (name.startsWith('on')) bad.push(`${el.tagName} ${a.name}=${a.value}`);
      if (['href', 'src', 'action', 'formaction', 'xlink:href', 'data'].includes(name) && /^(javascript|vbscript|data:text\\/html)/.test(value))
        bad.push(`${el.tagName} ${a.name}=${a.value}`);
    }
  }
  for (const s of document.scripts) if (!s.src) bad.push('inline script: ' + s.textContent.slice(0, 80));
  if (!document.querySelector('meta[http-equiv="Content-Security-Policy"]')) bad.push('no CSP meta tag');
  return bad;
}"""


# -- the hostile release --------------------------------------------------------------------------


def hostile_text(n_docs: int = 60, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "the cat sat on mat dog ran <b>bold</b> & \"quoted\" café".split()
    pieces = list(HOSTILE) * 3 + list(ODD) + words
    return "\n\n".join(" ".join(rng.choice(pieces) for _ in range(rng.randint(12, 24))) for _ in range(n_docs)) + "\n"


def make_model(directory: Path, text: str) -> None:
    """A random 2-layer model whose byte-level BPE tokenizer (no pre-split, so merges span spaces and
    punctuation) learns whole hostile strings as tokens."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=[SPECIAL_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKEN, eos_token=SPECIAL_TOKEN, unk_token=SPECIAL_TOKEN)
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**model_config(d_vocab=len(fast))))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.3)
    cfg = {k: v for k, v in model.cfg.to_dict().items() if _json_ok(v)}
    (directory / "config.json").write_text(json.dumps(cfg, sort_keys=True, default=str))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))


def make_hostile_content(root: Path) -> Path:
    from tests.fixtures import make_sae_dir

    content = root / "content"
    text = hostile_text()
    (content / "corpus").mkdir(parents=True)
    (content / "corpus" / "hostile.txt").write_text(text, encoding="utf-8")
    make_model(content / "models" / MODEL, text)
    for layer in (0, 1):
        make_sae_dir(content / f"saes/{SET}/{layer}", 16, 24, "standard", HOOK.format(layer=layer), seed=layer + 1)
    make_sae_dir(content / f"saes/{ATT_SET}/1", 16, 24, "standard", ATT_HOOK.format(layer=1), seed=5, hook_z=True)
    explanations = [
        {"sae": SAE0, "index": 1, "text": EXPL_CODE, "author": AUTHOR, "score": 0.9},
        # JSON escapes: a lone surrogate, NUL, separators, RTL override, zero-width space.
        {"sae": SAE0, "index": 2, "text": f"lone \ud800 nul \x00 {LSEP}{PSEP} {RTL}evil{ZWSP} `{SCRIPT}`", "author": "b", "score": None},
    ]
    lines = [json.dumps(e) for e in explanations]
    # Raw (unescaped) U+2028 / U+2029 inside a JSON line: legal JSON, and not a line break of a jsonl file.
    lines.append(json.dumps({"sae": SAE1, "index": 3, "text": f"raw{LSEP}line{PSEP}breaks `{ATTR}`", "author": SCRIPT, "score": 0.1}, ensure_ascii=False))
    (content / "explanations").mkdir()
    (content / "explanations" / "hostile.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = {
        "release": RELEASE,
        "title": TITLE,
        "description": (
            f"Intro {SCRIPT} {IMG} [click me]({JS_URL}) [ok](https://example.org/) "
            f'<a href="{JS_URL}">raw link</a> {BREAK} {TEMPLATE} `{SCRIPT}`'
        ),
        "authors": [AUTHOR, SCRIPT],
        "links": {LINK_NAME: 'https://example.org/?q="><script>alert(1)</script>', f"code{ATTR}": "https://example.org/code"},
        "model": {"id": MODEL, "path": f"../models/{MODEL}"},
        "corpus": {"path": "../corpus/hostile.txt", "prompts": 24, "context": 16},
        "sets": [{
            "id": SET, "title": SET_TITLE, "description": f"{SCRIPT} [x]({JS_URL})", "hook": HOOK,
            "saes": [{"layer": 0, "path": f"../saes/{SET}/0"}, {"layer": 1, "path": f"../saes/{SET}/1"}],
        }, {
            "id": ATT_SET, "title": f"{SET_TITLE} z", "description": SCRIPT, "hook": ATT_HOOK,
            "saes": [{"layer": 1, "path": f"../saes/{ATT_SET}/1"}],
        }],
        "compute": {"top_k": 5, "intervals": 2, "per_interval": 2, "histogram_bins": 8, "logits": 5, "neighbours": 3,
                    "context_before": 4, "context_after": 2, "ce_prompts": 2, "loss_effects": True},
        "explanations": "../explanations/hostile.jsonl",
        "lists": [{"id": "evil", "title": LIST_TITLE, "description": f"{EXPL_CODE} [x]({JS_URL})",
                   "features": [f"{SAE0}:1", f"{SAE0}:2", f"{SAE1}:3"]}],
    }
    (content / "releases").mkdir()
    (content / "releases" / f"{RELEASE}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return content


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(site, releases, cache) of the hostile release, validated, computed and rendered."""
    from sae_atlas.compute import ComputeOptions, compute_releases
    from sae_atlas.pipeline import load_releases
    from sae_atlas.render import render_site

    root = tmp_path_factory.mktemp("hostile")
    releases = load_releases(make_hostile_content(root))
    compute_releases(releases, root / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True))
    render_site(releases, cache=root / "cache", out=root / "site", quiet=True)
    return root / "site", releases, root / "cache"


def hostile_tokens(releases, cache: Path, sae: str, d_sae: int = 24) -> tuple[int, str]:
    """(feature, token string) of a feature whose top example has a token carrying a hostile string."""
    feature, token, _, _ = hostile_token_at(releases, cache, sae, d_sae)
    return feature, token


def hostile_token_at(releases, cache: Path, sae: str, d_sae: int = 24) -> tuple[int, str, int, int]:
    """(feature, token string, prompt, position in the prompt) of the longest hostile token in a top example."""
    from sae_atlas.export.dump import dump_feature

    before = releases[0].compute.context_before
    best = None
    for i in range(d_sae):
        for ex in dump_feature(releases, cache, f"{sae}:{i}")["top_examples"]:
            start = max(0, ex["position"] - before)  # the dump's window starts here
            for j, s in enumerate(ex["token_strings"]):
                if any(h in s for h in ("<script", "onerror", "onmouseover", "javascript:")) and "\n" not in s:
                    if best is None or len(s) > len(best[1]):
                        best = (i, s, ex["prompt"], start + j)
    assert best, "the tokenizer learned no hostile token"
    return best


# -- the output files -----------------------------------------------------------------------------


def test_output_files_hold_hostile_text_only_escaped(hostile):
    site = hostile[0]
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 5
    raw_in_html = (SCRIPT, "<script>alert", IMG, ATTR, f'href="{JS_URL}', "onerror=alert(1)>")
    for path in site.rglob("*"):
        if path.is_dir() or path.parent.name == "LICENSES":
            continue
        data = path.read_bytes()
        text = data.decode("utf-8")  # strict: no lone surrogates reached the output
        assert "\x00" not in text, path
        rel = path.relative_to(site).as_posix()
        if path.suffix == ".html":
            assert CSP in text, f"{rel} has no CSP meta tag"
            for s in raw_in_html:
                assert s not in text, f"{rel} holds {s!r} unescaped"
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"{rel} has an inline script"
        elif path.suffix == ".js" and not rel.startswith("static/"):
            # Data files are classic scripts: a "</script" or "<!--" in a string would end or hide it.
            for s in ("<script", "</script", "<!--", LSEP, PSEP):
                assert s not in text, f"{rel} holds {s!r} unescaped"
    home = (site / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in home and "{{ 7*7 }}" in home


# -- every page in Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(chromium_browser):
    return chromium_browser  # the run's one Chromium: a second Playwright driver cannot start beside it


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    guard = Guard("file://")
    guard.attach(page)
    page.goto(url)
    page.wait_for_load_state("load")
    return page, guard


def check_page(page, guard: Guard) -> None:
    page.wait_for_timeout(150)  # let late handlers (if any were injected) fire
    assert page.evaluate(DANGEROUS_DOM) == []
    guard.assert_clean()


def test_home_release_and_set_pages_show_hostile_text_as_text(hostile, browser):
    site = hostile[0]
    page, guard = open_page(browser, (site / "index.html").as_uri())
    body = page.inner_text("body")
    assert SCRIPT in body and TEMPLATE in body
    check_page(page, guard)
    page.close()

    page, guard = open_page(browser, (site / RELEASE / "index.html").as_uri())
    assert SCRIPT in page.title()
    body = page.inner_text("body")
    assert TITLE.split(RTL)[0].strip() in body and AUTHOR in body and LINK_NAME in body
    assert SCRIPT in body  # the code span of the description and the title
    assert "click me" in body and "raw link" in body  # link text kept, javascript: href dropped
    for text in ("click me", "raw link"):
        assert page.locator("a", has_text=text).evaluate("a => a.getAttribute('href')") is None
    check_page(page, guard)
    page.close()

    page, guard = open_page(browser, (site / MODEL / SET / "index.html").as_uri())
    body = page.inner_text("body")
    assert IMG in body and BREAK in body
    check_page(page, guard)
    page.close()


def sae_page(browser, site: Path, sae: str, feature: int):
    page, guard = open_page(browser, (site / MODEL / sae.split("@")[1] / "index.html").as_uri() + f"#{feature}")
    page.wait_for_selector("body[data-ready=true]")
    # Predicates as functions: a string predicate is eval'd in the page, which the CSP forbids.
    page.wait_for_function(f"() => document.querySelector('#fv-title').textContent.includes('{feature}')")
    page.wait_for_selector("#fv-body .ex .tok")
    return page, guard


def test_feature_view_shows_hostile_tokens_and_explanations_as_text(hostile, browser):
    site, releases, cache = hostile
    feature, token = hostile_tokens(releases, cache, SAE0)
    page, guard = sae_page(browser, site, SAE0, feature)
    assert token in page.inner_text("#fv-body")
    check_page(page, guard)

    page.evaluate("location.hash = '#1'")
    page.wait_for_function("() => document.querySelector('#fv-body').innerText.includes('fires on')")
    view = page.inner_text("#fv-body")
    assert BREAK in view and AUTHOR in view  # the code span and the author, as text
    assert "click" in view
    page.evaluate("location.hash = '#2'")
    page.wait_for_function("() => document.querySelector('#fv-body').innerText.includes('lone')")
    view = page.inner_text("#fv-body")
    assert "\ufffd" in view and SCRIPT in view and "evil" in view  # lone surrogate and NUL became U+FFFD
    check_page(page, guard)
    page.close()

    page, guard = sae_page(browser, site, SAE1, 3)
    page.wait_for_function("() => document.querySelector('#fv-body').innerText.includes('breaks')")
    assert ATTR in page.inner_text("#fv-body") and SCRIPT in page.inner_text("#fv-body")
    check_page(page, guard)
    page.close()


def test_new_panes_and_token_layers_keep_hostile_text_inert(hostile, browser):
    """Correlated features (labelled by hostile tokens), the logit histogram, neuron panes, and the
    DFA and loss-effect shadings of the examples: hostile tokens show as text, nothing runs."""
    site, releases, cache = hostile
    for sae in (SAE0, SAE_ATT):
        feature, token = hostile_tokens(releases, cache, sae)
        page, guard = sae_page(browser, site, sae, feature)
        view = page.locator("#fv-body")
        assert token in view.inner_text()
        for title in ("Logit effects", "Correlated neurons", "Neuron alignment"):
            assert page.locator("#fv-body h3", has_text=title).count() == 1, title
        layers = ["loss_effects"] + (["dfa"] if sae == SAE_ATT else [])
        shade = page.locator(".ex-controls select").nth(1)
        options = shade.evaluate("s => Array.from(s.options).map(o => o.value)")
        for name in layers:
            assert name in options, (sae, options)
            shade.select_option(name)
            page.wait_for_selector("#fv-body .ex .tok")
            titles = page.locator("#fv-body .fv-examples .ex .tok").evaluate_all("ts => ts.map(t => t.title)")
            assert any(json.dumps(token)[1:-1] in t or token in t for t in titles), name
            check_page(page, guard)
        # Correlated features are labelled with other features' hostile top tokens: text only.
        for i in range(24):
            page.evaluate(f"location.hash = '#{i}'")
            page.wait_for_function(f"() => document.querySelector('#fv-title').textContent === 'Feature {i}'")
            page.wait_for_function("() => !document.querySelector('#fv-body .loading')")
        check_page(page, guard)
        page.close()


def test_searches_and_token_lookup_for_hostile_queries(hostile, browser):
    site, releases, cache = hostile
    page, guard = open_page(browser, (site / "index.html").as_uri())
    page.fill("#global-search", "alert script")
    page.wait_for_selector("#global-search-results .search-result")
    results = page.inner_text("#global-search-results")
    assert SCRIPT in results or IMG in results, results
    check_page(page, guard)
    page.close()

    feature, token = hostile_tokens(releases, cache, SAE0)
    page, guard = sae_page(browser, site, SAE0, feature)
    page.fill("#list-filter", "script")
    page.wait_for_timeout(300)
    page.fill("#token-lookup", token)
    page.wait_for_function("() => document.querySelector('#token-lookup-count').textContent !== ''")
    assert "peak" in page.inner_text("#token-lookup-count")
    check_page(page, guard)
    page.close()


def test_map_tooltip_over_a_point_shows_the_explanation_as_text(hostile, browser):
    site = hostile[0]
    page, guard = sae_page(browser, site, SAE0, 1)
    canvas = page.locator("#map-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = page.evaluate("() => { const m = AtlasData.page.map; return [m.sx(1), m.sy(1)]; }")
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.move(box["x"] + x, box["y"] + y, steps=3)
    page.wait_for_selector("#map-tooltip:not([hidden])")
    tip = page.inner_text("#map-tooltip")
    assert "#1" in tip and BREAK in tip, tip
    check_page(page, guard)
    page.close()


def test_prompt_view_shows_hostile_tokens_and_labels_as_text(hostile, browser):
    site, releases, cache = hostile
    _, token, prompt, position = hostile_token_at(releases, cache, SAE0)
    page, guard = open_page(browser, (site / MODEL / "prompts.html").as_uri() + f"#{prompt}:{position}")
    page.wait_for_selector("#pv-tokens .tok.is-selected")
    page.wait_for_selector(".pv-sae .pv-feature")
    assert token in page.inner_text("#pv-tokens")
    assert page.locator("#pv-tokens .tok").nth(position).text_content() == token
    assert token in page.inner_text(".pv-token-head")
    # A few more prompts with a token selected: their labels and tokens stay text too.
    for p in range(3):
        page.evaluate(f"location.hash = '#{p}:1'")
        page.wait_for_function(f"() => document.querySelector('#pv-title').textContent === 'Prompt {p}' && document.querySelector('.pv-feature')")
    check_page(page, guard)
    page.close()


def test_a_list_page_and_an_embed_show_hostile_text_as_text(hostile, browser):
    site, releases, cache = hostile
    page, guard = open_page(browser, (site / RELEASE / "index.html").as_uri())
    page.click("a[href$='lists/evil.html']")
    page.wait_for_selector("body[data-ready=true]")
    assert SCRIPT in page.title() and LIST_TITLE in page.inner_text("h1")
    body = page.inner_text("main")
    assert BREAK in body and "click" in body  # the description's code span and link text
    assert page.locator(".prose a", has_text="x").evaluate_all("as => as.map(a => a.getAttribute('href'))") == [None]
    assert page.locator(".fcard").count() == 3 and "fires on" in page.inner_text(".fcard:nth-child(1)")
    assert page.locator(".fcard .ex .tok").count() > 0
    check_page(page, guard)
    page.close()

    feature, token = hostile_tokens(releases, cache, SAE0)
    for index, expected in ((feature, token), (1, BREAK)):
        page, guard = open_page(browser, (site / MODEL / f"0-{SET}" / "embed.html").as_uri() + f"#{index}?examples=5")
        page.wait_for_selector("body[data-ready=true]")
        assert expected in page.inner_text(".fcard")
        check_page(page, guard)
        page.close()

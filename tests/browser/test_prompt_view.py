"""The prompt view, a feature list page and an embed in headless Chromium, from file:// and from an
HTTP server under a sub-path: clicking a token lists every SAE's features with the values and links
of the prompt's data file, prompts step with the buttons, the number input and ← →, the address keeps
prompt and token, example rows link into the prompt view, list cards and embeds show their features,
the embed loads no SAE summary, and nothing overflows a phone's width. Screenshots of each view,
light and dark, go to tests/browser/screenshots/."""

from __future__ import annotations

import pytest
import yaml

from tests.browser import harness
from tests.fixtures import FIXTURE_COMPUTE, MODEL_ID, RELEASE_ID, build_fixture_content
from tests.test_e2e import data_call

pytestmark = pytest.mark.browser

VIEWED = 20  # compute.prompt_view of this site (the corpus has 32 prompts)
LIST = [f"{MODEL_ID}@1-res-st:3", f"{MODEL_ID}@0-res-st:1", f"{MODEL_ID}@1-res-tk:5"]
SAE_URL = f"{MODEL_ID}/0-res-st/index.html"
PROMPTS_URL = f"{MODEL_ID}/prompts.html"
LIST_URL = f"{RELEASE_ID}/lists/picks.html"
EMBED_URL = f"{MODEL_ID}/0-res-st/embed.html"
VIEWPORT = {"width": 1200, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The fixture release with a feature list and the prompt view limited to the first VIEWED prompts."""
    from sae_atlas.compute import ComputeOptions, compute_releases
    from sae_atlas.pipeline import load_releases
    from sae_atlas.render import render_site

    root = tmp_path_factory.mktemp("prompt-view-site")
    content = build_fixture_content(root, compute={**FIXTURE_COMPUTE, "prompt_view": VIEWED})
    manifest = content / "releases" / f"{RELEASE_ID}.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["lists"] = [{"id": "picks", "title": "Picked features", "description": "Features that *copy*.", "features": LIST}]
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    releases = load_releases(content)
    compute_releases(releases, root / "cache", ComputeOptions(device="cpu", quiet=True, pca_map=True))
    render_site(releases, cache=root / "cache", out=root / "site", quiet=True)
    return root / "site"


@pytest.fixture(scope="module")
def served(site):
    with harness.serve_site(site, prefix="/repo/") as base:
        yield base


@pytest.fixture(scope="module", params=["file", "http"])
def origin(request, site):
    return site.as_uri() + "/" if request.param == "file" else request.getfixturevalue("served")


@pytest.fixture
def open_page(chromium_browser, origin):
    """open_page(path, viewport, scheme) -> (page, guard, requests): a fresh context on origin + path."""
    opened = []

    def opener(path: str, viewport: dict = VIEWPORT, scheme: str = "light"):
        context = chromium_browser.new_context(viewport=viewport, color_scheme=scheme)
        page = context.new_page()
        guard = harness.Guard(allowed_origin=origin)
        guard.attach(page)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        opened.append(context)
        page.goto(origin + path)
        return page, guard, requests

    yield opener
    for context in opened:
        context.close()


def _prompt_data(site, prompt: int) -> dict:
    name, (number, obj) = data_call(site / MODEL_ID / "prompts" / f"{prompt:04d}.js")
    assert name == "promptView" and number == prompt
    return obj


def _shown(page, prompt: int) -> None:
    page.wait_for_function("p => document.querySelector('#pv-title').textContent === 'Prompt ' + p"
                           " && document.querySelector('#pv-tokens .tok')", arg=prompt)


def _no_overflow(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


# --- the prompt view -----------------------------------------------------------------------------------


def test_clicking_a_token_lists_every_saes_features_with_values_and_links(open_page, site):
    prompt, token = 3, 5
    page, guard, _ = open_page(f"{PROMPTS_URL}#{prompt}")
    _shown(page, prompt)
    data = _prompt_data(site, prompt)
    page.locator("#pv-tokens .tok").nth(token).click()
    page.wait_for_function("t => location.hash.endsWith(':' + t) && document.querySelector('.pv-sae')", arg=token)
    assert page.evaluate("() => location.hash") == f"#{prompt}:{token}"
    cards = page.locator(".pv-sae")
    assert cards.count() == len(data["saes"])
    assert cards.locator("h3 a").all_text_contents() == [s["sae"] for s in data["saes"]]
    for n, s in enumerate(data["saes"]):
        card = cards.nth(n)
        assert card.locator("h3 a").get_attribute("href") == s["href"]
        rows = card.locator(".pv-feature")
        assert rows.count() == len(s["f"][token])
        for k, (feature, value) in enumerate(s["f"][token]):
            row = rows.nth(k)
            assert row.locator(".pv-idx").text_content() == f"#{feature}"
            assert row.locator(".pv-idx").get_attribute("href") == f"{s['href']}#{feature}"
            assert float(row.locator(".pv-val").text_content()) == pytest.approx(value, rel=1e-3)
            label = s["labels"][str(feature)]
            if label.isprintable():  # (invisible characters are drawn as marks)
                assert row.locator(".pv-label").text_content() == label
    # A feature link opens that feature on its SAE page.
    first = data["saes"][1]
    feature = first["f"][token][0][0]
    cards.nth(1).locator(".pv-idx").first.click()
    page.wait_for_url(f"**/{MODEL_ID}/{first['href'].split('/')[0]}/index.html#{feature}")
    page.wait_for_function("i => document.querySelector('#fv-title').textContent === 'Feature ' + i", arg=feature)
    guard.assert_clean()


def test_prompts_step_with_buttons_keys_and_the_number_input_and_the_address_keeps_the_token(open_page, origin):
    page, guard, _ = open_page(f"{PROMPTS_URL}#12:4")
    _shown(page, 12)
    page.wait_for_selector("#pv-tokens .tok.is-selected")
    assert page.locator("#pv-tokens .tok").nth(4).evaluate("n => n.classList.contains('is-selected')")
    assert page.locator(".pv-token-head").text_content().startswith("Token 4")
    for action, expected in (("#pv-next", 13), ("#pv-prev", 12), ("ArrowRight", 13), ("ArrowLeft", 12)):
        if action.startswith("#"):
            page.click(action)
        else:
            page.keyboard.press(action)
        _shown(page, expected)
        assert page.evaluate("() => location.hash") == f"#{expected}"
    page.fill("#pv-input", "7")
    page.keyboard.press("Enter")
    _shown(page, 7)
    page.goto(origin + PROMPTS_URL + "#0")
    _shown(page, 0)
    assert page.is_disabled("#pv-prev")
    guard.assert_clean()


def test_a_prompt_beyond_the_viewed_ones_shows_its_tokens_and_says_how_to_get_features(open_page, site):
    page, guard, requests = open_page(f"{PROMPTS_URL}#{VIEWED + 2}")
    _shown(page, VIEWED + 2)
    notice = page.text_content("#pv-features-body")
    assert f"first {VIEWED} prompts" in notice and "compute.prompt_view" in notice
    assert not any("/prompts/" in r for r in requests)
    assert not (site / MODEL_ID / "prompts" / f"{VIEWED:04d}.js").exists()
    page.evaluate("location.hash = '#999'")
    page.wait_for_function("() => !document.querySelector('#pv-status').hidden")
    assert "does not exist" in page.text_content("#pv-status")
    guard.assert_clean()


def test_an_examples_prompt_link_opens_the_prompt_view_on_its_peak_token(open_page, site):
    _, (summary,) = data_call(site / SAE_URL.replace("index.html", "data/summary.js"))
    index = next(i for i, m in enumerate(summary["max"]) if m > 0)
    page, guard, _ = open_page(f"{SAE_URL}#{index}")
    page.wait_for_selector(".fv-examples .ex a.ex-meta")
    link = page.locator(".fv-examples .ex a.ex-meta").first
    prompt, position = (int(x) for x in link.get_attribute("href").split("#")[1].split(":"))
    assert link.get_attribute("href") == f"../prompts.html#{prompt}:{position}"
    assert link.text_content() == f"prompt {prompt}"
    link.click()
    page.wait_for_url(f"**/{PROMPTS_URL}#{prompt}:{position}")
    _shown(page, prompt)
    page.wait_for_selector("#pv-tokens .tok.is-selected")
    assert page.locator("#pv-tokens .tok").nth(position).evaluate("n => n.classList.contains('is-selected')")
    guard.assert_clean()


# --- a list page ---------------------------------------------------------------------------------------


def test_a_list_page_shows_a_card_per_feature_with_shaded_examples(open_page, site):
    page, guard, _ = open_page(f"{RELEASE_ID}/index.html")
    page.click(f"a[href$='lists/picks.html']")
    page.wait_for_url(f"**/{LIST_URL}")
    page.wait_for_selector("body[data-ready=true]")
    _, (obj,) = data_call(site / LIST_URL.replace(".html", ".js"))
    cards = page.locator(".fcard")
    assert cards.count() == len(LIST)
    assert page.locator(".fcard-id").all_text_contents() == LIST
    for n, card in enumerate(obj["features"]):
        node = cards.nth(n)
        assert node.locator(".fcard-id").get_attribute("href") == f"{card['href']}#{card['i']}"
        assert node.locator(".ex").count() == len(card["top"]) <= 3
        assert node.locator(".ex .tok.tok-max.tok-on").count() == len(card["top"])
        assert node.locator(".ex .ex-meta").all_text_contents() == [f"prompt {e[0]}" for e in card["top"]]
    assert "animals" in cards.nth(1).text_content()  # the explanation of tiny-2l@0-res-st:1
    cards.nth(0).locator(".fcard-id").click()
    page.wait_for_url(f"**/{MODEL_ID}/1-res-st/index.html#3")
    page.wait_for_function("() => document.querySelector('#fv-title').textContent === 'Feature 3'")
    guard.assert_clean()


# --- embeds ----------------------------------------------------------------------------------------


def test_an_embed_shows_one_card_with_its_switches_and_loads_no_summary(open_page, site):
    page, guard, requests = open_page(f"{EMBED_URL}#1")
    page.wait_for_selector("body[data-ready=true]")
    assert page.text_content(".fcard-id") == f"{MODEL_ID}@0-res-st:1"
    assert page.get_attribute(".fcard-id", "href") == "index.html#1"
    assert page.locator(".fcard .ex").count() == 3 and page.locator(".fcard svg.bar-chart").count() == 1
    assert "animals" in page.text_content(".fcard-expl")
    assert not any("summary.js" in r for r in requests)
    data = [r for r in requests if r.endswith(".js") and "/static/" not in r]
    assert data[0].endswith(f"{EMBED_URL.replace('embed.html', 'data/f/0000.js')}")
    assert all("/corpus/" in r for r in data[1:]) and len(data) > 1, data

    page.evaluate("location.hash = '#1?examples=1&plots=0&explanation=0&link=0&theme=dark'")
    page.wait_for_function("() => document.querySelectorAll('.fcard .ex').length === 1")
    assert page.locator(".fcard svg").count() == 0 and page.locator(".fcard-expl").count() == 0
    assert page.locator("a.fcard-id").count() == 0
    assert page.evaluate("() => document.documentElement.getAttribute('data-theme')") == "dark"
    page.evaluate("location.hash = '#1?theme=auto'")
    page.wait_for_function("() => document.querySelectorAll('.fcard .ex').length === 3")
    assert page.evaluate("() => document.documentElement.getAttribute('data-theme')") is None
    guard.assert_clean()


def test_an_embed_follows_the_system_scheme_and_says_when_the_feature_is_missing(open_page):
    page, guard, _ = open_page(f"{EMBED_URL}#2", scheme="dark")
    page.wait_for_selector("body[data-ready=true]")
    light_text = "rgb(27, 31, 36)"
    assert page.evaluate("() => getComputedStyle(document.body).color") != light_text
    page.evaluate("location.hash = '#9999'")
    page.wait_for_selector(".notice-error")
    assert "does not exist" in page.text_content(".notice-error")
    guard.assert_clean()


def test_the_feature_view_offers_an_iframe_snippet_for_the_current_feature(open_page):
    page, guard, _ = open_page(f"{SAE_URL}#4")
    page.wait_for_function("() => document.querySelector('#fv-embed-code').textContent.includes('embed.html#4')")
    page.evaluate("location.hash = '#6'")
    page.wait_for_function("() => document.querySelector('#fv-embed-code').textContent.includes('embed.html#6\"')")
    code = page.text_content("#fv-embed-code")
    assert code.startswith("<iframe src=\"") and f"{MODEL_ID}/0-res-st/embed.html#6" in code
    assert page.get_attribute("#fv-embed-open", "href") == "embed.html#6"
    page.click("#fv-embed summary")
    page.click("#fv-embed .copy-btn")
    page.wait_for_function("() => /Copied|Ctrl/.test(document.querySelector('#fv-embed .copy-btn').textContent)")
    guard.assert_clean()


# --- phones, light and dark ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_each_view_fits_a_phone_and_renders_light_and_dark(open_page, origin, scheme):
    views = [("prompt-view", f"{PROMPTS_URL}#3:5", ".pv-sae"), ("feature-list", LIST_URL, ".fcard .ex .tok"),
             ("embed", f"{EMBED_URL}#1", ".fcard .ex .tok")]
    for name, path, ready in views:
        for viewport, suffix in ((VIEWPORT, ""), (PHONE, "-phone")):
            page, guard, _ = open_page(path, viewport=viewport, scheme=scheme)
            page.wait_for_selector(ready)
            page.wait_for_timeout(100)
            assert _no_overflow(page), f"{name} overflows {viewport['width']}px"
            if origin.startswith("http"):
                harness.screenshot(page, f"{name}{suffix}-{scheme}", full_page=name != "embed")
            guard.assert_clean()

"""The built fixture site in headless Chromium, as a visitor uses it: from file:// (a double-clicked
index.html) and from an HTTP server under a sub-path (/repo/, as GitHub Pages serves a project).
Every test also asserts that the page logged no error, opened no dialog and requested nothing
outside the site. Screenshots of every page type, light and dark, go to tests/browser/screenshots/."""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path

import pytest

from tests.browser import harness
from tests.fixtures import MODEL_ID, RELEASE_ID
from tests.test_e2e import data_call

pytestmark = pytest.mark.browser

SET = "res-st"
SAE = f"{MODEL_ID}@0-{SET}"
SAE_URL = f"{MODEL_ID}/0-{SET}/index.html"
OTHER_SAE = f"{MODEL_ID}@1-res-tk"
OTHER_SAE_URL = f"{MODEL_ID}/1-res-tk/index.html"
VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture(scope="module")
def served(built_site):
    """Base URL of the site served over HTTP under /repo/ (ending in /)."""
    with harness.serve_site(built_site.site, prefix="/repo/") as base:
        yield base


@pytest.fixture(scope="module", params=["file", "http"])
def origin(request, built_site):
    """Base URL of the site root (ending in /) for each way of opening it."""
    return built_site.site.as_uri() + "/" if request.param == "file" else request.getfixturevalue("served")


@pytest.fixture(scope="module")
def summary(built_site) -> dict:
    return data_call(built_site.site / SAE_URL.replace("index.html", "data/summary.js"))[1][0]


@pytest.fixture
def open_page(chromium_browser, origin):
    """open_page(path, base=origin) -> (page, guard): a fresh browser context (light scheme) on `base + path`."""
    opened = []

    def opener(path: str, base: str = origin):
        context = chromium_browser.new_context(viewport=VIEWPORT, color_scheme="light")
        page = context.new_page()
        guard = harness.Guard(allowed_origin=base)  # the site root itself: nothing above /repo/ either
        guard.attach(page)
        opened.append(context)
        page.goto(base + path)
        return page, guard

    yield opener
    for context in opened:
        context.close()


def _ready(page) -> None:
    page.wait_for_selector("body[data-ready=true]")


def _feature_shown(page, index: int) -> None:
    page.wait_for_function(
        "i => location.hash === '#' + i && document.querySelector('#fv-title').textContent === 'Feature ' + i"
        " && document.querySelector('.fv-examples .ex .tok')", arg=index)


def _live(summary: dict) -> list[int]:
    return [i for i, m in enumerate(summary["max"]) if m > 0]


# --- navigation -------------------------------------------------------------------------------------


def test_click_from_home_to_release_to_set_to_sae_shows_shaded_examples(open_page):
    page, guard = open_page("index.html")
    page.click(f"main a[href='{RELEASE_ID}/index.html']")
    page.wait_for_url(f"**/{RELEASE_ID}/index.html")
    assert page.text_content("h1") == "Tiny demo SAEs"
    page.click(f"main table a[href$='{MODEL_ID}/{SET}/index.html']")
    page.wait_for_url(f"**/{MODEL_ID}/{SET}/index.html")
    assert SET in page.text_content("h1")
    page.click(f"main table a[href$='0-{SET}/index.html']")
    page.wait_for_url(f"**/{SAE_URL}*")
    _ready(page)
    assert page.text_content("h1") == SAE
    page.wait_for_selector(".fv-examples .ex .tok.tok-on")
    assert page.locator(".fv-examples .ex").count() >= 1
    # The peak token of each example is shaded like the other firing tokens.
    peaks = page.locator(".fv-examples .ex .tok-max")
    assert peaks.count() == page.locator(".fv-examples .ex").count()
    assert page.locator(".fv-examples .ex .tok-max.tok-on").count() == peaks.count(), "peak tokens are not shaded"
    guard.assert_clean()


def test_breadcrumbs_and_brand_lead_back_up(open_page):
    page, guard = open_page(SAE_URL)
    _ready(page)
    page.click(f".crumbs a[href$='{SET}/index.html']")
    page.wait_for_url(f"**/{MODEL_ID}/{SET}/index.html")
    page.click(".brand")
    page.wait_for_url("**/index.html")
    assert page.locator(f"main a[href='{RELEASE_ID}/index.html']").count() == 1
    guard.assert_clean()


# --- every page type, light and dark ------------------------------------------------------------------


def _pages() -> list[tuple[str, str]]:
    return [("home", "index.html"), ("release", f"{RELEASE_ID}/index.html"), ("set", f"{MODEL_ID}/{SET}/index.html"),
            ("sae", SAE_URL), ("feature", f"{SAE_URL}#1")]


def _shoot_all(page, origin: str, scheme: str) -> None:
    for name, path in _pages():
        page.goto(origin + path)
        if name in ("sae", "feature"):
            _ready(page)
        if name == "sae":
            harness.screenshot(page, f"sae-top-{scheme}")
            page.locator("#map-canvas").scroll_into_view_if_needed()
            assert _map_has_points(page)
        if name == "feature":
            _feature_shown(page, 1)
            page.wait_for_selector(".fv-intervals .interval")
            page.evaluate("document.querySelector('#feature-view').scrollIntoView({block: 'start'})")
        harness.screenshot(page, f"{name}-{scheme}", full_page=name in ("home", "release", "set"))
        if name == "feature":
            page.evaluate("document.querySelector('.fv-examples').scrollIntoView({block: 'start'})")
            harness.screenshot(page, f"feature-examples-{scheme}")


def _map_has_points(page) -> bool:
    return page.evaluate("""() => {
        const c = document.querySelector('#map-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let k = 3; k < d.length; k += 4) if (d[k]) n++;
        return n > 100;
    }""")


def _theme(page) -> tuple[str | None, str]:
    """(the data-theme attribute of <html>, the page background colour)."""
    return tuple(page.evaluate("() => [document.documentElement.getAttribute('data-theme'),"
                         " getComputedStyle(document.body).backgroundColor]"))


def test_every_page_type_renders_light_and_dark_and_the_choice_persists(chromium_browser, served):
    context = chromium_browser.new_context(viewport=VIEWPORT, color_scheme="light")
    page = context.new_page()
    guard = harness.Guard(allowed_origin=served)
    guard.attach(page)
    try:
        _check_and_shoot_both_schemes(page, served)
    finally:
        context.close()
    guard.assert_clean()


def _check_and_shoot_both_schemes(page, served: str) -> None:
    _shoot_all(page, served, "light")
    attribute, light_background = _theme(page)
    assert attribute != "dark"
    page.click(".theme-toggle")
    attribute, dark_background = _theme(page)
    assert attribute == "dark" and dark_background != light_background
    assert page.get_attribute(".theme-toggle", "aria-pressed") == "true"
    page.reload()
    _ready(page)
    assert _theme(page) == ("dark", dark_background), "the dark choice did not survive a reload"
    _shoot_all(page, served, "dark")


def test_dark_mode_toggles_and_persists_across_pages(open_page, origin):
    page, guard = open_page("index.html")
    before = _theme(page)
    page.click(".theme-toggle")
    assert _theme(page)[0] == "dark" and _theme(page) != before
    page.goto(origin + SAE_URL)
    _ready(page)
    assert _theme(page)[0] == "dark"
    page.click(".theme-toggle")
    page.reload()
    _ready(page)
    assert _theme(page)[0] != "dark" and _theme(page)[1] == before[1]
    guard.assert_clean()


# --- the SAE page --------------------------------------------------------------------------------------


def test_permalink_opens_that_feature_with_its_examples(open_page, built_site, summary):
    index = _live(summary)[3]
    page, guard = open_page(f"{SAE_URL}#{index}")
    _ready(page)
    _feature_shown(page, index)
    assert page.text_content("#fv-permalink") == f"{SAE}:{index}"
    shard = index // summary["shard_size"]
    record = [r for r in data_call(built_site.site / SAE_URL.replace("index.html", f"data/f/{shard:04d}.js"))[1][1]
              if r["i"] == index][0]
    page.wait_for_function("n => document.querySelectorAll('.fv-examples .ex').length === n", arg=len(record["top"]))
    assert page.locator(".fv-examples .ex .ex-meta").all_text_contents() == [f"prompt {e[0]}" for e in record["top"]]
    assert page.locator(f".frow.is-current .col-idx").text_content() == str(index)
    guard.assert_clean()


def test_a_permalink_to_a_missing_feature_says_so(open_page, summary):
    page, guard = open_page(f"{SAE_URL}#{summary['d_sae'] + 5}")
    _ready(page)
    assert "does not exist" in page.text_content("#sae-status")
    guard.assert_clean()


def test_prev_next_buttons_and_keys_step_through_features(open_page):
    page, guard = open_page(f"{SAE_URL}#10")
    _ready(page)
    _feature_shown(page, 10)
    steps = [("click", "#fv-next", 11), ("click", "#fv-prev", 10), ("press", "ArrowRight", 11), ("press", "ArrowLeft", 10),
             ("press", "j", 11), ("press", "k", 10)]
    for action, target, expected in steps:
        if action == "click":
            page.click(target)
        else:
            page.keyboard.press(target)
        _feature_shown(page, expected)
    page.goto(page.url.split("#")[0] + "#0")
    page.wait_for_function("() => document.querySelector('#fv-title').textContent === 'Feature 0'")
    assert page.is_disabled("#fv-prev")
    guard.assert_clean()


def _isolated_feature(summary: dict) -> int:
    """The live feature farthest from every other point of the map (an unambiguous hover target)."""
    xs, ys = summary["x"], summary["y"]

    def clearance(i: int) -> float:
        return min(math.hypot(xs[i] - xs[j], ys[i] - ys[j]) for j in range(len(xs)) if j != i)

    return max(_live(summary), key=clearance)


def test_map_hover_shows_a_tooltip_and_click_opens_the_feature(open_page, summary):
    target = _isolated_feature(summary)
    start = next(i for i in _live(summary) if i != target)
    page, guard = open_page(f"{SAE_URL}#{start}")
    _ready(page)
    _feature_shown(page, start)
    canvas = page.locator("#map-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    # Where the front end draws the point (its test hook), checked against the summary's x/y below.
    x, y = page.evaluate("i => { const m = AtlasData.page.map; return [m.sx(i), m.sy(i)]; }", target)
    fit = min(box["width"], box["height"])
    assert 0 < x < box["width"] and 0 < y < box["height"]
    assert abs((x - box["width"] / 2) - (summary["x"][target] - 0.5) * fit * 0.92) < 2
    page.mouse.move(box["x"] + x, box["y"] + y)
    tooltip = page.locator("#map-tooltip")
    tooltip.wait_for(state="visible")
    assert tooltip.text_content().startswith(f"#{target}")
    harness.screenshot(page, "map-hover")
    page.mouse.click(box["x"] + x, box["y"] + y)
    _feature_shown(page, target)
    guard.assert_clean()


WATCH_LOADS = """() => { window.__loads = [];
    new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => { if (n.src) window.__loads.push(n.src); })))
      .observe(document.head, { childList: true }); }"""
LOADED = "end => window.__loads.some(src => src.endsWith(end))"


def _requested(page, path_end: str) -> bool:
    """Whether the page has asked for a data file ending in `path_end` since WATCH_LOADS (from file://
    too, where the browser keeps no resource timing)."""
    return page.evaluate(LOADED, path_end)


def test_pointing_at_a_feature_loads_it_before_the_click(open_page, summary):
    """A map point or a feature link pointed at for a moment starts loading its shard (and texts)
    while the reader's click is on its way; the page stays on the current feature until the click."""
    size = summary["shard_size"]
    target = _isolated_feature(summary)
    touched = lambda i: {(i + d) // size for d in (-1, 0, 1)}  # a shown feature's shard and its neighbours'
    start = next(i for i in _live(summary) if target // size not in touched(i))
    shard_file = f"data/f/{target // size:04d}.js"
    for way in ("map", "link"):
        page, guard = open_page(f"{SAE_URL}#{start}")
        _ready(page)
        _feature_shown(page, start)
        page.evaluate(WATCH_LOADS)
        if way == "map":
            canvas = page.locator("#map-canvas")
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            x, y = page.evaluate("i => { const m = AtlasData.page.map; return [m.sx(i), m.sy(i)]; }", target)
            page.mouse.move(box["x"] + x, box["y"] + y)
        else:  # a link to a feature, as the panes, the list and the lookup make them
            page.evaluate("""i => { const a = document.createElement('a'); a.href = '#' + i; a.id = 'test-link';
                a.textContent = 'feature ' + i; document.querySelector('#fv-body').prepend(a); }""", target)
            assert not _requested(page, shard_file)
            page.hover("#test-link")
        page.wait_for_function(LOADED, arg=shard_file, timeout=5000)
        assert page.evaluate("() => location.hash") == f"#{start}"
        assert page.text_content("#fv-title") == f"Feature {start}"
        if way == "link":
            page.click("#test-link")
            _feature_shown(page, target)
        guard.assert_clean()


# The strings of an example row's tokens, from their titles (each starts with the token as a JSON string).
ROW_TOKENS = """() => Array.from(document.querySelectorAll('.fv-examples .examples > .ex')).map(row =>
    row.classList.contains('loading') ? null : Array.from(row.querySelectorAll('.ex-text .tok'))
      .map(t => JSON.parse(t.title.match(/^"(?:[^"\\\\]|\\\\.)*"/)[0])))"""


@pytest.fixture(scope="module")
def site_without_prompt_files(built_site, tmp_path_factory) -> Path:
    """A copy of the built site without its corpus's prompt files (vocab.js kept)."""
    copy = tmp_path_factory.mktemp("no-prompts") / "site"
    shutil.copytree(built_site.site, copy)
    removed = [p for p in (copy / "corpus").rglob("*.js") if p.name[:1].isdigit()]
    assert removed
    for path in removed:
        path.unlink()
    return copy


@pytest.mark.parametrize("way", ["file", "http"])
def test_a_hash_jump_shows_the_top_examples_text_without_any_prompt_file(chromium_browser, site_without_prompt_files, built_site, summary, way):
    """The top examples' text shown by default (±text_context tokens around the peak) comes with the
    feature's shard: a permalink set in an open page shows it where no prompt file can load."""
    size, k = summary["shard_size"], summary["text_context"]
    with contextlib.ExitStack() as stack:
        base = site_without_prompt_files.as_uri() + "/" if way == "file" else stack.enter_context(
            harness.serve_site(site_without_prompt_files, prefix="/repo/"))
        context = chromium_browser.new_context(viewport=VIEWPORT, color_scheme="light")
        stack.callback(context.close)
        page = context.new_page()
        guard = harness.Guard(allowed_origin=base)
        guard.attach(page)
        page.goto(base + SAE_URL)
        _ready(page)
        page.wait_for_function("() => AtlasData.page.vocab")  # vocab.js, loaded once by the page
        first = page.evaluate("() => AtlasData.page.current")
        touched = {(first + d) // size for d in (-1, 0, 1)}  # the shown feature's shard and its neighbours'
        target = next(i for i in _live(summary) if i // size not in touched)
        page.evaluate("i => { location.hash = '#' + i; }", target)
        record = [r for r in data_call(built_site.site / SAE_URL.replace("index.html", f"data/f/{target // size:04d}.js"))[1][1]
                  if r["i"] == target][0]
        # The new feature's rows (the old ones stay until its shard is in): their prompts are the record's.
        page.wait_for_function("n => document.querySelector('#fv-title').textContent === 'Feature ' + n[0]"
                               " && Array.from(document.querySelectorAll('.fv-examples .examples > .ex .ex-meta'))"
                               "   .map(a => a.textContent).join() === n[1]",
                               arg=[target, ",".join(f"prompt {e[0]}" for e in record["top"])])
        corpus = (built_site.site / SAE_URL).parent / summary["corpus"]
        pps = summary["prompts_per_shard"]
        want = []
        for prompt, position, *_ in record["top"]:
            tokens = data_call(corpus / f"{prompt // pps:04d}.js")[1][1][prompt % pps]
            want.append(tokens[max(0, position - k) : position + k + 1])
        assert page.evaluate(ROW_TOKENS) == want
        page.wait_for_timeout(300)  # the prompt files are asked for after the text is painted, and fail
        assert page.evaluate(ROW_TOKENS) == want
        assert not guard.page_errors and not guard.dialogs and not guard.outside_requests


def test_global_search_finds_an_sae_by_id_from_any_depth(open_page, origin):
    for start in ("index.html", SAE_URL):
        page, guard = open_page(start)
        page.click("#global-search")
        page.keyboard.type(OTHER_SAE)
        first = page.locator("#global-search-results .search-result a").first
        first.wait_for()
        assert first.get_attribute("href").endswith(OTHER_SAE_URL)
        if start != "index.html":
            harness.screenshot(page, "search-results")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/{OTHER_SAE_URL}")
        _ready(page)
        assert page.text_content("h1") == OTHER_SAE
        guard.assert_clean()


def test_feature_list_filter_finds_a_feature_by_its_explanation(open_page, summary):
    explained = next(i for i, e in enumerate(summary["expl"]) if e)
    word = summary["expl"][explained].split()[-1]
    matches = [i for i in range(summary["d_sae"]) if word.lower() in f"{summary['label'][i]}\n{summary['expl'][i] or ''}".lower()]
    page, guard = open_page(SAE_URL)
    _ready(page)
    page.fill("#list-filter", word)
    page.wait_for_function("t => document.querySelector('#list-count').textContent.startsWith(t)", arg=f"{len(matches)} of ")
    rows = page.locator(".frow:not([hidden]) .col-idx")
    assert rows.all_text_contents() == [str(i) for i in matches]
    page.click(f".frow:not([hidden])[href='#{explained}']")
    _feature_shown(page, explained)
    guard.assert_clean()


def test_token_lookup_lists_the_features_peaking_on_a_token(open_page, summary):
    def norm(s: str) -> str:
        return s.replace("\u2423", " ").strip().lower()

    token = next(t for tokens in summary["peak_tokens"] for t in tokens if len(norm(t)) >= 3 and norm(t).isalpha())
    hits = [i for i, tokens in enumerate(summary["peak_tokens"]) if any(norm(t) == norm(token) for t in tokens)]
    page, guard = open_page(SAE_URL)
    _ready(page)
    page.fill("#token-lookup", norm(token))
    page.wait_for_function("n => document.querySelectorAll('#token-lookup-results a').length === n", arg=len(hits))
    shown = page.locator("#token-lookup-results a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert sorted(shown) == sorted(f"#{i}" for i in hits)
    page.evaluate("document.querySelector('#token-lookup-results').scrollIntoView({block: 'end'})")
    harness.screenshot(page, "token-lookup")
    page.click(f"#token-lookup-results a[href='#{hits[-1]}']")
    _feature_shown(page, hits[-1])
    guard.assert_clean()

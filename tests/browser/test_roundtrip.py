"""The round trip (tests/test_neuronpedia_roundtrip.py's fixture) in Chromium: a feature view of the
mirror shows the original's examples and logits. Per example: its activation and the tokens whose
activation the export stores (the original also shows corpus tokens around them, marked "activation
not stored"), each with its tooltip (token and value); the logit tables as text."""

from __future__ import annotations

import pytest

from tests.browser import harness
from tests.test_neuronpedia_roundtrip import roundtrip  # noqa: F401  (the module's fixture)

pytestmark = pytest.mark.browser

EXAMPLES = """(pane) => Array.from(document.querySelectorAll(pane + ' .ex')).map(ex => [
    ex.querySelector('.ex-act').textContent,
    Array.from(ex.querySelectorAll('.ex-text .tok:not(.tok-unknown)')).map(t => [t.textContent, t.title]),
])"""


@pytest.fixture(scope="module")
def browser(chromium_browser):
    """The run's one Chromium (a second Playwright driver cannot start while another runs)."""
    return chromium_browser


def _shown(browser, site, spec, feature: int) -> dict:
    page = browser.new_page()
    guard = harness.Guard(allowed_origin="file://")
    guard.attach(page)
    page.goto((site / spec.model_id / f"{spec.layer}-{spec.set_id}" / "index.html").as_uri() + f"#{feature}")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector(".fv-examples .ex .tok")
    page.wait_for_selector(".fv-intervals .ex .tok")
    shown = {
        "top": page.evaluate(EXAMPLES, ".fv-examples"),
        "intervals": page.evaluate(EXAMPLES, ".fv-intervals"),
        "logits": page.locator(".logits").all_inner_texts(),
    }
    guard.assert_clean()
    page.close()
    return shown


@pytest.mark.parametrize("feature", [1, 3])
def test_a_mirrored_feature_view_shows_the_originals_examples_and_logits(roundtrip, browser, feature):  # noqa: F811
    root, original, _ = roundtrip
    for spec in original[0].saes():
        a, b = _shown(browser, root / "site", spec, feature), _shown(browser, root / "msite", spec, feature)
        assert a["top"] and a["intervals"] and len(a["logits"]) == 2
        assert a == b, spec.id

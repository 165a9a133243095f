"""A site mirrored from a Neuronpedia export (tests/test_neuronpedia_mirror.py's fixture) opened in
Chromium: the feature view renders its panes, leaves out the ones the export lacks, and logs no error."""

from __future__ import annotations

import pytest

from sae_atlas.cli import main
from sae_atlas.manifest import load_content
from sae_atlas.render import render_site
from tests.browser import harness
from tests.test_neuronpedia_mirror import MODEL, SOURCE, write_export, write_manifest

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mirror-site")
    write_manifest(tmp / "content", write_export(tmp / "export"))
    assert main(["compute", "--content", str(tmp / "content"), "--cache", str(tmp / "cache"), "--quiet"]) == 0
    render_site(load_content(tmp / "content"), cache=tmp / "cache", out=tmp / "site", quiet=True)
    return tmp / "site"


def test_a_mirrored_feature_view_renders_without_errors(site, chromium_browser):
    page = chromium_browser.new_page()
    guard = harness.Guard(allowed_origin="file://")
    guard.attach(page)
    page.goto((site / MODEL / SOURCE / "index.html").as_uri() + "#2")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector(".fv-expl")
    text = page.inner_text("main").lower()  # headings are upper-cased by the style sheet
    assert "gpt-4o-mini" in text and "cats" in text  # the export's explanation, its explainer
    assert page.locator(".fv-expl script").count() == 0
    # The top example's text arrived from the mirror's corpus (one prompt per activation row).
    page.wait_for_function("() => document.body.innerText.includes(' cat')")
    assert "top activations" in text and "decoder neighbours" in text
    assert "activation histogram" not in text  # the export has no histogram of ours
    page.goto((site / MODEL / SOURCE / "index.html").as_uri() + "#1")
    page.wait_for_function("() => document.body.innerText.toLowerCase().includes('prompt 2')")
    assert "decoder neighbours" not in page.inner_text("main").lower()  # its topkCosSimIndices is empty
    guard.assert_clean()
    page.close()

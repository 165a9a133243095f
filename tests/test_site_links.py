"""Every link of every page resolves inside the site, page-relative (works from file:// and sub-paths)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.test_render import computed_site

LINK_ATTRIBUTES = {"href", "src", "data-summary"}
USER_LINK_SCHEMES = {"http", "https", "mailto"}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str, str]] = []  # (tag, attribute, value, rel)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in LINK_ATTRIBUTES & found.keys():
            self.links.append((tag, name, found[name] or "", found.get("rel") or ""))


def _page_links(page: Path) -> list[tuple[str, str, str, str]]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return computed_site(tmp_path_factory)[2]


def test_every_link_resolves_to_a_file_in_the_site(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 8
    problems = []
    checked = 0
    for page in pages:
        for tag, attribute, value, rel in _page_links(page):
            where = f"{page.relative_to(site)}: <{tag} {attribute}={value!r}>"
            parts = urlsplit(value)
            if parts.scheme or parts.netloc:
                # only links the release author declared, opened as external links
                if not (tag == "a" and parts.scheme in USER_LINK_SCHEMES and "noopener" in rel.split()):
                    problems.append(f"{where}: absolute or external")
                continue
            if value.startswith("/"):
                problems.append(f"{where}: site-absolute path (breaks under file:// and sub-paths)")
                continue
            if not parts.path:
                if parts.fragment and not parts.fragment.isdigit() and tag != "a":
                    problems.append(f"{where}: bare fragment")
                continue  # `#N` feature permalinks and in-page anchors
            target = (page.parent / unquote(parts.path)).resolve()
            if site.resolve() not in target.parents:
                problems.append(f"{where}: leaves the site")
            elif not target.is_file():
                problems.append(f"{where}: no such file {target.relative_to(site.resolve())}")
            elif tag == "a" and target.suffix != ".html":
                problems.append(f"{where}: a page link must name an .html file")
            if parts.fragment and not parts.fragment.isdigit():
                problems.append(f"{where}: fragment other than a feature index")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked > 50


def test_pages_link_only_to_pages_of_the_url_contract(site):
    """Navigation links reach the home, release, set, SAE, prompt view (MODEL/prompts.html), list
    (RELEASE/lists/ID.html) and embed (MODEL/LAYER-SET/embed.html) pages; nothing else is an .html target."""
    allowed = {"index.html"}
    for pattern in ("index.html", "*/prompts*.html", "*/lists/*.html", "*/*/embed.html"):
        for path in site.glob(pattern) if "/" in pattern else site.rglob(pattern):
            allowed.add(path.relative_to(site).as_posix())
    for page in site.rglob("*.html"):
        for tag, attribute, value, _ in _page_links(page):
            parts = urlsplit(value)
            if tag == "a" and not parts.scheme and parts.path:
                target = (page.parent / parts.path).resolve().relative_to(site.resolve()).as_posix()
                assert target in allowed, f"{page}: {value}"
                depth = target.count("/")
                assert depth in (0, 1, 2), target  # index.html, RELEASE/index.html, MODEL/X/index.html


def test_every_page_has_breadcrumbs_to_home(site):
    for page in site.rglob("*.html"):
        if page.name == "embed.html":  # a card for an iframe: no site chrome, a link back to its feature
            continue
        crumbs = [v for tag, attribute, v, _ in _page_links(page) if tag == "a" and v.endswith("index.html")]
        assert crumbs, page
        assert 'class="crumbs"' in page.read_text(encoding="utf-8"), page

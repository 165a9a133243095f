"""Text that reaches the site: cleaning of token strings, sanitized markdown, safe links.

One place for every escape the render stage does: `clean_text` for arbitrary strings (token
strings, titles), `render_markdown` for user markdown, `safe_href` for user-given links.
"""

from __future__ import annotations

import html
import re

import markdown
import nh3
from markupsafe import Markup

# Lone surrogates cannot be encoded as UTF-8 and NUL breaks text handling in browsers; both
# become U+FFFD so the output is deterministic whatever the tokenizer produced.
_INVALID = re.compile("[\x00\ud800-\udfff]")

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "dl", "dt", "em", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "strong", "sub", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "td": {"align"}, "th": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


def clean_text(text: str) -> str:
    """`text` with lone surrogates and NUL replaced by U+FFFD."""
    return _INVALID.sub("\ufffd", text)


def render_markdown(text: str) -> Markup:
    """Markdown -> HTML, sanitized with a strict allow-list (no script, handlers, styles or
    javascript: URLs; links only http/https/mailto/relative)."""
    if not text:
        return Markup("")
    raw = markdown.markdown(clean_text(text), extensions=["tables"], output_format="html")
    cleaned = nh3.clean(
        raw,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        clean_content_tags={"script", "style"},
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    return Markup(cleaned.strip())


def plain_text(sanitized_html: str) -> str:
    """The text of a sanitized HTML fragment (for search and list labels)."""
    text = nh3.clean(sanitized_html, tags=set(), clean_content_tags={"script", "style"})
    return " ".join(html.unescape(text).split())


def safe_href(url: str) -> str | None:
    """`url` if it is http(s), mailto or relative; None for any other scheme (javascript:, data:...)."""
    url = clean_text(url).strip()
    m = _SCHEME.match(url)
    if m and m.group(1).lower() not in URL_SCHEMES:
        return None
    if "\\" in url or any(ord(c) < 32 for c in url):
        return None
    return url

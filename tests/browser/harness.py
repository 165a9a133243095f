"""Headless Chromium driven by Playwright, with a guard that fails a test on any console error, page
error, dialog, or request that leaves the site.

The browser is a Chromium on PATH ($CHROMIUM, chromium, chromium-browser, google-chrome) where there is
one, else Playwright's own build (`python -m playwright install chromium`, what `make chromium` does on
systems without an apt-get Chromium)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"


def chromium_path() -> str | None:
    """The Chromium on PATH to launch, or None to launch Playwright's own; RuntimeError when neither exists."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    if playwright_chromium_installed():
        return None
    raise RuntimeError(
        "headless Chromium not found; `make chromium` installs the `chromium` system package (apt-get) "
        "or Playwright's own (python -m playwright install chromium)"
    )


def playwright_browsers_dir() -> Path:
    """Where `playwright install` puts browsers (PLAYWRIGHT_BROWSERS_PATH, else the user's cache)."""
    configured = os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
    if configured == "0":  # inside the installed playwright package
        import playwright

        return Path(playwright.__file__).parent / "driver" / "package" / ".local-browsers"
    if configured:
        return Path(configured)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "ms-playwright"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "ms-playwright"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ms-playwright"


def playwright_chromium_installed() -> bool:
    # Headless launches use the headless shell; `playwright install chromium` brings it with Chromium.
    found = playwright_browsers_dir()
    return any(found.glob("chromium_headless_shell-*")) or any(found.glob("chromium-*"))


@dataclass
class Guard:
    """What a page did that a static, offline site must never do."""

    allowed_origin: str  # "file://" or "http://127.0.0.1:PORT"
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

        def on_dialog(d):
            self.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", on_dialog)

        def route(r):
            url = r.request.url
            if url.startswith(self.allowed_origin) or url.startswith("data:") or url.startswith("about:"):
                r.continue_()
            else:
                self.outside_requests.append(url)
                r.abort()

        page.route("**/*", route)

    def assert_clean(self) -> None:
        problems = {
            "console errors": self.console_errors,
            "page errors": self.page_errors,
            "dialogs": self.dialogs,
            "requests outside the site": self.outside_requests,
        }
        bad = {k: v for k, v in problems.items() if v}
        assert not bad, f"the page misbehaved: {bad}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    prefix = "/"

    def log_message(self, *args) -> None:
        pass

    def translate_path(self, path: str) -> str:
        # Serve the site under a sub-path, as GitHub Pages serves a project site under /REPO/.
        if not urlparse(path).path.startswith(self.prefix):
            return str(Path(self.directory) / "__not_found__")
        return super().translate_path("/" + path[len(self.prefix):])


@contextmanager
def serve_site(site: Path, prefix: str = "/repo/"):
    """Serve `site` on localhost under `prefix`; yields the base URL ending in `prefix`."""
    handler = type("Handler", (_QuietHandler,), {"prefix": prefix})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        system = chromium_path()
        launch = {"executable_path": system} if system else {}  # else Playwright's own Chromium
        browser = p.chromium.launch(args=CHROMIUM_ARGS, **launch)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page, name: str, full_page: bool = False) -> Path:
    """Save the viewport (or the whole page) as tests/browser/screenshots/NAME.png for a human to review."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
    return path

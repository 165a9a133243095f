"""`sae-atlas serve`: render, serve the site over HTTP, re-render when content or theme files change.

Live reload is added by the server only: HTML responses get one `<script src>` for the static
`live-reload.js` (the written site never contains it), which polls `/__atlas/version.js`.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sae_atlas.render.pages import theme_dirs

LIVE_RELOAD_JS = Path(__file__).with_name("live-reload.js")
LIVE_PREFIX = "/__atlas/"
INJECT = b'<script src="/__atlas/live-reload.js"></script>\n'
POLL_SECONDS = 1.0


class LiveState:
    """The site's version number, bumped after every successful re-render."""

    def __init__(self) -> None:
        self.version = 1
        self.lock = threading.Lock()

    def bump(self) -> None:
        with self.lock:
            self.version += 1


class LiveHandler(SimpleHTTPRequestHandler):
    live: LiveState

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == LIVE_PREFIX + "live-reload.js":
            return self._send(LIVE_RELOAD_JS.read_bytes(), "text/javascript")
        if path == LIVE_PREFIX + "version.js":
            return self._send(f"AtlasLive.version({self.live.version});\n".encode(), "text/javascript")
        file = Path(self.translate_path(path))
        if file.is_dir():
            file = file / "index.html"
        if file.suffix == ".html" and file.is_file():
            html = file.read_bytes()
            at = html.rfind(b"</body>")
            return self._send(html[:at] + INJECT + html[at:] if at >= 0 else html + INJECT, "text/html; charset=utf-8")
        return super().do_GET()

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def make_server(out: Path, port: int, live: LiveState, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    handler = type("Handler", (LiveHandler,), {"live": live})
    return ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(Path(out).absolute())))


def snapshot(dirs: list[Path]) -> tuple:
    """(path, mtime, size) of every file under `dirs`: changes when any file is edited, added or removed."""
    entries = []
    for d in dirs:
        if d.is_dir():
            for p in d.rglob("*"):
                if p.is_file():
                    st = p.stat()
                    entries.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(sorted(entries))


class Watcher:
    """Polls content and theme files; re-renders and bumps the live version when they change."""

    def __init__(self, dirs: list[Path], render, live: LiveState):
        self.dirs, self.render, self.live = dirs, render, live
        self.seen = snapshot(dirs)

    def check(self) -> bool:
        now = snapshot(self.dirs)
        if now == self.seen:
            return False
        self.seen = now
        try:
            self.render()
        except Exception as e:  # noqa: BLE001 - keep serving the previous site; say what is wrong
            print(f"sae-atlas serve: render failed, still serving the previous site: {e}", file=sys.stderr)
            return False
        self.live.bump()
        print("sae-atlas serve: re-rendered", file=sys.stderr)
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(POLL_SECONDS):
            self.check()


def serve(args: argparse.Namespace) -> None:
    from sae_atlas.pipeline import load_releases
    from sae_atlas.render import render_site

    def render() -> None:
        releases = load_releases(args.content, getattr(args, "release", None))
        render_site(releases, cache=args.cache, out=args.out, theme=args.theme, quiet=True, dtype=args.dtype)

    render()
    live = LiveState()
    watcher = Watcher([Path(args.content), *theme_dirs(args.theme)], render, live)
    server = make_server(args.out, args.port, live)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    print(f"sae-atlas serve: http://{host}:{port}/index.html (Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        stop.set()
        server.server_close()

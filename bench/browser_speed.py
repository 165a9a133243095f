"""Browser speed of the SAE page on a 24,576-feature synthetic SAE, in headless Chromium.

Renders one synthetic SAE (the cache format and statistics of `bench/synthetic_release.py`) and
measures, from file:// and from a local HTTP server:

1. navigation start -> interactive on the SAE page (median of cold loads, a new browser context each);
   interactive = the page marked itself ready (summary parsed, list built, feature shown) and the
   first frames after it have run: the map's first draw and the first feature's example texts;
2. feature switches: next feature with the keyboard (its record and texts were prefetched) and jumps
   by hash to random features whose shard was never loaded, from the input event to the examples of
   the new feature in the DOM and the frame after (median and p95);
3. bytes transferred for a jump to a random feature over HTTP (its shard and prompt shards, and
   separately the neighbours' prefetch that follows);
4. map frame time: hovering (hit test + tooltip) and panning with the mouse (every move redraws all
   points), as requestAnimationFrame intervals and the time inside the map's draw().

The peer, measured in the same run and browser: a plain static HTML page with the same 24,576
feature labels in a table. The SAE page's interactive time is reported as a ratio to the peer's load
time (to the frame after its load event).

    python bench/browser_speed.py                 # build into build/bench-browser/ and measure
    python bench/browser_speed.py --keep          # reuse the site built there before
    python bench/browser_speed.py --server h2     # serve over HTTP/2 (Node), as GitHub Pages does

The HTTP server (--server) is by default a Python one with persistent HTTP/1.1 connections
(`keepalive`); `h2` is HTTP/2 over TLS with Node's http2 module, what GitHub Pages speaks (no limit
of six requests at a time per host); `http.server` is `python -m http.server` (HTTP/1.0, a new
connection per file), what the numbers before 2026-12 used.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

D_SAE, VOCAB, CONTEXT = 24576, 50257, 128
GOAL_INTERACTIVE_MS, GOAL_SWITCH_MS, GOAL_FEATURE_BYTES, GOAL_FRAME_MS = 1000.0, 100.0, 200_000, 1000 / 60
POINT_MS = 150  # how long the pointer rests on a link before the click, in the pointed-click measure
VIEWPORT = {"width": 1440, "height": 900}

# Runs before any page script: records when the page became interactive, without touching app.js.
# The time after a frame: a message posted from a requestAnimationFrame callback runs after that
# frame's style, layout and paint.
INIT_SCRIPT = """
(() => {
  const b = window.__bench = {};
  performance.setResourceTimingBufferSize(1000000);
  const afterFrame = (cb) => requestAnimationFrame(() => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => cb(performance.now());
    ch.port2.postMessage(0);
  });
  b.afterFrame = afterFrame;
  window.addEventListener('load', () => afterFrame((t) => { b.loaded = t; }));
  const check = () => {
    const body = document.body;
    if (b.ready === undefined && body && body.getAttribute('data-ready') === 'true') {
      b.ready = performance.now();
      afterFrame((t) => { b.readyFrame = t; });
    }
    const fv = document.getElementById('fv-body');
    if (b.examples === undefined && fv && fv.querySelector('.fv-facts') && !fv.querySelector('.loading')
        && (fv.querySelector('.fv-examples .ex') || !fv.querySelector('.fv-examples'))) {
      b.examples = performance.now();
      afterFrame((t) => { b.examplesFrame = t; });
    }
    if (b.ready !== undefined && b.examples !== undefined) observer.disconnect();
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-ready'] });
})();
"""

# Arms a switch measurement: resolves when #fv-body holds the new feature with its example texts.
ARM_SWITCH = """
(arg) => {
  const body = document.getElementById('fv-body'), title = document.getElementById('fv-title');
  const old = body.firstChild, want = 'Feature ' + arg.target;
  let t0 = null;
  window.__benchSwitch = new Promise((resolve) => {
    const done = () => title.textContent === want && body.firstChild && body.firstChild !== old
      && !body.querySelector('.loading') && (body.querySelector('.fv-examples .ex') || !body.querySelector('.fv-examples'));
    const observer = new MutationObserver(() => {
      if (t0 === null || !done()) return;
      observer.disconnect();
      const now = performance.now(), dom = now - t0;
      // Files that finished loading before the examples appeared (the neighbours' prefetch may be among them).
      const files = performance.getEntriesByType('resource').filter((r) => r.startTime >= t0 && r.responseEnd <= now);
      const waits = files.map((r) => r.responseStart - r.requestStart).sort((a, b) => a - b);
      const fetched = files.length ? Math.max(...files.map((r) => r.responseEnd)) - t0 : 0;
      window.__bench.afterFrame((t) => resolve({ dom: dom, frame: t - t0, files: files.length, fetched: fetched,
                                                 wait: waits.length ? waits[waits.length >> 1] : 0 }));
    });
    observer.observe(body, { subtree: true, childList: true });
    if (arg.mode === 'hash') { t0 = performance.now(); window.location.hash = '#' + arg.target; }
    else window.addEventListener(arg.mode === 'click' ? 'pointerdown' : 'keydown', (e) => { t0 = e.timeStamp; }, { capture: true, once: true });
  });
}
"""

# Records requestAnimationFrame times and the time spent in the map's draw() until stopped.
ARM_FRAMES = """
() => {
  const map = AtlasData.page.map, rec = window.__benchFrames = { frames: [], draws: [], on: true };
  if (!map.__benchDraw) {
    map.__benchDraw = map.draw;
    map.draw = function () {
      const t = performance.now();
      map.__benchDraw.call(map);
      if (window.__benchFrames && window.__benchFrames.on) window.__benchFrames.draws.push(performance.now() - t);
    };
  }
  const tick = (t) => { if (!rec.on) return; rec.frames.push(t); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}
"""


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def build(work: Path, prompts: int) -> Path:
    from sae_atlas.render import render_site
    from synthetic_release import build_synthetic_cache, synthetic_release

    release = synthetic_release(1, D_SAE, prompts, CONTEXT, VOCAB)
    cache, site = work / "cache", work / "site"
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    build_synthetic_cache(cache, release, D_SAE, VOCAB)
    render_site([release], cache=cache, out=site, quiet=True)
    print(f"built {site} in {time.perf_counter() - t0:.1f} s")
    return site


def load_summary(site: Path) -> tuple[Path, dict]:
    import orjson

    (summary_path,) = sorted(site.glob("*/*/data/summary.js"))
    script = summary_path.read_bytes()
    return summary_path.parent.parent / "index.html", orjson.loads(script[script.index(b"(") + 1 : script.rindex(b")")])


def write_peer(work: Path, summary: dict) -> Path:
    """A plain HTML table of every feature's label, density and max activation: no script, no CSS."""
    peer = work / "peer" / "index.html"
    peer.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(label or '')}</td><td>{density:.3g}</td><td>{mx:.4g}</td></tr>\n"
        for i, (label, density, mx) in enumerate(zip(summary["label"], summary["density"], summary["max"]))
    )
    peer.write_text(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Feature labels</title></head><body>\n"
        f"<h1>{html.escape(summary['sae'])}</h1>\n<table><thead><tr><th>#</th><th>label</th><th>density</th>"
        f"<th>max</th></tr></thead><tbody>\n{rows}</tbody></table></body></html>\n",
        encoding="utf-8",
    )
    return peer


# KEEPALIVE_SERVER (the default): persistent HTTP/1.1 connections, as GitHub Pages keeps them, a
# thread per connection, no Nagle delay between a response's headers and body. GitHub Pages speaks
# HTTP/2 (TLS) too, where a page's requests share one connection with no limit of six at a time
# per host: H2_SERVER is Node's http2 module over a self-signed certificate (the browser contexts
# ignore certificate errors). Neither compresses responses (Pages gzips them), so byte counts are
# the files' own.
H2_SERVER = r"""
const http2 = require('http2'), fs = require('fs'), path = require('path');
const [root, key, cert] = process.argv.slice(1);
const TYPES = { '.js': 'text/javascript', '.html': 'text/html; charset=utf-8', '.css': 'text/css', '.svg': 'image/svg+xml',
                '.json': 'application/json', '.png': 'image/png', '.txt': 'text/plain' };
const server = http2.createSecureServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) });
server.on('stream', (stream, headers) => {
  const file = path.join(root, decodeURIComponent(headers[':path'].split('?')[0]));
  if (!file.startsWith(root + path.sep)) { stream.respond({ ':status': 403 }); stream.end(); return; }
  stream.respondWithFile(file, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' }, {
    onError: () => { stream.respond({ ':status': 404 }); stream.end(); } });
});
server.listen(0, '127.0.0.1', () => console.log('Serving HTTPS (HTTP/2) on 127.0.0.1 port ' + server.address().port + ' '));
"""
KEEPALIVE_SERVER = """
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=sys.argv[1]))
print(f"Serving HTTP on 127.0.0.1 port {server.server_address[1]} (keep-alive)", flush=True)
server.serve_forever()
"""
SERVERS = ("h2", "keepalive", "http.server")


class StaticServer:
    """A static file server over the bench directory in its own process (no GIL shared with the
    driver): `h2` (H2_SERVER), `keepalive` (KEEPALIVE_SERVER) or `http.server` (`python -m
    http.server`: HTTP/1.0, a new connection per file)."""

    def __init__(self, directory: Path, kind: str = "keepalive"):
        directory = Path(directory).resolve()
        if kind == "h2":
            key, cert = directory / "bench-key.pem", directory / "bench-cert.pem"
            if not cert.exists():
                subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=127.0.0.1",
                                "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
            command = ["node", "-e", H2_SERVER, str(directory), str(key), str(cert)]
        elif kind == "keepalive":
            command = [sys.executable, "-u", "-c", KEEPALIVE_SERVER, str(directory)]
        else:
            command = [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(directory)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 40123 ..."
        scheme = "https" if kind == "h2" else "http"
        self.base = f"{scheme}://127.0.0.1:{line.split(' port ')[1].split()[0]}/"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def new_page(browser, errors: list[str]):
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, ignore_https_errors=True)
    context.add_init_script(INIT_SCRIPT)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    # Failed loads are reported by URL below (the console line has none); a missing favicon is not the site's.
    page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource") and errors.append(f"console: {m.text}"))
    page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico") and errors.append(f"HTTP {r.status}: {r.url}"))
    return context, page


def cold_load(browser, url: str, key: str, errors: list[str]) -> dict:
    """One load in a fresh context; times are ms from navigation start."""
    context, page = new_page(browser, errors)
    try:
        page.goto(url, wait_until="load")
        keys = [key] if key == "loaded" else ["readyFrame", "examplesFrame"]
        page.wait_for_function("keys => keys.every(k => window.__bench[k] !== undefined)", arg=keys, timeout=60_000)
        return page.evaluate(
            """() => {
              const b = window.__bench, nav = performance.getEntriesByType('navigation')[0];
              const summary = performance.getEntriesByType('resource').filter(r => r.name.endsWith('summary.js'))[0];
              return { loaded: b.loaded, ready: b.ready, readyFrame: b.readyFrame, examples: b.examples,
                       examplesFrame: b.examplesFrame, domContentLoaded: nav.domContentLoadedEventEnd,
                       summaryEnd: summary ? summary.responseEnd : null, start: window.__atlasReadyMs };
            }"""
        )
    finally:
        context.close()


def measure_loads(browser, url: str, key: str, n: int, errors: list[str]) -> list[dict]:
    cold_load(browser, url, key, errors)  # warm-up, not counted: the first renderer process start
    return [cold_load(browser, url, key, errors) for _ in range(n)]


def switch(page, mode: str, target: int, selector: str = "") -> dict:
    page.evaluate(ARM_SWITCH, {"mode": mode, "target": target})
    if mode == "key":
        page.keyboard.press("ArrowRight")
    elif mode == "click":
        page.click(selector)
    return page.evaluate("() => window.__benchSwitch")


def settle(page, requests: list, quiet_ms: int = 400, limit_s: float = 10.0) -> None:
    """Waits until no request has finished for `quiet_ms` (the neighbours' prefetch is done)."""
    deadline, seen, since = time.perf_counter() + limit_s, len(requests), time.perf_counter()
    while time.perf_counter() < deadline:
        page.wait_for_timeout(50)
        if len(requests) != seen:
            seen, since = len(requests), time.perf_counter()
        elif (time.perf_counter() - since) * 1000 >= quiet_ms:
            return


def open_settled(browser, url: str, errors: list[str]):
    """A fresh context with the SAE page interactive and its first feature's prefetch done."""
    context, page = new_page(browser, errors)
    requests: list = []
    page.on("requestfinished", lambda r: requests.append(r))
    page.goto(url, wait_until="load")
    page.wait_for_function("() => window.__bench.examplesFrame !== undefined", timeout=60_000)
    settle(page, requests)
    return context, page, requests


def measure_switches(browser, url: str, summary: dict, n: int, rng: random.Random, errors: list[str], count_bytes: bool):
    """`n` keyboard steps in one page, then `n` jumps, each in a fresh page that has loaded only its first feature
    (so that no earlier jump's prompt shards are in memory)."""
    shard_size, pps = summary["shard_size"], summary["prompts_per_shard"]
    context, page, requests = open_settled(browser, url, errors)
    try:
        current = page.evaluate("() => AtlasData.page.current")
        keyboard = []
        for _ in range(n):
            current += 1
            keyboard.append(switch(page, "key", current))
            settle(page, requests, quiet_ms=200)
    finally:
        context.close()

    live = [i for i, m in enumerate(summary["max"]) if m > 0]
    jumps, transfers = [], []
    for _ in range(n):
        context, page, requests = open_settled(browser, url, errors)
        try:
            first = page.evaluate("() => AtlasData.page.current")
            touched = {(first + d) // shard_size for d in (-1, 0, 1)}
            target = rng.choice([i for i in live if {(i + d) // shard_size for d in (-1, 0, 1)}.isdisjoint(touched)])
            mark = len(requests)
            jumps.append(switch(page, "hash", target))
            settle(page, requests)
            if count_bytes:
                transfers.append(bytes_of_jump(page, requests[mark:], target, shard_size, pps))
        finally:
            context.close()
    return keyboard, jumps, transfers


def measure_pointed(browser, url: str, summary: dict, n: int, rng: random.Random, errors: list[str]) -> list[dict]:
    """`n` clicks on a link of the neighbours pane to a feature in a never-loaded shard, each in a fresh page
    after the pointer rested on the link for POINT_MS (a reader aims, then clicks): from the pointerdown to
    the examples in the DOM. The page starts loading a pointed-at feature after 60 ms."""
    shard_size = summary["shard_size"]
    out = []
    for _ in range(n):
        context, page, requests = open_settled(browser, url, errors)
        try:
            first = page.evaluate("() => AtlasData.page.current")
            touched = {(first + d) // shard_size for d in (-1, 0, 1)}
            links = page.evaluate("""() => Array.from(document.querySelectorAll('#fv-body a.nb-link[href^="#"]'))
                .map((a, k) => [k, parseInt(a.getAttribute('href').slice(1), 10)])""")
            links = [(k, i) for k, i in links if i // shard_size not in touched and summary["max"][i] > 0]
            if not links:
                continue
            k, target = rng.choice(links)
            selector = f"#fv-body a.nb-link[href^='#'] >> nth={k}"
            page.hover(selector)
            page.wait_for_timeout(POINT_MS)
            out.append(switch(page, "click", target, selector))
        finally:
            context.close()
    return out


def bytes_of_jump(page, requests: list, target: int, shard_size: int, pps: int) -> dict:
    """Bytes (body + response headers) of the files the feature needs, and of everything the jump loaded."""
    prompts = page.evaluate(
        """() => { const r = AtlasData.page.rec, p = [];
                   (r.top || []).forEach(e => p.push(e[0]));
                   (r.intervals || []).forEach(iv => (iv.ex || []).forEach(e => p.push(e[0])));
                   return p; }"""
    )
    needed = {f"data/f/{target // shard_size:04d}.js"} | {f"/{p // pps:04d}.js" for p in prompts}
    total = own = own_headers = files = 0
    for request in requests:
        sizes = request.sizes()
        total += sizes["responseBodySize"] + sizes["responseHeadersSize"]
        if any(request.url.endswith(suffix) for suffix in needed):
            own += sizes["responseBodySize"]
            own_headers += sizes["responseHeadersSize"]
            files += 1
    return {"feature": own, "headers": own_headers, "files": files, "all": total, "requests": len(requests)}


def measure_map(browser, url: str, errors: list[str]) -> dict:
    context, page = new_page(browser, errors)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function("() => window.__bench.examplesFrame !== undefined", timeout=60_000)
        page.locator("#map-canvas").scroll_into_view_if_needed()
        page.wait_for_timeout(200)
        box = page.locator("#map-canvas").bounding_box()
        cx, cy, w, h = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"], box["height"]
        out = {}
        for gesture in ("hover", "pan"):
            page.mouse.move(cx - w * 0.3, cy - h * 0.2)
            page.wait_for_timeout(300)
            page.evaluate(ARM_FRAMES)
            if gesture == "pan":
                page.mouse.down()
            for step in range(120):  # a slow sweep across the map and back
                f = step / 119
                page.mouse.move(cx - w * 0.3 + w * 0.6 * math.sin(f * math.pi), cy - h * 0.2 + h * 0.4 * f)
            if gesture == "pan":
                page.mouse.up()
            page.wait_for_timeout(100)
            rec = page.evaluate("() => { const r = window.__benchFrames; r.on = false; return r; }")
            frames = rec["frames"]
            intervals = [b - a for a, b in zip(frames, frames[1:])]
            out[gesture] = {"intervals": intervals, "draws": rec["draws"], "points": page.evaluate("() => AtlasData.page.map.n")}
            page.mouse.move(5, 5)
        return out
    finally:
        context.close()


def ratio(value: float, goal: float) -> str:
    return f"{value / goal:5.2f}x goal"


def report_origin(name: str, peer: list[dict], loads: list[dict], keyboard, jumps, pointed, transfers, frames) -> dict:
    """Prints one origin's numbers against their goals; returns the headline numbers."""
    peer_ms = statistics.median(r["loaded"] for r in peer)
    interactive = [max(r["readyFrame"], r["examplesFrame"]) for r in loads]
    med = statistics.median(interactive)
    print(f"\n== {name}")
    peer_list = ", ".join(f"{r['loaded']:.0f}" for r in peer)
    load_list = ", ".join(f"{v:.0f}" for v in interactive)
    print(f"peer page: table of {D_SAE:,} labels, loaded and painted  {peer_ms:6.0f} ms median of {len(peer)} ({peer_list})")
    print(f"SAE page interactive                          {med:6.0f} ms median of {len(loads)} ({load_list})")
    print(f"   goal < {GOAL_INTERACTIVE_MS:.0f} ms: {ratio(med, GOAL_INTERACTIVE_MS)};  {med / peer_ms:.2f}x the peer page")
    for key, label in (("summaryEnd", "summary.js received"), ("domContentLoaded", "DOMContentLoaded"),
                       ("ready", "page ready (data-ready)"), ("readyFrame", "frame after ready (map drawn)"),
                       ("examples", "first feature's examples in the DOM"), ("examplesFrame", "frame after them")):
        vals = [r[key] for r in loads if r.get(key) is not None]
        if vals:
            print(f"   {label:38s} {statistics.median(vals):6.0f} ms")
    starts = [r["start"] for r in loads if r.get("start") is not None]
    if starts:
        print(f"   {'SaePage.start() (map, list, lookup)':38s} {statistics.median(starts):6.0f} ms")
    for label, samples in (("next feature, keyboard (prefetched)", keyboard), ("jump by hash to a never-loaded shard", jumps),
                           (f"click on a neighbour in a never-loaded shard, pointed at for {POINT_MS} ms", pointed)):
        if not samples:
            continue
        files = statistics.median(x["files"] for x in samples)
        # file:// loads leave no Resource Timing entries.
        fetch = (f", {files:.0f} files loaded before the examples, the last after {statistics.median(x['fetched'] for x in samples):.0f} ms, "
                 f"server wait per file {statistics.median(x['wait'] for x in samples):.1f} ms (medians)") if files else ""
        print(f"{label} (n={len(samples)}{fetch}):")
        for key, what in (("dom", "input -> examples in the DOM"), ("frame", "input -> frame after them")):
            vals = [x[key] for x in samples]
            m, p95 = statistics.median(vals), percentile(vals, 95)
            print(f"   {what:30s} median {m:6.1f} ms  p95 {p95:6.1f} ms   goal < {GOAL_SWITCH_MS:.0f} ms: "
                  f"median {ratio(m, GOAL_SWITCH_MS)}, p95 {ratio(p95, GOAL_SWITCH_MS)}")
    if transfers:
        own = [t["feature"] for t in transfers]
        heads = [t["feature"] + t["headers"] for t in transfers]
        everything = [t["all"] for t in transfers]
        print(f"open one feature (a jump over HTTP, n={len(transfers)}): its shard + prompt shards, "
              f"{statistics.median(t['files'] for t in transfers):.0f} files median")
        print(f"   bodies        {statistics.median(own) / 1e3:6.1f} KB median, {max(own) / 1e3:6.1f} KB max   "
              f"goal < {GOAL_FEATURE_BYTES / 1e3:.0f} KB: median {ratio(statistics.median(own), GOAL_FEATURE_BYTES)}, max {ratio(max(own), GOAL_FEATURE_BYTES)}")
        print(f"   with headers  {statistics.median(heads) / 1e3:6.1f} KB median, {max(heads) / 1e3:6.1f} KB max")
        print(f"   everything the jump loaded, with the neighbours' prefetch: {statistics.median(everything) / 1e3:.1f} KB median, "
              f"{max(everything) / 1e3:.1f} KB max, {statistics.median(t['requests'] for t in transfers):.0f} requests median")
    for gesture, rec in frames.items():
        iv, dr = rec["intervals"], rec["draws"] or [0.0]
        print(f"map {gesture} ({rec['points']:,} points): frame interval median {statistics.median(iv):5.1f} ms, p95 {percentile(iv, 95):5.1f} ms, "
              f"max {max(iv):5.1f} ms (n={len(iv)})   goal < {GOAL_FRAME_MS:.1f} ms: p95 {ratio(percentile(iv, 95), GOAL_FRAME_MS)}")
        print(f"   time in the map's draw(): median {statistics.median(dr):5.2f} ms, p95 {percentile(dr, 95):5.2f} ms (n={len(rec['draws'])})")
    return {"interactive": med, "peer": peer_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("build/bench-browser"), help="cache, site and peer page go here")
    p.add_argument("--keep", action="store_true", help="reuse a site built there before")
    p.add_argument("--prompts", type=int, default=24576, help="corpus prompts of 128 tokens (default 24,576)")
    p.add_argument("--loads", type=int, default=5, help="cold loads per page and origin")
    p.add_argument("--switches", type=int, default=30, help="switches of each kind per origin")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--origin", choices=["file", "http", "both"], default="both")
    p.add_argument("--server", choices=SERVERS, default="keepalive",
                   help="keepalive: persistent HTTP/1.1 connections (Python); h2: HTTP/2 over TLS (Node, needs node and "
                        "openssl), as GitHub Pages; http.server: python -m http.server (HTTP/1.0)")
    args = p.parse_args(argv)

    work = args.work.resolve()
    site = work / "site"
    if not (args.keep and site.is_dir()):
        build(work, args.prompts)
    sae_page, summary = load_summary(site)
    peer = write_peer(work, summary)
    print(f"SAE page {sae_page.relative_to(work).as_posix()}: {summary['d_sae']:,} features, shard_size {summary['shard_size']}, "
          f"prompts_per_shard {summary['prompts_per_shard']}, summary.js {(sae_page.parent / 'data/summary.js').stat().st_size / 1e6:.2f} MB; "
          f"peer page {peer.stat().st_size / 1e6:.2f} MB")

    from tests.browser.harness import CHROMIUM_ARGS, chromium_path
    from playwright.sync_api import sync_playwright

    rng = random.Random(args.seed)
    errors: list[str] = []
    origins = ["file", "http"] if args.origin == "both" else [args.origin]
    server = StaticServer(work, args.server) if "http" in origins else None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            print(f"Chromium {browser.version}, headless, viewport {VIEWPORT['width']}x{VIEWPORT['height']}, "
                  f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
            try:
                for origin in origins:
                    base = work.as_uri() + "/" if origin == "file" else server.base
                    sae_url = base + sae_page.relative_to(work).as_posix()
                    peer_url = base + peer.relative_to(work).as_posix()
                    peer_loads = measure_loads(browser, peer_url, "loaded", args.loads, errors)
                    loads = measure_loads(browser, sae_url, "interactive", args.loads, errors)
                    keyboard, jumps, transfers = measure_switches(browser, sae_url, summary, args.switches, rng, errors, origin == "http")
                    pointed = measure_pointed(browser, sae_url, summary, args.switches, rng, errors)
                    frames = measure_map(browser, sae_url, errors)
                    name = f"{origin}://" + (f" ({args.server} server)" if origin == "http" else "")
                    report_origin(f"{name} (load average now {os.getloadavg()[0]:.1f})", peer_loads, loads, keyboard, jumps, pointed, transfers, frames)
            finally:
                browser.close()
    finally:
        if server:
            server.close()
    if errors:
        print(f"\nthe pages reported {len(errors)} error(s), first: {errors[:3]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

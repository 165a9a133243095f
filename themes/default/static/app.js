/* SAE Atlas front end: data loading, global search, and the SAE page (map, list, token lookup, feature view).
   Classic script, no dependencies beyond the vendored MiniSearch; works from file:// (no fetch, no modules).
   Untrusted text (tokens, labels, titles) only ever goes through textContent; explanation html is
   sanitized at render time and is the one thing assigned with innerHTML. */
(function () {
  'use strict';

  var SVG_NS = 'http://www.w3.org/2000/svg';
  var body = document.body;
  var ROOT = (body && body.getAttribute('data-root')) || '';

  /* ---------- small helpers ---------- */

  function $(sel, scope) { return (scope || document).querySelector(sel); }
  function $all(sel, scope) { return Array.prototype.slice.call((scope || document).querySelectorAll(sel)); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, attrs[k]);
    return node;
  }

  function pad4(n) { var s = String(n); while (s.length < 4) s = '0' + s; return s; }
  function clamp(v, lo, hi) { return v < lo ? lo : v > hi ? hi : v; }

  function fmt(v) {
    if (v === null || v === undefined || typeof v !== 'number' || isNaN(v)) return '—';
    if (v === 0) return '0';
    var a = Math.abs(v);
    if (a >= 10000) return Math.round(v).toLocaleString('en-US');
    if (a < 1e-3) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  function fmtDensity(d) {
    if (d === null || d === undefined || isNaN(d)) return '—';
    if (d === 0) return '0';
    if (d < 1e-4) return d.toExponential(2);
    return Number((d * 100).toPrecision(3)) + '%';
  }

  /* ---------- token text ---------- */

  var FRAG_TITLE = 'partial UTF-8 byte sequence (U+FFFD)';
  var CTRL_NAMES = { '\r': '\\r', '\v': '\\v', '\f': '\\f', '\b': '\\b', '\u0000': '\\0' };
  // Newline, tab, U+FFFD and control characters (C0 but newline/tab, DEL, C1); with spaces, also ' '.
  var SPECIAL_RE = /([\n\t\ufffd\u0000-\u0008\u000b-\u001f\u007f-\u009f])/;
  var SPECIAL_SP_RE = /([\n\t \ufffd\u0000-\u0008\u000b-\u001f\u007f-\u009f])/;

  function ctrlEscape(c) {
    if (CTRL_NAMES[c]) return CTRL_NAMES[c];
    var h = c.charCodeAt(0).toString(16);
    return '\\x' + (h.length < 2 ? '0' + h : h);
  }

  /* Appends token text to `parent`, textContent only, with the characters one cannot see made
     visible: newline ↵, tab ⇥, control characters as escapes (\x17), U+FFFD (what is left of a
     partial UTF-8 byte sequence) marked. opts.spaces: spaces as opts.spaceChar (default ·);
     opts.breakLines: a real line break after ↵. Returns true when the text holds U+FFFD. */
  function appendTokenText(parent, s, opts) {
    opts = opts || {};
    s = s === null || s === undefined ? '' : String(s);
    var re = opts.spaces ? SPECIAL_SP_RE : SPECIAL_RE;
    if (!re.test(s)) { parent.appendChild(document.createTextNode(s)); return false; }
    var frag = false;
    var parts = s.split(re);
    for (var n = 0; n < parts.length; n++) {
      var part = parts[n];
      if (!part) continue;
      if (n % 2 === 0) { parent.appendChild(document.createTextNode(part)); continue; }
      if (part === '\n') {
        var nl = el('span', 'ws ws-nl', '↵');
        nl.title = 'newline';
        parent.appendChild(nl);
        if (opts.breakLines) parent.appendChild(document.createTextNode('\n'));
      } else if (part === '\t') {
        var tab = el('span', 'ws', '⇥');
        tab.title = 'tab';
        parent.appendChild(tab);
      } else if (part === ' ') parent.appendChild(el('span', 'ws', opts.spaceChar || '·'));
      else if (part === '\ufffd') {
        var f = el('span', 'tok-frag', '\ufffd');
        f.title = FRAG_TITLE;
        parent.appendChild(f);
        frag = true;
      } else {
        var c = el('span', 'tok-esc', ctrlEscape(part));
        c.title = 'control character U+' + pad4(part.charCodeAt(0).toString(16).toUpperCase());
        parent.appendChild(c);
      }
    }
    return frag;
  }

  /* A token as a chip (logit tables): empty shows ∅, a token of spaces only shows ␣ per space. */
  function tokenChip(s) {
    s = s === null || s === undefined ? '' : String(s);
    var chip = el('span', 'tok-chip');
    if (s === '') { chip.appendChild(el('span', 'ws', '∅')); chip.title = 'empty token'; return chip; }
    var frag = appendTokenText(chip, s, /^ +$/.test(s) ? { spaces: true, spaceChar: '␣' } : null);
    chip.title = JSON.stringify(s) + (frag ? ' · ' + FRAG_TITLE : '');
    if (frag) chip.classList.add('is-frag');
    return chip;
  }

  function isTyping(target) {
    if (!target) return false;
    var tag = target.tagName;
    return tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || target.isContentEditable;
  }

  function debounce(fn, ms) {
    var t = null;
    return function () {
      var args = arguments, self = this;
      if (t) clearTimeout(t);
      t = setTimeout(function () { t = null; fn.apply(self, args); }, ms);
    };
  }

  function cssVar(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name);
    return (v && v.trim()) || fallback;
  }

  /* ---------- data loading: classic <script src> files calling AtlasData.* ---------- */

  var files = Object.create(null);   // absolute URL -> {promise, data}
  var latest = Object.create(null);  // kind -> data of the last registration (for files not loaded by us)

  function absolute(url) { return new URL(url, document.baseURI).href; }

  function registered(kind, data) {
    latest[kind] = data;
    var script = document.currentScript;
    var entry = script && script.src ? files[script.src] : null;
    if (entry) entry.data = data;
  }

  /* Loads a data file once; resolves with what the file registered. */
  function load(url) {
    var key = absolute(url);
    if (files[key]) return files[key].promise;
    var entry = { data: undefined };
    entry.promise = new Promise(function (resolve, reject) {
      var script = document.createElement('script');
      script.async = true;
      script.onload = function () {
        script.remove();
        resolve(entry.data);
      };
      script.onerror = function () {
        script.remove();
        delete files[key];
        reject(new Error('Could not load ' + url));
      };
      script.src = key;
      document.head.appendChild(script);
    });
    files[key] = entry;
    return entry.promise;
  }

  var listeners = { summary: [] };

  window.AtlasData = {
    summary: function (obj) {
      registered('summary', obj);
      listeners.summary.forEach(function (fn) { fn(obj); });
    },
    features: function (shard, records) { registered('features', { shard: shard, records: records || [] }); },
    prompts: function (shard, rows) { registered('prompts', { shard: shard, rows: rows || [] }); },
    search: function (obj) { registered('search', obj); },
    load: load
  };

  /* ---------- colour scheme toggle ---------- */

  function currentScheme() {
    var set = document.documentElement.getAttribute('data-theme');
    if (set === 'light' || set === 'dark') return set;
    return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
  }

  function initThemeToggle() {
    var btn = $('.theme-toggle');
    if (!btn) return;
    function sync() {
      var dark = currentScheme() === 'dark';
      btn.setAttribute('aria-pressed', dark ? 'true' : 'false');
      btn.setAttribute('aria-label', dark ? 'Switch to light mode' : 'Switch to dark mode');
      btn.title = btn.getAttribute('aria-label');
    }
    btn.addEventListener('click', function () {
      var next = currentScheme() === 'dark' ? 'light' : 'dark';
      document.documentElement.setAttribute('data-theme', next);
      try { window.localStorage.setItem('atlas-theme', next); } catch (e) { /* not persisted */ }
      sync();
      document.dispatchEvent(new CustomEvent('atlas:theme'));
    });
    if (window.matchMedia) {
      var mq = window.matchMedia('(prefers-color-scheme: dark)');
      var onChange = function () { sync(); document.dispatchEvent(new CustomEvent('atlas:theme')); };
      if (mq.addEventListener) mq.addEventListener('change', onChange);
    }
    sync();
  }

  /* ---------- global search (MiniSearch over search-index.js) ---------- */

  var KIND_NAMES = { releases: 'release', models: 'model', sets: 'set', saes: 'sae', features: 'feature' };

  function searchDocs(obj) {
    var raw = [];
    if (Array.isArray(obj)) raw = obj;
    else if (obj && typeof obj === 'object') {
      raw = obj.docs || obj.items || obj.entries || null;
      if (!raw) {
        raw = [];
        Object.keys(obj).forEach(function (k) {
          if (Array.isArray(obj[k])) obj[k].forEach(function (d) {
            if (d && typeof d === 'object') raw.push(Object.assign({ kind: KIND_NAMES[k] || k }, d));
          });
        });
      }
    }
    var docs = [];
    raw.forEach(function (d, n) {
      if (!d || typeof d !== 'object') return;
      var href = d.href || d.url || d.path;
      if (!href) return;
      docs.push({
        key: n,
        id: String(d.id || d.sae || d.title || ''),
        title: String(d.title || d.id || ''),
        kind: String(d.kind || d.type || ''),
        text: String(d.text || d.description || d.model || ''),
        href: String(href)
      });
    });
    return docs;
  }

  function initGlobalSearch() {
    var input = $('#global-search');
    var list = $('#global-search-results');
    if (!input || !list) return;
    var form = input.form;
    var index = null, loading = null, failed = false;
    var results = [], active = -1;

    function ensureIndex() {
      if (loading) return loading;
      loading = load(ROOT + 'search-index.js').then(function (obj) {
        var docs = searchDocs(obj === undefined ? latest.search : obj);
        if (typeof window.MiniSearch !== 'function') throw new Error('MiniSearch missing');
        index = new window.MiniSearch({
          idField: 'key',
          fields: ['id', 'title', 'kind', 'text'],
          storeFields: ['id', 'title', 'kind', 'href'],
          tokenize: function (s) { return String(s).toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean); },
          searchOptions: { prefix: true, fuzzy: 0.15, boost: { id: 2, title: 1.5 } }
        });
        index.addAll(docs);
      }).catch(function () { failed = true; });
      return loading;
    }

    function close() {
      list.hidden = true;
      input.setAttribute('aria-expanded', 'false');
      input.removeAttribute('aria-activedescendant');
      active = -1;
    }

    function setActive(n) {
      var items = list.children;
      if (!results.length) return;
      active = (n + results.length) % results.length;
      for (var i = 0; i < items.length; i++) items[i].setAttribute('aria-selected', i === active ? 'true' : 'false');
      var item = items[active];
      if (item) {
        input.setAttribute('aria-activedescendant', item.id);
        item.scrollIntoView({ block: 'nearest' });
      }
    }

    function show(query) {
      list.textContent = '';
      results = [];
      active = -1;
      if (!query) { close(); return; }
      if (failed || !index) {
        list.appendChild(el('li', 'search-empty', failed ? 'Search index unavailable' : 'Loading…'));
      } else {
        results = index.search(query, { combineWith: 'AND' });
        if (!results.length) results = index.search(query);
        results = results.slice(0, 12);
        if (!results.length) list.appendChild(el('li', 'search-empty', 'No matches'));
        results.forEach(function (r, n) {
          var li = el('li', 'search-result');
          li.id = 'gs-opt-' + n;
          li.setAttribute('role', 'option');
          li.setAttribute('aria-selected', 'false');
          var a = el('a');
          a.href = ROOT + r.href;
          a.tabIndex = -1;
          if (r.kind) a.appendChild(el('span', 'badge badge-' + r.kind.replace(/[^a-z]/gi, ''), r.kind));
          a.appendChild(el('span', 'search-title', r.title));
          var shownId = r.kind && r.id.indexOf(r.kind + ':') === 0 ? r.id.slice(r.kind.length + 1) : r.id;
          if (shownId && r.title.indexOf(shownId) < 0) a.appendChild(el('span', 'search-id', shownId));
          li.appendChild(a);
          li.addEventListener('mousemove', function () { if (active !== n) setActive(n); });
          list.appendChild(li);
        });
      }
      list.hidden = false;
      input.setAttribute('aria-expanded', 'true');
    }

    var run = function () {
      var q = input.value.trim();
      if (!q) { close(); return; }
      if (!index && !failed) { show(q); ensureIndex().then(function () { if (input.value.trim() === q) show(q); }); return; }
      show(q);
    };

    input.addEventListener('focus', function () { ensureIndex(); if (input.value.trim()) run(); });
    input.addEventListener('input', run);
    input.addEventListener('keydown', function (e) {
      if (e.key === 'ArrowDown') { e.preventDefault(); if (list.hidden) run(); setActive(active + 1); }
      else if (e.key === 'ArrowUp') { e.preventDefault(); setActive(active - 1); }
      else if (e.key === 'Escape') { if (!list.hidden) { e.preventDefault(); close(); } else input.blur(); }
      else if (e.key === 'Enter') {
        e.preventDefault();
        var r = results[active >= 0 ? active : 0];
        if (r) window.location.href = ROOT + r.href;
      }
    });
    if (form) form.addEventListener('submit', function (e) { e.preventDefault(); });
    document.addEventListener('pointerdown', function (e) {
      if (form && !form.contains(e.target)) close();
    });
    document.addEventListener('keydown', function (e) {
      if (e.key === '/' && !isTyping(e.target) && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        input.focus();
        input.select();
      }
    });
  }

  /* ---------- copy buttons ---------- */

  function initCopyButtons() {
    $all('[data-copy-target]').forEach(function (btn) {
      btn.addEventListener('click', function () {
        var target = document.getElementById(btn.getAttribute('data-copy-target'));
        if (!target) return;
        var text = target.textContent;
        if (!btn.hasAttribute('data-label')) btn.setAttribute('data-label', btn.textContent);
        var done = function (ok) {
          btn.textContent = ok ? 'Copied' : 'Press Ctrl+C';
          btn.classList.toggle('is-done', ok);
          setTimeout(function () { btn.textContent = btn.getAttribute('data-label'); btn.classList.remove('is-done'); }, 1400);
        };
        var fallback = function () {
          var range = document.createRange();
          range.selectNodeContents(target);
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          var ok = false;
          try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
          done(ok);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
        } else fallback();
      });
    });
  }

  /* ---------- charts ---------- */

  /* Round tick positions: about `target` steps of 1, 2 or 5 times a power of ten covering [lo, hi]. */
  function niceTicks(lo, hi, target, integer) {
    if (!(hi > lo)) return [lo];
    var raw = (hi - lo) / Math.max(1, target), mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    var step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    if (integer) step = Math.max(1, Math.round(step));
    var out = [];
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(6)));
    return out;
  }

  var SUPERSCRIPT = { '-': '\u207b', '0': '\u2070', '1': '\u00b9', '2': '\u00b2', '3': '\u00b3', '4': '\u2074', '5': '\u2075', '6': '\u2076', '7': '\u2077', '8': '\u2078', '9': '\u2079' };
  function pow10Label(e) {
    if (e === 0) return '1';
    if (e === 1) return '10';
    return '10' + String(e).split('').map(function (c) { return SUPERSCRIPT[c] || c; }).join('');
  }

  /* Histogram of counts in equal bins over [lo, hi], with a count axis (y) and a value axis (x).
     opts: width, height, label (accessible name), xTicks [[value, text]], xTitle, yTitle,
     binLabel(a, b), mark (a value to draw a line at) and markLabel. Returns an <svg>. */
  function barChart(counts, lo, hi, opts) {
    opts = opts || {};
    var n = counts.length, peak = 0, i;
    for (i = 0; i < n; i++) if (counts[i] > peak) peak = counts[i];
    var yTicks = niceTicks(0, Math.max(1, peak), 3, true);
    var yTop = Math.max(peak, yTicks[yTicks.length - 1]);
    var labelW = 6 * Math.max.apply(null, yTicks.map(function (v) { return v.toLocaleString('en-US').length; }));
    var W = opts.width || 320, H = opts.height || 130;
    var padL = (opts.yTitle ? 14 : 2) + labelW + 6, padR = 10, padT = opts.markLabel ? 18 : 8, padB = opts.xTitle ? 32 : 18;
    var plotW = W - padL - padR, plotH = H - padT - padB, x0 = padL, yBase = padT + plotH;
    var root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'bar-chart', role: 'img', 'aria-label': opts.label || 'Histogram' });
    var title = svg('title');
    title.textContent = opts.label || 'Histogram';
    root.appendChild(title);
    var yOf = function (v) { return yBase - (yTop ? v / yTop : 0) * plotH; };
    var xOf = function (v) { return x0 + plotW * (hi > lo ? (v - lo) / (hi - lo) : 0); };
    // y axis: gridlines and count labels
    yTicks.forEach(function (v) {
      var y = Math.round(yOf(v)) + 0.5;
      if (v > 0) root.appendChild(svg('line', { x1: x0, x2: W - padR, y1: y, y2: y, class: 'grid' }));
      var t = svg('text', { x: x0 - 5, y: (y + 3.5).toFixed(1), class: 'tick', 'text-anchor': 'end' });
      t.textContent = v.toLocaleString('en-US');
      root.appendChild(t);
    });
    if (opts.yTitle) {
      var yt = svg('text', { x: 0, y: 0, class: 'axis-title', 'text-anchor': 'middle', transform: 'translate(9 ' + (padT + plotH / 2).toFixed(1) + ') rotate(-90)' });
      yt.textContent = opts.yTitle;
      root.appendChild(yt);
    }
    var bw = plotW / Math.max(1, n);
    for (i = 0; i < n; i++) {
      if (!counts[i]) continue;
      var h = Math.max(1, counts[i] / yTop * plotH);
      var r = svg('rect', { x: (x0 + i * bw + 0.5).toFixed(2), y: (yBase - h).toFixed(2), width: Math.max(0.5, bw - 1).toFixed(2), height: h.toFixed(2), class: 'bar' });
      var t = svg('title');
      var a = lo + (hi - lo) * i / n, b = lo + (hi - lo) * (i + 1) / n;
      t.textContent = (opts.binLabel ? opts.binLabel(a, b) : fmt(a) + ' – ' + fmt(b)) + ': ' + counts[i].toLocaleString('en-US');
      r.appendChild(t);
      root.appendChild(r);
    }
    root.appendChild(svg('line', { x1: x0, x2: W - padR, y1: yBase + 0.5, y2: yBase + 0.5, class: 'axis' }));
    root.appendChild(svg('line', { x1: x0 - 0.5, x2: x0 - 0.5, y1: padT, y2: yBase + 0.5, class: 'axis' }));
    // x axis: tick marks and labels
    var ticks = opts.xTicks || niceTicks(lo, hi, 4).map(function (v) { return [v, fmt(v)]; });
    ticks.forEach(function (tk) {
      if (tk[0] < lo - 1e-9 || tk[0] > hi + 1e-9) return;
      var x = Math.round(xOf(tk[0])) + 0.5;
      root.appendChild(svg('line', { x1: x, x2: x, y1: yBase + 0.5, y2: yBase + 4, class: 'axis' }));
      var tx = svg('text', { x: x.toFixed(1), y: yBase + 14, class: 'tick', 'text-anchor': 'middle' });
      tx.textContent = tk[1];
      root.appendChild(tx);
    });
    if (opts.xTitle) {
      var xt = svg('text', { x: (x0 + plotW / 2).toFixed(1), y: H - 3, class: 'axis-title', 'text-anchor': 'middle' });
      xt.textContent = opts.xTitle;
      root.appendChild(xt);
    }
    if (typeof opts.mark === 'number' && isFinite(opts.mark)) {
      var mx = xOf(clamp(opts.mark, lo, hi));
      root.appendChild(svg('line', { x1: mx.toFixed(1), x2: mx.toFixed(1), y1: 2, y2: yBase, class: 'marker' }));
      if (opts.markLabel) {
        var right = mx > x0 + plotW * 0.6;
        var ml = svg('text', { x: (mx + (right ? -4 : 4)).toFixed(1), y: 10, class: 'marker-label', 'text-anchor': right ? 'end' : 'start' });
        ml.textContent = opts.markLabel;
        root.appendChild(ml);
      }
    }
    return root;
  }

  /* ---------- the SAE page ---------- */

  var CLUSTER_COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7',
    '#9c755f', '#86bcb6', '#d37295', '#a0cbe8', '#ffbe7d', '#8cd17d', '#b6992d', '#499894', '#f1ce63', '#d4a6c8',
    '#fabfd2', '#6f9bd1'];
  var RAMP = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];
  var DENSITY_BUCKETS = 24;

  function rampColour(t) {
    t = clamp(t, 0, 1) * (RAMP.length - 1);
    var i = Math.min(RAMP.length - 2, Math.floor(t)), f = t - i;
    var a = parseInt(RAMP[i].slice(1), 16), b = parseInt(RAMP[i + 1].slice(1), 16);
    var ch = function (sh) { return Math.round(((a >> sh) & 255) * (1 - f) + ((b >> sh) & 255) * f); };
    return 'rgb(' + ch(16) + ',' + ch(8) + ',' + ch(0) + ')';
  }

  function SaePage(app, S) {
    this.app = app;
    this.S = S;
    this.n = S.d_sae || (S.max ? S.max.length : 0);
    this.shardSize = S.shard_size || 64;
    this.dataBase = (app.getAttribute('data-summary') || 'data/summary.js').replace(/[^/]*$/, '');
    this.current = -1;
    this.generation = 0;
    this.ctxMode = '5';
    this.breakLines = false;
    this.markSpaces = false;
    this.prepareDensity();
  }

  SaePage.prototype.prepareDensity = function () {
    var S = this.S, n = this.n;
    var logs = new Float32Array(n);
    var live = [];
    for (var i = 0; i < n; i++) {
      var d = S.density ? S.density[i] : 0;
      logs[i] = d > 0 ? Math.log10(d) : NaN;
      if (d > 0) live.push(logs[i]);
    }
    live.sort(function (a, b) { return a - b; });
    this.logDensity = logs;
    this.liveSorted = live;
    // Whole decades, so that every decade the densities span gets a labelled tick.
    var lo = live.length ? Math.floor(live[0] + 1e-9) : -6, hi = live.length ? Math.ceil(live[live.length - 1] - 1e-9) : 0;
    if (hi <= lo) hi = lo + 1;
    var bins = 40, counts = new Array(bins).fill(0);
    for (i = 0; i < live.length; i++) counts[Math.min(bins - 1, Math.floor((live[i] - lo) / (hi - lo) * bins))]++;
    this.densityHist = { lo: lo, hi: hi, counts: counts };
  };

  SaePage.prototype.densityChart = function (mark, markLabel, width, height) {
    var h = this.densityHist;
    var ticks = [], span = h.hi - h.lo, every = span > 12 ? 3 : span > 7 ? 2 : 1;
    for (var e = h.lo; e <= h.hi; e++) ticks.push([e, (e - h.lo) % every ? '' : pow10Label(e)]);
    return barChart(h.counts, h.lo, h.hi, {
      label: 'Feature density distribution (log10) across this SAE' + (markLabel ? '; ' + markLabel : ''),
      xTicks: ticks, mark: mark, markLabel: markLabel, width: width, height: height || 140,
      xTitle: 'density: fraction of tokens active (log scale)', yTitle: 'features',
      binLabel: function (a, b) { return 'density ' + fmtDensity(Math.pow(10, a)) + ' – ' + fmtDensity(Math.pow(10, b)) + ', features'; }
    });
  };

  SaePage.prototype.start = function () {
    var self = this;
    var t0 = performance.now();
    var overview = $('#sae-density-chart');
    if (overview && this.liveSorted.length) {
      overview.textContent = '';
      overview.appendChild(el('p', 'chart-caption', 'Feature density across the ' + this.liveSorted.length.toLocaleString('en-US') + ' live features'));
      overview.appendChild(this.densityChart(undefined, undefined, 560, 170));
    }
    this.map = new FeatureMap(this);
    this.list = new FeatureList(this);
    this.lookup = new TokenLookup(this);
    this.initFeatureView();
    window.addEventListener('hashchange', function () { self.fromHash(); });
    document.addEventListener('keydown', function (e) {
      if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.target && e.target.id === 'map-canvas' && /^Arrow/.test(e.key)) return;
      if (e.key === 'ArrowLeft' || e.key === 'k') { e.preventDefault(); self.step(-1); }
      else if (e.key === 'ArrowRight' || e.key === 'j') { e.preventDefault(); self.step(1); }
    });
    window.AtlasData.page = this;  // for debugging and the browser tests
    this.fromHash(true);
    window.__atlasReadyMs = performance.now() - t0;
    window.__atlasReadyAt = performance.now();
    body.setAttribute('data-ready', 'true');
  };

  SaePage.prototype.fromHash = function (initial) {
    var m = /^#(\d+)$/.exec(window.location.hash);
    var i = m ? parseInt(m[1], 10) : NaN;
    if (!isNaN(i) && i >= 0 && i < this.n) { this.show(i, !initial); return; }
    if (this.current < 0) {
      var first = 0;
      for (var k = 0; k < this.n; k++) if (this.S.max[k] > 0) { first = k; break; }
      this.show(first, false);
    }
    // After show(), which clears the status line.
    if (window.location.hash && window.location.hash !== '#' && m) {
      this.status('Feature ' + m[1] + ' does not exist; this SAE has ' + this.n.toLocaleString('en-US') + ' features.');
    }
  };

  SaePage.prototype.status = function (msg) {
    var s = $('#sae-status');
    if (!s) return;
    s.textContent = msg || '';
    s.hidden = !msg;
  };

  SaePage.prototype.go = function (i) {
    if (i < 0 || i >= this.n) return;
    if (window.location.hash === '#' + i) this.show(i, true);
    else window.location.hash = '#' + i;
  };

  SaePage.prototype.step = function (d) {
    var i = this.current < 0 ? 0 : this.current + d;
    this.go(clamp(i, 0, this.n - 1));
  };

  SaePage.prototype.label = function (i) {
    var S = this.S;
    return (S.expl && S.expl[i]) || (S.label && S.label[i]) || '';
  };

  /* Fills a label cell for feature i: its explanation as text, else "dead" for a feature that never
     fired, else its top tokens with invisible characters made visible. */
  SaePage.prototype.fillLabel = function (node, i) {
    var S = this.S, expl = S.expl && S.expl[i], label = S.label && S.label[i];
    var dead = !(S.max && S.max[i] > 0);
    node.textContent = '';
    node.classList.remove('mono', 'is-dead');
    if (expl) node.textContent = expl;
    else if (dead) { node.textContent = 'dead'; node.classList.add('is-dead'); }
    else if (label) { appendTokenText(node, label); node.classList.add('mono'); }
    node.title = expl && label ? expl + '\n' + label : dead && !expl ? 'dead feature: never fired on the corpus' : '';
    return node;
  };

  SaePage.prototype.shardUrl = function (shard) { return this.dataBase + 'f/' + pad4(shard) + '.js'; };

  SaePage.prototype.record = function (i) {
    var self = this, shard = Math.floor(i / this.shardSize);
    return load(this.shardUrl(shard)).then(function (data) {
      var recs = (data && data.records) || [];
      var rec = recs[i - shard * self.shardSize];
      if (!rec || rec.i !== i) rec = recs.filter(function (r) { return r.i === i; })[0];
      if (!rec) throw new Error('Feature ' + i + ' is missing from its data shard');
      return rec;
    });
  };

  SaePage.prototype.promptRows = function (prompts) {
    var S = this.S, pps = S.prompts_per_shard || 64, base = S.corpus || '';
    // Request shards in example order (top examples first): object keys would sort them numerically.
    var shards = [], seen = {};
    prompts.forEach(function (p) {
      var s = Math.floor(p / pps);
      if (p >= 0 && !seen[s]) { seen[s] = true; shards.push(s); }
    });
    var byShard = {};
    return Promise.all(shards.map(function (s) {
      return load(base + pad4(s) + '.js').then(function (data) { byShard[s] = (data && data.rows) || []; }, function () { byShard[s] = null; });
    })).then(function () {
      return function (p) {
        var rows = byShard[Math.floor(p / pps)];
        return rows ? rows[p % pps] || null : null;
      };
    });
  };

  /* ---------- feature view ---------- */

  SaePage.prototype.initFeatureView = function () {
    var self = this;
    this.fv = {
      title: $('#fv-title'), permalink: $('#fv-permalink'), body: $('#fv-body'),
      prev: $('#fv-prev'), next: $('#fv-next')
    };
    if (this.fv.prev) this.fv.prev.addEventListener('click', function () { self.step(-1); });
    if (this.fv.next) this.fv.next.addEventListener('click', function () { self.step(1); });
  };

  SaePage.prototype.show = function (i, scroll) {
    var self = this, fv = this.fv;
    var gen = ++this.generation;
    var t0 = performance.now();
    this.current = i;
    this.status('');
    fv.title.textContent = 'Feature ' + i;
    fv.permalink.href = '#' + i;
    fv.permalink.textContent = (this.S.sae || 'feature') + ':' + i;
    fv.prev.disabled = i <= 0;
    fv.next.disabled = i >= this.n - 1;
    this.map.select(i);
    this.list.markCurrent(i);
    document.title = document.title.replace(/^(Feature \d+ · )?/, 'Feature ' + i + ' · ');
    this.record(i).then(function (rec) {
      if (gen !== self.generation) return;
      self.renderFeature(rec, gen);
      window.__atlasLastFeatureMs = performance.now() - t0;
      if (scroll && window.innerWidth < 1100) $('#feature-view').scrollIntoView({ block: 'start' });
      // Warm the neighbours' records and texts so stepping with ← → stays instant, once this
      // feature's own text has arrived (so the prefetch never competes with it).
      Promise.resolve(self.examplesLoaded).then(function () {
        setTimeout(function () {
          if (gen !== self.generation) return;
          self.prefetch(i + 1);
          self.prefetch(i - 1);
        }, 30);
      });
    }, function (err) {
      if (gen !== self.generation) return;
      fv.body.textContent = '';
      fv.body.appendChild(el('p', 'notice notice-error', err.message));
    });
  };

  SaePage.prototype.prefetch = function (i) {
    if (i < 0 || i >= this.n || !(this.S.max[i] > 0)) return;
    var self = this;
    this.record(i).then(function (rec) { return self.promptRows(examplePrompts(rec)); }).catch(function () {});
  };

  function examplePrompts(rec) {
    var prompts = [];
    (rec.top || []).forEach(function (e) { if (e) prompts.push(e[0]); });
    (rec.intervals || []).forEach(function (iv) { (iv.ex || []).forEach(function (e) { if (e) prompts.push(e[0]); }); });
    return prompts;
  }

  function section(title, cls) {
    var s = el('section', 'fv-section' + (cls ? ' ' + cls : ''));
    if (title) s.appendChild(el('h3', null, title));
    return s;
  }

  SaePage.prototype.renderFeature = function (rec, gen) {
    var self = this, S = this.S, frag = document.createDocumentFragment();
    var dead = !(rec.max > 0);

    // Key numbers
    var facts = el('dl', 'fv-facts');
    var addFact = function (k, v, title) {
      var d = el('div');
      d.appendChild(el('dt', null, k));
      var dd = el('dd', null, v);
      if (title) dd.title = title;
      d.appendChild(dd);
      facts.appendChild(d);
    };
    addFact('Max activation', fmt(rec.max));
    addFact('Density', fmtDensity(rec.density), rec.density ? 'fraction of tokens with a non-zero activation: ' + rec.density : '');
    var ld = typeof rec.log_density === 'number' ? rec.log_density : (rec.density > 0 ? Math.log10(rec.density) : null);
    if (ld !== null) {
      var rank = upperBound(this.liveSorted, ld) / Math.max(1, this.liveSorted.length);
      addFact('Density percentile', Math.round(rank * 100) + '%', 'share of live features at most this dense');
    }
    if (S.cluster) addFact('Cluster', String(S.cluster[rec.i]));
    frag.appendChild(facts);

    // Explanations (sanitized html from render time)
    var expls = rec.expl || [];
    if (expls.length) {
      var es = el('div', 'fv-expl');
      expls.forEach(function (e) {
        var card = el('div', 'expl');
        var text = el('div', 'expl-text');
        text.innerHTML = e.html || '';
        card.appendChild(text);
        var meta = [];
        if (e.author) meta.push(e.author);
        if (typeof e.score === 'number') meta.push('score ' + fmt(e.score));
        if (meta.length) card.appendChild(el('div', 'expl-meta', meta.join(' · ')));
        es.appendChild(card);
      });
      frag.appendChild(es);
    } else if (S.label && S.label[rec.i]) {
      var lab = el('p', 'fv-label');
      lab.appendChild(el('span', 'muted', 'Top tokens: '));
      appendTokenText(lab.appendChild(el('span', 'mono')), S.label[rec.i]);
      frag.appendChild(lab);
    }

    if (dead) {
      var deadBox = el('div', 'notice notice-dead');
      deadBox.setAttribute('role', 'note');
      deadBox.appendChild(el('strong', null, 'No activations. '));
      deadBox.appendChild(document.createTextNode('This feature never fired on the corpus (max activation 0), so it has no examples or histogram.'));
      frag.appendChild(deadBox);
    }

    // Charts
    var charts = el('div', 'fv-charts');
    if (!dead && rec.hist && rec.hist.length) {
      var hs = section('Activation histogram', 'chart');
      var total = rec.hist.reduce(function (a, b) { return a + b; }, 0);
      hs.appendChild(barChart(rec.hist, 0, rec.max, {
        label: 'Histogram of non-zero activations, ' + total.toLocaleString('en-US') + ' tokens, 0 to ' + fmt(rec.max),
        xTitle: 'activation', yTitle: 'tokens'
      }));
      hs.appendChild(el('p', 'chart-caption', total.toLocaleString('en-US') + ' non-zero activations'));
      charts.appendChild(hs);
    }
    if (!dead && ld !== null && this.liveSorted.length) {
      var ds = section('Density vs. this SAE', 'chart');
      ds.appendChild(this.densityChart(ld, 'this feature ' + fmtDensity(rec.density)));
      ds.appendChild(el('p', 'chart-caption', 'density of every live feature; the line marks this one'));
      charts.appendChild(ds);
    }
    if (charts.childNodes.length) frag.appendChild(charts);

    // Logits
    if ((rec.pos && rec.pos.length) || (rec.neg && rec.neg.length)) {
      var logits = el('div', 'fv-two');
      logits.appendChild(logitTable('Positive logits', rec.pos || [], 'pos'));
      logits.appendChild(logitTable('Negative logits', rec.neg || [], 'neg'));
      frag.appendChild(logits);
    }

    // Neighbours
    if ((rec.nb && rec.nb.length) || (rec.xnb && rec.xnb.length)) {
      var nbs = el('div', 'fv-two');
      // One neighbour: a link (its index, and its label when it is in this SAE) and the cosine.
      var nbItem = function (href, idx, label, cos) {
        var li = el('li');
        var a = el('a', 'nb-link');
        a.href = href;
        a.appendChild(el('span', 'nb-idx', idx));
        if (label) a.appendChild(label);
        li.appendChild(a);
        li.appendChild(el('span', 'nb-cos', fmt(cos)));
        li.title = 'decoder cosine ' + cos;
        return li;
      };
      if (rec.nb && rec.nb.length) {
        var ns = section('Decoder neighbours');
        var ul = el('ul', 'nb-list');
        rec.nb.forEach(function (pair) {
          ul.appendChild(nbItem('#' + pair[0], '#' + pair[0], self.fillLabel(el('span', 'nb-label'), pair[0]), pair[1]));
        });
        ns.appendChild(ul);
        nbs.appendChild(ns);
      }
      if (rec.xnb && rec.xnb.length) {
        var xs = section('Other layers');
        var xul = el('ul', 'nb-list');
        rec.xnb.forEach(function (q) {
          var href = String(q[1] || '');
          xul.appendChild(nbItem(href.indexOf('#') >= 0 ? href : href + '#' + q[2], String(q[0]) + ':' + q[2], null, q[3]));
        });
        xs.appendChild(xul);
        nbs.appendChild(xs);
      }
      frag.appendChild(nbs);
    }

    // Examples
    var exSection = null, ivSection = null;
    if (!dead && ((rec.top && rec.top.length) || (rec.intervals && rec.intervals.length))) {
      exSection = section('Top activations', 'fv-examples');
      exSection.appendChild(this.exampleControls());
      var holder = el('div', 'examples');
      holder.appendChild(el('p', 'muted loading', 'Loading text…'));
      exSection.appendChild(holder);
      frag.appendChild(exSection);
      if (rec.intervals && rec.intervals.length) {
        ivSection = section('Interval samples', 'fv-intervals');
        ivSection.appendChild(el('p', 'muted pending', 'Loading text…'));
        frag.appendChild(ivSection);
      }
    }

    this.fv.body.textContent = '';
    this.fv.body.appendChild(frag);
    this.rec = rec;

    // Text arrives in two steps: the top examples' prompts first (what a reader looks at), then the
    // interval samples' (below the fold), so a jump to a feature shows its examples after ~20 files.
    this.examplesLoaded = null;
    this.rowOf = null;
    this.intervalsReady = false;
    if (exSection) {
      var topPrompts = examplePrompts({ top: rec.top });
      this.examplesLoaded = this.promptRows(topPrompts).then(function (rowOf) {
        if (gen !== self.generation) return null;
        self.rowOf = rowOf;
        self.renderExamples();
        return self.promptRows(examplePrompts(rec));
      }).then(function (rowOf) {
        if (!rowOf || gen !== self.generation) return;
        self.rowOf = rowOf;
        self.intervalsReady = true;
        self.renderExamples();
      });
    }
  };

  function upperBound(sorted, v) {
    var lo = 0, hi = sorted.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (sorted[mid] <= v) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function logitTable(title, rows, kind) {
    var s = section(title, 'logits logits-' + kind);
    var table = el('table', 'logit-table');
    var tb = el('tbody');
    rows.forEach(function (r) {
      var tr = el('tr');
      var tok = el('td', 'tok-cell');
      tok.appendChild(tokenChip(r[0]));
      tr.appendChild(tok);
      tr.appendChild(el('td', 'num ' + kind, (r[1] > 0 ? '+' : '') + fmt(r[1])));
      tb.appendChild(tr);
    });
    table.appendChild(tb);
    s.appendChild(table);
    return s;
  }

  SaePage.prototype.exampleControls = function () {
    var self = this;
    var bar = el('div', 'controls ex-controls');
    var lab = el('label', 'control', 'Context ');
    var sel = el('select');
    sel.setAttribute('aria-label', 'Tokens of context around the max token');
    [['5', '±5 tokens'], ['16', '±16 tokens'], ['all', 'All stored']].forEach(function (o) {
      var opt = el('option', null, o[1]);
      opt.value = o[0];
      if (o[0] === self.ctxMode) opt.selected = true;
      sel.appendChild(opt);
    });
    sel.addEventListener('change', function () { self.ctxMode = sel.value; self.renderExamples(); });
    lab.appendChild(sel);
    bar.appendChild(lab);
    var toggle = function (text, key, aria) {
      var l = el('label', 'control check');
      var cb = el('input');
      cb.type = 'checkbox';
      cb.checked = self[key];
      cb.setAttribute('aria-label', aria);
      cb.addEventListener('change', function () { self[key] = cb.checked; self.renderExamples(); });
      l.appendChild(cb);
      l.appendChild(document.createTextNode(' ' + text));
      bar.appendChild(l);
    };
    toggle('Break lines', 'breakLines', 'Break lines at newline tokens instead of showing ↵');
    toggle('Mark spaces', 'markSpaces', 'Show spaces as a visible dot');
    return bar;
  };

  SaePage.prototype.renderExamples = function () {
    var rec = this.rec, rowOf = this.rowOf;
    if (!rec || !rowOf) return;
    var holder = $('.fv-examples .examples', this.fv.body);
    if (holder) {
      var f1 = document.createDocumentFragment();
      (rec.top || []).forEach(function (ex) { if (ex) f1.appendChild(this.exampleRow(ex, rowOf(ex[0]), rec.max)); }, this);
      if (!(rec.top || []).length) f1.appendChild(el('p', 'muted', 'No stored examples.'));
      holder.textContent = '';
      holder.appendChild(f1);
    }
    var iv = $('.fv-intervals', this.fv.body);
    if (iv && this.intervalsReady) {
      var f2 = document.createDocumentFragment();
      f2.appendChild(el('h3', null, 'Interval samples'));
      (rec.intervals || []).slice().reverse().forEach(function (group) {
        var exs = (group.ex || []).filter(Boolean);
        var g = el('details', 'interval');
        g.open = true;
        var sum = el('summary');
        sum.appendChild(el('span', 'interval-range', 'Activation ' + fmt(group.lo) + ' – ' + fmt(group.hi)));
        sum.appendChild(el('span', 'muted small', ' · ' + exs.length + ' example' + (exs.length === 1 ? '' : 's')));
        g.appendChild(sum);
        var list = el('div', 'examples');
        exs.forEach(function (ex) { list.appendChild(this.exampleRow(ex, rowOf(ex[0]), rec.max)); }, this);
        if (!exs.length) list.appendChild(el('p', 'muted small', 'No tokens in this interval.'));
        g.appendChild(list);
        f2.appendChild(g);
      }, this);
      iv.textContent = '';
      iv.appendChild(f2);
    }
  };

  SaePage.prototype.exampleRow = function (ex, tokens, max) {
    var S = this.S;
    var prompt = ex[0], pos = ex[1], act = ex[2], ws = ex[3], offs = ex[4] || [], vals = ex[5] || [];
    var row = el('div', 'ex');
    var actEl = el('span', 'ex-act', fmt(act));
    actEl.title = 'max activation in this example';
    row.appendChild(actEl);
    var text = el('div', 'ex-text' + (this.breakLines ? ' break-lines' : ''));
    row.appendChild(text);
    var meta = el('span', 'ex-meta', 'prompt ' + prompt);
    row.appendChild(meta);
    if (!tokens) {
      text.appendChild(el('span', 'muted', 'Text unavailable for prompt ' + prompt + '.'));
      return row;
    }
    var values = Object.create(null);
    for (var j = 0; j < offs.length; j++) values[ws + offs[j]] = vals[j];
    if (!(values[pos] > 0)) values[pos] = act;  // the peak is not repeated in the window values
    var len = tokens.length, lo, hi;
    // The stored window runs from context_before tokens before the max to context_after after it.
    var storedLo = Math.max(0, pos - (S.context_before || 0)), storedHi = Math.min(len - 1, pos + (S.context_after || 0));
    if (this.ctxMode === 'all') { lo = storedLo; hi = storedHi; }
    else { var k = parseInt(this.ctxMode, 10); lo = Math.max(0, pos - k); hi = Math.min(len - 1, pos + k); }
    if (lo > 0) text.appendChild(el('span', 'ellipsis', '…'));
    var denom = max > 0 ? max : (act || 1);
    for (var t = lo; t <= hi; t++) {
      var s = String(tokens[t] === undefined || tokens[t] === null ? '' : tokens[t]);
      var span = el('span', 'tok');
      var frag = this.fillToken(span, s) ? ' · ' + FRAG_TITLE : '';
      var v = values[t];
      var stored = t >= storedLo && t <= storedHi;
      if (!stored) {
        span.classList.add('tok-unknown');
        span.title = JSON.stringify(s) + ' · activation not stored' + frag;
      } else {
        var val = v || 0;
        if (val > 0) {
          var a = clamp(val / denom, 0.06, 1);
          span.classList.add('tok-on');
          if (a > 0.55) span.classList.add('tok-hi');
          span.style.setProperty('--a', a.toFixed(3));
        }
        span.title = JSON.stringify(s) + ' · ' + fmt(val) + frag;
      }
      if (t === pos) span.classList.add('tok-max');
      text.appendChild(span);
    }
    if (hi < len - 1) text.appendChild(el('span', 'ellipsis', '…'));
    return row;
  };

  /* Fills a token span; returns true when the token is (part of) a partial UTF-8 byte sequence. */
  SaePage.prototype.fillToken = function (span, s) {
    if (s === '') { span.textContent = '∅'; span.classList.add('tok-empty'); return false; }
    var frag = appendTokenText(span, s, { spaces: this.markSpaces, breakLines: this.breakLines });
    if (frag) span.classList.add('tok-frag-token');
    return frag;
  };

  /* ---------- the UMAP map ---------- */

  var GRID = 128;

  function FeatureMap(page) {
    this.page = page;
    this.S = page.S;
    this.n = page.n;
    this.canvas = $('#map-canvas');
    this.wrap = $('#map-wrap');
    this.tooltip = $('#map-tooltip');
    this.legend = $('#map-legend');
    this.colourSelect = $('#map-colour');
    if (!this.canvas || !this.S.x || !this.S.y) { this.disabled = true; return; }
    this.ctx = this.canvas.getContext('2d');
    this.off = document.createElement('canvas');
    this.offCtx = this.off.getContext('2d');
    this.mode = 'cluster';
    this.hover = -1;
    this.selected = -1;
    this.dirty = true;
    this.frame = 0;
    this.buildGrid();
    this.buildBuckets();
    this.bind();
    this.resize();
    this.fit();
  }

  FeatureMap.prototype.buildGrid = function () {
    var n = this.n, x = this.S.x, y = this.S.y;
    var cellOf = new Int32Array(n), counts = new Int32Array(GRID * GRID + 1);
    for (var i = 0; i < n; i++) {
      var c = clamp(Math.floor(y[i] * GRID), 0, GRID - 1) * GRID + clamp(Math.floor(x[i] * GRID), 0, GRID - 1);
      cellOf[i] = c;
      counts[c + 1]++;
    }
    for (var k = 0; k < GRID * GRID; k++) counts[k + 1] += counts[k];
    var fill = counts.slice(0, GRID * GRID), items = new Int32Array(n);
    for (i = 0; i < n; i++) items[fill[cellOf[i]]++] = i;
    this.cellStart = counts;
    this.cellItems = items;
  };

  FeatureMap.prototype.buildBuckets = function () {
    var S = this.S, n = this.n, page = this.page;
    var buckets = [], colours = [], i;
    if (this.mode === 'density') {
      var live = page.liveSorted;
      var lo = live.length ? live[Math.floor(live.length * 0.01)] : -6, hi = live.length ? live[Math.floor(live.length * 0.99)] : 0;
      if (hi <= lo) hi = lo + 1;
      for (i = 0; i < DENSITY_BUCKETS; i++) { buckets.push([]); colours.push(rampColour(i / (DENSITY_BUCKETS - 1))); }
      this.densityRange = [lo, hi];
      var dead = [];
      for (i = 0; i < n; i++) {
        var ld = page.logDensity[i];
        if (isNaN(ld)) dead.push(i);
        else buckets[clamp(Math.floor((ld - lo) / (hi - lo) * DENSITY_BUCKETS), 0, DENSITY_BUCKETS - 1)].push(i);
      }
      this.dead = dead;
    } else {
      var byCluster = Object.create(null), keys = [], deadC = [];
      for (i = 0; i < n; i++) {
        if (!(S.max[i] > 0)) { deadC.push(i); continue; }
        var c = S.cluster ? S.cluster[i] : 0;
        if (!byCluster[c]) { byCluster[c] = []; keys.push(c); }
        byCluster[c].push(i);
      }
      keys.sort(function (a, b) { return a - b; });
      keys.forEach(function (c) {
        buckets.push(byCluster[c]);
        colours.push(c < 0 ? '#8a8f98' : CLUSTER_COLOURS[((c % CLUSTER_COLOURS.length) + CLUSTER_COLOURS.length) % CLUSTER_COLOURS.length]);
      });
      this.clusterCount = keys.length;
      this.dead = deadC;
    }
    this.buckets = buckets;
    this.colours = colours;
    this.colourOf = new Int16Array(n).fill(-1);
    for (var b = 0; b < buckets.length; b++) for (var j = 0; j < buckets[b].length; j++) this.colourOf[buckets[b][j]] = b;
    this.updateLegend();
  };

  FeatureMap.prototype.updateLegend = function () {
    if (!this.legend) return;
    this.legend.textContent = '';
    var lg = this.legend;
    if (this.mode === 'density') {
      lg.appendChild(el('span', null, 'log10 density ' + this.densityRange[0].toFixed(1) + ' '));
      lg.appendChild(el('span', 'ramp', ''));
      lg.appendChild(el('span', null, ' ' + this.densityRange[1].toFixed(1)));
    } else {
      lg.appendChild(el('span', null, (this.clusterCount || 0) + ' clusters'));
    }
    if (this.dead.length) lg.appendChild(el('span', null, ' · ' + this.dead.length.toLocaleString('en-US') + ' dead (grey)'));
    lg.appendChild(el('span', 'muted', ' · drag to pan, scroll to zoom, click to open'));
  };

  FeatureMap.prototype.bind = function () {
    var self = this, canvas = this.canvas;
    var drag = null;
    canvas.addEventListener('pointerdown', function (e) {
      drag = { x: e.clientX, y: e.clientY, tx: self.tx, ty: self.ty, moved: false, id: e.pointerId };
      canvas.setPointerCapture(e.pointerId);
      canvas.classList.add('is-dragging');
    });
    canvas.addEventListener('pointermove', function (e) {
      var r = canvas.getBoundingClientRect();
      var mx = e.clientX - r.left, my = e.clientY - r.top;
      if (drag) {
        var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        if (drag.moved) {
          self.tx = drag.tx + dx;
          self.ty = drag.ty + dy;
          self.dirty = true;
          self.setHover(-1);
          self.schedule();
          return;
        }
      }
      self.setHover(self.hit(mx, my), mx, my);
    });
    var end = function (e) {
      if (!drag) return;
      var click = !drag.moved;
      drag = null;
      canvas.classList.remove('is-dragging');
      if (click && e.type === 'pointerup') {
        var r = canvas.getBoundingClientRect();
        var i = self.hit(e.clientX - r.left, e.clientY - r.top);
        if (i >= 0) self.page.go(i);
      }
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
    canvas.addEventListener('pointerleave', function () { if (!drag) self.setHover(-1); });
    canvas.addEventListener('wheel', function (e) {
      e.preventDefault();
      var r = canvas.getBoundingClientRect();
      var factor = Math.exp(-clamp(e.deltaY * (e.deltaMode === 1 ? 16 : 1), -300, 300) * 0.0015);
      self.zoomAt(e.clientX - r.left, e.clientY - r.top, factor);
    }, { passive: false });
    canvas.addEventListener('keydown', function (e) {
      var step = 40;
      if (e.key === '+' || e.key === '=') self.zoomAt(self.w / 2, self.h / 2, 1.4);
      else if (e.key === '-' || e.key === '_') self.zoomAt(self.w / 2, self.h / 2, 1 / 1.4);
      else if (e.key === 'ArrowLeft') self.pan(step, 0);
      else if (e.key === 'ArrowRight') self.pan(-step, 0);
      else if (e.key === 'ArrowUp') self.pan(0, step);
      else if (e.key === 'ArrowDown') self.pan(0, -step);
      else if (e.key === '0') self.fit();
      else return;
      e.preventDefault();
    });
    var zin = $('#map-zoom-in'), zout = $('#map-zoom-out'), reset = $('#map-reset');
    if (zin) zin.addEventListener('click', function () { self.zoomAt(self.w / 2, self.h / 2, 1.5); });
    if (zout) zout.addEventListener('click', function () { self.zoomAt(self.w / 2, self.h / 2, 1 / 1.5); });
    if (reset) reset.addEventListener('click', function () { self.fit(); });
    if (this.colourSelect) this.colourSelect.addEventListener('change', function () {
      self.mode = self.colourSelect.value === 'density' ? 'density' : 'cluster';
      self.buildBuckets();
      self.dirty = true;
      self.schedule();
    });
    if (window.ResizeObserver) new ResizeObserver(function () { self.resize(); }).observe(this.wrap);
    else window.addEventListener('resize', function () { self.resize(); });
    document.addEventListener('atlas:theme', function () { self.dirty = true; self.schedule(); });
  };

  FeatureMap.prototype.resize = function () {
    var w = Math.max(1, this.wrap.clientWidth), h = Math.max(1, this.wrap.clientHeight);
    var dpr = window.devicePixelRatio || 1;
    if (w === this.w && h === this.h && dpr === this.dpr) return;
    if (this.w && this.k) {
      // Keep the centre of the view where it was.
      var cx = (this.w / 2 - this.tx) / this.k, cy = (this.h / 2 - this.ty) / this.k;
      var k = this.k * Math.min(w, h) / Math.min(this.w, this.h);
      this.k = k; this.tx = w / 2 - cx * k; this.ty = h / 2 - cy * k;
    }
    this.w = w; this.h = h; this.dpr = dpr;
    this.canvas.width = this.off.width = Math.round(w * dpr);
    this.canvas.height = this.off.height = Math.round(h * dpr);
    this.dirty = true;
    this.schedule();
  };

  FeatureMap.prototype.fit = function () {
    var s = Math.min(this.w, this.h) * 0.92;
    this.k0 = s;
    this.k = s;
    this.tx = (this.w - s) / 2;
    this.ty = (this.h - s) / 2;
    this.dirty = true;
    this.schedule();
  };

  FeatureMap.prototype.zoomAt = function (mx, my, factor) {
    var k = clamp(this.k * factor, this.k0 * 0.5, this.k0 * 200);
    factor = k / this.k;
    this.tx = mx - (mx - this.tx) * factor;
    this.ty = my - (my - this.ty) * factor;
    this.k = k;
    this.dirty = true;
    this.setHover(-1);
    this.schedule();
  };

  FeatureMap.prototype.pan = function (dx, dy) { this.tx += dx; this.ty += dy; this.dirty = true; this.schedule(); };

  // Screen position of a feature: y is flipped so that larger UMAP y is up.
  FeatureMap.prototype.sx = function (i) { return this.S.x[i] * this.k + this.tx; };
  FeatureMap.prototype.sy = function (i) { return (1 - this.S.y[i]) * this.k + this.ty; };

  /* Point radius in CSS pixels: about a quarter of the spacing the points would have if spread evenly
     over the fitted view (64 features: 5 px, 1,024: ~2.5 px, 16,384+: ~1 px), growing gently on zoom. */
  FeatureMap.prototype.radius = function () {
    var base = clamp(0.26 * this.k0 / Math.sqrt(Math.max(1, this.n)), 1.1, 5);
    return clamp(base * Math.pow(this.k / this.k0, 0.4), 1.1, 9);
  };

  FeatureMap.prototype.hit = function (mx, my) {
    if (this.disabled) return -1;
    var ux = (mx - this.tx) / this.k, uy = 1 - (my - this.ty) / this.k;
    var rd = (this.radius() + 4) / this.k;
    var x0 = clamp(Math.floor((ux - rd) * GRID), 0, GRID - 1), x1 = clamp(Math.floor((ux + rd) * GRID), 0, GRID - 1);
    var y0 = clamp(Math.floor((uy - rd) * GRID), 0, GRID - 1), y1 = clamp(Math.floor((uy + rd) * GRID), 0, GRID - 1);
    if (ux + rd < 0 || ux - rd > 1 || uy + rd < 0 || uy - rd > 1) return -1;
    var best = -1, bestD = rd * rd, X = this.S.x, Y = this.S.y;
    for (var cy = y0; cy <= y1; cy++) {
      for (var cx = x0; cx <= x1; cx++) {
        var c = cy * GRID + cx;
        for (var p = this.cellStart[c], e = this.cellStart[c + 1]; p < e; p++) {
          var i = this.cellItems[p], dx = X[i] - ux, dy = Y[i] - uy, d = dx * dx + dy * dy;
          if (d < bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  };

  FeatureMap.prototype.setHover = function (i, mx, my) {
    if (i !== this.hover) {
      this.hover = i;
      this.canvas.classList.toggle('is-pointing', i >= 0);
      this.schedule();
    }
    var tip = this.tooltip;
    if (!tip) return;
    if (i < 0) { tip.hidden = true; return; }
    if (tip.getAttribute('data-i') !== String(i)) {
      tip.setAttribute('data-i', String(i));
      tip.textContent = '';
      var head = el('div', 'tip-head');
      head.appendChild(el('strong', null, '#' + i));
      head.appendChild(el('span', 'muted', ' ' + fmtDensity(this.S.density ? this.S.density[i] : null) + ' · max ' + fmt(this.S.max[i])));
      tip.appendChild(head);
      var S = this.S;
      var live = S.max[i] > 0;
      if (S.expl && S.expl[i]) tip.appendChild(el('div', 'tip-expl', S.expl[i]));
      if (live && S.label && S.label[i]) appendTokenText(tip.appendChild(el('div', 'tip-label mono')), S.label[i]);
      if (!live) tip.appendChild(el('div', 'muted', 'dead feature: never fired on the corpus'));
    }
    tip.hidden = false;
    var tw = tip.offsetWidth, th = tip.offsetHeight;
    var x = mx + 14, y = my + 14;
    if (x + tw > this.w) x = mx - tw - 10;
    if (y + th > this.h) y = my - th - 10;
    tip.style.transform = 'translate(' + Math.max(0, x) + 'px,' + Math.max(0, y) + 'px)';
  };

  FeatureMap.prototype.select = function (i) {
    if (this.disabled) return;
    this.selected = i;
    this.schedule();
  };

  FeatureMap.prototype.schedule = function () {
    if (this.disabled || this.frame) return;
    var self = this;
    this.frame = requestAnimationFrame(function () { self.frame = 0; self.draw(); });
  };

  /* In dark mode the palette is mixed a quarter of the way to white so that dark hues (viridis' purples,
     the blues) stand out from the dark background. */
  function pointColour(c, dark) {
    if (!dark) return c;
    var m = /^#([0-9a-f]{6})$/i.exec(c), rgb;
    if (m) { var v = parseInt(m[1], 16); rgb = [(v >> 16) & 255, (v >> 8) & 255, v & 255]; }
    else if ((m = /^rgb\((\d+),(\d+),(\d+)\)$/.exec(c))) rgb = [+m[1], +m[2], +m[3]];
    else return c;
    return 'rgb(' + rgb.map(function (x) { return Math.round(x + (255 - x) * 0.25); }).join(',') + ')';
  }

  FeatureMap.prototype.renderPoints = function () {
    var ctx = this.offCtx, dpr = this.dpr, X = this.S.x, Y = this.S.y, k = this.k, tx = this.tx, ty = this.ty;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.off.width, this.off.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    var r = this.radius(), d = r * 2, w = this.w, h = this.h;
    // Circles once they are big enough on the device to look round; tiny points stay squares (fast).
    var round = r * dpr >= 2.5, outline = r >= 2;
    var dark = currentScheme() === 'dark';
    ctx.lineWidth = 2 * Math.max(0.6, Math.min(1, r / 4));  // half of it shows outside the fill
    ctx.strokeStyle = cssVar('--panel-2', dark ? '#1d232c' : '#f1f3f6');
    var drawSet = function (idx, alpha) {
      ctx.beginPath();
      for (var j = 0; j < idx.length; j++) {
        var i = idx[j], px = X[i] * k + tx, py = (1 - Y[i]) * k + ty;
        if (px < -d || py < -d || px > w + d || py > h + d) continue;
        if (round) { ctx.moveTo(px + r, py); ctx.arc(px, py, r, 0, 2 * Math.PI); }
        else ctx.rect(px - r, py - r, d, d);
      }
      // The outline first, the fill over it: overlapping points merge into one outlined blob.
      if (outline) { ctx.globalAlpha = 1; ctx.stroke(); }
      ctx.globalAlpha = alpha;
      ctx.fill();
    };
    ctx.fillStyle = cssVar('--map-dead', '#9aa0a6');
    drawSet(this.dead, 0.6);
    for (var b = 0; b < this.buckets.length; b++) {
      ctx.fillStyle = pointColour(this.colours[b], dark);
      drawSet(this.buckets[b], 0.9);
    }
    ctx.globalAlpha = 1;
  };

  FeatureMap.prototype.draw = function () {
    if ((window.devicePixelRatio || 1) !== this.dpr) { this.resize(); return; }  // moved to a screen with another pixel ratio
    if (this.dirty) { this.renderPoints(); this.dirty = false; }
    var ctx = this.ctx, dpr = this.dpr;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.drawImage(this.off, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    var ring = cssVar('--text', '#111');
    var self = this;
    var mark = function (i, rad, width, colour) {
      if (i < 0 || i >= self.n) return;
      ctx.beginPath();
      ctx.arc(self.sx(i), self.sy(i), rad, 0, Math.PI * 2);
      ctx.lineWidth = width;
      ctx.strokeStyle = colour;
      ctx.stroke();
    };
    var r = this.radius();
    if (this.selected >= 0) {
      mark(this.selected, r + 5, 3.5, cssVar('--panel', '#fff'));
      mark(this.selected, r + 5, 2, cssVar('--accent', '#2f5fd0'));
    }
    if (this.hover >= 0) mark(this.hover, r + 2.5, 1.5, ring);
  };

  /* ---------- feature list (virtualised) ---------- */

  var ROW_H = 34;

  function FeatureList(page) {
    this.page = page;
    this.S = page.S;
    this.body = $('#flist-body');
    this.spacer = $('#flist-spacer');
    this.count = $('#list-count');
    this.filterInput = $('#list-filter');
    if (!this.body) { this.disabled = true; return; }
    this.sortKey = 'index';
    this.sortDir = 1;
    this.query = '';
    this.rows = [];
    this.current = -1;
    this.haystack = null;
    this.order = null;
    this.bind();
    this.apply();
  }

  FeatureList.prototype.bind = function () {
    var self = this;
    this.body.addEventListener('scroll', function () { self.schedule(); }, { passive: true });
    if (window.ResizeObserver) new ResizeObserver(function () { self.schedule(); }).observe(this.body);
    $all('.flist-head .sort').forEach(function (btn) {
      btn.addEventListener('click', function () {
        var key = btn.getAttribute('data-sort');
        if (key === self.sortKey) self.sortDir = -self.sortDir;
        else { self.sortKey = key; self.sortDir = key === 'index' ? 1 : -1; }
        $all('.flist-head .sort').forEach(function (b) {
          b.setAttribute('aria-sort', b === btn ? (self.sortDir > 0 ? 'ascending' : 'descending') : 'none');
        });
        self.apply();
      });
    });
    if (this.filterInput) this.filterInput.addEventListener('input', debounce(function () {
      self.query = self.filterInput.value.trim().toLowerCase();
      self.apply();
    }, 90));
    this.body.addEventListener('keydown', function (e) {
      if (!self.order || !self.order.length) return;
      var pos = self.order.indexOf(self.page.current);
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        e.stopPropagation();
        pos = clamp(pos + (e.key === 'ArrowDown' ? 1 : -1), 0, self.order.length - 1);
        self.page.go(self.order[pos]);
        self.reveal(pos);
      }
    });
  };

  FeatureList.prototype.apply = function () {
    var S = this.S, n = this.page.n, q = this.query, order = [];
    if (q) {
      if (!this.haystack) {
        this.haystack = new Array(n);
        for (var h = 0; h < n; h++) this.haystack[h] = ((S.label && S.label[h]) || '').toLowerCase() + '\n' + ((S.expl && S.expl[h]) || '').toLowerCase();
      }
      var asIndex = /^#?\d+$/.test(q) ? parseInt(q.replace('#', ''), 10) : -1;
      if (asIndex >= 0 && asIndex < n) order.push(asIndex);
      for (var i = 0; i < n; i++) if (i !== asIndex && this.haystack[i].indexOf(q) >= 0) order.push(i);
    } else {
      order = new Array(n);
      for (i = 0; i < n; i++) order[i] = i;
    }
    var key = this.sortKey, dir = this.sortDir;
    if (key !== 'index' || dir !== 1) {
      var col = key === 'density' ? S.density : key === 'max' ? S.max : null;
      order.sort(function (a, b) {
        var d = col ? (col[a] - col[b]) : (a - b);
        return d ? d * dir : a - b;
      });
    }
    this.order = order;
    if (this.count) this.count.textContent = order.length === n ? n.toLocaleString('en-US') + ' features' : order.length.toLocaleString('en-US') + ' of ' + n.toLocaleString('en-US');
    this.spacer.style.height = (order.length * ROW_H) + 'px';
    this.body.scrollTop = 0;
    this.render();
  };

  FeatureList.prototype.schedule = function () {
    if (this.frame) return;
    var self = this;
    this.frame = requestAnimationFrame(function () { self.frame = 0; self.render(); });
  };

  FeatureList.prototype.makeRow = function () {
    var a = el('a', 'frow');
    a.setAttribute('role', 'row');
    a.tabIndex = -1;
    ['col-idx', 'col-label', 'col-num', 'col-num'].forEach(function (cls) {
      var cell = el('span', cls);
      cell.setAttribute('role', 'cell');
      a.appendChild(cell);
    });
    this.body.appendChild(a);
    return a;
  };

  FeatureList.prototype.render = function () {
    var S = this.S, order = this.order || [];
    var top = this.body.scrollTop, height = this.body.clientHeight || 400;
    var first = Math.max(0, Math.floor(top / ROW_H) - 4);
    var count = Math.min(order.length - first, Math.ceil(height / ROW_H) + 8);
    while (this.rows.length < count) this.rows.push(this.makeRow());
    for (var r = 0; r < this.rows.length; r++) {
      var row = this.rows[r];
      if (r >= count) { row.hidden = true; continue; }
      var i = order[first + r];
      row.hidden = false;
      if (row._i !== i) {
        row._i = i;
        row.href = '#' + i;
        var c = row.childNodes;
        c[0].textContent = i;
        this.page.fillLabel(c[1], i);
        row.classList.toggle('is-dead', !(S.max[i] > 0));
        c[2].textContent = fmtDensity(S.density ? S.density[i] : null);
        c[3].textContent = fmt(S.max[i]);
      }
      row.style.transform = 'translateY(' + ((first + r) * ROW_H) + 'px)';
      var cur = i === this.page.current;
      if (cur !== row.classList.contains('is-current')) row.classList.toggle('is-current', cur);
      if (cur) row.setAttribute('aria-current', 'true'); else row.removeAttribute('aria-current');
    }
  };

  FeatureList.prototype.markCurrent = function (i) {
    if (this.disabled) return;
    var pos = this.order ? this.order.indexOf(i) : -1;
    if (pos >= 0) this.reveal(pos);
    this.schedule();
  };

  FeatureList.prototype.reveal = function (pos) {
    var y = pos * ROW_H, top = this.body.scrollTop, h = this.body.clientHeight;
    if (y < top) this.body.scrollTop = y;
    else if (y + ROW_H > top + h) this.body.scrollTop = y + ROW_H - h;
  };

  /* ---------- token lookup ---------- */

  function normToken(s) { return String(s).replace(/\u2423/g, ' ').trim().toLowerCase(); }

  function TokenLookup(page) {
    this.page = page;
    this.input = $('#token-lookup');
    this.results = $('#token-lookup-results');
    this.count = $('#token-lookup-count');
    if (!this.input || !this.page.S.peak_tokens) return;
    var self = this;
    this.input.addEventListener('input', debounce(function () { self.run(); }, 80));
  }

  TokenLookup.prototype.build = function () {
    var peaks = this.page.S.peak_tokens, map = new Map();
    for (var i = 0; i < peaks.length; i++) {
      var toks = peaks[i] || [];
      for (var j = 0; j < toks.length; j++) {
        var key = normToken(toks[j]);
        if (!key && toks[j]) key = toks[j];  // whitespace-only tokens keep their raw form
        var list = map.get(key);
        if (!list) { list = []; map.set(key, list); }
        if (list[list.length - 1] !== i) list.push(i);
      }
    }
    this.map = map;
  };

  TokenLookup.prototype.run = function () {
    var raw = this.input.value.replace(/\\n/g, '\n').replace(/\\t/g, '\t');
    var S = this.page.S, self = this;
    this.results.textContent = '';
    if (!raw) { this.count.textContent = ''; return; }
    if (!this.map) this.build();
    var key = normToken(raw) || raw;
    var hits = (this.map.get(key) || []).slice();
    var exact = raw.replace(/\u2423/g, ' ');
    var isExact = function (i) { return (S.peak_tokens[i] || []).indexOf(exact) >= 0 ? 0 : 1; };
    hits.sort(function (a, b) { return (isExact(a) - isExact(b)) || (S.max[b] - S.max[a]) || (a - b); });
    this.count.textContent = hits.length ? hits.length.toLocaleString('en-US') + ' feature' + (hits.length === 1 ? '' : 's') + ' peak on ' + JSON.stringify(key) + (hits.length > 200 ? ' (showing 200)' : '') : 'No feature peaks on ' + JSON.stringify(key);
    var frag = document.createDocumentFragment();
    hits.slice(0, 200).forEach(function (i) {
      var li = el('li');
      var a = el('a', 'lookup-link');
      a.href = '#' + i;
      a.appendChild(el('span', 'nb-idx', '#' + i));
      a.appendChild(self.page.fillLabel(el('span', 'nb-label'), i));
      a.appendChild(el('span', 'nb-cos', fmt(S.max[i])));
      li.appendChild(a);
      frag.appendChild(li);
    });
    this.results.appendChild(frag);
  };

  /* ---------- boot ---------- */

  function initSaePage() {
    var app = $('#sae-app');
    if (!app) return;
    var started = false;
    var begin = function (S) {
      if (started || !S) return;
      started = true;
      try { new SaePage(app, S).start(); } catch (err) {
        var s = $('#sae-status');
        if (s) { s.hidden = false; s.textContent = 'The feature explorer failed to start: ' + err.message; }
        throw err;
      }
    };
    listeners.summary.push(begin);
    if (latest.summary) { begin(latest.summary); return; }
    load(app.getAttribute('data-summary') || 'data/summary.js').then(begin, function (err) {
      var s = $('#sae-status');
      if (s) { s.hidden = false; s.textContent = err.message + ' — the feature data for this SAE is missing.'; }
    });
  }

  function boot() {
    initThemeToggle();
    initGlobalSearch();
    initCopyButtons();
    initSaePage();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();

/* SAE Atlas front end: data loading, global search, and the SAE page (map, list, token lookup, feature view).
   Classic scripts, no dependencies beyond the vendored MiniSearch; works from file:// (no fetch, no modules).
   Untrusted text (tokens, labels, titles) only ever goes through textContent; explanation html is
   sanitized at render time and is the one thing assigned with innerHTML.

   The render stage joins the parts under static/app/ into the one static/app.js the pages load: this
   file first, then charts, search, map, list, lookup, sae-page, any other part (by path), the panes
   (panes/*.js, by name), boot.js last. A theme replaces a part with a file at the same path under its
   static/app/ and adds a pane with a new file under static/app/panes/. Every part is a classic script
   that adds to the one namespace `window.Atlas` (A below).

   Panes. The feature view is the registered panes, rendered in `order`:
     Atlas.pane({
       name: 'logits',          // unique; registering a name again replaces that pane
       order: 50,               // ascending; the default panes use 10, 20, ... so new ones slot in between
       group: 'logits',         // optional: adjacent rendered panes of one group share a wrapper,
                                // <div class="Atlas.groups[group] or fv-GROUP">
       render: function (page, rec, ctx) { return node or null },
       onText: function (page, rec, node, ctx) {}   // optional, see below
     });
   render gets the SaePage (page.S is the SAE summary), the feature record (an entry of a data/f/
   shard as Atlas.decodeRecord expands it) and ctx {dead, logDensity, gen}; it returns a DOM node
   (or fragment) to show, or null for nothing. A pane with onText makes the page load the prompts'
   text of the feature's examples; onText runs once the top examples' text is there
   (page.rowOf(prompt) -> tokens: at once from the record's `tt` where vocab.js has loaded, as the
   tokens around each peak, else and for wider context from the prompt files as they arrive), again
   when the interval samples' text has (page.intervalsReady), and whenever an example setting changes.

   Token layers: a second shading of the example tokens, chosen with the examples' "Shade" selector.
     Atlas.tokenLayer({
       name: 'dfa', label: 'Attribution', order: 10,
       values: function (rec, kind, exampleIndex, group) { return {position: value} or null }
     });
   kind is 'top' (exampleIndex into rec.top) or 'interval' (exampleIndex into rec.intervals[group].ex);
   positions are the prompt's token positions. The selector lists the layers with values for some top
   example of the feature; values are signed (negative ones get a second colour), and a token's title
   shows its value. Optional: markPeak (true: the token of the largest |value| is marked tok-layer-peak),
   classes ([positive, negative] shading classes, default ['tok-on', 'tok-neg']), describe(value) (the
   title's text for a value, default label + value). Atlas.exampleRow(ex, tokens, opts) and Atlas.renderTokens(parent, tokens, opts)
   draw an example (or any run of a prompt's tokens, optionally clickable) the same way elsewhere. */
window.Atlas = window.Atlas || {};
(function (A) {
  'use strict';

  var SVG_NS = 'http://www.w3.org/2000/svg';
  var body = document.body;
  A.ROOT = (body && body.getAttribute('data-root')) || '';

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

  /* A feature view section: <section class="fv-section CLS"> with an <h3> title when given. */
  function section(title, cls) {
    var s = el('section', 'fv-section' + (cls ? ' ' + cls : ''));
    if (title) s.appendChild(el('h3', null, title));
    return s;
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

  /* Fills a token span; returns true when the token is (part of) a partial UTF-8 byte sequence. */
  function fillToken(span, s, opts) {
    if (s === '') { span.textContent = '∅'; span.classList.add('tok-empty'); return false; }
    var frag = appendTokenText(span, s, { spaces: opts.markSpaces, breakLines: opts.breakLines });
    if (frag) span.classList.add('tok-frag-token');
    return frag;
  }

  /* Shades a token span by v / scale: class tok-on (positive) or, with signed, tok-neg (negative),
     strength in --a, tok-hi when strong enough to need the contrasting text colour. */
  function shade(span, v, scale, signed, classes) {
    if (!(v > 0) && !(signed && v < 0)) return;
    var a = clamp(Math.abs(v) / scale, 0.06, 1);
    classes = classes || ['tok-on', 'tok-neg'];
    span.classList.add(v > 0 ? classes[0] : classes[1]);
    if (a > 0.55) span.classList.add('tok-hi');
    span.style.setProperty('--a', a.toFixed(3));
  }

  /* Appends span.tok for tokens[lo..hi] to `parent`. opts: lo, hi (default all), values {position:
     activation}, scale (the activation drawn at full strength), storedLo/storedHi (positions outside
     have no stored activation: tok-unknown), peak (the position marked tok-max), layer {label, values
     {position: value}, scale, peak, classes, describe (see Atlas.tokenLayer)}: shade by that instead, signed, markSpaces, breakLines, onToken(position,
     span): makes every token a button that calls it. */
  function renderTokens(parent, tokens, opts) {
    opts = opts || {};
    var len = tokens.length, values = opts.values || {}, layer = opts.layer || null;
    var lo = opts.lo === undefined ? 0 : opts.lo, hi = opts.hi === undefined ? len - 1 : opts.hi;
    var storedLo = opts.storedLo === undefined ? 0 : opts.storedLo, storedHi = opts.storedHi === undefined ? len - 1 : opts.storedHi;
    var scale = opts.scale > 0 ? opts.scale : 1;
    for (var t = lo; t <= hi; t++) {
      var s = String(tokens[t] === undefined || tokens[t] === null ? '' : tokens[t]);
      var span = el('span', 'tok');
      var frag = fillToken(span, s, opts) ? ' · ' + FRAG_TITLE : '';
      var stored = t >= storedLo && t <= storedHi;
      var val = values[t] || 0;
      var lv = layer && layer.values ? layer.values[t] : undefined;
      var extra = typeof lv === 'number' ? ' · ' + (layer.describe ? layer.describe(lv) : layer.label + ' ' + fmt(lv)) : '';
      if (!stored) {
        span.classList.add('tok-unknown');
        span.title = JSON.stringify(s) + ' · activation not stored' + extra + frag;
      } else {
        span.title = JSON.stringify(s) + ' · ' + fmt(val) + extra + frag;
      }
      if (layer) { if (typeof lv === 'number') shade(span, lv, layer.scale > 0 ? layer.scale : 1, true, layer.classes); }
      else if (stored) shade(span, val, scale, false);
      if (t === opts.peak) span.classList.add('tok-max');
      if (layer && layer.peak === t) span.classList.add('tok-layer-peak');
      if (opts.onToken) clickable(span, t, opts.onToken);
      parent.appendChild(span);
    }
  }

  function clickable(span, t, fn) {
    span.classList.add('tok-link');
    span.tabIndex = 0;
    span.setAttribute('role', 'button');
    span.addEventListener('click', function () { fn(t, span); });
    span.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); fn(t, span); }
    });
  }

  /* One example, ex = [prompt, position, activation, window start, offsets, values] (docs/ARCHITECTURE.md),
     over its prompt's `tokens` (null: text unavailable): the activation, the tokens around the peak
     shaded by activation (or opts.layer), the prompt number. opts: max (full-strength activation),
     contextBefore/contextAfter (the stored window), ctxMode ('all' or tokens each side), breakLines,
     markSpaces, layer, onToken (see renderTokens), promptsHref (the prompt view page; default
     Atlas.promptsHref()), target (the prompt link's target, e.g. '_blank' in an embed). */
  function exampleRow(ex, tokens, opts) {
    opts = opts || {};
    var prompt = ex[0], pos = ex[1], act = ex[2], ws = ex[3], offs = ex[4] || [], vals = ex[5] || [];
    var row = el('div', 'ex');
    var actEl = el('span', 'ex-act', fmt(act));
    actEl.title = 'max activation in this example';
    row.appendChild(actEl);
    var text = el('div', 'ex-text' + (opts.breakLines ? ' break-lines' : ''));
    row.appendChild(text);
    row.appendChild(promptLink(prompt, pos, opts));
    if (tokens === undefined) {  // its prompt's file is still on its way
      row.classList.add('ex-pending', 'loading');
      text.appendChild(el('span', 'muted', 'Loading text…'));
      return row;
    }
    if (!tokens) {
      text.appendChild(el('span', 'muted', 'Text unavailable for prompt ' + prompt + '.'));
      return row;
    }
    var values = Object.create(null);
    for (var j = 0; j < offs.length; j++) values[ws + offs[j]] = vals[j];
    if (!(values[pos] > 0)) values[pos] = act;  // the peak is not repeated in the window values
    var len = tokens.length, lo, hi, mode = opts.ctxMode === undefined ? '5' : String(opts.ctxMode);
    // The stored window runs from context_before tokens before the max to context_after after it.
    var storedLo = Math.max(0, pos - (opts.contextBefore || 0)), storedHi = Math.min(len - 1, pos + (opts.contextAfter || 0));
    if (mode === 'all') { lo = storedLo; hi = storedHi; }
    else { var k = parseInt(mode, 10); lo = Math.max(0, pos - k); hi = Math.min(len - 1, pos + k); }
    // A row of only some of the prompt's tokens (a record's text around its top examples' peaks,
    // SaePage.windowRows) can show an example only where it has every token of it.
    if (tokens.partial) {
      var lacks = !(pos < len);
      for (var u = lo; u <= hi && !lacks; u++) lacks = tokens[u] === undefined;
      if (lacks) { text.appendChild(el('span', 'muted', 'Text unavailable for prompt ' + prompt + '.')); return row; }
    }
    if (lo > 0) text.appendChild(el('span', 'ellipsis', '…'));
    renderTokens(text, tokens, {
      lo: lo, hi: hi, values: values, scale: opts.max > 0 ? opts.max : (act || 1), storedLo: storedLo, storedHi: storedHi,
      peak: pos, layer: opts.layer, markSpaces: opts.markSpaces, breakLines: opts.breakLines, onToken: opts.onToken
    });
    if (hi < len - 1) text.appendChild(el('span', 'ellipsis', '…'));
    return row;
  }

  /* The page's prompt view (its data-prompts attribute, page-relative), or '' where it has none. */
  function promptsHref() {
    var node = document.querySelector('[data-prompts]');
    return (node && node.getAttribute('data-prompts')) || '';
  }

  /* "prompt N": a link to the prompt view with the example's peak token selected (#N:POSITION). */
  function promptLink(prompt, pos, opts) {
    var href = opts.promptsHref === undefined ? promptsHref() : opts.promptsHref;
    if (!href || !(prompt >= 0)) return el('span', 'ex-meta', 'prompt ' + prompt);
    var a = el('a', 'ex-meta', 'prompt ' + prompt);
    a.href = href + '#' + prompt + ':' + pos;
    a.title = 'Open prompt ' + prompt + ' in the prompt view, token ' + pos + ' selected';
    if (opts.target) { a.target = opts.target; a.rel = 'noopener'; }
    return a;
  }

  /* Loads the corpus shards holding `prompts` (base: the corpus folder, pps: prompts per shard);
     resolves with rowOf(prompt) -> token strings, or null where its shard is missing. With
     onProgress, calls onProgress(rowOf) as each shard arrives (in arrival order), where rowOf gives
     undefined for a prompt whose shard has not arrived yet: a view can show each text as it comes. */
  function corpusRows(base, pps, prompts, onProgress) {
    var shards = [], seen = {}, byShard = {};
    prompts.forEach(function (p) {
      var s = Math.floor(p / pps);
      if (p >= 0 && !seen[s]) { seen[s] = true; shards.push(s); }
    });
    var rowOf = function (p) {
      var s = Math.floor(p / pps), rows = byShard[s];
      if (!(p >= 0) || !seen[s]) return null;
      return rows === undefined ? undefined : rows ? rows[p % pps] || null : null;
    };
    return Promise.all(shards.map(function (s) {
      return load(base + pad4(s) + '.js').then(function (data) { byShard[s] = (data && data.rows) || []; }, function () { byShard[s] = null; })
        .then(function () { if (onProgress) onProgress(rowOf); });
    })).then(function () { return rowOf; });
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

  /* ---------- packed shard columns (docs/ARCHITECTURE.md "Site"; generator/render/packing.py) ---------- */

  // Base-89 numbers: the printable ASCII characters but " \ < > & . ; the first 60 end a number, the
  // other 29 come before its last digit (0..59 one character, 60..1,799 two, 1,800..52,259 three).
  var PACK_TERMINAL = 60, PACK_END = 46;  // '.', the end-of-prompt marker of `tt`
  var PACK_DIGIT = new Int16Array(128).fill(-1), PACK_OFFSET = [0], PACK_CONT = 0;
  (function () {
    var n = 0;
    for (var c = 0x20; c < 0x7f; c++) if ('"\\<>&.'.indexOf(String.fromCharCode(c)) < 0) PACK_DIGIT[c] = n++;
    PACK_CONT = n - PACK_TERMINAL;
    for (var m = 1, span = PACK_TERMINAL; m < 8; m++) { PACK_OFFSET.push(PACK_OFFSET[m - 1] + span); span *= PACK_CONT; }
  })();

  /* A reader of a packed string: next() gives the next number (NaN past the end or at a marker),
     peek() the next character's code. */
  function PackReader(s) { this.s = String(s || ''); this.at = 0; }
  PackReader.prototype.done = function () { return this.at >= this.s.length; };
  PackReader.prototype.peek = function () { return this.s.charCodeAt(this.at); };
  PackReader.prototype.next = function () {
    var acc = 0, m = 0, cont = PACK_CONT;
    while (this.at < this.s.length) {
      var d = PACK_DIGIT[this.s.charCodeAt(this.at++)];
      if (!(d >= 0)) return NaN;
      if (d < PACK_TERMINAL) return PACK_OFFSET[m] + acc * PACK_TERMINAL + d;
      acc = acc * cont + (d - PACK_TERMINAL);
      m++;
    }
    return NaN;
  };

  function unpackInts(s) {
    var r = new PackReader(s), out = [];
    while (!r.done()) out.push(r.next());
    return out;
  }

  /* dfa / loss: per example its number of values, then per value the gap after the previous offset
     (the first from -1) and q zigzagged -> [[offsets], [q]] per example. */
  function unpackExampleValues(s) {
    var r = new PackReader(s), out = [];
    while (!r.done()) {
      var n = r.next(), offsets = [], q = [], prev = -1;
      if (!(n >= 0)) break;
      for (var j = 0; j < n; j++) {
        prev += 1 + r.next();
        var z = r.next();
        offsets.push(prev);
        q.push(z % 2 ? -(z + 1) / 2 : z / 2);
      }
      out.push([offsets, q]);
    }
    return out;
  }

  /* The top examples' text `tt` of a shard record: per example of `top` ([prompt, position, ...]),
     [lo, ranks, ended]: the vocabulary ranks (vocab.js) of the prompt's tokens lo .. lo + ranks.length - 1,
     lo = max(0, position - k), up to position + k; ended when the last of them is the prompt's last. */
  function unpackText(s, top, k) {
    var r = new PackReader(s), out = [];
    for (var e = 0; e < (top || []).length; e++) {
      var ex = top[e];
      if (!ex || r.done()) { out.push(null); continue; }
      var lo = Math.max(0, ex[1] - k), ranks = [], ended = false;
      for (var t = lo; t <= ex[1] + k; t++) {
        if (r.peek() === PACK_END) break;
        ranks.push(r.next());
      }
      if (r.peek() === PACK_END) { ended = true; r.at++; }
      out.push([lo, ranks, ended]);
    }
    return out;
  }

  /* A shard record's packed columns (hist, lh's counts, dfa, loss) as lists; `tt` is left as it is
     (unpackText needs the record's examples). Lists pass as they are. */
  function unpackColumns(rec) {
    if (typeof rec.hist === 'string') rec.hist = unpackInts(rec.hist);
    if (rec.lh && typeof rec.lh[2] === 'string') rec.lh = [rec.lh[0], rec.lh[1], unpackInts(rec.lh[2])];
    if (typeof rec.dfa === 'string') rec.dfa = unpackExampleValues(rec.dfa);
    if (typeof rec.loss === 'string') rec.loss = unpackExampleValues(rec.loss);
    return rec;
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
    promptView: function (prompt, obj) { registered('promptView', obj); },
    featureList: function (obj) { registered('featureList', obj); },
    vocab: function (tokens) { registered('vocab', { tokens: tokens || [] }); },
    load: load
  };

  /* ---------- panes and token layers ---------- */

  var panes = [], layers = [];

  function byOrder(a, b) {
    return ((a.order || 0) - (b.order || 0)) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  function register(list, spec, what, fn) {
    if (!spec || !spec.name || typeof spec[fn] !== 'function') throw new Error('Atlas.' + what + ' needs a name and a ' + fn + ' function');
    for (var i = 0; i < list.length; i++) if (list[i].name === spec.name) { list[i] = spec; return spec; }
    list.push(spec);
    return spec;
  }

  A.pane = function (spec) { return register(panes, spec, 'pane', 'render'); };
  A.panes = function () { return panes.slice().sort(byOrder); };
  // Wrapper classes of pane groups; a group not listed here is wrapped in div.fv-GROUP.
  A.groups = { charts: 'fv-charts', logits: 'fv-two', neighbours: 'fv-two' };
  A.tokenLayer = function (spec) { return register(layers, spec, 'tokenLayer', 'values'); };
  A.tokenLayers = function () { return layers.slice().sort(byOrder); };
  /* The values function of a token layer over a per-example record column (`dfa`, `loss`): per entry
     of rec.top, [offsets, values] from the example's window start (docs/ARCHITECTURE.md). */
  A.exampleValues = function (column) {
    return function (rec, kind, k) {
      var cols = rec[column], ex = rec.top && rec.top[k];
      if (kind !== 'top' || !cols || !cols[k] || !ex || !(cols[k][0] || []).length) return null;
      // Values are whole percent of the feature's scale `<column>_s` (docs/ARCHITECTURE.md "Site").
      var offsets = cols[k][0], values = cols[k][1], out = {};
      var scale = typeof rec[column + '_s'] === 'number' ? rec[column + '_s'] / 100 : 1;
      for (var j = 0; j < offsets.length; j++) out[ex[3] + offsets[j]] = values[j] * scale;
      return out;
    };
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

  A.$ = $;
  A.$all = $all;
  A.el = el;
  A.svg = svg;
  A.pad4 = pad4;
  A.clamp = clamp;
  A.fmt = fmt;
  A.fmtDensity = fmtDensity;
  A.section = section;
  A.FRAG_TITLE = FRAG_TITLE;
  A.appendTokenText = appendTokenText;
  A.tokenChip = tokenChip;
  A.renderTokens = renderTokens;
  A.exampleRow = exampleRow;
  A.promptsHref = promptsHref;
  A.corpusRows = corpusRows;
  A.unpackInts = unpackInts;
  A.unpackExampleValues = unpackExampleValues;
  A.unpackText = unpackText;
  A.unpackColumns = unpackColumns;
  A.isTyping = isTyping;
  A.debounce = debounce;
  A.cssVar = cssVar;
  A.load = load;
  A.latest = latest;
  A.listeners = listeners;
  A.currentScheme = currentScheme;
  A.initThemeToggle = initThemeToggle;
  A.initCopyButtons = initCopyButtons;
})(window.Atlas);

/* The SAE page: its state, hash routing (#INDEX), the feature records and prompt texts it loads, and the
   feature view shell, which shows the registered panes (Atlas.pane) of the current feature in order. */
(function (A) {
  'use strict';

  var $ = A.$, el = A.el, pad4 = A.pad4, clamp = A.clamp, fmtDensity = A.fmtDensity, load = A.load;
  var appendTokenText = A.appendTokenText, isTyping = A.isTyping, barChart = A.barChart, pow10Label = A.pow10Label;

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
    this.shade = 'activation';  // what example tokens are shaded by: activation or a token layer's name
    this.textContext = S.text_context || 0;  // tokens each side of the peak in the records' `tt`
    this.vocab = null;  // the corpus's token strings by rank (vocab.js), once loaded
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
    this.map = new A.FeatureMap(this);
    this.list = new A.FeatureList(this);
    this.lookup = new A.TokenLookup(this);
    this.initFeatureView();
    // Browsers fire popstate during a fragment navigation and hashchange from a task queued after it
    // (behind whatever else is queued); the first of the two routes, the other finds its hash routed.
    var onNavigate = function () { if (window.location.hash !== self.routedHash) self.fromHash(); };
    window.addEventListener('popstate', onNavigate);
    window.addEventListener('hashchange', onNavigate);
    document.addEventListener('keydown', function (e) {
      if (isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.target && e.target.id === 'map-canvas' && /^Arrow/.test(e.key)) return;
      if (e.key === 'ArrowLeft' || e.key === 'k') { e.preventDefault(); self.step(-1); }
      else if (e.key === 'ArrowRight' || e.key === 'j') { e.preventDefault(); self.step(1); }
    });
    this.watchIntent();
    A.page = window.AtlasData.page = this;  // for debugging, the browser tests and other parts
    this.fromHash(true);
    window.__atlasReadyMs = performance.now() - t0;
    window.__atlasReadyAt = performance.now();
    document.body.setAttribute('data-ready', 'true');
  };

  /* A feature the reader points at for INTENT_MS (a link to #N: the list, the neighbours, the lookup's
     results; a point of the map, see FeatureMap.setHover) or touches starts loading then, so that the
     click that usually follows finds its record and text on the way or in. */
  var INTENT_MS = 60;

  SaePage.prototype.intend = function (i, now) {
    var self = this;
    if (this.intentTimer) { clearTimeout(this.intentTimer); this.intentTimer = 0; }
    if (!(i >= 0) || i === this.current) return;
    if (now) { this.prefetch(i); return; }
    this.intentTimer = setTimeout(function () { self.intentTimer = 0; self.prefetch(i); }, INTENT_MS);
  };

  SaePage.prototype.watchIntent = function () {
    var self = this;
    var target = function (e) {
      var a = e.target && e.target.closest ? e.target.closest('a[href^="#"]') : null;
      var m = a ? /^#(\d+)$/.exec(a.getAttribute('href')) : null;
      return m ? parseInt(m[1], 10) : -1;
    };
    document.addEventListener('pointerover', function (e) { if (e.pointerType !== 'touch') self.intend(target(e)); });
    document.addEventListener('pointerout', function () { self.intend(-1); });
    document.addEventListener('touchstart', function (e) { var i = target(e); if (i >= 0) self.intend(i, true); }, { passive: true });
  };

  SaePage.prototype.fromHash = function (initial) {
    this.routedHash = window.location.hash;
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

  /* Feature i's record as the panes see it (decodeRecord), once its shard has loaded. */
  SaePage.prototype.record = function (i) {
    var self = this, shard = Math.floor(i / this.shardSize);
    return load(this.shardUrl(shard)).then(function (data) {
      if (data && !data.decoded) data.decoded = (data.records || []).map(function (r) { return decodeRecord(r, self.S); });
      var recs = (data && data.decoded) || [];
      var rec = recs[i - shard * self.shardSize];
      if (!rec || rec.i !== i) rec = recs.filter(function (r) { return r.i === i; })[0];
      if (!rec) throw new Error('Feature ' + i + ' is missing from its data shard');
      return rec;
    });
  };

  /* An example of a shard, [prompt, position, activation, slot, q, slot, q, ...] (the token at
     position - context_before + slot has activation * q / 100), as the panes see it:
     [prompt, position, activation, window start, offsets, values] where token window start + offsets[j]
     has values[j] (2 significant digits, what the shard keeps) and the window start is
     max(0, position - context_before). */
  function decodeExample(e, contextBefore) {
    var pos = e[1], act = e[2], first = pos - contextBefore, start = Math.max(0, first), offsets = [], values = [];
    for (var j = 3; j + 1 < e.length; j += 2) {
      offsets.push(first + e[j] - start);
      values.push(Number((act * e[j + 1] / 100).toPrecision(2)));
    }
    return [e[0], pos, act, start, offsets, values];
  }

  /* A feature record as the panes see it, from its compact form in a data/f/ shard (docs/ARCHITECTURE.md,
     "Site"): the other keys as they are, plus log_density (log10 of density, null when 0), the packed
     columns as lists (Atlas.unpackColumns), the examples expanded (decodeExample), the intervals as
     [{lo, hi, ex}] without the empty ones, the cross-layer neighbours as [sae id, href, index, cosine]
     from summary.layers, and `text` from `tt`: per top example [lo, vocabulary ranks, ended]
     (Atlas.unpackText). */
  function decodeRecord(raw, S) {
    var rec = {}, cb = S.context_before || 0, layers = S.layers || [];
    for (var k in raw) if (Object.prototype.hasOwnProperty.call(raw, k)) rec[k] = raw[k];
    A.unpackColumns(rec);
    var expand = function (e) { return e ? decodeExample(e, cb) : e; };
    if (typeof raw.tt === 'string') rec.text = A.unpackText(raw.tt, raw.top || [], S.text_context || 0);
    rec.log_density = raw.density > 0 ? Math.log10(raw.density) : null;
    rec.top = (raw.top || []).map(expand);
    var groups = raw.intervals || [], n = groups.length;
    rec.intervals = [];
    groups.forEach(function (ex, j) {
      if (ex && ex.length) rec.intervals.push({ lo: raw.max * j / n, hi: raw.max * (j + 1) / n, ex: ex.map(expand) });
    });
    rec.xnb = (raw.xnb || []).map(function (q) { var l = layers[q[0]] || {}; return [l.sae, l.href, q[1], q[2]]; });
    rec.expl = raw.expl || [];
    return rec;
  }

  SaePage.prototype.promptRows = function (prompts, onProgress) {
    // Shards are requested in example order (top examples first).
    return A.corpusRows(this.S.corpus || '', this.S.prompts_per_shard || 64, prompts, onProgress);
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
    var record = this.record(i);  // first, so that the shard is on its way while the rest of the page follows
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
    record.then(function (rec) {
      if (gen !== self.generation) return;
      self.renderFeature(rec, gen);
      window.__atlasLastFeatureMs = performance.now() - t0;
      if (scroll && window.innerWidth < 1100) $('#feature-view').scrollIntoView({ block: 'start' });
      // Warm the neighbours' records and texts so stepping with ← → stays instant, once this
      // feature's own text has arrived (so the prefetch never competes with it).
      Promise.resolve(self.examplesLoaded).then(function () {
        self.loadVocab();
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

  /* The token strings the records' top example text (`tt`) indexes, loaded once, after the first
     feature's own text (so that it never delays the page becoming interactive): with them, every
     later feature's top examples show their text from its shard alone. */
  SaePage.prototype.loadVocab = function () {
    var self = this;
    if (this.vocabLoading || !(this.textContext > 0)) return;
    this.vocabLoading = true;
    load((this.S.corpus || '') + 'vocab.js').then(function (v) { self.vocab = (v && v.tokens) || null; }, function () {});
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

  /* Renders the registered panes for `rec` into the feature view, then shows the prompts' text in the
     panes that show it (onText): the top examples' prompts first (what a reader looks at), each as
     its file arrives (page.rowOf gives undefined for a prompt still on its way), then the interval
     samples' (below the fold). The top examples' prompt files are requested before the panes render,
     so that they load while the panes are built. */
  SaePage.prototype.renderFeature = function (rec, gen) {
    var self = this, frag = document.createDocumentFragment();
    var wantsText = A.panes().some(function (pane) { return pane.onText; });
    var windows = wantsText ? this.windowRows(rec) : null;
    var arrived = function (rowOf) {
      if (gen !== self.generation || !self.shown) return;
      self.rowOf = self.textOf(rowOf, windows);
      self.renderExamples();
    };
    var requestTop = function () { return self.promptRows(examplePrompts({ top: rec.top }), arrived); };
    this.shown = null;
    var topRows = wantsText && !windows ? requestTop() : null;
    var ld = typeof rec.log_density === 'number' ? rec.log_density : (rec.density > 0 ? Math.log10(rec.density) : null);
    var ctx = { dead: !(rec.max > 0), logDensity: ld, gen: gen };
    var shown = [], wrap = null, group = null;
    this.rec = rec;
    this.layerCache = null;
    this.rowOf = null;
    A.panes().forEach(function (pane) {
      var node;
      try { node = pane.render(self, rec, ctx); } catch (err) {
        console.error(err);
        node = el('p', 'notice notice-error', 'The ' + pane.name + ' pane failed: ' + err.message);
      }
      if (!node) return;
      shown.push({ pane: pane, node: node });
      if (!pane.group) { group = null; frag.appendChild(node); return; }
      if (pane.group !== group) { group = pane.group; wrap = frag.appendChild(el('div', A.groups[group] || 'fv-' + group)); }
      wrap.appendChild(node);
    });
    this.fv.body.textContent = '';
    this.fv.body.appendChild(frag);
    this.shown = shown;
    this.ctx = ctx;

    this.examplesLoaded = null;
    this.intervalsReady = false;
    if (wantsText && shown.some(function (s) { return s.pane.onText; })) {
      if (windows) {
        // The top examples' text is in the record: draw it now, load the prompt files (wider context,
        // the interval samples) once this has been painted.
        this.rowOf = this.textOf(null, windows);
        this.renderExamples();
        topRows = afterPaint().then(function () { return gen === self.generation ? requestTop() : null; });
      }
      this.examplesLoaded = topRows.then(function (rowOf) {
        if (!rowOf || gen !== self.generation) return null;
        arrived(rowOf);
        return self.promptRows(examplePrompts(rec));
      }).then(function (rowOf) {
        if (!rowOf || gen !== self.generation) return;
        self.rowOf = self.textOf(rowOf, windows);
        self.intervalsReady = true;
        self.renderExamples();
      });
    }
  };

  /* The top examples' text from the record (`text`, decoded from `tt`) as rows of token strings per
     prompt, or null without it or before vocab.js has loaded: row[t] is token t's string for the
     positions the record has (±text_context around each example's peak), and the row's length is
     the prompt's where a window reached its end, else one more than the last position it has (so
     that an example row shows "…" after it). */
  SaePage.prototype.windowRows = function (rec) {
    var V = this.vocab;
    if (!V || !rec.text || !this.textContext) return null;
    if (rec.windowRows && rec.windowRows.vocab === V) return rec.windowRows.rows;
    var rows = Object.create(null), ends = Object.create(null), his = Object.create(null);
    rec.text.forEach(function (w, k) {
      var ex = rec.top[k];
      if (!w || !ex) return;
      var p = ex[0], row = rows[p] || (rows[p] = []), hi = w[0] + w[1].length - 1;
      for (var j = 0; j < w[1].length; j++) { var s = V[w[1][j]]; row[w[0] + j] = s === undefined ? '' : s; }
      if (w[2]) ends[p] = hi + 1;
      if (!(his[p] >= hi)) his[p] = hi;
    });
    Object.keys(rows).forEach(function (p) {
      rows[p].length = ends[p] !== undefined ? ends[p] : his[p] + 2;
      rows[p].partial = true;  // Atlas.exampleRow shows no example it lacks tokens of
    });
    rec.windowRows = { vocab: V, rows: rows };
    return rows;
  };

  /* page.rowOf for the panes: a prompt's tokens from its file once it has arrived (`fileRowOf`),
     before that (or where the file is missing) from the record's windows when the context shown
     (ctxMode) is within them; undefined while on its way, null when unavailable. */
  SaePage.prototype.textOf = function (fileRowOf, windows) {
    var self = this;
    return function (p) {
      var full = fileRowOf ? fileRowOf(p) : undefined;
      if (full) return full;
      var mode = self.ctxMode;
      var covered = windows && windows[p] && mode !== 'all' && parseInt(mode, 10) <= self.textContext;
      if (covered) return windows[p];
      return fileRowOf ? full : undefined;
    };
  };

  /* Resolves after the next frame has been painted (or 100 ms, where frames are not drawn). */
  function afterPaint() {
    return new Promise(function (resolve) {
      var done = false, go = function () { if (!done) { done = true; resolve(); } };
      if (window.requestAnimationFrame) requestAnimationFrame(function () { setTimeout(go, 0); });
      setTimeout(go, 100);
    });
  }

  /* Redraws the panes that show prompt text (after text arrives or an example setting changes). */
  SaePage.prototype.renderExamples = function () {
    var self = this, rec = this.rec;
    if (!rec) return;
    (this.shown || []).forEach(function (s) { if (s.pane.onText) s.pane.onText(self, rec, s.node, self.ctx); });
  };

  /* The token layers with values for some top example of `rec`, each {layer, scale} where scale is the
     largest |value| over the top examples (what is drawn at full strength). */
  SaePage.prototype.layersFor = function (rec) {
    if (this.layerCache && this.layerCache.rec === rec) return this.layerCache.list;
    var list = [];
    A.tokenLayers().forEach(function (layer) {
      var scale = 0, any = false;
      (rec.top || []).forEach(function (ex, k) {
        var values = ex ? layer.values(rec, 'top', k) : null;
        if (!values) return;
        Object.keys(values).forEach(function (p) {
          var v = values[p];
          if (typeof v !== 'number' || !isFinite(v)) return;
          any = true;
          if (Math.abs(v) > scale) scale = Math.abs(v);
        });
      });
      if (any) list.push({ layer: layer, scale: scale });
    });
    this.layerCache = { rec: rec, list: list };
    return list;
  };

  /* Options for Atlas.exampleRow from the page's settings, for example `index` of `kind` ('top' or
     'interval', of interval `group`); with a token layer chosen (this.shade) and available for the
     feature, the tokens are shaded by its values (none where it has none for that example). */
  SaePage.prototype.exampleOptions = function (rec, kind, index, group) {
    var S = this.S, layer = null, shade = this.shade;
    this.layersFor(rec).forEach(function (l) {
      if (l.layer.name !== shade) return;
      var values = l.layer.values(rec, kind, index, group) || {}, peak;
      if (l.layer.markPeak) {
        Object.keys(values).forEach(function (p) {
          if (peak === undefined || Math.abs(values[p]) > Math.abs(values[peak])) peak = +p;
        });
      }
      layer = { name: l.layer.name, label: l.layer.label || l.layer.name, scale: l.scale, values: values, peak: peak,
        classes: l.layer.classes, describe: l.layer.describe };
    });
    return {
      max: rec.max, contextBefore: S.context_before, contextAfter: S.context_after, ctxMode: this.ctxMode,
      breakLines: this.breakLines, markSpaces: this.markSpaces, layer: layer
    };
  };

  A.SaePage = SaePage;
  A.decodeRecord = decodeRecord;
  A.examplePrompts = examplePrompts;
})(window.Atlas);

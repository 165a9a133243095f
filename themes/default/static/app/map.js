/* The UMAP map of the features: a canvas, points bucketed by colour, a grid for hit tests, pan and zoom. */
(function (A) {
  'use strict';

  var $ = A.$, el = A.el, clamp = A.clamp, fmt = A.fmt, fmtDensity = A.fmtDensity, cssVar = A.cssVar;
  var appendTokenText = A.appendTokenText, currentScheme = A.currentScheme, rampColour = A.rampColour;
  var CLUSTER_COLOURS = A.CLUSTER_COLOURS;
  var DENSITY_BUCKETS = 24;

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
      if (this.page.intend) this.page.intend(i);
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

  A.FeatureMap = FeatureMap;
})(window.Atlas);

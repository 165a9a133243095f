/* Charts: round axis ticks, the SVG histogram, and the colour ramps of the map. */
(function (A) {
  'use strict';

  var svg = A.svg, fmt = A.fmt, clamp = A.clamp;

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

  var CLUSTER_COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7',
    '#9c755f', '#86bcb6', '#d37295', '#a0cbe8', '#ffbe7d', '#8cd17d', '#b6992d', '#499894', '#f1ce63', '#d4a6c8',
    '#fabfd2', '#6f9bd1'];
  var RAMP = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];

  function rampColour(t) {
    t = clamp(t, 0, 1) * (RAMP.length - 1);
    var i = Math.min(RAMP.length - 2, Math.floor(t)), f = t - i;
    var a = parseInt(RAMP[i].slice(1), 16), b = parseInt(RAMP[i + 1].slice(1), 16);
    var ch = function (sh) { return Math.round(((a >> sh) & 255) * (1 - f) + ((b >> sh) & 255) * f); };
    return 'rgb(' + ch(16) + ',' + ch(8) + ',' + ch(0) + ')';
  }


  A.niceTicks = niceTicks;
  A.pow10Label = pow10Label;
  A.barChart = barChart;
  A.CLUSTER_COLOURS = CLUSTER_COLOURS;
  A.RAMP = RAMP;
  A.rampColour = rampColour;
})(window.Atlas);

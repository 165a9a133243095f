/* Activation: the key numbers of a feature (max activation, density, density percentile among the live
   features, cluster), and for a dead feature the notice that it never fired (after the explanations). */
(function (A) {
  'use strict';

  var el = A.el, fmt = A.fmt, fmtDensity = A.fmtDensity;

  /* How many of the ascending `sorted` are <= v. */
  function upperBound(sorted, v) {
    var lo = 0, hi = sorted.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (sorted[mid] <= v) lo = mid + 1; else hi = mid; }
    return lo;
  }

  A.pane({
    name: 'activation',
    order: 10,
    render: function (page, rec, ctx) {
      var S = page.S, facts = el('dl', 'fv-facts');
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
      if (ctx.logDensity !== null) {
        var rank = upperBound(page.liveSorted, ctx.logDensity) / Math.max(1, page.liveSorted.length);
        addFact('Density percentile', Math.round(rank * 100) + '%', 'share of live features at most this dense');
      }
      if (S.cluster) addFact('Cluster', String(S.cluster[rec.i]));
      return facts;
    }
  });

  A.pane({
    name: 'dead',
    order: 25,
    render: function (page, rec, ctx) {
      if (!ctx.dead) return null;
      var deadBox = el('div', 'notice notice-dead');
      deadBox.setAttribute('role', 'note');
      deadBox.appendChild(el('strong', null, 'No activations. '));
      deadBox.appendChild(document.createTextNode('This feature never fired on the corpus (max activation 0), so it has no examples or histogram.'));
      return deadBox;
    }
  });

  A.upperBound = upperBound;
})(window.Atlas);

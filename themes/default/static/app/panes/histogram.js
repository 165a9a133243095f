/* Activation histogram: the counts of the feature's non-zero activations in equal bins from 0 to its max. */
(function (A) {
  'use strict';

  var el = A.el, fmt = A.fmt;

  A.pane({
    name: 'histogram',
    order: 30,
    group: 'charts',
    render: function (page, rec, ctx) {
      if (ctx.dead || !(rec.hist && rec.hist.length)) return null;
      var hs = A.section('Activation histogram', 'chart');
      var total = rec.hist.reduce(function (a, b) { return a + b; }, 0);
      hs.appendChild(A.barChart(rec.hist, 0, rec.max, {
        label: 'Histogram of non-zero activations, ' + total.toLocaleString('en-US') + ' tokens, 0 to ' + fmt(rec.max),
        xTitle: 'activation', yTitle: 'tokens'
      }));
      hs.appendChild(el('p', 'chart-caption', total.toLocaleString('en-US') + ' non-zero activations'));
      return hs;
    }
  });
})(window.Atlas);

/* Logit histogram: the feature's logit effects over the whole vocabulary, binned between their min
   and max; shown above the positive and negative logit tables. */
(function (A) {
  'use strict';

  var el = A.el, fmt = A.fmt;

  A.pane({
    name: 'logit_histogram',
    order: 48,
    render: function (page, rec) {
      var lh = rec.lh;  // [min, max, counts]
      if (!lh || !lh[2] || !lh[2].length) return null;
      var s = A.section('Logit effects', 'chart logit-hist');
      var total = lh[2].reduce(function (a, b) { return a + b; }, 0);
      s.appendChild(A.barChart(lh[2], lh[0], lh[1], {
        label: 'Histogram of the logit effects on ' + total.toLocaleString('en-US') + ' tokens, ' + fmt(lh[0]) + ' to ' + fmt(lh[1]),
        xTitle: 'logit effect', yTitle: 'tokens', width: 640, height: 120
      }));
      s.appendChild(el('p', 'chart-caption', 'all ' + total.toLocaleString('en-US') + ' vocabulary tokens, ' + fmt(lh[0]) + ' to ' + fmt(lh[1])));
      return s;
    }
  });
})(window.Atlas);

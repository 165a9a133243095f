/* Interval samples: examples drawn from equal slices of the activation range, highest slice first. */
(function (A) {
  'use strict';

  var el = A.el, fmt = A.fmt;

  A.pane({
    name: 'intervals',
    order: 80,
    render: function (page, rec, ctx) {
      if (ctx.dead || !(rec.intervals && rec.intervals.length)) return null;
      var s = A.section('Interval samples', 'fv-intervals');
      s.appendChild(el('p', 'muted pending', 'Loading text…'));
      return s;
    },
    onText: function (page, rec, node) {
      if (!page.intervalsReady) return;
      var rowOf = page.rowOf, f2 = document.createDocumentFragment(), groups = rec.intervals || [];
      f2.appendChild(el('h3', null, 'Interval samples'));
      for (var g = groups.length - 1; g >= 0; g--) {
        var group = groups[g], exs = [];
        (group.ex || []).forEach(function (ex, j) { if (ex) exs.push([ex, j]); });
        var details = el('details', 'interval');
        details.open = true;
        var sum = el('summary');
        sum.appendChild(el('span', 'interval-range', 'Activation ' + fmt(group.lo) + ' – ' + fmt(group.hi)));
        sum.appendChild(el('span', 'muted small', ' · ' + exs.length + ' example' + (exs.length === 1 ? '' : 's')));
        details.appendChild(sum);
        var list = el('div', 'examples');
        for (var n = 0; n < exs.length; n++) {
          list.appendChild(A.exampleRow(exs[n][0], rowOf(exs[n][0][0]), page.exampleOptions(rec, 'interval', exs[n][1], g)));
        }
        if (!exs.length) list.appendChild(el('p', 'muted small', 'No tokens in this interval.'));
        details.appendChild(list);
        f2.appendChild(details);
      }
      node.textContent = '';
      node.appendChild(f2);
    }
  });
})(window.Atlas);

/* Density vs. this SAE: the density distribution of the live features with this feature's marked. */
(function (A) {
  'use strict';

  A.pane({
    name: 'density',
    order: 40,
    group: 'charts',
    render: function (page, rec, ctx) {
      if (ctx.dead || ctx.logDensity === null || !page.liveSorted.length) return null;
      var ds = A.section('Density vs. this SAE', 'chart');
      ds.appendChild(page.densityChart(ctx.logDensity, 'this feature ' + A.fmtDensity(rec.density)));
      ds.appendChild(A.el('p', 'chart-caption', 'density of every live feature; the line marks this one'));
      return ds;
    }
  });
})(window.Atlas);

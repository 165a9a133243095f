/* Correlated neurons: the dimensions of the SAE's input (its hook's basis) whose values correlate
   most with the feature's activation over the corpus (Pearson's r); for an SAE on an MLP's output,
   the MLP's neurons (the summary's `neurons` names their hook, blocks.L.mlp.hook_post). */
(function (A) {
  'use strict';

  var el = A.el;
  A.groups.correlations = A.groups.correlations || 'fv-two';

  /* A table of dimensions: the index, then one cell per value column. */
  A.dimensionTable = function (title, cls, head, rows) {
    var s = A.section(title, cls);
    var table = el('table', 'dim-table');
    var tr = el('tr');
    head.forEach(function (h) { tr.appendChild(el('th', null, h)); });
    var thead = el('thead');
    thead.appendChild(tr);
    table.appendChild(thead);
    var tb = el('tbody');
    rows.forEach(function (cells) {
      var row = el('tr');
      row.appendChild(el('td', 'dim-idx', cells[0]));
      cells.slice(1).forEach(function (c) { row.appendChild(el('td', 'num', c)); });
      tb.appendChild(row);
    });
    table.appendChild(tb);
    s.appendChild(table);
    return s;
  };

  /* The neurons' column header and the caption under the table: the hook's dimensions, or the
     MLP's neurons when the summary names them. */
  A.neuronBasis = function (page) {
    var hook = page && page.S && page.S.neurons;
    if (!hook) return { head: 'dimension', caption: null };
    return { head: 'MLP neuron', caption: 'neurons of the MLP (' + hook + ')' };
  };

  A.pane({
    name: 'correlated_neurons',
    order: 63,
    group: 'correlations',
    render: function (page, rec) {
      if (!(rec.cn && rec.cn.length)) return null;
      var basis = A.neuronBasis(page);
      var s = A.dimensionTable('Correlated neurons', 'corr-neurons', [basis.head, 'r'], rec.cn.map(function (p) {
        return [p[0], A.fmt(p[1])];
      }));
      if (basis.caption) s.appendChild(el('p', 'chart-caption', basis.caption + ', by Pearson r with this feature'));
      return s;
    }
  });
})(window.Atlas);

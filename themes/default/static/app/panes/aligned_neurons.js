/* Neuron alignment: the dimensions of the SAE's output basis with the largest decoder weights of
   the feature, signed, with their share of the decoder row's L1 norm; for an SAE on an MLP's
   output, the MLP's neurons whose output weights (rows of W_out) have the largest dot product with
   the decoder direction. */
(function (A) {
  'use strict';

  A.groups.correlations = A.groups.correlations || 'fv-two';

  A.pane({
    name: 'aligned_neurons',
    order: 64,
    group: 'correlations',
    render: function (page, rec) {
      if (!(rec.al && rec.al.length)) return null;
      var basis = A.neuronBasis(page);
      var s = A.dimensionTable('Neuron alignment', 'aligned-neurons', [basis.head, 'weight', '% of L1'], rec.al.map(function (t) {
        return [t[0], (t[1] > 0 ? '+' : '') + A.fmt(t[1]), A.fmt(t[2] * 100) + '%'];
      }));
      if (basis.caption) s.appendChild(A.el('p', 'chart-caption', basis.caption + ', by W_out row \u00b7 decoder direction'));
      return s;
    }
  });
})(window.Atlas);

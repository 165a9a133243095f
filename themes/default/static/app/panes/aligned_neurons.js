/* Neuron alignment: the dimensions of the SAE's output basis with the largest decoder weights of
   the feature, signed, with their share of the decoder row's L1 norm. */
(function (A) {
  'use strict';

  A.groups.correlations = A.groups.correlations || 'fv-two';

  A.pane({
    name: 'aligned_neurons',
    order: 64,
    group: 'correlations',
    render: function (page, rec) {
      if (!(rec.al && rec.al.length)) return null;
      return A.dimensionTable('Neuron alignment', 'aligned-neurons', ['dimension', 'weight', '% of L1'], rec.al.map(function (t) {
        return [t[0], (t[1] > 0 ? '+' : '') + A.fmt(t[1]), A.fmt(t[2] * 100) + '%'];
      }));
    }
  });
})(window.Atlas);

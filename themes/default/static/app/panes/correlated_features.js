/* Correlated features: the features of this SAE whose activations correlate most with this one's
   over the corpus (Pearson's r), linked like the decoder neighbours. */
(function (A) {
  'use strict';

  var el = A.el;
  A.groups.correlations = A.groups.correlations || 'fv-two';

  A.pane({
    name: 'correlated_features',
    order: 62,
    group: 'correlations',
    render: function (page, rec) {
      if (!(rec.cf && rec.cf.length)) return null;
      var s = A.section('Correlated features', 'corr-features');
      var ul = el('ul', 'nb-list');
      rec.cf.forEach(function (pair) {
        var li = el('li');
        var a = el('a', 'nb-link');
        a.href = '#' + pair[0];
        a.appendChild(el('span', 'nb-idx', '#' + pair[0]));
        a.appendChild(page.fillLabel(el('span', 'nb-label'), pair[0]));
        li.appendChild(a);
        li.appendChild(el('span', 'nb-cos', 'r ' + A.fmt(pair[1])));
        li.title = 'Pearson r ' + pair[1];
        ul.appendChild(li);
      });
      s.appendChild(ul);
      return s;
    }
  });
})(window.Atlas);

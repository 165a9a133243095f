/* Neighbours: the features of this SAE with the most similar decoder directions, and the nearest
   features of the other layers' SAEs in the set. */
(function (A) {
  'use strict';

  var el = A.el;

  /* One neighbour: a link (its index, and its label when it is in this SAE) and the cosine. */
  function nbItem(href, idx, label, cos) {
    var li = el('li');
    var a = el('a', 'nb-link');
    a.href = href;
    a.appendChild(el('span', 'nb-idx', idx));
    if (label) a.appendChild(label);
    li.appendChild(a);
    li.appendChild(el('span', 'nb-cos', A.fmt(cos)));
    li.title = 'decoder cosine ' + cos;
    return li;
  }

  A.pane({
    name: 'neighbours',
    order: 60,
    group: 'neighbours',
    render: function (page, rec) {
      if (!((rec.nb && rec.nb.length) || (rec.xnb && rec.xnb.length))) return null;
      var nbs = document.createDocumentFragment();
      if (rec.nb && rec.nb.length) {
        var ns = A.section('Decoder neighbours');
        var ul = el('ul', 'nb-list');
        rec.nb.forEach(function (pair) {
          ul.appendChild(nbItem('#' + pair[0], '#' + pair[0], page.fillLabel(el('span', 'nb-label'), pair[0]), pair[1]));
        });
        ns.appendChild(ul);
        nbs.appendChild(ns);
      }
      if (rec.xnb && rec.xnb.length) {
        var xs = A.section('Other layers');
        var xul = el('ul', 'nb-list');
        rec.xnb.forEach(function (q) {
          var href = String(q[1] || '');
          xul.appendChild(nbItem(href.indexOf('#') >= 0 ? href : href + '#' + q[2], String(q[0]) + ':' + q[2], null, q[3]));
        });
        xs.appendChild(xul);
        nbs.appendChild(xs);
      }
      return nbs;
    }
  });
})(window.Atlas);

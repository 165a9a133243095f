/* Explanations: a card per explanation (html sanitized at render time), else the feature's top tokens. */
(function (A) {
  'use strict';

  var el = A.el, fmt = A.fmt;

  A.pane({
    name: 'explanations',
    order: 20,
    render: function (page, rec) {
      var S = page.S, expls = rec.expl || [];
      if (expls.length) {
        var es = el('div', 'fv-expl');
        expls.forEach(function (e) {
          var card = el('div', 'expl');
          var text = el('div', 'expl-text');
          text.innerHTML = e.html || '';
          card.appendChild(text);
          var meta = [];
          if (e.author) meta.push(e.author);
          if (e.scores && e.scores.length) {
            e.scores.forEach(function (s) { meta.push(s[0] + ' ' + fmt(s[1])); });
          } else if (typeof e.score === 'number') meta.push('score ' + fmt(e.score));
          if (meta.length) card.appendChild(el('div', 'expl-meta', meta.join(' · ')));
          es.appendChild(card);
        });
        return es;
      }
      if (!(S.label && S.label[rec.i])) return null;
      var lab = el('p', 'fv-label');
      lab.appendChild(el('span', 'muted', 'Top tokens: '));
      A.appendTokenText(lab.appendChild(el('span', 'mono')), S.label[rec.i]);
      return lab;
    }
  });
})(window.Atlas);

/* Logits: the tokens whose logits the feature's decoder direction raises most and lowers most. */
(function (A) {
  'use strict';

  var el = A.el;

  function logitTable(title, rows, kind) {
    var s = A.section(title, 'logits logits-' + kind);
    var table = el('table', 'logit-table');
    var tb = el('tbody');
    rows.forEach(function (r) {
      var tr = el('tr');
      var tok = el('td', 'tok-cell');
      tok.appendChild(A.tokenChip(r[0]));
      tr.appendChild(tok);
      tr.appendChild(el('td', 'num ' + kind, (r[1] > 0 ? '+' : '') + A.fmt(r[1])));
      tb.appendChild(tr);
    });
    table.appendChild(tb);
    s.appendChild(table);
    return s;
  }

  A.pane({
    name: 'logits',
    order: 50,
    group: 'logits',
    render: function (page, rec) {
      if (!((rec.pos && rec.pos.length) || (rec.neg && rec.neg.length))) return null;
      var both = document.createDocumentFragment();
      both.appendChild(logitTable('Positive logits', rec.pos || [], 'pos'));
      both.appendChild(logitTable('Negative logits', rec.neg || [], 'neg'));
      return both;
    }
  });
})(window.Atlas);

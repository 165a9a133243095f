/* Top activations: the feature's top examples over their prompts' text, with the context, line break,
   space and (with token layers for this feature) shading controls. */
(function (A) {
  'use strict';

  var el = A.el;

  function exampleControls(page, rec) {
    var bar = el('div', 'controls ex-controls');
    var select = function (text, aria, options, current, onChange) {
      var lab = el('label', 'control', text + ' ');
      var sel = el('select');
      sel.setAttribute('aria-label', aria);
      options.forEach(function (o) {
        var opt = el('option', null, o[1]);
        opt.value = o[0];
        if (o[0] === current) opt.selected = true;
        sel.appendChild(opt);
      });
      sel.addEventListener('change', function () { onChange(sel.value); page.renderExamples(); });
      lab.appendChild(sel);
      bar.appendChild(lab);
    };
    select('Context', 'Tokens of context around the max token', [['5', '±5 tokens'], ['16', '±16 tokens'], ['all', 'All stored']],
      page.ctxMode, function (v) { page.ctxMode = v; });
    var toggle = function (text, key, aria) {
      var l = el('label', 'control check');
      var cb = el('input');
      cb.type = 'checkbox';
      cb.checked = page[key];
      cb.setAttribute('aria-label', aria);
      cb.addEventListener('change', function () { page[key] = cb.checked; page.renderExamples(); });
      l.appendChild(cb);
      l.appendChild(document.createTextNode(' ' + text));
      bar.appendChild(l);
    };
    toggle('Break lines', 'breakLines', 'Break lines at newline tokens instead of showing ↵');
    toggle('Mark spaces', 'markSpaces', 'Show spaces as a visible dot');
    var layers = page.layersFor(rec);
    if (layers.length) {
      var options = [['activation', 'Activation']].concat(layers.map(function (l) { return [l.layer.name, l.layer.label || l.layer.name]; }));
      select('Shade', 'What the example tokens are shaded by', options, page.shade, function (v) { page.shade = v; });
    }
    return bar;
  }

  A.pane({
    name: 'top_examples',
    order: 70,
    render: function (page, rec, ctx) {
      if (ctx.dead || !((rec.top && rec.top.length) || (rec.intervals && rec.intervals.length))) return null;
      var s = A.section('Top activations', 'fv-examples');
      s.appendChild(exampleControls(page, rec));
      var holder = el('div', 'examples');
      holder.appendChild(el('p', 'muted loading', 'Loading text…'));
      s.appendChild(holder);
      return s;
    },
    /* Called as each top example's prompt arrives: rows still waiting for their text are drawn as
       pending (Atlas.exampleRow with tokens undefined) and replaced when it comes; a new record or
       another example setting redraws every row. */
    onText: function (page, rec, node) {
      var holder = A.$('.examples', node), rowOf = page.rowOf;
      if (!holder || !rowOf) return;
      var top = rec.top || [];
      var key = [page.ctxMode, page.breakLines, page.markSpaces, page.shade].join('|');
      var state = holder.atlasRows;
      if (!state || state.rec !== rec || state.key !== key) {
        state = holder.atlasRows = { rec: rec, key: key, rows: [] };
        holder.textContent = '';
        if (!top.length) holder.appendChild(el('p', 'muted', 'No stored examples.'));
      }
      var f1 = document.createDocumentFragment();
      top.forEach(function (ex, k) {
        if (!ex) return;
        var tokens = rowOf(ex[0]), old = state.rows[k];
        if (old && (!old.pending || tokens === undefined)) return;
        var row = A.exampleRow(ex, tokens, page.exampleOptions(rec, 'top', k));
        state.rows[k] = { node: row, pending: tokens === undefined };
        if (old) holder.replaceChild(row, old.node);
        else f1.appendChild(row);
      });
      holder.appendChild(f1);
    }
  });
})(window.Atlas);

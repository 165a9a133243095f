/* Feature cards, shared by a list page (RELEASE/lists/ID.html: one data file, AtlasData.featureList)
   and the embed (embed.html): the feature id linked to its feature view, its explanation or label,
   max activation and density, and its first examples shaded over their prompts' text. */
(function (A) {
  'use strict';

  var $ = A.$, el = A.el, fmt = A.fmt, fmtDensity = A.fmtDensity;

  /* A card for `card` {sae, href, i, max, density, label, expl [{html}], top [example]}. opts:
     explanation (default true), examples (how many, default all given), contextBefore, contextAfter,
     target (of the links), link (the feature id links back, default true), extra(node) (appends
     more, e.g. plots). Returns {node, fill(rowOf)}: fill draws the examples once their text has come. */
  function featureCard(card, opts) {
    opts = opts || {};
    var node = el('article', 'fcard');
    var head = el('header', 'fcard-head');
    var id = card.sae + ':' + card.i;
    var title = opts.link === false ? el('span', 'fcard-id', id) : el('a', 'fcard-id', id);
    if (opts.link !== false) {
      title.href = card.href + '#' + card.i;
      if (opts.target) { title.target = opts.target; title.rel = 'noopener'; }
    }
    head.appendChild(title);
    var stats = el('span', 'fcard-stats muted small', 'max ' + fmt(card.max) + ' · density ' + fmtDensity(card.density));
    head.appendChild(stats);
    node.appendChild(head);
    if (opts.explanation !== false) {
      var expl = card.expl && card.expl[0];
      if (expl && expl.html) {
        var prose = el('div', 'fcard-expl prose');
        prose.innerHTML = expl.html;  // sanitized at render time (nh3)
        node.appendChild(prose);
      } else if (card.label) {
        var label = el('p', 'fcard-label mono');
        A.appendTokenText(label, card.label);
        node.appendChild(label);
      } else if (!(card.max > 0)) node.appendChild(el('p', 'fcard-label is-dead', 'dead: never fired on the corpus'));
    }
    if (opts.extra) opts.extra(node);
    var n = opts.examples === undefined ? (card.top || []).length : Math.min(opts.examples, (card.top || []).length);
    var examples = card.top ? card.top.slice(0, n) : [];
    var box = null;
    if (examples.length) {
      box = el('div', 'fcard-examples');
      box.appendChild(el('p', 'muted small', 'Loading examples…'));
      node.appendChild(box);
    }
    return {
      node: node,
      prompts: examples.map(function (e) { return e[0]; }),
      fill: function (rowOf) {
        if (!box) return;
        box.textContent = '';
        examples.forEach(function (ex) {
          box.appendChild(A.exampleRow(ex, rowOf(ex[0]), {
            max: card.max, contextBefore: opts.contextBefore, contextAfter: opts.contextAfter, ctxMode: '5', target: opts.target
          }));
        });
      }
    };
  }

  function status(msg) {
    var s = $('#list-status');
    if (!s) return;
    s.textContent = msg || '';
    s.hidden = !msg;
  }

  function initListPage() {
    var app = $('#list-app');
    if (!app) return;
    A.load(app.getAttribute('data-list')).then(function (L) {
      var box = $('#list-cards');
      box.textContent = '';
      var cards = (L.features || []).map(function (c) {
        var made = featureCard(c, { contextBefore: L.context_before, contextAfter: L.context_after });
        box.appendChild(made.node);
        return made;
      });
      if (!cards.length) status('This list has no features.');
      var prompts = [];
      cards.forEach(function (c) { prompts = prompts.concat(c.prompts); });
      return A.corpusRows(L.corpus, L.prompts_per_shard || 1, prompts).then(function (rowOf) {
        cards.forEach(function (c) { c.fill(rowOf); });
        document.body.setAttribute('data-ready', 'true');
      });
    }, function (err) { status(err.message + ' — the data of this list is missing.'); });
  }

  A.featureCard = featureCard;
  A.initListPage = initListPage;
})(window.Atlas);

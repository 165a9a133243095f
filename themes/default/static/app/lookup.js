/* Token lookup: the features whose top examples peak on a typed token. */
(function (A) {
  'use strict';

  var $ = A.$, el = A.el, fmt = A.fmt, debounce = A.debounce;

  function normToken(s) { return String(s).replace(/\u2423/g, ' ').trim().toLowerCase(); }

  function TokenLookup(page) {
    this.page = page;
    this.input = $('#token-lookup');
    this.results = $('#token-lookup-results');
    this.count = $('#token-lookup-count');
    if (!this.input || !this.page.S.peak_tokens) return;
    var self = this;
    this.input.addEventListener('input', debounce(function () { self.run(); }, 80));
  }

  TokenLookup.prototype.build = function () {
    var peaks = this.page.S.peak_tokens, map = new Map();
    for (var i = 0; i < peaks.length; i++) {
      var toks = peaks[i] || [];
      for (var j = 0; j < toks.length; j++) {
        var key = normToken(toks[j]);
        if (!key && toks[j]) key = toks[j];  // whitespace-only tokens keep their raw form
        var list = map.get(key);
        if (!list) { list = []; map.set(key, list); }
        if (list[list.length - 1] !== i) list.push(i);
      }
    }
    this.map = map;
  };

  TokenLookup.prototype.run = function () {
    var raw = this.input.value.replace(/\\n/g, '\n').replace(/\\t/g, '\t');
    var S = this.page.S, self = this;
    this.results.textContent = '';
    if (!raw) { this.count.textContent = ''; return; }
    if (!this.map) this.build();
    var key = normToken(raw) || raw;
    var hits = (this.map.get(key) || []).slice();
    var exact = raw.replace(/\u2423/g, ' ');
    var isExact = function (i) { return (S.peak_tokens[i] || []).indexOf(exact) >= 0 ? 0 : 1; };
    hits.sort(function (a, b) { return (isExact(a) - isExact(b)) || (S.max[b] - S.max[a]) || (a - b); });
    this.count.textContent = hits.length ? hits.length.toLocaleString('en-US') + ' feature' + (hits.length === 1 ? '' : 's') + ' peak on ' + JSON.stringify(key) + (hits.length > 200 ? ' (showing 200)' : '') : 'No feature peaks on ' + JSON.stringify(key);
    var frag = document.createDocumentFragment();
    hits.slice(0, 200).forEach(function (i) {
      var li = el('li');
      var a = el('a', 'lookup-link');
      a.href = '#' + i;
      a.appendChild(el('span', 'nb-idx', '#' + i));
      a.appendChild(self.page.fillLabel(el('span', 'nb-label'), i));
      a.appendChild(el('span', 'nb-cos', fmt(S.max[i])));
      li.appendChild(a);
      frag.appendChild(li);
    });
    this.results.appendChild(frag);
  };

  A.TokenLookup = TokenLookup;
})(window.Atlas);

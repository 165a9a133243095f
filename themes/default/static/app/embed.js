/* The embed (MODEL/LAYER-SET/embed.html#INDEX?switches): one feature card for an <iframe>, loading only
   the feature's shard and its examples' prompt shards (never the SAE summary). Switches, after the
   index in the hash (works from file://) or in the query string (the hash wins):
     examples=N      top examples shown (default 3, 0 hides them)
     plots=0|1       the activation histogram (default 1)
     explanation=0|1 the explanation or top-token label (default 1)
     link=0|1        the feature id links back to its feature view (default 1)
     theme=light|dark|auto   colour scheme (default auto: the saved choice, else the system's)
   e.g. embed.html#3?examples=5&plots=0. On the SAE page, initEmbedSnippet keeps the feature view's
   copyable iframe snippet on the current feature. The embed posts its height to the parent page as
   {type: 'sae-atlas-embed', height} so that a page may size the iframe. */
(function (A) {
  'use strict';

  var $ = A.$, el = A.el, fmt = A.fmt, pad4 = A.pad4;
  var DEFAULTS = { examples: 3, plots: 1, explanation: 1, link: 1, theme: 'auto' };

  /* '#3?examples=5&plots=0' (and optionally a '?a=b' query) -> {index, examples, plots, explanation, link, theme}. */
  function parseOptions(hash, search) {
    var out = {}, k;
    for (k in DEFAULTS) if (Object.prototype.hasOwnProperty.call(DEFAULTS, k)) out[k] = DEFAULTS[k];
    hash = (hash || '').replace(/^#/, '');
    var q = hash.indexOf('?');
    var head = q < 0 ? hash : hash.slice(0, q);
    out.index = /^\d+$/.test(head) ? parseInt(head, 10) : -1;
    [(search || '').replace(/^\?/, ''), q < 0 ? '' : hash.slice(q + 1)].forEach(function (part) {
      part.split(/[&;]/).forEach(function (pair) {
        var eq = pair.indexOf('='), key = eq < 0 ? pair : pair.slice(0, eq), value = eq < 0 ? '1' : pair.slice(eq + 1);
        if (key === 'theme') { if (/^(light|dark|auto)$/.test(value)) out.theme = value; }
        else if (Object.prototype.hasOwnProperty.call(DEFAULTS, key) && /^\d+$/.test(value)) out[key] = parseInt(value, 10);
      });
    });
    return out;
  }

  /* theme light or dark sets the scheme; auto goes back to what theme.js chose (`saved`: the saved
     choice, or null to follow the system). */
  function applyTheme(theme, saved) {
    var root = document.documentElement;
    if (theme === 'light' || theme === 'dark') root.setAttribute('data-theme', theme);
    else if (saved) root.setAttribute('data-theme', saved);
    else root.removeAttribute('data-theme');
  }

  function postHeight() {
    if (window.parent === window) return;
    try { window.parent.postMessage({ type: 'sae-atlas-embed', height: document.documentElement.scrollHeight }, '*'); } catch (e) { /* no parent to tell */ }
  }

  function Embed(app) {
    this.app = app;
    var num = function (name) { return parseInt(app.getAttribute(name), 10) || 0; };
    this.sae = app.getAttribute('data-sae') || '';
    this.n = num('data-d-sae');
    this.shardSize = num('data-shard-size') || 1;
    this.data = app.getAttribute('data-data') || 'data/';
    this.corpus = app.getAttribute('data-corpus') || '';
    this.pps = num('data-pps') || 1;
    this.contextBefore = num('data-context-before');
    this.contextAfter = num('data-context-after');
    this.saeHref = app.getAttribute('data-sae-href') || 'index.html';
    this.savedTheme = document.documentElement.getAttribute('data-theme');
    this.generation = 0;
  }

  Embed.prototype.start = function () {
    var self = this;
    window.addEventListener('hashchange', function () { self.render(); });
    A.page = this;
    this.render();
  };

  Embed.prototype.fail = function (msg) {
    this.app.textContent = '';
    this.app.appendChild(el('p', 'notice notice-error', msg));
    document.body.setAttribute('data-ready', 'true');
    postHeight();
  };

  Embed.prototype.render = function () {
    var self = this, gen = ++this.generation;
    var o = this.options = parseOptions(window.location.hash, window.location.search);
    applyTheme(o.theme, this.savedTheme);
    var i = o.index;
    if (!(i >= 0 && i < this.n)) {
      this.fail(i < 0 ? 'No feature given: the address should end in #INDEX, e.g. embed.html#3.'
        : 'Feature ' + i + ' does not exist; ' + this.sae + ' has ' + this.n.toLocaleString('en-US') + ' features.');
      return;
    }
    var shard = Math.floor(i / this.shardSize);
    A.load(this.data + 'f/' + pad4(shard) + '.js').then(function (data) {
      if (gen !== self.generation) return null;
      var rec = ((data && data.records) || []).filter(function (r) { return r.i === i; })[0];
      if (!rec) { self.fail('Feature ' + i + ' is missing from its data shard.'); return null; }
      rec = A.unpackColumns(Object.assign({}, rec));
      var card = {
        sae: self.sae, href: self.saeHref, i: i, max: rec.max, density: rec.density, expl: rec.expl,
        label: (rec.pos || []).slice(0, 3).map(function (p) { return p[0]; }).join(' '), top: rec.top || []
      };
      var made = A.featureCard(card, {
        explanation: !!o.explanation, examples: o.examples, link: !!o.link, target: '_blank',
        contextBefore: self.contextBefore, contextAfter: self.contextAfter,
        extra: function (node) {
          if (!o.plots || !(rec.max > 0) || !(rec.hist && rec.hist.length)) return;
          var total = rec.hist.reduce(function (a, b) { return a + b; }, 0);
          var fig = el('figure', 'chart fcard-plot');
          fig.appendChild(A.barChart(rec.hist, 0, rec.max, {
            label: 'Histogram of non-zero activations, ' + total.toLocaleString('en-US') + ' tokens, 0 to ' + fmt(rec.max),
            xTitle: 'activation', yTitle: 'tokens', height: 120
          }));
          node.appendChild(fig);
        }
      });
      self.app.textContent = '';
      self.app.appendChild(made.node);
      return A.corpusRows(self.corpus, self.pps, made.prompts).then(function (rowOf) {
        if (gen !== self.generation) return;
        made.fill(rowOf);
        document.body.setAttribute('data-ready', 'true');
        postHeight();
      });
    }, function (err) { if (gen === self.generation) self.fail(err.message + ' — the data of this feature is missing.'); });
  };

  function initEmbed() {
    var app = $('#atlas-embed');
    if (app) new Embed(app).start();
  }

  /* The SAE page's iframe snippet, following the feature view's permalink (#INDEX). */
  function initEmbedSnippet() {
    var box = $('#fv-embed'), code = $('#fv-embed-code'), open = $('#fv-embed-open'), permalink = $('#fv-permalink');
    if (!box || !code || !permalink) return;
    var page = box.getAttribute('data-embed') || 'embed.html';
    var update = function () {
      var m = /#(\d+)$/.exec(permalink.getAttribute('href') || '');
      if (!m) return;
      var src = new URL(page, document.baseURI).href.replace(/#.*$/, '') + '#' + m[1];
      code.textContent = '<iframe src="' + src + '" title="' + (A.$('#sae-app').getAttribute('data-sae') || 'feature') + ':' + m[1] +
        '" width="100%" height="520" style="border:0" loading="lazy"></iframe>';
      if (open) open.href = page + '#' + m[1];
    };
    new MutationObserver(update).observe(permalink, { attributes: true, attributeFilter: ['href'] });
    update();
  }

  A.Embed = Embed;
  A.parseEmbedOptions = parseOptions;
  A.initEmbed = initEmbed;
  A.initEmbedSnippet = initEmbedSnippet;
})(window.Atlas);

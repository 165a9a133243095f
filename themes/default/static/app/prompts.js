/* The prompt view (MODEL/prompts.html#PROMPT or #PROMPT:TOKEN): a corpus prompt's tokens, and for the
   clicked token the features of every SAE of the model that fire most there, with their activation
   and label, each linked to its feature view. Tokens come from the corpus shards; the features from
   one data file per prompt (prompts/NNNN.js, AtlasData.promptView) for the first `data-viewed`
   prompts. */
(function (A) {
  'use strict';

  var $ = A.$, el = A.el, fmt = A.fmt, pad4 = A.pad4, clamp = A.clamp, load = A.load;

  function PromptsPage(app) {
    this.app = app;
    this.corpus = app.getAttribute('data-corpus') || '';
    this.pps = parseInt(app.getAttribute('data-pps'), 10) || 1;
    this.n = parseInt(app.getAttribute('data-n-prompts'), 10) || 0;
    this.viewed = parseInt(app.getAttribute('data-viewed'), 10) || 0;
    this.data = app.getAttribute('data-data') || 'prompts/';
    this.setting = app.getAttribute('data-setting') || 'compute.prompt_view';
    this.prompt = -1;
    this.token = -1;
    this.tokens = null;
    this.view = null;  // the prompt's AtlasData.promptView object (null: none for this prompt)
    this.generation = 0;
    this.ui = {
      title: $('#pv-title'), input: $('#pv-input'), prev: $('#pv-prev'), next: $('#pv-next'),
      status: $('#pv-status'), tokens: $('#pv-tokens'), features: $('#pv-features-body')
    };
  }

  /* #N or #N:T -> {prompt, token} (token -1 when absent); null for anything else. */
  PromptsPage.parseHash = function (hash) {
    var m = /^#(\d+)(?::(\d+))?$/.exec(hash || '');
    if (!m) return null;
    return { prompt: parseInt(m[1], 10), token: m[2] === undefined ? -1 : parseInt(m[2], 10) };
  };

  PromptsPage.prototype.start = function () {
    var self = this, ui = this.ui;
    ui.prev.addEventListener('click', function () { self.step(-1); });
    ui.next.addEventListener('click', function () { self.step(1); });
    ui.input.addEventListener('change', function () {
      var v = parseInt(ui.input.value, 10);
      if (!isNaN(v)) self.go(clamp(v, 0, self.n - 1), -1);
    });
    window.addEventListener('hashchange', function () { self.fromHash(); });
    document.addEventListener('keydown', function (e) {
      if (A.isTyping(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === 'ArrowLeft') { e.preventDefault(); self.step(-1); }
      else if (e.key === 'ArrowRight') { e.preventDefault(); self.step(1); }
    });
    A.page = this;
    this.fromHash();
  };

  PromptsPage.prototype.fromHash = function () {
    var h = PromptsPage.parseHash(window.location.hash);
    if (h && h.prompt < this.n) { this.show(h.prompt, h.token); return; }
    if (this.prompt < 0) this.show(0, -1);
    if (window.location.hash && window.location.hash !== '#') {
      this.status(h ? 'Prompt ' + h.prompt + ' does not exist; the corpus has ' + this.n.toLocaleString('en-US') + ' prompts.'
        : 'Not a prompt address: use #PROMPT or #PROMPT:TOKEN.');
    }
  };

  PromptsPage.prototype.status = function (msg) {
    this.ui.status.textContent = msg || '';
    this.ui.status.hidden = !msg;
  };

  PromptsPage.prototype.go = function (prompt, token) {
    var hash = '#' + prompt + (token >= 0 ? ':' + token : '');
    if (window.location.hash === hash) this.show(prompt, token);
    else window.location.hash = hash;
  };

  PromptsPage.prototype.step = function (d) {
    var next = clamp((this.prompt < 0 ? 0 : this.prompt) + d, 0, this.n - 1);
    if (next !== this.prompt) this.go(next, -1);
  };

  PromptsPage.prototype.show = function (prompt, token) {
    var self = this, ui = this.ui;
    this.status('');
    if (prompt === this.prompt && this.tokens) { this.select(token); return; }
    var gen = ++this.generation;
    this.prompt = prompt;
    this.token = -1;
    this.tokens = null;
    this.view = null;
    ui.title.textContent = 'Prompt ' + prompt;
    ui.input.value = String(prompt);
    ui.prev.disabled = prompt <= 0;
    ui.next.disabled = prompt >= this.n - 1;
    document.title = document.title.replace(/^(Prompt \d+ · )?/, 'Prompt ' + prompt + ' · ');
    ui.tokens.textContent = '';
    ui.tokens.appendChild(el('span', 'muted', 'Loading…'));
    var features = prompt < this.viewed
      ? load(this.data + pad4(prompt) + '.js').then(null, function () { return null; })
      : Promise.resolve(null);
    Promise.all([A.corpusRows(this.corpus, this.pps, [prompt]), features]).then(function (got) {
      if (gen !== self.generation) return;
      self.tokens = got[0](prompt);
      self.view = got[1] || null;
      self.renderTokens();
      self.select(token);
      document.body.setAttribute('data-ready', 'true');
    });
  };

  PromptsPage.prototype.renderTokens = function () {
    var self = this, box = this.ui.tokens;
    box.textContent = '';
    if (!this.tokens) { box.appendChild(el('span', 'muted', 'Text unavailable for prompt ' + this.prompt + '.')); return; }
    // Shade each token by its strongest feature activation over the SAEs, relative to the prompt's largest.
    var values = {}, top = 0;
    if (this.view) {
      this.view.saes.forEach(function (s) {
        (s.f || []).forEach(function (list, t) {
          if (list.length && list[0][1] > (values[t] || 0)) values[t] = list[0][1];
        });
      });
      Object.keys(values).forEach(function (t) { if (values[t] > top) top = values[t]; });
    }
    A.renderTokens(box, this.tokens, {
      values: values, scale: top || 1,
      onToken: function (t) { self.go(self.prompt, t); }
    });
  };

  PromptsPage.prototype.select = function (token) {
    var spans = this.ui.tokens.querySelectorAll('.tok');
    if (!(token >= 0 && token < spans.length)) token = -1;
    this.token = token;
    for (var k = 0; k < spans.length; k++) {
      spans[k].classList.toggle('is-selected', k === token);
      spans[k].setAttribute('aria-pressed', k === token ? 'true' : 'false');
    }
    this.renderFeatures();
  };

  PromptsPage.prototype.renderFeatures = function () {
    var box = this.ui.features, p = this.prompt, t = this.token;
    box.textContent = '';
    if (this.prompt >= this.viewed) {
      box.appendChild(el('p', 'notice', this.viewed > 0
        ? 'Feature lists exist for the first ' + this.viewed.toLocaleString('en-US') + ' prompts (0–' + (this.viewed - 1) +
          '); the manifest setting ' + this.setting + ' raises that number. This prompt shows its tokens only.'
        : 'This site has no feature lists per token: the manifest setting ' + this.setting + ' is 0. Prompts show their tokens only.'));
      return;
    }
    if (!this.view) { box.appendChild(el('p', 'notice notice-error', 'The feature data of prompt ' + p + ' is missing.')); return; }
    if (t < 0) { box.appendChild(el('p', 'muted', 'Pick a token above to list the features that fire most on it.')); return; }
    var head = el('p', 'pv-token-head');
    head.appendChild(document.createTextNode('Token ' + t + ' '));
    head.appendChild(A.tokenChip(this.tokens ? this.tokens[t] : ''));
    box.appendChild(head);
    var grid = el('div', 'pv-saes');
    this.view.saes.forEach(function (s) {
      var card = el('section', 'pv-sae');
      var h = el('h3');
      var link = el('a', null, s.sae);
      link.href = s.href;
      h.appendChild(link);
      card.appendChild(h);
      if (!s.f) { card.appendChild(el('p', 'muted small', 'Not computed for this prompt.')); grid.appendChild(card); return; }
      var list = s.f[t] || [];
      if (!list.length) { card.appendChild(el('p', 'muted small', 'No feature fires here.')); grid.appendChild(card); return; }
      var ol = el('ol', 'pv-list');
      list.forEach(function (fv) {
        var li = el('li', 'pv-feature');
        var a = el('a', 'pv-idx', '#' + fv[0]);
        a.href = s.href + '#' + fv[0];
        a.title = 'Open feature ' + s.sae + ':' + fv[0];
        li.appendChild(a);
        li.appendChild(el('span', 'pv-val', fmt(fv[1])));
        var label = el('span', 'pv-label');
        A.appendTokenText(label, (s.labels && s.labels[fv[0]]) || '');
        li.appendChild(label);
        ol.appendChild(li);
      });
      card.appendChild(ol);
      grid.appendChild(card);
    });
    box.appendChild(grid);
  };

  function initPromptsPage() {
    var app = $('#prompts-app');
    if (app) new PromptsPage(app).start();
  }

  A.PromptsPage = PromptsPage;
  A.initPromptsPage = initPromptsPage;
})(window.Atlas);

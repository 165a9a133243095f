/* Starts the page once the document is parsed: theme toggle, global search, copy buttons, and the page
   kind's own part: on an SAE page the explorer (when its summary has registered) and the embed
   snippet, on a prompt view page the prompt view, on a list page its cards, on an embed the card. Last of the parts, so that every part,
   pane and token layer is defined before anything renders. */
(function (A) {
  'use strict';

  var $ = A.$;

  function initSaePage() {
    var app = $('#sae-app');
    if (!app) return;
    var started = false;
    var begin = function (S) {
      if (started || !S) return;
      started = true;
      try { new A.SaePage(app, S).start(); } catch (err) {
        var s = $('#sae-status');
        if (s) { s.hidden = false; s.textContent = 'The feature explorer failed to start: ' + err.message; }
        throw err;
      }
    };
    A.listeners.summary.push(begin);
    if (A.latest.summary) { begin(A.latest.summary); return; }
    A.load(app.getAttribute('data-summary') || 'data/summary.js').then(begin, function (err) {
      var s = $('#sae-status');
      if (s) { s.hidden = false; s.textContent = err.message + ' — the feature data for this SAE is missing.'; }
    });
  }

  function boot() {
    A.initThemeToggle();
    A.initGlobalSearch();
    A.initCopyButtons();
    var kind = document.body.getAttribute('data-page');
    if (kind === 'sae') { initSaePage(); A.initEmbedSnippet(); }
    else if (kind === 'prompts') A.initPromptsPage();
    else if (kind === 'list') A.initListPage();
    else if (kind === 'embed') A.initEmbed();
    else initSaePage();
  }

  A.initSaePage = initSaePage;
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})(window.Atlas);

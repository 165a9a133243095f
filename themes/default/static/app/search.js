/* Global search: MiniSearch over search-index.js, loaded on first focus, a keyboard-driven listbox. */
(function (A) {
  'use strict';

  var $ = A.$, el = A.el, load = A.load, latest = A.latest, isTyping = A.isTyping, ROOT = A.ROOT;

  var KIND_NAMES = { releases: 'release', models: 'model', sets: 'set', saes: 'sae', features: 'feature' };

  function searchDocs(obj) {
    var raw = [];
    if (Array.isArray(obj)) raw = obj;
    else if (obj && typeof obj === 'object') {
      raw = obj.docs || obj.items || obj.entries || null;
      if (!raw) {
        raw = [];
        Object.keys(obj).forEach(function (k) {
          if (Array.isArray(obj[k])) obj[k].forEach(function (d) {
            if (d && typeof d === 'object') raw.push(Object.assign({ kind: KIND_NAMES[k] || k }, d));
          });
        });
      }
    }
    var docs = [];
    raw.forEach(function (d, n) {
      if (!d || typeof d !== 'object') return;
      var href = d.href || d.url || d.path;
      if (!href) return;
      docs.push({
        key: n,
        id: String(d.id || d.sae || d.title || ''),
        title: String(d.title || d.id || ''),
        kind: String(d.kind || d.type || ''),
        text: String(d.text || d.description || d.model || ''),
        href: String(href)
      });
    });
    return docs;
  }

  function initGlobalSearch() {
    var input = $('#global-search');
    var list = $('#global-search-results');
    if (!input || !list) return;
    var form = input.form;
    var index = null, loading = null, failed = false;
    var results = [], active = -1;

    function ensureIndex() {
      if (loading) return loading;
      loading = load(ROOT + 'search-index.js').then(function (obj) {
        var docs = searchDocs(obj === undefined ? latest.search : obj);
        if (typeof window.MiniSearch !== 'function') throw new Error('MiniSearch missing');
        index = new window.MiniSearch({
          idField: 'key',
          fields: ['id', 'title', 'kind', 'text'],
          storeFields: ['id', 'title', 'kind', 'href'],
          tokenize: function (s) { return String(s).toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean); },
          searchOptions: { prefix: true, fuzzy: 0.15, boost: { id: 2, title: 1.5 } }
        });
        index.addAll(docs);
      }).catch(function () { failed = true; });
      return loading;
    }

    function close() {
      list.hidden = true;
      input.setAttribute('aria-expanded', 'false');
      input.removeAttribute('aria-activedescendant');
      active = -1;
    }

    function setActive(n) {
      var items = list.children;
      if (!results.length) return;
      active = (n + results.length) % results.length;
      for (var i = 0; i < items.length; i++) items[i].setAttribute('aria-selected', i === active ? 'true' : 'false');
      var item = items[active];
      if (item) {
        input.setAttribute('aria-activedescendant', item.id);
        item.scrollIntoView({ block: 'nearest' });
      }
    }

    function show(query) {
      list.textContent = '';
      results = [];
      active = -1;
      if (!query) { close(); return; }
      if (failed || !index) {
        list.appendChild(el('li', 'search-empty', failed ? 'Search index unavailable' : 'Loading…'));
      } else {
        results = index.search(query, { combineWith: 'AND' });
        if (!results.length) results = index.search(query);
        results = results.slice(0, 12);
        if (!results.length) list.appendChild(el('li', 'search-empty', 'No matches'));
        results.forEach(function (r, n) {
          var li = el('li', 'search-result');
          li.id = 'gs-opt-' + n;
          li.setAttribute('role', 'option');
          li.setAttribute('aria-selected', 'false');
          var a = el('a');
          a.href = ROOT + r.href;
          a.tabIndex = -1;
          if (r.kind) a.appendChild(el('span', 'badge badge-' + r.kind.replace(/[^a-z]/gi, ''), r.kind));
          a.appendChild(el('span', 'search-title', r.title));
          var shownId = r.kind && r.id.indexOf(r.kind + ':') === 0 ? r.id.slice(r.kind.length + 1) : r.id;
          if (shownId && r.title.indexOf(shownId) < 0) a.appendChild(el('span', 'search-id', shownId));
          li.appendChild(a);
          li.addEventListener('mousemove', function () { if (active !== n) setActive(n); });
          list.appendChild(li);
        });
      }
      list.hidden = false;
      input.setAttribute('aria-expanded', 'true');
    }

    var run = function () {
      var q = input.value.trim();
      if (!q) { close(); return; }
      if (!index && !failed) { show(q); ensureIndex().then(function () { if (input.value.trim() === q) show(q); }); return; }
      show(q);
    };

    input.addEventListener('focus', function () { ensureIndex(); if (input.value.trim()) run(); });
    input.addEventListener('input', run);
    input.addEventListener('keydown', function (e) {
      if (e.key === 'ArrowDown') { e.preventDefault(); if (list.hidden) run(); setActive(active + 1); }
      else if (e.key === 'ArrowUp') { e.preventDefault(); setActive(active - 1); }
      else if (e.key === 'Escape') { if (!list.hidden) { e.preventDefault(); close(); } else input.blur(); }
      else if (e.key === 'Enter') {
        e.preventDefault();
        var r = results[active >= 0 ? active : 0];
        if (r) window.location.href = ROOT + r.href;
      }
    });
    if (form) form.addEventListener('submit', function (e) { e.preventDefault(); });
    document.addEventListener('pointerdown', function (e) {
      if (form && !form.contains(e.target)) close();
    });
    document.addEventListener('keydown', function (e) {
      if (e.key === '/' && !isTyping(e.target) && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        input.focus();
        input.select();
      }
    });
  }

  A.searchDocs = searchDocs;
  A.initGlobalSearch = initGlobalSearch;
})(window.Atlas);

/* The feature list: virtualised rows (index, label, density, max), filter and sort. */
(function (A) {
  'use strict';

  var $ = A.$, $all = A.$all, el = A.el, clamp = A.clamp, fmt = A.fmt, fmtDensity = A.fmtDensity, debounce = A.debounce;

  var ROW_H = 34;

  function FeatureList(page) {
    this.page = page;
    this.S = page.S;
    this.body = $('#flist-body');
    this.spacer = $('#flist-spacer');
    this.count = $('#list-count');
    this.filterInput = $('#list-filter');
    if (!this.body) { this.disabled = true; return; }
    this.sortKey = 'index';
    this.sortDir = 1;
    this.query = '';
    this.rows = [];
    this.current = -1;
    this.haystack = null;
    this.order = null;
    this.bind();
    this.apply();
  }

  FeatureList.prototype.bind = function () {
    var self = this;
    this.body.addEventListener('scroll', function () { self.schedule(); }, { passive: true });
    if (window.ResizeObserver) new ResizeObserver(function () { self.schedule(); }).observe(this.body);
    $all('.flist-head .sort').forEach(function (btn) {
      btn.addEventListener('click', function () {
        var key = btn.getAttribute('data-sort');
        if (key === self.sortKey) self.sortDir = -self.sortDir;
        else { self.sortKey = key; self.sortDir = key === 'index' ? 1 : -1; }
        $all('.flist-head .sort').forEach(function (b) {
          b.setAttribute('aria-sort', b === btn ? (self.sortDir > 0 ? 'ascending' : 'descending') : 'none');
        });
        self.apply();
      });
    });
    if (this.filterInput) this.filterInput.addEventListener('input', debounce(function () {
      self.query = self.filterInput.value.trim().toLowerCase();
      self.apply();
    }, 90));
    this.body.addEventListener('keydown', function (e) {
      if (!self.order || !self.order.length) return;
      var pos = self.order.indexOf(self.page.current);
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        e.stopPropagation();
        pos = clamp(pos + (e.key === 'ArrowDown' ? 1 : -1), 0, self.order.length - 1);
        self.page.go(self.order[pos]);
        self.reveal(pos);
      }
    });
  };

  FeatureList.prototype.apply = function () {
    var S = this.S, n = this.page.n, q = this.query, order = [];
    if (q) {
      if (!this.haystack) {
        this.haystack = new Array(n);
        for (var h = 0; h < n; h++) this.haystack[h] = ((S.label && S.label[h]) || '').toLowerCase() + '\n' + ((S.expl && S.expl[h]) || '').toLowerCase();
      }
      var asIndex = /^#?\d+$/.test(q) ? parseInt(q.replace('#', ''), 10) : -1;
      if (asIndex >= 0 && asIndex < n) order.push(asIndex);
      for (var i = 0; i < n; i++) if (i !== asIndex && this.haystack[i].indexOf(q) >= 0) order.push(i);
    } else {
      order = new Array(n);
      for (i = 0; i < n; i++) order[i] = i;
    }
    var key = this.sortKey, dir = this.sortDir;
    if (key !== 'index' || dir !== 1) {
      var col = key === 'density' ? S.density : key === 'max' ? S.max : null;
      order.sort(function (a, b) {
        var d = col ? (col[a] - col[b]) : (a - b);
        return d ? d * dir : a - b;
      });
    }
    this.order = order;
    if (this.count) this.count.textContent = order.length === n ? n.toLocaleString('en-US') + ' features' : order.length.toLocaleString('en-US') + ' of ' + n.toLocaleString('en-US');
    this.spacer.style.height = (order.length * ROW_H) + 'px';
    this.body.scrollTop = 0;
    this.render();
  };

  FeatureList.prototype.schedule = function () {
    if (this.frame) return;
    var self = this;
    this.frame = requestAnimationFrame(function () { self.frame = 0; self.render(); });
  };

  FeatureList.prototype.makeRow = function () {
    var a = el('a', 'frow');
    a.setAttribute('role', 'row');
    a.tabIndex = -1;
    ['col-idx', 'col-label', 'col-num', 'col-num'].forEach(function (cls) {
      var cell = el('span', cls);
      cell.setAttribute('role', 'cell');
      a.appendChild(cell);
    });
    this.body.appendChild(a);
    return a;
  };

  FeatureList.prototype.render = function () {
    var S = this.S, order = this.order || [];
    var top = this.body.scrollTop, height = this.body.clientHeight || 400;
    var first = Math.max(0, Math.floor(top / ROW_H) - 4);
    var count = Math.min(order.length - first, Math.ceil(height / ROW_H) + 8);
    while (this.rows.length < count) this.rows.push(this.makeRow());
    for (var r = 0; r < this.rows.length; r++) {
      var row = this.rows[r];
      if (r >= count) { row.hidden = true; continue; }
      var i = order[first + r];
      row.hidden = false;
      if (row._i !== i) {
        row._i = i;
        row.href = '#' + i;
        var c = row.childNodes;
        c[0].textContent = i;
        this.page.fillLabel(c[1], i);
        row.classList.toggle('is-dead', !(S.max[i] > 0));
        c[2].textContent = fmtDensity(S.density ? S.density[i] : null);
        c[3].textContent = fmt(S.max[i]);
      }
      row.style.transform = 'translateY(' + ((first + r) * ROW_H) + 'px)';
      var cur = i === this.page.current;
      if (cur !== row.classList.contains('is-current')) row.classList.toggle('is-current', cur);
      if (cur) row.setAttribute('aria-current', 'true'); else row.removeAttribute('aria-current');
    }
  };

  FeatureList.prototype.markCurrent = function (i) {
    if (this.disabled) return;
    var pos = this.order ? this.order.indexOf(i) : -1;
    if (pos >= 0) this.reveal(pos);
    this.schedule();
  };

  FeatureList.prototype.reveal = function (pos) {
    var y = pos * ROW_H, top = this.body.scrollTop, h = this.body.clientHeight;
    if (y < top) this.body.scrollTop = y;
    else if (y + ROW_H > top + h) this.body.scrollTop = y + ROW_H - h;
  };

  A.FeatureList = FeatureList;
})(window.Atlas);

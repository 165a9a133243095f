/* Applies the saved colour scheme before first paint; without a saved choice CSS follows the system. */
(function () {
  'use strict';
  try {
    var saved = window.localStorage.getItem('atlas-theme');
    if (saved === 'light' || saved === 'dark') {
      document.documentElement.setAttribute('data-theme', saved);
    }
  } catch (e) { /* storage unavailable (privacy mode): follow the system */ }
})();

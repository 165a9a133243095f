/* SAE Atlas live reload, injected only by `sae-atlas serve`: reloads the page after a re-render.
   Polls with a <script> (the site's CSP forbids fetch); the server answers AtlasLive.version(N). */
(function () {
  'use strict';
  var seen = null;
  window.AtlasLive = {
    version: function (v) {
      if (seen === null) seen = v;
      else if (v !== seen) window.location.reload();
    }
  };
  function poll() {
    var s = document.createElement('script');
    s.src = '/__atlas/version.js?t=' + Date.now();
    s.onload = s.onerror = function () { s.remove(); };
    document.head.appendChild(s);
  }
  poll();
  window.setInterval(poll, 1000);
})();

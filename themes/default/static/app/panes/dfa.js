/* Direct feature attribution (SAEs on attn.hook_z): a token layer shading each top example's tokens by
   how much each source token adds to the feature's pre-activation at the peak through attention
   (orange adds, blue subtracts); the source token contributing most is marked. From the record's `dfa`. */
(function (A) {
  'use strict';

  A.tokenLayer({ name: 'dfa', label: 'Attribution (DFA)', order: 10, markPeak: true, values: A.exampleValues('dfa') });
})(window.Atlas);

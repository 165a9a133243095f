/* Loss effects: a token layer shading each top example's tokens by loss_ablated - loss_spliced, the change
   in the loss of predicting the next token when the feature is ablated from the spliced reconstruction.
   As in sae_vis, blue (positive) marks a next token the feature helped predict (ablating it raises the
   loss), red (negative) one it made harder to predict. From the record's `loss`. */
(function (A) {
  'use strict';

  A.tokenLayer({
    name: 'loss_effects', label: 'Loss effect', order: 20,
    classes: ['tok-helps', 'tok-hurts'],
    values: A.exampleValues('loss'),
    describe: function (v) {
      return 'loss effect ' + (v > 0 ? '+' : '') + A.fmt(v) + (v > 0 ? ' (helps predict the next token)' : v < 0 ? ' (hurts predicting the next token)' : '');
    }
  });
})(window.Atlas);

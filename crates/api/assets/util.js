// infermesh dashboard: the helpers every card's script uses (loaded before them), so each
// script keeps to its own card without a copy of these.
(function () {
  "use strict";

  function esc(v) {
    return String(v === null || v === undefined ? "" : v)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  window.infermesh = Object.freeze({
    $: function (id) {
      return document.getElementById(id);
    },
    esc: esc,
    NODE_STATES: Object.freeze(["client", "standby", "loading", "serving"]),
  });
})();

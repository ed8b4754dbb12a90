// The dashboard's actions: test a backend, wake a machine, assign, unassign or migrate a model on
// this node. Each opens a confirm that says what changes before anything is signed. The page never
// holds a key: actions exist only when the page was served by `infermesh console` (which puts a
// per-run token in a <meta> tag and signs on the operator's machine); otherwise the card says how
// to get them.
(function () {
  "use strict";
  var im = window.infermesh;
  var $ = im.$, esc = im.esc;
  var meta = document.querySelector('meta[name="infermesh-console"]');
  var token = meta ? meta.getAttribute("content") : null;
  var status = null;
  var pending = null;
  /** The actions whose buttons are on the page now. */
  var offered = [];

  function plural(n, what) {
    return n + " " + what + (n === 1 ? "" : "s");
  }

  /** Serving replicas of `model` in this node's view: itself and its peers. */
  function replicas(s, model) {
    var n = (s.models || []).indexOf(model) >= 0 && s.node_state === "serving" ? 1 : 0;
    (s.peers || []).forEach(function (p) {
      if (p.state === "serving" && (p.models || []).indexOf(model) >= 0) n += 1;
    });
    return n;
  }

  /** Every action this node offers now, with its blast radius. */
  function actions(s) {
    var out = [];
    var name = s.name || "this node";
    var inFlight = s.in_flight || 0;
    (s.backends || []).forEach(function (b) {
      var busy = b.phase === "ready" || b.phase === "loading" || b.phase === "draining";
      if (busy) return; // the node refuses a test of a backend that serves (409)
      var others = (s.backends || []).filter(function (o) { return o.id !== b.id && o.assigned; })
        .map(function (o) { return o.assigned; });
      out.push({
        id: "test-" + b.id, label: "Test backend " + b.id,
        signed: { method: "POST", path: "/admin/v1/nodes/" + encodeURIComponent(b.id) + "/test", body: null },
        lines: [
          "Run a test of backend " + b.id + " on " + name + ": loads each model, one inference, stops it.",
          "It loads " + plural((b.models || []).length, "model") + " (" + (b.models || []).join(", ") +
            ") into memory in turn; the backend serves nothing now, so no client loses a replica. " +
            (others.length ? name + " keeps serving " + others.join(", ") + " from its other backends" : name + " serves nothing else now") +
            "; " + plural(inFlight, "request") + " in flight there are not touched."
        ]
      });
    });
    (s.wakeable || []).forEach(function (w) {
      if (w.state === "waking" || w.state === "joined") return;
      out.push({
        id: "wake-" + w.id, label: "Wake " + w.id,
        signed: { method: "POST", path: "/admin/v1/wakeable/" + encodeURIComponent(w.id) + "/wake", body: null },
        lines: [
          "Wake " + w.id + " (" + w.provider + ") through " + name + ".",
          name + " runs the wake command configured for " + w.id + "; the machine joins the mesh as " + w.id +
            " and serves " + ((w.models || []).join(", ") || "its models") +
            " once its peers admit it. Nothing that serves now is touched; while it runs, the machine costs what " +
            w.provider + " charges for it."
        ]
      });
    });
    var standby = (s.peers || []).filter(function (p) { return p.state === "standby" && p.addr; });
    (s.models || []).forEach(function (m) {
      if (s.node_state !== "serving") return;
      var n = replicas(s, m);
      var after = (s.models || []).length > 1
        ? name + " keeps serving " + (s.models || []).filter(function (x) { return x !== m; }).join(", ")
        : name + " then serves nothing and is standby";
      standby.forEach(function (p) {
        out.push({
          id: "migrate-" + m + "-" + p.node_id, label: "Migrate " + m + " to " + p.name,
          migrate: { model: m, to: p.node_id },
          lines: [
            "Migrate " + m + " from " + name + " to " + p.name + ".",
            "1. " + p.name + " loads " + m + " and must pass its peers' admission check; nothing stops before that.",
            "2. " + name + " drains: its " + plural(inFlight, "request") + " in flight finish, new ones go to other replicas; then it stops serving " +
              m + ". " + after + ".",
            m + " has " + plural(n, "serving replica") + " now and keeps " + n + " through the move."
          ]
        });
      });
      var left = n - 1 === 0
        ? "none is left: clients asking for " + m + " get an error until a node serves it again"
        : plural(n - 1, "replica") + " keep answering";
      out.push({
        id: "unassign-" + m, label: "Unassign " + m,
        signed: { method: "POST", path: "/admin/v1/replicas/" + encodeURIComponent(m) + "/drain", body: null },
        lines: [
          "Unassign " + m + " from " + name + ": it drains and stops its replica.",
          name + " takes no new " + m + " requests; its " + plural(inFlight, "request") +
            " in flight finish (it waits at most 120 s), then it stops the model.",
          m + " goes from " + plural(n, "serving replica") + " to " + (n - 1) + ": " + left + "."
        ]
      });
    });
    if (s.node_state === "standby") {
      var offered = {};
      (s.peers || []).forEach(function (p) {
        (p.models || []).forEach(function (m) { offered[m] = true; });
      });
      Object.keys(offered).sort().forEach(function (m) {
        var n = replicas(s, m);
        out.push({
          id: "assign-" + m, label: "Assign " + m + " here",
          signed: { method: "POST", path: "/admin/v1/replicas", body: { model: m } },
          lines: [
            "Assign " + m + " to " + name + ": it starts a replica here.",
            name + " loads " + m + " and must pass its peers' admission check before clients reach it; nothing that serves now stops. " +
              m + " goes from " + plural(n, "serving replica") + " to " + (n + 1) + "."
          ]
        });
      });
    }
    return out;
  }

  function render() {
    var el = $("actions");
    if (!el) return;
    if (!token) {
      el.innerHTML = '<p class="muted" id="actions-readonly">Read-only here: this page holds no key. On a machine with the operator key run <code>infermesh console --url ' +
        esc(location.origin) + "</code> and open the address it prints; its actions are signed there.</p>";
      return;
    }
    if (!status) return;
    var list = actions(status);
    // Rebuilt only when the offer changes: a button being clicked must not be replaced under
    // the pointer by the next status.
    var ids = list.map(function (a) { return a.id; }).join(" ");
    if (el.dataset.rendered === "1" && el.dataset.actions === ids) return;
    offered = list;
    el.dataset.rendered = "1";
    el.innerHTML = list.length
      ? list.map(function (a) {
        return '<button type="button" class="action" data-action="' + esc(a.id) + '">' + esc(a.label) + "</button>";
      }).join(" ")
      : '<p class="muted">Nothing to do on this node now.</p>';
    el.dataset.actions = ids;
  }

  function open(id) {
    var byId = function (x) { return x.id === id; };
    // The words follow the latest status; a button the operator saw stays usable even if that
    // status, a moment newer than the page, no longer offers it (the node then says why not).
    var a = actions(status || {}).filter(byId)[0] || offered.filter(byId)[0];
    if (!a) return;
    pending = a;
    $("confirm-lines").innerHTML = a.lines.map(function (l) { return "<p>" + esc(l) + "</p>"; }).join("");
    $("confirm").dataset.action = a.id;
    $("confirm").showModal();
  }

  function send() {
    var a = pending;
    pending = null;
    $("confirm").close();
    if (!a) return;
    var out = $("action-result");
    out.textContent = a.label + ": signing and sending…";
    // A migration is several signed calls on two nodes, in order: the console runs them.
    var url = a.migrate ? "/console/v1/migrate" : "/console/v1/sign";
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-infermesh-console": token },
      body: JSON.stringify(a.migrate || a.signed)
    }).then(function (r) {
      return r.text().then(function (t) {
        var v = null;
        try { v = JSON.parse(t); } catch (e) { /* not JSON: shown as text */ }
        var msg = v && v.error ? v.error.message || JSON.stringify(v.error) : null;
        out.dataset.status = String(r.status);
        var detail = "";
        if (v && v.took_ms !== undefined) detail = ", stopped serving after " + (v.took_ms / 1000).toFixed(1) + " s";
        if (v && v.secs !== undefined) {
          detail = ", moved from " + v.from + " to " + v.to + " in " + v.secs.toFixed(1) + " s (" +
            plural(v.finished, "request") + " finished, " + v.cut_off + " cut off)";
        }
        out.textContent = r.ok
          ? a.label + ": done (" + r.status + ")" + detail
          : a.label + ": refused (" + r.status + "): " + (msg || t);
      });
    }).catch(function (e) {
      out.textContent = a.label + ": not sent: " + e;
    });
  }

  document.addEventListener("infermesh:status", function (ev) {
    status = ev.detail;
    // A confirm that is open keeps its words: the operator is reading them.
    if (!pending) render();
  });
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button[data-action]");
    if (b) open(b.getAttribute("data-action"));
  });
  $("confirm-yes").addEventListener("click", send);
  $("confirm-no").addEventListener("click", function () {
    pending = null;
    $("confirm").close();
    $("action-result").textContent = "cancelled: nothing was sent";
    render();
  });
  render();
})();

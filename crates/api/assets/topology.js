// infermesh dashboard, the topology drawing: the mesh as layers (routers, models, the nodes that
// serve them, idle capacity), not a star around this node. It follows the `infermesh:status`
// event that dashboard.js sends and touches only the topology SVG.
(function () {
  "use strict";

  var NODE_STATES = window.infermesh.NODE_STATES;
  var $ = window.infermesh.$;
  var esc = window.infermesh.esc;

  function fillClass(word) {
    return NODE_STATES.indexOf(word) >= 0 ? "fill-" + word : "fill-unknown";
  }

  /**
   * The mesh as layers, not a star around this node: clients (they route) on the left, the
   * models in the middle, the nodes that serve or load each model on the right with an edge per
   * replica, a split's host-to-worker edges dashed, idle (standby) nodes at the bottom right.
   * Every node is a `g[data-node-name][data-state]`, every edge a `line[data-edge]`.
   */
  function drawGraph(s, peers) {
    var W = 640, H = 300, MAX = 9;
    var self = { node_id: s.node_id, name: s.name, state: s.node_state, models: s.models || [],
      split: s.split, self: true };
    var all = [self].concat(peers.map(function (p) {
      return { node_id: p.node_id, name: p.name, state: p.state, models: p.models || [], split: p.split, self: false };
    }));
    var byId = {};
    all.forEach(function (n) { byId[n.node_id] = n; });
    var routers = all.filter(function (n) { return n.state === "client"; });
    var models = [];
    all.forEach(function (n) {
      n.models.forEach(function (m) { if (models.indexOf(m) < 0) models.push(m); });
    });
    models.sort();
    var servers = all.filter(function (n) { return n.state !== "client" && n.models.length; });
    var workers = {};
    all.forEach(function (n) {
      if (n.split && n.split.role === "host") {
        (n.split.shares || []).slice(1).forEach(function (sh) { workers[sh.node_id] = n.node_id; });
      }
    });
    var idle = all.filter(function (n) {
      return n.state !== "client" && !n.models.length;
    });
    var right = servers.concat(idle);
    function place(list, x) {
      var shown = list.slice(0, MAX), pos = {};
      var step = (H - 40) / Math.max(shown.length, 1);
      shown.forEach(function (n, i) { pos[n.node_id || n] = [x, 24 + step * (i + 0.5)]; });
      return { pos: pos, more: list.length - shown.length };
    }
    var L = place(routers, 80), M = place(models, 320), R = place(right, 540);
    var out = [];
    function line(a, b, kind) {
      if (!a || !b) return;
      out.push('<line data-edge="' + kind + '" class="edge-' + kind + '" x1="' + a[0].toFixed(1) + '" y1="' + a[1].toFixed(1) +
        '" x2="' + b[0].toFixed(1) + '" y2="' + b[1].toFixed(1) + '"></line>');
    }
    routers.forEach(function (r) { models.forEach(function (m) { line(L.pos[r.node_id], M.pos[m], "route"); }); });
    servers.forEach(function (n) { n.models.forEach(function (m) { line(M.pos[m], R.pos[n.node_id], "replica"); }); });
    Object.keys(workers).forEach(function (w) { line(R.pos[workers[w]] || M.pos[workers[w]], R.pos[w], "split"); });
    function node(p, n) {
      if (!p) return;
      var word = n.state || "unknown";
      out.push(
        '<g data-node-name="' + esc(n.name) + '" data-state="' + esc(word) + '"><title>' + esc(n.name + ": " + word + (n.self ? " (this node)" : "")) + "</title>" +
        '<circle cx="' + p[0].toFixed(1) + '" cy="' + p[1].toFixed(1) + '" r="' + (n.self ? 11 : 8) + '" class="' + fillClass(word) + '"></circle>' +
        '<text x="' + p[0].toFixed(1) + '" y="' + (p[1] + 22).toFixed(1) + '">' + esc(n.name) + (n.self ? " *" : "") + "</text></g>"
      );
    }
    models.forEach(function (m) {
      var p = M.pos[m];
      if (!p) return;
      out.push('<g data-model="' + esc(m) + '"><rect x="' + (p[0] - 70) + '" y="' + (p[1] - 11) + '" width="140" height="22" rx="4" class="model-box"></rect>' +
        '<text x="' + p[0] + '" y="' + (p[1] + 4) + '">' + esc(m.length > 20 ? m.slice(0, 19) + "…" : m) + "</text></g>");
    });
    routers.forEach(function (n) { node(L.pos[n.node_id], n); });
    right.forEach(function (n) { node(R.pos[n.node_id], n); });
    function more(k, x) {
      if (k > 0) out.push('<text class="more" x="' + x + '" y="' + (H - 6) + '">+' + k + " more</text>");
    }
    more(L.more, 80); more(M.more, 320); more(R.more, 540);
    out.push('<text class="layer" x="80" y="12">routers</text><text class="layer" x="320" y="12">models</text>' +
      '<text class="layer" x="540" y="12">replicas · idle</text>');
    $("topology-svg").innerHTML = out.join("");
  }

  document.addEventListener("infermesh:status", function (e) {
    var s = e.detail;
    var peers = (s.peers || []).slice().sort(function (a, b) {
      return String(a.name).localeCompare(String(b.name));
    });
    drawGraph(s, peers);
  });
})();

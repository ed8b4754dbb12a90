// infermesh dashboard, "Live": each node's CPU and memory use, tokens/s and latency over the
// last minutes, with small charts. CPU and memory come from every status (each node gossips
// what it uses); tokens/s and latency from the whole mesh's request records, by the node that
// served each one. It follows the `infermesh:status` and `infermesh:requests` events that
// dashboard.js sends and touches nothing else on the page.
(function () {
  "use strict";

  var KEEP = 120; // CPU samples per node: two minutes at one status a second
  var BUCKET_MS = 10000; // tokens/s buckets: 10 s each, the last 5 minutes
  var BUCKETS = 30;
  var cpu = {}; // node id -> [percent, ...], oldest first
  var records = [];
  var last = null;

  var $ = window.infermesh.$;
  var esc = window.infermesh.esc;

  function mem(bytes) {
    var mib = bytes / 1048576;
    return mib >= 1024 ? (mib / 1024).toFixed(1) + " GiB" : mib.toFixed(0) + " MiB";
  }

  function nodes(s) {
    var list = [{ node_id: s.node_id, name: s.name, usage: s.usage, self: true }];
    (s.peers || []).forEach(function (p) {
      list.push({ node_id: p.node_id, name: p.name, usage: p.usage, self: false });
    });
    return list;
  }

  function sample(s) {
    var seen = {};
    nodes(s).forEach(function (n) {
      seen[n.node_id] = true;
      if (!n.usage) return;
      var ring = cpu[n.node_id] || (cpu[n.node_id] = []);
      ring.push(n.usage.cpu_pct);
      if (ring.length > KEEP) ring.shift();
    });
    Object.keys(cpu).forEach(function (id) { if (!seen[id]) delete cpu[id]; });
  }

  /** What `id` served in the last 5 minutes: tokens/s per bucket and latency percentiles. */
  function served(id, now) {
    var start = now - BUCKET_MS * BUCKETS;
    var tokens = [];
    for (var i = 0; i < BUCKETS; i++) tokens.push(0);
    var lat = [];
    records.forEach(function (r) {
      if (r.admission_check || r.to !== id || r.status < 200 || r.status >= 300) return;
      var end = r.at_ms + r.latency_ms;
      if (end <= start || end > now) return;
      tokens[Math.min(BUCKETS - 1, Math.floor((end - start - 1) / BUCKET_MS))] += r.tokens || 0;
      lat.push(r.latency_ms);
    });
    lat.sort(function (a, b) { return a - b; });
    function pct(p) {
      return lat.length ? lat[Math.max(1, Math.ceil(p * lat.length / 100)) - 1] : null;
    }
    return {
      tokS: tokens.map(function (t) { return t / (BUCKET_MS / 1000); }),
      p50: pct(50),
      p95: pct(95),
      count: lat.length
    };
  }

  /** A small line chart of `values` scaled to `max` (or their own maximum), as inline SVG. */
  function spark(values, max, kind) {
    var w = 120, h = 24;
    var top = max || Math.max.apply(null, values.concat([0]));
    if (!values.length) return '<svg class="spark" width="' + w + '" height="' + h + '" aria-hidden="true"></svg>';
    var step = values.length > 1 ? w / (values.length - 1) : 0;
    var pts = values.map(function (v, i) {
      var y = top > 0 ? h - 1 - (Math.min(v, top) / top) * (h - 2) : h - 1;
      return (i * step).toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    return '<svg class="spark spark-' + kind + '" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + " " + h +
      '" role="img" aria-label="' + esc(kind) + ' over time"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="' +
      pts + '"/></svg>';
  }

  function render() {
    var body = $("live");
    if (!body || !last) return;
    var now = Date.now();
    var rows = nodes(last).map(function (n) {
      var u = n.usage;
      var s = served(n.node_id, now);
      var hist = cpu[n.node_id] || [];
      var cpuText = u ? Math.round(u.cpu_pct) + "% of " + u.cores + " cores" : "not reported";
      var memText = u ? mem(u.rss_bytes) + " · machine " + mem(u.mem_used_bytes) + " of " + mem(u.mem_total_bytes) : "—";
      var tok = s.count ? s.tokS[BUCKETS - 1].toFixed(1) : "—";
      return '<tr data-node-id="' + esc(n.node_id) + '" data-node-name="' + esc(n.name) + '"><td>' + esc(n.name) +
        (n.self ? ' <span class="muted">this node</span>' : "") +
        '</td><td class="live-cpu">' + esc(cpuText) + "</td><td>" + spark(hist, 100, "cpu") +
        '</td><td class="live-mem">' + esc(memText) +
        '</td><td class="live-toks">' + esc(tok) + "</td><td>" + spark(s.tokS, 0, "tokens") +
        '</td><td class="live-p50">' + (s.p50 === null ? "—" : esc(s.p50) + " ms") +
        '</td><td class="live-p95">' + (s.p95 === null ? "—" : esc(s.p95) + " ms") +
        '</td><td class="live-count">' + esc(s.count) + "</td></tr>";
    });
    body.innerHTML = rows.join("");
  }

  document.addEventListener("infermesh:status", function (e) {
    last = e.detail;
    sample(last);
    render();
  });
  document.addEventListener("infermesh:requests", function (e) {
    records = (e.detail && e.detail.records) || [];
    render();
  });
})();

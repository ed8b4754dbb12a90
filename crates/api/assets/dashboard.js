// infermesh dashboard: renders what the node's API says, never invents state text.
// Live through /api/events (SSE: `status`, `request`, `log`); polls /api/status every 2 s
// whenever the stream is not delivering, so the page works without it. The whole mesh's requests
// come from /api/mesh/requests every 2 s.
(function () {
  "use strict";

  var POLL_MS = 2000;
  /** A status event at least this recent means the stream is live (the node sends one >= 5 s). */
  var SSE_FRESH_MS = 7000;
  var MAX_REQUESTS = 50;
  var MAX_LOGS = 100;
  var NODE_STATES = window.infermesh.NODE_STATES;
  var $ = window.infermesh.$;
  var esc = window.infermesh.esc;

  var model = {
    status: null,
    statusAt: 0,
    nodes: null,
    requests: [],
    // The Requests card's scope: "mesh" (every member's requests, merged by this node from
    // /api/mesh/requests, each once) or "node" (this node's own ring).
    scope: "mesh",
    mesh: null,
    meshError: "",
    meshPulling: false,
    logs: [],
    sseOpen: false,
    sseStatusAt: 0,
    logsAvailable: true,
    // Admin reads are open to the node's own machine only; from elsewhere they answer 401.
    adminLocked: false,
    failures: 0,
    // When the node stopped answering (0 while it answers): the page then greys out, says since
    // when, and its countdowns stop, because what it shows is only true as of that moment.
    lostAt: 0,
    // The node's clock minus this page's (ms), learnt from each status: countdowns to the same
    // round then agree, whichever fetch they came from.
    skewMs: 0,
  };

  /** A CSS-safe state word; anything unexpected renders as "unknown". */
  function stateClass(word) {
    return /^[a-z_]+$/.test(String(word || "")) ? "state-" + word : "state-unknown";
  }

  // Labels come from the server (infermesh_state::labels) so the page never shows a wire word
  // such as `inactive_waiting` where the deck shows "Inactive — waiting for round".
  var LABELS = {};
  try {
    LABELS = JSON.parse(document.getElementById("labels").textContent) || {};
  } catch (e) {
    LABELS = {};
  }

  function words(w) {
    var s = String(w === null || w === undefined ? "unknown" : w);
    return Object.prototype.hasOwnProperty.call(LABELS, s) ? LABELS[s] : s.replace(/_/g, " ");
  }

  function badge(word, title, extraClass) {
    return (
      '<span class="' + (extraClass || "badge") + " " + stateClass(word) + '" data-state="' +
      esc(word || "unknown") + '"' + (title ? ' title="' + esc(title) + '"' : "") + ">" +
      esc(words(word)) + "</span>"
    );
  }

  // Same rules as infermesh_state::format_duration.
  function formatDuration(secs) {
    if (secs < 0) return "unknown";
    if (secs < 60) return secs + "s";
    var mins = Math.ceil(secs / 60);
    if (mins < 60) return mins + "m";
    if (mins < 24 * 60) {
      var h = Math.floor(mins / 60), m = mins % 60;
      return m === 0 ? h + "h" : h + "h " + m + "m";
    }
    var hours = Math.ceil(mins / 60);
    var d = Math.floor(hours / 24), hh = hours % 24;
    return hh === 0 ? d + "d" : d + "d " + hh + "h";
  }

  function gb(v) {
    if (typeof v !== "number") return "—";
    return (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + " GB";
  }

  function clock(ms) {
    if (!ms) return "—";
    var d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false });
  }

  /**
   * Countdown element. With the round's start time from the node (`next_round_at_ms`) it counts
   * down to that instant on one page-wide estimate of the node's clock, so every countdown to the
   * same round reads the same whichever fetch it came from; otherwise from `at` (page clock).
   */
  function countdown(id, timing, at) {
    var secs = timing ? timing.seconds_until_next_round : -1;
    var inRound = timing && timing.in_round;
    var target = timing && secs >= 0 && typeof timing.next_round_at_ms === "number" ? timing.next_round_at_ms : 0;
    if (target) secs = secondsTo(target, Date.now());
    return (
      '<span class="countdown" ' + (id ? 'id="' + id + '" ' : "") + 'data-seconds="' + esc(secs) +
      '" data-at="' + at + '" data-target="' + target + '" data-in-round="' + (inRound ? "1" : "0") + '">' +
      esc(countdownText(secs, inRound, 0)) + "</span>"
    );
  }

  /** Whole seconds (rounded up, as the node counts) from page time `now` to node time `target`. */
  function secondsTo(target, now) {
    return Math.max(1, Math.ceil((target - (now + model.skewMs)) / 1000));
  }

  /** The node's clock minus the page's, from a status. `seconds_until_next_round` is rounded up,
   *  so the node's now lay in the second starting at `next_round_at_ms - seconds * 1000`: take
   *  its middle. */
  function learnSkew(timing) {
    if (!timing || typeof timing.next_round_at_ms !== "number" || !(timing.seconds_until_next_round > 0)) return;
    var nodeNow = timing.next_round_at_ms - timing.seconds_until_next_round * 1000 + 500;
    model.skewMs = nodeNow - Date.now();
  }

  function countdownText(secs, inRound, elapsedS) {
    if (typeof secs !== "number" || secs < 0) return "schedule syncing";
    var left = Math.max(0, secs - elapsedS);
    var text = "in " + formatDuration(left);
    return inRound ? "round running · next " + text : text;
  }

  function tickCountdowns() {
    if (document.body.hasAttribute("data-lost")) return;
    var now = Date.now();
    var els = document.querySelectorAll(".countdown[data-seconds]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      var inRound = el.getAttribute("data-in-round") === "1";
      var target = Number(el.getAttribute("data-target"));
      if (target) {
        el.textContent = countdownText(secondsTo(target, now), inRound, 0);
        continue;
      }
      var secs = Number(el.getAttribute("data-seconds"));
      var at = Number(el.getAttribute("data-at")) || now;
      var elapsed = Math.floor((now - at) / 1000);
      el.textContent = countdownText(secs, inRound, elapsed);
    }
  }

  // ---- this node ----------------------------------------------------------------------------

  function renderSidebar(s, at) {
    var models = (s.models || []).join(", ") || "—";
    var html =
      '<h3 id="self-name">' + esc(s.name) + "</h3>" +
      '<div class="mono muted" id="self-id">' + esc(s.node_id) + "</div>" +
      "<p>" + badge(s.node_state, s.message, "pill").replace('class="pill', 'id="state-pill" class="pill') + "</p>" +
      '<p class="message" id="state-message">' + esc(s.message) + "</p>" +
      (s.peer_message && s.peer_message !== s.message
        ? '<p class="message bad" id="peer-message">' + esc(s.peer_message) + "</p>"
        : "") +
      "<dl>" +
      "<dt>participation</dt><dd>" + badge(s.participation).replace('class="badge', 'id="participation" class="badge') + "</dd>" +
      "<dt>next round</dt><dd>" + countdown("self-countdown", s.timing, at) + "</dd>" +
      "<dt>epoch</dt><dd>" + esc(s.epoch === null || s.epoch === undefined ? "—" : s.epoch) + "</dd>" +
      '<dt>last round check</dt><dd id="self-validation">' + validation(s.validation) + "</dd>" +
      "<dt>models</dt><dd>" + esc(models) + "</dd>" +
      "<dt>memory</dt><dd>vram " + esc(gb(s.vram_gb)) + " · ram " + esc(gb(s.ram_gb)) + " (the machine's)</dd>" +
      '<dt>uses</dt><dd id="self-usage">' + usage(s.usage) + "</dd>" +
      loading(s.backends) +
      "<dt>in flight</dt><dd>" + esc(s.in_flight) + "</dd>" +
      "<dt>api</dt><dd class=\"mono\">" + esc(s.api_addr) + "</dd>" +
      "<dt>version</dt><dd>" + esc(s.version) + "</dd>" +
      "</dl>";
    $("sidebar").innerHTML = html;
    $("node-title").textContent = s.name || "";
    document.title = "infermesh · " + (s.name || "") + " · " + (s.node_state || "");
  }

  /** "embedded: 45% read, about 12 s left" for each backend reading its model in. */
  function loading(backends) {
    var parts = (backends || []).filter(function (b) { return typeof b.load_pct === "number"; }).map(function (b) {
      return esc(b.id) + ": " + esc(b.load_pct) + "% read" +
        (typeof b.load_eta_s === "number" ? ", about " + esc(b.load_eta_s) + " s left" : "");
    });
    return parts.length ? '<dt>loading</dt><dd id="self-loading">' + parts.join("<br>") + "</dd>" : "";
  }

  /** What the node uses now: "cpu 37% of 2 cores · 232 MiB · machine 6.0 of 24.0 GiB". */
  function usage(u) {
    if (!u) return '<span class="muted">not measured yet</span>';
    var mib = function (b) { return (b / 1048576).toFixed(0) + " MiB"; };
    var gib = function (b) { return (b / 1073741824).toFixed(1); };
    var gpu = u.vram_total_bytes > 0
      ? " · gpu " + esc(Math.round(u.gpu_pct)) + "%, vram " + esc(gib(u.vram_used_bytes)) + " of " + esc(gib(u.vram_total_bytes)) + " GiB"
      : "";
    return "cpu " + esc(Math.round(u.cpu_pct)) + "% of " + esc(u.cores) + " cores · " + esc(mib(u.rss_bytes)) +
      " · machine " + esc(gib(u.mem_used_bytes)) + " of " + esc(gib(u.mem_total_bytes)) + " GiB used" + gpu;
  }

  /** The node's own result of its latest round: "passed · epoch 12 · infer 95 ms at 14:05:09". */
  function validation(v) {
    if (!v) return '<span class="muted">none yet (no round since it started)</span>';
    var head = v.passed ? '<span class="ok">passed</span>' : '<span class="bad">failed</span>';
    var infer = (v.backends || []).map(function (b) {
      return b.error ? esc(b.backend_id) + ": " + esc(b.error) : "infer " + esc(b.infer_ms) + " ms";
    });
    return head + " · epoch " + esc(v.epoch) + (infer.length ? " · " + infer.join(", ") : "") +
      (v.at_ms ? " at " + esc(clock(v.at_ms)) : "");
  }

  // ---- topology -----------------------------------------------------------------------------

  function nodeItem(n, self) {
    var models = (n.models || []).join(", ") || "no models";
    var meta = [models, n.addr || n.api_addr || "", "load " + (n.load !== undefined ? n.load : n.in_flight)];
    var split = self ? n.split && n.split.detail : n.split_role;
    if (split) meta.push(split);
    if (!self && typeof n.last_seen_ms === "number") meta.push("seen " + n.last_seen_ms + " ms ago");
    var title = self ? n.message : words(n.participation);
    return (
      '<li class="node' + (self ? " self" : "") + '" data-node-id="' + esc(n.node_id) + '" data-node-name="' +
      esc(n.name) + '"><span class="name">' + esc(n.name) + "</span>" +
      badge(self ? n.node_state : n.state, title) +
      (self ? ' <span class="muted">this node</span>' : "") +
      '<div class="meta">' + esc(meta.join(" · ")) + "</div></li>"
    );
  }

  function renderTopology(s) {
    var peers = (s.peers || []).slice().sort(function (a, b) {
      return String(a.name).localeCompare(String(b.name));
    });
    var items = [nodeItem(s, true)];
    for (var i = 0; i < peers.length; i++) items.push(nodeItem(peers[i], false));
    $("topology").innerHTML = items.join("");
    var counts = {};
    for (var j = 0; j < peers.length; j++) counts[peers[j].state] = (counts[peers[j].state] || 0) + 1;
    var parts = [peers.length + (peers.length === 1 ? " peer" : " peers")];
    for (var k = 0; k < NODE_STATES.length; k++) {
      if (counts[NODE_STATES[k]]) parts.push(counts[NODE_STATES[k]] + " " + NODE_STATES[k]);
    }
    $("peer-count").textContent = parts.join(" · ");
    // The drawing above the list (topology.js) follows the same status event.
  }


  // ---- wakeable -----------------------------------------------------------------------------

  var WAKEABLE_EMPTY =
    "No wakeable capacity configured. Declare [[wakeable]] entries in the node config to list suspended machines here; they are never routed to.";

  function renderWakeable(list) {
    if (!list || list.length === 0) {
      $("wakeable").innerHTML = '<p class="muted" id="wakeable-empty">' + esc(WAKEABLE_EMPTY) + "</p>";
      return;
    }
    var rows = list.map(function (w) {
      return (
        '<tr data-wakeable-id="' + esc(w.id) + '"><td class="mono">' + esc(w.id) + "</td><td>" + esc(w.provider) +
        "</td><td>" + esc((w.models || []).join(", ") || "—") + "</td><td>" + esc(gb(w.vram_gb)) + "</td><td>" +
        badge(w.state, w.reason) + (w.reason ? '<div class="reason">' + esc(w.reason) + "</div>" : "") +
        '</td><td class="mono">' + esc(w.node_name || "") + "</td></tr>"
      );
    });
    $("wakeable").innerHTML =
      '<table class="grid"><thead><tr><th>id</th><th>provider</th><th>models</th><th>vram</th><th>state</th><th>joins as</th></tr></thead><tbody>' +
      rows.join("") + "</tbody></table>";
  }

  // ---- onboarding ---------------------------------------------------------------------------

  function lastTest(t) {
    if (!t) return '<span class="muted">no test yet</span>';
    var head = t.ok ? '<span class="ok">passed</span>' : '<span class="bad">failed</span>';
    var when = t.started_at_ms ? " at " + esc(clock(t.started_at_ms)) : "";
    var models = (t.models || []).map(function (m) {
      return m.error
        ? esc(m.model) + ': <span class="bad">' + esc(m.error) + "</span>"
        : esc(m.model) + ": load " + esc(m.load_ms) + " ms, health " + esc(m.health_ms) + " ms, infer " + esc(m.infer_ms) + " ms";
    });
    return head + when + (t.failing_model ? " (failing model " + esc(t.failing_model) + ")" : "") +
      (models.length ? '<div class="meta muted">' + models.join("<br>") + "</div>" : "");
  }

  function renderOnboarding(list, at) {
    var el = $("onboarding");
    if (!Array.isArray(list)) return;
    if (list.length === 0) {
      el.innerHTML = '<p class="muted">No backends on this node.</p>';
      return;
    }
    el.innerHTML = list.map(function (e) {
      var n = e.node || {};
      var o = e.onboarding;
      var models = (n.models || []).map(function (m) { return typeof m === "string" ? m : m.name; }).join(", ");
      var html = '<div class="backend" data-backend-id="' + esc(n.id) + '"><div class="row"><span class="id">' + esc(n.id) +
        '</span><span class="muted">' + esc(n.driver) + "</span><span>" + esc(models) + "</span>";
      if (o) {
        html += badge(o.backend_state, o.message) + badge(o.participation) +
          '<span class="muted">next round</span> ' + countdown("", o.timing, at);
      }
      html += "</div>";
      if (o) {
        html += '<p class="message">' + esc(o.message) + "</p>" +
          (o.failing_model ? '<div class="bad">failing model: ' + esc(o.failing_model) + "</div>" : "") +
          '<div>last test: ' + lastTest(o.last_test) + "</div>";
      }
      if (n.detail) html += '<div class="reason">' + esc(n.detail) + "</div>";
      return html + "</div>";
    }).join("");
  }

  // ---- requests and logs --------------------------------------------------------------------

  function nodeName(id) {
    var known = ((model.mesh && model.mesh.nodes) || []).concat((model.status && model.status.peers) || []);
    for (var i = 0; i < known.length; i++) if (known[i].node_id === id && known[i].name) return known[i].name;
    if (model.status && model.status.node_id === id) return model.status.name || id;
    return id || "—";
  }

  function scopeNote() {
    if (model.scope === "node") return "this node's own requests (and those peers routed to it)";
    if (!model.mesh) return model.meshError ? "whole mesh unavailable (" + model.meshError + "); this node's own requests" : "whole mesh: loading";
    var nodes = model.mesh.nodes || [];
    var unread = nodes.filter(function (n) { return n.error; });
    var text = "whole mesh: " + nodes.length + " node" + (nodes.length === 1 ? "" : "s") + ", each request once";
    if (unread.length) {
      text += "; not read: " + unread.map(function (n) { return (n.name || n.node_id) + " (" + n.error + ")"; }).join(", ");
    }
    if (model.meshError) text += "; last pull failed: " + model.meshError;
    return text;
  }

  function renderRequests() {
    var mesh = model.scope === "mesh" && model.mesh;
    var list = mesh ? model.mesh.requests || [] : model.requests;
    $("requests-card").dataset.scope = mesh ? "mesh" : "node";
    $("scope-mesh").setAttribute("aria-pressed", String(model.scope === "mesh"));
    $("scope-node").setAttribute("aria-pressed", String(model.scope === "node"));
    $("requests-scope").textContent = scopeNote();
    var rows = list.slice().reverse().map(function (r) {
      var okClass = r.status >= 200 && r.status < 300 ? "ok" : "bad";
      var key = (r.node || "") + ":" + r.id;
      return (
        '<tr data-request-id="' + esc(key) + '"><td>' + esc(clock(r.at_ms)) + "</td><td>" + esc(r.model) + "</td><td>" +
        esc(r.endpoint) + (r.stream ? " (stream)" : "") + (r.admission_check ? " (admission check)" : "") + "</td><td>" + esc(nodeName(r.from)) +
        "</td><td>" + esc(r.to_name || r.to || "—") + '</td><td class="' + okClass + '">' +
        esc(r.status) + "</td><td>" + esc(r.latency_ms) + " ms</td><td>" + (r.ttft_ms === null || r.ttft_ms === undefined ? "—" : esc(r.ttft_ms) + " ms") +
        "</td><td>" + esc(r.tokens) + "</td><td>" + esc(r.attempts) + '</td><td class="bad">' + esc(r.error || "") + "</td></tr>"
      );
    });
    $("requests").innerHTML = rows.length ? rows.join("") : '<tr><td colspan="11" class="muted">No requests yet.</td></tr>';
    // The "Live" card (live.js) charts what each node served: the mesh's records when pulled.
    var records = (model.mesh && model.mesh.requests) || model.requests;
    document.dispatchEvent(new CustomEvent("infermesh:requests", { detail: { records: records } }));
  }

  function pullMesh() {
    // One pull at a time: the node waits up to 1.5 s per member, near the 2 s poll.
    if (model.meshPulling) return;
    model.meshPulling = true;
    getJson("/api/mesh/requests?limit=" + MAX_REQUESTS).then(function (b) {
      model.mesh = b;
      model.meshError = "";
    }, function (e) {
      // The mesh view is an extra: its failure is said on the card, never a lost node.
      model.meshError = e.status ? "HTTP " + e.status : "no answer";
    }).then(function () {
      model.meshPulling = false;
      renderRequests();
    });
  }

  function setScope(scope) {
    model.scope = scope;
    renderRequests();
    if (scope === "mesh") pullMesh();
  }

  function addRequest(r) {
    if (!r || model.requests.some(function (x) { return x.id === r.id; })) return;
    model.requests.push(r);
    model.requests.sort(function (a, b) { return a.id - b.id; });
    if (model.requests.length > MAX_REQUESTS) model.requests = model.requests.slice(-MAX_REQUESTS);
    renderRequests();
  }

  function renderLogs() {
    $("logs-card").hidden = model.logs.length === 0;
    $("logs").innerHTML = model.logs.slice().reverse().map(function (l) {
      return '<tr><td>' + esc(clock(l.at_ms)) + '</td><td class="lvl-' + esc(l.level) + '">' + esc(l.level) +
        '</td><td class="mono muted">' + esc(l.target) + "</td><td>" + esc(l.message) + "</td></tr>";
    }).join("");
  }

  function addLog(l) {
    if (!l) return;
    if (typeof l.seq === "number" && model.logs.some(function (x) { return x.seq === l.seq; })) return;
    model.logs.push(l);
    if (model.logs.length > MAX_LOGS) model.logs = model.logs.slice(-MAX_LOGS);
    renderLogs();
  }

  // ---- data flow ----------------------------------------------------------------------------

  function applyStatus(s) {
    if (!s || typeof s !== "object") return;
    model.status = s;
    model.statusAt = Date.now();
    learnSkew(s.timing);
    renderSidebar(s, model.statusAt);
    renderTopology(s);
    renderWakeable(s.wakeable);
    // The "Try it" card (try.js) follows the same status.
    document.dispatchEvent(new CustomEvent("infermesh:status", { detail: s }));
    document.body.setAttribute("data-node-state", s.node_state || "");
  }

  function setConn() {
    var el = $("conn");
    var live = sseLive();
    var word = live ? "live" : model.failures > 0 ? "down" : model.status ? "polling" : "connecting";
    el.setAttribute("data-conn", word);
    if (word === "down" && !model.lostAt) model.lostAt = Date.now();
    el.textContent = live
      ? "live (event stream)"
      : word === "down"
        ? "unreachable since " + utcClock(model.lostAt) + " UTC — showing what it said then; retrying every 2 s"
        : word === "polling"
          ? "polling every 2 s"
          : "connecting…";
    if (word === "down") document.body.setAttribute("data-lost", "1");
    else document.body.removeAttribute("data-lost");
  }

  /** `14:05:09` in UTC, as the deck says it. */
  function utcClock(ms) {
    var d = new Date(ms || Date.now());
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds());
  }

  function sseLive() {
    return model.sseOpen && Date.now() - model.sseStatusAt < SSE_FRESH_MS;
  }

  function getJson(url) {
    return fetch(url, { headers: { accept: "application/json" }, cache: "no-store" }).then(function (r) {
      if (!r.ok) {
        var e = new Error(url + ": HTTP " + r.status);
        e.status = r.status;
        throw e;
      }
      return r.json();
    });
  }

  function poll() {
    var jobs = [];
    if (!sseLive()) {
      jobs.push(getJson("/api/status").then(applyStatus));
      jobs.push(getJson("/api/requests?limit=" + MAX_REQUESTS).then(function (b) {
        (b.requests || []).forEach(addRequest);
        renderRequests();
      }));
      if (model.logsAvailable) {
        jobs.push(getJson("/api/logs?tail=" + MAX_LOGS).then(function (b) {
          (b.lines || []).forEach(addLog);
        }, function (e) {
          if (e.status === 404) model.logsAvailable = false;
        }));
      }
    }
    // Every pull, stream or not: the mesh's requests are not on this node's event stream.
    if (model.scope === "mesh") pullMesh();
    if (!model.adminLocked) {
      jobs.push(getJson("/admin/v1/nodes").then(function (list) {
        model.nodes = list;
        renderOnboarding(list, Date.now());
      }, function (e) {
        if (e.status !== 401) throw e;
        model.adminLocked = true;
        $("onboarding").innerHTML = '<p class="muted">Backend details are shown to this node\'s own machine only. ' +
          "Open this dashboard there (on 127.0.0.1), or run <code>infermesh status --url " + esc(location.origin) +
          "</code> or <code>infermesh deck</code> with your operator key.</p>";
      }));
    }
    Promise.all(jobs).then(function () {
      model.failures = 0;
      model.lostAt = 0;
    }, function () {
      model.failures += 1;
      // A failed admin read beside a live event stream is not a lost node.
      if (!model.lostAt && !sseLive()) model.lostAt = Date.now();
    }).then(setConn);
  }

  function connectEvents() {
    // `?transport=poll` skips the stream: the polling fallback, on demand (tests, proxies).
    if (typeof EventSource === "undefined" || /[?&]transport=poll\b/.test(location.search)) return;
    var es = new EventSource("/api/events");
    es.onopen = function () {
      model.sseOpen = true;
      setConn();
    };
    es.onerror = function () {
      model.sseOpen = es.readyState === EventSource.OPEN;
      setConn();
    };
    function parse(e) {
      try {
        return JSON.parse(e.data);
      } catch (err) {
        return null;
      }
    }
    es.addEventListener("status", function (e) {
      model.sseStatusAt = Date.now();
      model.failures = 0;
      model.lostAt = 0;
      applyStatus(parse(e));
      setConn();
    });
    es.addEventListener("request", function (e) {
      addRequest(parse(e));
    });
    es.addEventListener("log", function (e) {
      addLog(parse(e));
    });
  }

  function start() {
    var initial = null;
    try {
      initial = JSON.parse($("initial-status").textContent);
    } catch (err) {
      initial = null;
    }
    if (initial) applyStatus(initial);
    $("scope-mesh").addEventListener("click", function () { setScope("mesh"); });
    $("scope-node").addEventListener("click", function () { setScope("node"); });
    renderRequests();
    setConn();
    connectEvents();
    poll();
    setInterval(poll, POLL_MS);
    setInterval(function () {
      tickCountdowns();
      setConn();
    }, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// infermesh dashboard, "Try it": a chat box that streams an answer from the mesh through this
// node, and the commands to use it (OpenAI base URL, curl, adding a node). It follows the status
// dashboard.js renders (the `infermesh:status` event) and touches nothing else on the page.
(function () {
  "use strict";

  var last = null;

  var $ = window.infermesh.$;

  /** Models the mesh answers through this node: its own and those its peers are admitted for. */
  function meshModels(s) {
    var seen = {};
    (s.models || []).forEach(function (m) { seen[m] = true; });
    (s.peers || []).forEach(function (p) {
      (p.admitted_for || []).forEach(function (m) { seen[m] = true; });
    });
    return Object.keys(seen).sort();
  }

  function renderTry(s) {
    var sel = $("chat-model");
    if (!sel) return;
    var models = meshModels(s);
    var current = sel.value;
    var want = models.join("\n");
    if (sel.getAttribute("data-models") !== want) {
      sel.textContent = "";
      (models.length ? models : [""]).forEach(function (m) {
        var o = document.createElement("option");
        o.value = m;
        o.textContent = m || "no model served yet";
        sel.appendChild(o);
      });
      sel.setAttribute("data-models", want);
      if (models.indexOf(current) >= 0) sel.value = current;
    }
    // Under `infermesh console` the page's origin is the console; clients talk to the node.
    var node = document.querySelector('meta[name="infermesh-node"]');
    var base = (node ? node.getAttribute("content") : location.origin) + "/v1";
    $("base-url").textContent = base;
    $("curl-cmd").textContent = "curl -s " + base + "/chat/completions -H 'content-type: application/json' -d '" +
      JSON.stringify({ model: sel.value || "MODEL", messages: [{ role: "user", content: "Hello" }], max_tokens: 32 }) + "'";
  }

  /** Sends the chat box's message and streams the answer in as it arrives. */
  function sendChat(ev) {
    ev.preventDefault();
    var model = $("chat-model").value;
    var text = $("chat-input").value.trim();
    var out = $("chat-answer");
    var meta = $("chat-meta");
    if (!model || !text) {
      meta.textContent = !model ? "no model is served through this node yet" : "type a message first";
      return;
    }
    $("chat-send").disabled = true;
    out.textContent = "";
    meta.textContent = "waiting for the first token…";
    var t0 = Date.now();
    var first = 0;
    var tokens = 0;
    fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: model, stream: true, max_tokens: 128,
        stream_options: { include_usage: true }, messages: [{ role: "user", content: text }] }),
    }).then(function (r) {
      if (!r.ok) {
        return r.json().then(function (b) {
          throw new Error("HTTP " + r.status + ": " + ((b && b.error && b.error.message) || r.statusText));
        }, function () {
          throw new Error("HTTP " + r.status);
        });
      }
      var reader = r.body.getReader();
      var decoder = new TextDecoder();
      var buf = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buf += decoder.decode(chunk.value, { stream: true });
          var lines = buf.split("\n");
          buf = lines.pop();
          lines.forEach(function (line) {
            if (line.indexOf("data: ") !== 0) return;
            var data = line.slice(6).trim();
            if (data === "[DONE]") return;
            var ev;
            try { ev = JSON.parse(data); } catch (e) { return; }
            if (ev.usage && typeof ev.usage.completion_tokens === "number") tokens = ev.usage.completion_tokens;
            var c = ev.choices && ev.choices[0] && ev.choices[0].delta && ev.choices[0].delta.content;
            if (c) {
              if (!first) first = Date.now();
              out.textContent += c;
            }
          });
          return pump();
        });
      }
      return pump();
    }).then(function () {
      var secs = (Date.now() - t0) / 1000;
      meta.textContent = tokens + " tokens in " + secs.toFixed(1) + " s" +
        (first ? " · first token after " + (first - t0) + " ms" : "") + " · " + model;
    }, function (e) {
      meta.textContent = String(e.message || e);
      meta.className = "bad";
    }).then(function () {
      $("chat-send").disabled = false;
    });
    meta.className = "muted";
  }

  function copyText(ev) {
    var id = ev.target.getAttribute("data-copy");
    var el = id && $(id);
    if (!el) return;
    var text = el.textContent;
    var done = function () { ev.target.textContent = "copied"; setTimeout(function () { ev.target.textContent = "copy"; }, 1500); };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(el); });
    } else {
      selectText(el);
    }
  }

  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  function start() {
    $("chat-form").addEventListener("submit", sendChat);
    $("chat-model").addEventListener("change", function () {
      if (last) renderTry(last);
    });
    var copies = document.querySelectorAll("button.copy");
    for (var i = 0; i < copies.length; i++) copies[i].addEventListener("click", copyText);
    document.addEventListener("infermesh:status", function (e) {
      last = e.detail;
      renderTry(last);
    });
  }

  // Registered before dashboard.js runs its first render, so the first status is seen here too.
  start();
})();

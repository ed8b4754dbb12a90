//! The dashboard in a real headless Chromium (driven over WebDriver by chromedriver) against a
//! real 4-node mesh: the page loads, shows each node's state badge in the right colour, the
//! node's live-state pill with the API's sentence, the onboarding panel, the wakeable card with
//! its configured entry (apart from the topology), the request tail, and follows changes live.
//! A screenshot is saved to `target/artifacts/dashboard.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (see `scripts/ci-browser`); skipped when they
//! are missing unless `INFERMESH_REQUIRE_BROWSER` is set, as it is in CI.

mod browser_support;
mod common;
mod web_support;

use std::time::Duration;

use browser_support::{Driver, Session};
use serde_json::{json, Value};
use web_support::*;

/// Everything the test reads off the rendered page, in one round trip.
const PROBE: &str = r#"
const q = (s) => document.querySelector(s);
const badge = (name) => {
  const li = document.querySelector('#topology li[data-node-name="' + name + '"]');
  const b = li && li.querySelector('.badge');
  return b ? {state: b.dataset.state, text: b.textContent, title: b.title,
              color: getComputedStyle(b).backgroundColor} : null;
};
const pill = q('#state-pill');
return {
  nodes: Array.from(document.querySelectorAll('#topology li.node')).map((li) => li.dataset.nodeName),
  a: badge('dash-a'), b: badge('dash-b'), c: badge('dash-c'), d: badge('dash-d'),
  pill: pill ? {state: pill.dataset.state, text: pill.textContent, title: pill.title,
                color: getComputedStyle(pill).backgroundColor} : null,
  message: q('#state-message') ? q('#state-message').textContent : null,
  svg: Array.from(document.querySelectorAll('#topology-svg g[data-node-name]')).map((g) => g.dataset.nodeName + ':' + g.dataset.state),
  svgModels: Array.from(document.querySelectorAll('#topology-svg g[data-model]')).map((g) => g.dataset.model),
  svgEdges: Array.from(document.querySelectorAll('#topology-svg line[data-edge]')).map((l) => l.dataset.edge).sort(),
  wakeable: Array.from(document.querySelectorAll('#wakeable tr[data-wakeable-id]')).map((tr) => ({
    id: tr.dataset.wakeableId, state: tr.querySelector('.badge').dataset.state,
    title: tr.querySelector('.badge').title, text: tr.textContent,
    card: !!tr.closest('#wakeable-card')})),
  wakeableInTopology: !!q('#topology-card [data-node-name="gpu-7"]'),
  requests: Array.from(document.querySelectorAll('#requests tr[data-request-id]')).map((tr) => tr.textContent),
  scope: q('#requests-card').dataset.scope,
  scopeNote: q('#requests-scope').textContent,
  onboarding: Array.from(document.querySelectorAll('#onboarding .backend')).map((b) => ({
    id: b.dataset.backendId, state: (b.querySelector('.badge') || {dataset: {}}).dataset.state,
    message: (b.querySelector('.message') || {}).textContent,
    countdown: (b.querySelector('.countdown') || {}).textContent})),
  conn: q('#conn').dataset.conn,
  connText: q('#conn').textContent,
  lost: document.body.hasAttribute('data-lost'),
  layoutFilter: getComputedStyle(q('.layout')).filter,
  validation: q('#self-validation') ? q('#self-validation').textContent : null,
  chatModels: Array.from(document.querySelectorAll('#chat-model option')).map((o) => o.value),
  chatAnswer: q('#chat-answer').textContent,
  chatMeta: q('#chat-meta').textContent,
  baseUrl: q('#base-url').textContent,
  curl: q('#curl-cmd').textContent,
  countdown: q('#self-countdown') ? q('#self-countdown').textContent : null,
  usage: q('#self-usage') ? q('#self-usage').textContent : null,
  live: Array.from(document.querySelectorAll('#live tr[data-node-name]')).map((tr) => ({
    name: tr.dataset.nodeName, cpu: tr.querySelector('.live-cpu').textContent,
    mem: tr.querySelector('.live-mem').textContent, toks: tr.querySelector('.live-toks').textContent,
    p50: tr.querySelector('.live-p50').textContent, p95: tr.querySelector('.live-p95').textContent,
    count: Number(tr.querySelector('.live-count').textContent),
    cpuLine: (tr.querySelector('svg.spark-cpu polyline') || {getAttribute: () => ''}).getAttribute('points'),
    tokLine: (tr.querySelector('svg.spark-tokens polyline') || {getAttribute: () => ''}).getAttribute('points')})),
};
"#;

const SERVING: &str = "rgb(34, 197, 94)";
const STANDBY: &str = "rgb(59, 130, 246)";
const CLIENT: &str = "rgb(138, 143, 152)";

fn wait_page(s: &Session, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    common::poll(
        &format!("the page showing {what}"),
        timeout,
        Duration::from_millis(250),
        || s.eval(PROBE),
        ok,
    )
}

#[test]
fn dashboard_renders_the_live_mesh_in_a_real_browser() {
    let Some((chromium, chromedriver)) = browser_support::tools() else {
        return;
    };

    // A real 4-node mesh: a serving node that also declares wakeable capacity, a second replica
    // of its model, a standby node and a client node.
    let keys = tempfile::tempdir().unwrap();
    let op = keygen(keys.path(), "deck");
    let config = format!(
        "{}\n[[wakeable]]\nid = \"gpu-7\"\nprovider = \"example\"\nmodels = [\"llama-70b\"]\n\
         vram_gb = 80\nwake_command = \"echo 'no capacity in region' >&2; exit 1\"\n",
        op.snippet
    );
    let mut a = Node::start(Some(&config), &["--name", "dash-a"], &[]);
    wait_until(Duration::from_secs(180), "dash-a serving", || {
        (a.status()["node_state"] == "serving").then_some(())
    });
    let b = Node::start(
        None,
        &["--standby", "--name", "dash-b", "--join", &a.invite],
        &[],
    );
    let mut c = Node::start(
        None,
        &["--client", "--name", "dash-c", "--join", &a.invite],
        &[],
    );
    let d = Node::start(None, &["--name", "dash-d", "--join", &a.invite], &[]);
    wait_until(Duration::from_secs(180), "dash-d serving", || {
        (d.status()["node_state"] == "serving").then_some(())
    });
    wait_until(
        Duration::from_secs(60),
        "dash-a to see standby, client and serving peers",
        || {
            let s = a.status();
            let states: Vec<String> = s["peers"]
                .as_array()?
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p["name"].as_str().unwrap_or(""),
                        p["state"].as_str().unwrap_or("")
                    )
                })
                .collect();
            (states.contains(&"dash-b=standby".to_string())
                && states.contains(&"dash-c=client".to_string())
                && states.contains(&"dash-d=serving".to_string()))
            .then_some(())
        },
    );
    assert_eq!(b.status()["node_state"], "standby");
    // One answered request for the tail.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6});
    let (code, r) = send(
        "POST",
        &a.url,
        "/v1/chat/completions",
        &body.to_string(),
        None,
    );
    assert_eq!(code, 200, "{r}");

    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(&chromium, profile.path());
    session.goto(&format!("{}/", a.url));

    let page = wait_page(
        &session,
        "the mesh, the pill, the wakeable card and the tail",
        Duration::from_secs(30),
        |v| {
            v["nodes"].as_array().is_some_and(|n| n.len() == 4)
                && v["d"]["state"] == "serving"
                && v["b"]["state"] == "standby"
                && v["c"]["state"] == "client"
                && v["pill"]["state"] == "serving"
                && v["requests"].as_array().is_some_and(|r| !r.is_empty())
                && v["onboarding"].as_array().is_some_and(|o| !o.is_empty())
                && ["live", "polling"].contains(&v["conn"].as_str().unwrap_or(""))
        },
    );

    // The sidebar's countdown and the backend's come from two fetches but count down to the
    // same round on one clock: they read the same.
    assert_eq!(
        page["countdown"], page["onboarding"][0]["countdown"],
        "{page}"
    );

    // The node's own round result, from /api/status (none yet: no round since it started).
    let v = page["validation"].as_str().unwrap_or("");
    assert!(
        v.starts_with("none yet") || v.starts_with("passed"),
        "{page}"
    );

    // Topology: this node first, then its peers, each badge the API's word in its colour.
    assert_eq!(
        page["nodes"],
        json!(["dash-a", "dash-b", "dash-c", "dash-d"]),
        "{page:#}"
    );
    assert_eq!(page["a"]["state"], "serving");
    assert_eq!(page["a"]["color"], SERVING);
    assert_eq!(page["b"]["color"], STANDBY);
    assert_eq!(page["c"]["color"], CLIENT);
    assert_eq!(page["b"]["text"], "standby");
    assert_eq!(page["d"]["color"], SERVING);
    assert_eq!(page["svg"].as_array().unwrap().len(), 4, "{page:#}");
    assert!(page["svg"]
        .as_array()
        .unwrap()
        .contains(&json!("dash-b:standby")));
    // Layers, not a star: the client routes to the model, dash-a and dash-d serve it, dash-b is
    // idle capacity with no edge.
    assert_eq!(page["svgModels"], json!([MODEL]), "{page:#}");
    assert_eq!(
        page["svgEdges"],
        json!(["replica", "replica", "route"]),
        "{page:#}"
    );

    // The live-state pill: label, colour, and the API's own sentence as its tooltip.
    assert_eq!(page["pill"]["text"], "serving");
    assert_eq!(page["pill"]["color"], SERVING);
    assert!(!page["pill"]["title"].as_str().unwrap().is_empty());
    assert_eq!(page["pill"]["title"], page["message"]);
    // The sentence is the API's, word for word (polled: it may tick between two reads).
    wait_page(
        &session,
        "the API's sentence",
        Duration::from_secs(5),
        |v| v["message"] == a.status()["message"] && v["pill"]["title"] == v["message"],
    );
    let countdown = page["countdown"].as_str().unwrap();
    assert!(
        countdown.starts_with("in ")
            || countdown.contains("round")
            || countdown == "schedule syncing",
        "{countdown}"
    );

    // The wakeable card: the configured entry, in its own card, never in the topology.
    let w = &page["wakeable"][0];
    assert_eq!(w["id"], "gpu-7", "{page:#}");
    assert_eq!(w["state"], "sleeping");
    assert_eq!(w["card"], true);
    assert!(w["text"].as_str().unwrap().contains("llama-70b"));
    assert!(w["text"].as_str().unwrap().contains("80 GB"));
    assert_eq!(page["wakeableInTopology"], false);

    // Onboarding: the embedded backend with its state badge and the API's sentence.
    let (_, nodes) = get_json(&format!("{}/admin/v1/nodes", a.url));
    let ob = &page["onboarding"][0];
    assert_eq!(ob["id"], "embedded", "{page:#}");
    assert_eq!(
        ob["state"], nodes[0]["onboarding"]["backend_state"],
        "{nodes}"
    );
    assert!(!ob["message"].as_str().unwrap_or("").is_empty());

    // The request tail.
    let row = page["requests"][0].as_str().unwrap();
    assert!(row.contains(MODEL) && row.contains("200"), "{row}");

    // The whole mesh's requests, the card's default: a request dash-b received and could not
    // serve is on dash-a's page with dash-b as its origin; "this node" leaves it out.
    let (code, _) = common::post_json(
        &format!("{}/v1/chat/completions", b.url),
        &json!({"model": "no-such-model", "max_tokens": 1,
                "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(code, 404);
    let from_b = |v: &Value| {
        v["requests"].as_array().is_some_and(|r| {
            r.iter().any(|t| {
                let t = t.as_str().unwrap_or("");
                t.contains("no-such-model") && t.contains("dash-b") && t.contains("404")
            })
        })
    };
    let page = wait_page(
        &session,
        "dash-b's request in the whole mesh's view",
        Duration::from_secs(10),
        |v| v["scope"] == "mesh" && from_b(v),
    );
    assert!(
        page["scopeNote"]
            .as_str()
            .unwrap_or("")
            .starts_with("whole mesh: 4 nodes"),
        "{page}"
    );
    session.click("#scope-node");
    wait_page(
        &session,
        "this node's own requests",
        Duration::from_secs(5),
        |v| v["scope"] == "node" && !from_b(v) && !v["requests"].as_array().unwrap().is_empty(),
    );
    session.click("#scope-mesh");
    wait_page(
        &session,
        "the whole mesh again",
        Duration::from_secs(5),
        |v| v["scope"] == "mesh" && from_b(v),
    );

    // Try it: the chat box streams an answer from the mesh, and the commands to use it are there.
    assert_eq!(page["chatModels"], json!([MODEL]), "{page}");
    assert_eq!(page["baseUrl"], format!("{}/v1", a.url));
    assert!(
        page["curl"].as_str().unwrap_or("").contains(MODEL),
        "{page}"
    );
    session.type_into("#chat-input", "What is the capital of France?");
    session.click("#chat-send");
    let chat = wait_page(
        &session,
        "the streamed answer",
        Duration::from_secs(60),
        |v| {
            v["chatMeta"]
                .as_str()
                .is_some_and(|m| m.contains("tokens in"))
        },
    );
    assert!(
        !chat["chatAnswer"].as_str().unwrap_or("").trim().is_empty(),
        "{chat}"
    );
    let meta = chat["chatMeta"].as_str().unwrap();
    assert!(
        meta.contains("first token after") && meta.contains(MODEL),
        "{meta}"
    );

    // Live numbers: every node's CPU and memory use (not the machine's size) with a CPU chart,
    // and what dash-a served (the chat above and the first request) as tokens/s and latency.
    let live = wait_page(
        &session,
        "live numbers for the four nodes, dash-a's traffic charted",
        Duration::from_secs(30),
        |v| {
            let rows = v["live"].as_array().cloned().unwrap_or_default();
            let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
            let a = rows.iter().find(|r| r["name"] == "dash-a");
            names.len() == 4
                && rows.iter().all(|r| {
                    r["cpu"]
                        .as_str()
                        .is_some_and(|c| c.contains("% of ") && c.ends_with(" cores"))
                        && r["cpuLine"]
                            .as_str()
                            .is_some_and(|p| p.split(' ').count() >= 2)
                })
                && a.is_some_and(|a| {
                    a["count"].as_u64() >= Some(2)
                        && a["p50"].as_str().is_some_and(|p| p.ends_with(" ms"))
                })
        },
    );
    let rows = live["live"].as_array().unwrap();
    let a_row = rows.iter().find(|r| r["name"] == "dash-a").unwrap();
    assert!(
        a_row["mem"].as_str().unwrap().contains("MiB · machine"),
        "{a_row}"
    );
    assert_eq!(
        a_row["tokLine"].as_str().unwrap().split(' ').count(),
        30,
        "one point per 10 s bucket: {a_row}"
    );
    let c_row = rows.iter().find(|r| r["name"] == "dash-c").unwrap();
    assert_eq!(c_row["count"], 0, "a client serves nothing: {c_row}");
    assert!(
        live["usage"].as_str().unwrap_or("").starts_with("cpu "),
        "{live}"
    );

    let shot = artifacts_dir().join("dashboard.png");
    session.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());

    // Live: a (signed) wake that fails shows up with its reason; a peer that dies leaves.
    let (code, r) = send_signed(
        &op.key,
        "POST",
        &a.url,
        "/admin/v1/wakeable/gpu-7/wake",
        "",
        now_ms(),
    );
    assert_eq!(code, 202, "{r}");
    let page = wait_page(&session, "the failed wake", Duration::from_secs(15), |v| {
        v["wakeable"][0]["state"] == "failed"
    });
    let w = &page["wakeable"][0];
    assert_eq!(
        w["title"],
        "wake command exited with status 1: no capacity in region"
    );
    assert!(w["text"]
        .as_str()
        .unwrap()
        .contains("no capacity in region"));
    c.kill();
    wait_page(
        &session,
        "dash-c gone from the topology",
        Duration::from_secs(20),
        |v| v["nodes"] == json!(["dash-a", "dash-b", "dash-d"]),
    );
    session.screenshot(&artifacts_dir().join("dashboard-live.png"));

    // Without the event stream the page polls and shows the same mesh.
    session.goto(&format!("{}/?transport=poll", a.url));
    let polled = wait_page(&session, "the polled mesh", Duration::from_secs(15), |v| {
        v["conn"] == "polling"
            && v["nodes"] == json!(["dash-a", "dash-b", "dash-d"])
            && v["b"]["state"] == "standby"
    });
    assert_eq!(polled["wakeable"][0]["state"], "failed");

    // No script errors, no blocked resources (a CSP violation would be one).
    let severe: Vec<Value> = session
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");

    // The node behind the page dies: the page greys out, says since when, and its countdown
    // stops instead of ticking on as if it were live.
    a.kill();
    let lost = wait_page(
        &session,
        "dash-a unreachable",
        Duration::from_secs(15),
        |v| v["conn"] == "down" && v["lost"] == true,
    );
    let text = lost["connText"].as_str().unwrap_or("");
    assert!(
        text.starts_with("unreachable since ") && text.contains(" UTC"),
        "{text}"
    );
    assert_eq!(lost["layoutFilter"], "grayscale(1)", "{lost}");
    std::thread::sleep(Duration::from_millis(2_500));
    let later = session.eval(PROBE);
    assert_eq!(
        later["countdown"], lost["countdown"],
        "the countdown kept ticking"
    );
    assert_eq!(later["connText"], lost["connText"], "the loss time moved");
    session.screenshot(&artifacts_dir().join("dashboard-lost.png"));
    drop(b);
}

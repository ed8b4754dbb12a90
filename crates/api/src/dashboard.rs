//! The dashboard at `GET /`: one server-rendered page (this node, topology, wakeable capacity)
//! that a little JavaScript keeps live from `/api/events`, polling `/api/status` every 2 s when
//! the stream is not delivering. Assets are compiled into the binary; no build step, no npm.
//!
//! Everything shown comes from the API: state words, sentences and reasons are rendered as
//! received, never composed here.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::App;
use crate::error::plain_error;

const HTML: &str = include_str!("../assets/dashboard.html");
const JS: &str = include_str!("../assets/dashboard.js");
const UTIL_JS: &str = include_str!("../assets/util.js");
const TRY_JS: &str = include_str!("../assets/try.js");
const ACTIONS_JS: &str = include_str!("../assets/actions.js");
const LIVE_JS: &str = include_str!("../assets/live.js");
const TOPOLOGY_JS: &str = include_str!("../assets/topology.js");
const CSS: &str = include_str!("../assets/dashboard.css");

/// Same-origin only: the page talks to the node that served it and runs no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Shown when the node declares no wakeable machines (the deck says the same).
pub const WAKEABLE_EMPTY: &str = "No wakeable capacity configured. Declare [[wakeable]] entries \
in the node config to list suspended machines here; they are never routed to.";

fn headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 4] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
    ]
}

/// `GET /`.
pub async fn index(State(app): State<Arc<App>>) -> Response {
    let status = serde_json::to_value(crate::status::status(&app)).unwrap_or(Value::Null);
    (headers("text/html; charset=utf-8"), render_page(&status)).into_response()
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "dashboard.js" => (headers("text/javascript; charset=utf-8"), JS).into_response(),
        "util.js" => (headers("text/javascript; charset=utf-8"), UTIL_JS).into_response(),
        "try.js" => (headers("text/javascript; charset=utf-8"), TRY_JS).into_response(),
        "actions.js" => (headers("text/javascript; charset=utf-8"), ACTIONS_JS).into_response(),
        "live.js" => (headers("text/javascript; charset=utf-8"), LIVE_JS).into_response(),
        "topology.js" => (headers("text/javascript; charset=utf-8"), TOPOLOGY_JS).into_response(),
        "dashboard.css" => (headers("text/css; charset=utf-8"), CSS).into_response(),
        _ => plain_error(StatusCode::NOT_FOUND, format!("no asset `{name}`")),
    }
}

/// The page for `status` (the `/api/status` body).
pub fn render_page(status: &Value) -> String {
    let name = str_of(status, "name");
    let peers = status["peers"].as_array().map_or(0, Vec::len);
    let title = format!("infermesh · {name} · {}", str_of(status, "node_state"));
    HTML.replace("{{TITLE}}", &esc(&title))
        .replace("{{VERSION}}", &esc(str_of(status, "version")))
        .replace("{{NODE_NAME}}", &esc(name))
        .replace(
            "{{PEER_COUNT}}",
            &format!("{peers} {}", if peers == 1 { "peer" } else { "peers" }),
        )
        .replace("{{SIDEBAR}}", &sidebar(status))
        .replace("{{TOPOLOGY}}", &topology(status))
        .replace("{{WAKEABLE}}", &wakeable(&status["wakeable"]))
        .replace("{{INITIAL_STATUS}}", &script_json(status))
        .replace("{{LABELS}}", &script_json(&labels_json()))
}

/// The wire word → label map the page's script shows, from `infermesh_state::labels`, so the
/// live page and the server-rendered one use the same words.
fn labels_json() -> Value {
    Value::Object(
        infermesh_state::labels::all()
            .into_iter()
            .map(|(w, l)| (w.to_string(), Value::from(l)))
            .collect(),
    )
}

/// JSON that is safe inside `<script type="application/json">`: no `<`, so no `</script>`.
fn script_json(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn state_class(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        format!("state-{word}")
    } else {
        "state-unknown".into()
    }
}

/// A state badge: the word as the API sent it, coloured by it, with an optional tooltip.
fn badge(word: &str, title: Option<&str>, class: &str, id: Option<&str>) -> String {
    let word = if word.is_empty() { "unknown" } else { word };
    format!(
        "<span {}class=\"{class} {}\" data-state=\"{}\"{}>{}</span>",
        id.map_or(String::new(), |i| format!("id=\"{i}\" ")),
        state_class(word),
        esc(word),
        title
            .filter(|t| !t.is_empty())
            .map_or(String::new(), |t| format!(" title=\"{}\"", esc(t))),
        esc(&infermesh_state::labels::human(word))
    )
}

fn gb(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 10.0 => format!("{x:.0} GB"),
        Some(x) => format!("{x:.1} GB"),
        None => "—".into(),
    }
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn countdown_text(timing: &Value) -> String {
    let secs = timing["seconds_until_next_round"].as_i64().unwrap_or(-1);
    if secs < 0 {
        return "schedule syncing".into();
    }
    let text = format!("in {}", infermesh_state::format_duration(secs));
    if timing["in_round"].as_bool().unwrap_or(false) {
        format!("round running · next {text}")
    } else {
        text
    }
}

fn sidebar(s: &Value) -> String {
    let models = join(&s["models"]);
    let timing = &s["timing"];
    let message = str_of(s, "message");
    format!(
        "<h3 id=\"self-name\">{name}</h3><div class=\"mono muted\" id=\"self-id\">{id}</div>\
         <p>{pill}</p><p class=\"message\" id=\"state-message\">{msg}</p>{peer}<dl>\
         <dt>participation</dt><dd>{part}</dd>\
         <dt>next round</dt><dd><span class=\"countdown\" id=\"self-countdown\" data-seconds=\"{secs}\" data-at=\"0\" data-in-round=\"{inr}\">{cd}</span></dd>\
         <dt>epoch</dt><dd>{epoch}</dd><dt>models</dt><dd>{models}</dd>\
         <dt>memory</dt><dd>vram {vram} · ram {ram}</dd><dt>in flight</dt><dd>{inflight}</dd>\
         <dt>api</dt><dd class=\"mono\">{api}</dd><dt>version</dt><dd>{version}</dd></dl>",
        name = esc(str_of(s, "name")),
        id = esc(str_of(s, "node_id")),
        pill = badge(str_of(s, "node_state"), Some(message), "pill", Some("state-pill")),
        msg = esc(message),
        peer = s["peer_message"]
            .as_str()
            .filter(|p| *p != message)
            .map_or(String::new(), |p| format!(
                "<p class=\"message bad\" id=\"peer-message\">{}</p>",
                esc(p)
            )),
        part = badge(str_of(s, "participation"), None, "badge", Some("participation")),
        secs = timing["seconds_until_next_round"].as_i64().unwrap_or(-1),
        inr = u8::from(timing["in_round"].as_bool().unwrap_or(false)),
        cd = esc(&countdown_text(timing)),
        epoch = esc(&text_of(&s["epoch"])),
        models = esc(if models.is_empty() { "—" } else { &models }),
        vram = esc(&gb(&s["vram_gb"])),
        ram = esc(&gb(&s["ram_gb"])),
        inflight = esc(&text_of(&s["in_flight"])),
        api = esc(str_of(s, "api_addr")),
        version = esc(str_of(s, "version")),
    )
}

fn node_item(n: &Value, is_self: bool) -> String {
    let models = join(&n["models"]);
    let (state, title, addr, load) = if is_self {
        (
            str_of(n, "node_state"),
            str_of(n, "message").to_string(),
            str_of(n, "api_addr"),
            text_of(&n["in_flight"]),
        )
    } else {
        (
            str_of(n, "state"),
            infermesh_state::labels::human(str_of(n, "participation")),
            str_of(n, "addr"),
            text_of(&n["load"]),
        )
    };
    let mut meta = vec![
        if models.is_empty() {
            "no models".to_string()
        } else {
            models
        },
        addr.to_string(),
        format!("load {load}"),
    ];
    let split = if is_self {
        n["split"]["detail"].as_str()
    } else {
        n["split_role"].as_str()
    };
    meta.extend(split.map(str::to_string));
    if let (false, Some(ms)) = (is_self, n["last_seen_ms"].as_u64()) {
        meta.push(format!("seen {ms} ms ago"));
    }
    format!(
        "<li class=\"node{}\" data-node-id=\"{}\" data-node-name=\"{}\"><span class=\"name\">{}</span>{}{}<div class=\"meta\">{}</div></li>",
        if is_self { " self" } else { "" },
        esc(str_of(n, "node_id")),
        esc(str_of(n, "name")),
        esc(str_of(n, "name")),
        badge(state, Some(&title), "badge", None),
        if is_self {
            " <span class=\"muted\">this node</span>"
        } else {
            ""
        },
        esc(&meta.join(" · ")),
    )
}

fn topology(s: &Value) -> String {
    let mut peers: Vec<&Value> = s["peers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    peers.sort_by_key(|p| str_of(p, "name").to_string());
    std::iter::once(node_item(s, true))
        .chain(peers.into_iter().map(|p| node_item(p, false)))
        .collect()
}

fn wakeable(list: &Value) -> String {
    let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
        return format!(
            "<p class=\"muted\" id=\"wakeable-empty\">{}</p>",
            esc(WAKEABLE_EMPTY)
        );
    };
    let rows: String = list
        .iter()
        .map(|w| {
            let reason = w["reason"].as_str();
            let models = join(&w["models"]);
            format!(
                "<tr data-wakeable-id=\"{id}\"><td class=\"mono\">{id}</td><td>{provider}</td><td>{models}</td><td>{vram}</td><td>{badge}{reason}</td><td class=\"mono\">{node}</td></tr>",
                id = esc(str_of(w, "id")),
                provider = esc(str_of(w, "provider")),
                models = esc(if models.is_empty() { "—" } else { &models }),
                vram = esc(&gb(&w["vram_gb"])),
                badge = badge(str_of(w, "state"), reason, "badge", None),
                reason = reason.map_or(String::new(), |r| format!("<div class=\"reason\">{}</div>", esc(r))),
                node = esc(str_of(w, "node_name")),
            )
        })
        .collect();
    format!(
        "<table class=\"grid\"><thead><tr><th>id</th><th>provider</th><th>models</th><th>vram</th><th>state</th><th>joins as</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Value {
        json!({
            "node_id": "abc", "name": "alpha<x>", "version": "0.1.0", "api_addr": "127.0.0.1:1",
            "node_state": "serving", "node_status": "Serving", "participation": "inactive_waiting",
            "timing": {"seconds_until_next_round": 240, "in_round": false},
            "message": "Round starts in 4m — must be online now", "epoch": 3,
            "models": ["m"], "vram_gb": 0.1, "ram_gb": 24.0, "in_flight": 0,
            "peers": [
                {"node_id": "p2", "name": "zeta", "addr": "127.0.0.1:3", "state": "client",
                 "models": [], "load": 0, "participation": "inactive_waiting", "last_seen_ms": 10},
                {"node_id": "p1", "name": "beta", "addr": "127.0.0.1:2", "state": "standby",
                 "models": [], "load": 0, "participation": "active", "last_seen_ms": 5}
            ],
            "wakeable": [{"id": "gpu-7", "provider": "example", "models": ["llama-70b"],
                          "vram_gb": 80.0, "state": "failed", "reason": "exit 3: </script>",
                          "node_name": "gpu-7"}]
        })
    }

    #[test]
    fn node_items_carry_the_split_part_in_words() {
        let mut s = status();
        s["split"] = json!({"role": "host", "model": "m", "shares": [], "serving": false,
                            "need_bytes": 1, "have_bytes": 0, "detail": "host of m: need 1 MB"});
        s["peers"][1]["split_role"] = json!("split worker: layers 18–29 of m for alpha<x>");
        let page = render_page(&s);
        assert!(page.contains("host of m: need 1 MB"), "{page}");
        assert!(page.contains("split worker: layers 18–29 of m for alpha&lt;x&gt;"));
    }

    #[test]
    fn the_page_renders_state_from_the_api_escaped() {
        let page = render_page(&status());
        assert!(!page.contains("{{"), "unfilled placeholder");
        assert!(page.contains(
            "id=\"state-pill\" class=\"pill state-serving\" data-state=\"serving\" title=\"Round starts in 4m — must be online now\">serving</span>"
        ));
        assert!(page.contains("alpha&lt;x&gt;"));
        assert!(!page.contains("alpha<x>"));
        // Peers sorted by name, each with its state badge.
        let beta = page.find("data-node-name=\"beta\"").unwrap();
        let zeta = page.find("data-node-name=\"zeta\"").unwrap();
        assert!(beta < zeta);
        assert!(page.contains("class=\"badge state-standby\" data-state=\"standby\""));
        assert!(page.contains("class=\"badge state-client\" data-state=\"client\""));
        assert!(page.contains("data-wakeable-id=\"gpu-7\""));
        assert!(page.contains(
            "class=\"badge state-failed\" data-state=\"failed\" title=\"exit 3: &lt;/script&gt;\""
        ));
        assert!(page.contains(">in 4m</span>"));
        assert!(page.contains("2 peers"));
        // Human labels, never the wire word, wherever a participation is shown.
        assert!(page.contains(">Inactive — waiting for round</span>"));
        assert!(!page.contains(">inactive waiting<") && !page.contains(">inactive_waiting<"));
        assert!(page.contains("title=\"Active for this epoch\""));
        assert!(!page.contains("id=\"peer-message\""));
        // The page's script gets the same labels from the server.
        let labels = page
            .split("id=\"labels\" type=\"application/json\">")
            .nth(1)
            .unwrap();
        let labels: Value =
            serde_json::from_str(labels.split("</script>").next().unwrap()).unwrap();
        assert_eq!(labels["inactive_waiting"], "Inactive — waiting for round");
        assert_eq!(labels["test_failed"], "test failed");
        // The embedded JSON cannot close its script element early.
        let json_start = page.find("id=\"initial-status\"").unwrap();
        let json_end = page[json_start..].find("</script>").unwrap();
        let embedded = &page[json_start..json_start + json_end];
        assert!(!embedded[1..].contains('<'));
        let body = embedded.split_once('>').unwrap().1;
        let back: Value = serde_json::from_str(body).unwrap();
        assert_eq!(back, status());
    }

    #[test]
    fn no_peer_notice_is_shown_beside_the_message() {
        let mut s = status();
        let notice = infermesh_state::peer_notice(false, 1, 0).unwrap();
        s["peer_message"] = json!(notice);
        let page = render_page(&s);
        assert!(page.contains(&format!(
            "<p class=\"message bad\" id=\"peer-message\">{}</p>",
            esc(&notice)
        )));
        assert!(notice.to_lowercase().contains(infermesh_state::NO_PEER));
    }

    #[test]
    fn unknown_words_and_empty_wakeable() {
        let mut s = status();
        s["node_state"] = json!("Weird State");
        s["wakeable"] = json!([]);
        s["timing"]["seconds_until_next_round"] = json!(-1);
        let page = render_page(&s);
        assert!(page.contains("class=\"pill state-unknown\""));
        assert!(page.contains(WAKEABLE_EMPTY));
        assert!(page.contains(">schedule syncing</span>"));
    }
}

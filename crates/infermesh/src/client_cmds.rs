//! `infermesh status` and `infermesh test`: operator commands, each a client of one node's HTTP
//! API. Exit codes: 0 success, 1 a test ran and failed, 2 usage or HTTP errors (the node is
//! unreachable, the backend is unknown, busy or serving, the node answered something unexpected).

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub use crate::node_client::Exit;
use crate::node_client::{fail, NodeClient};

pub const DEFAULT_URL: &str = "http://127.0.0.1:7337";

/// How long `infermesh test` waits for the node: a test loads, checks and runs every model of
/// the backend, each step bounded by the node's own test timeout.
const TEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The node's API address.
    #[arg(long, env = "INFERMESH_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Print the raw `/api/status` JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The backend to test (an id from `infermesh status`, e.g. `embedded`).
    pub backend_id: String,
    /// The node's API address.
    #[arg(long, env = "INFERMESH_URL", default_value = DEFAULT_URL)]
    pub url: String,
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

// ----- infermesh status -----------------------------------------------------------------------

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(&args.url)?;
    let status = client.get("/api/status").await?;
    if !status.status.is_success() {
        return Err(fail(
            2,
            format!("error: GET /api/status: {}", status.error_message()),
        ));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status.body).unwrap_or_default()
        );
        return Ok(());
    }
    // The admin list carries each backend's onboarding sentence; without it, fall back to the
    // phases in /api/status rather than print nothing about the backends.
    let admin = match client.get("/admin/v1/nodes").await {
        Ok(r) if r.status.is_success() => Ok(r.body),
        Ok(r) => Err(r.error_message()),
        Err(e) => return Err(e),
    };
    print!("{}", render_status(&client.base, &status.body, admin));
    Ok(())
}

/// The human summary of a node: who it is, its state, its message, its peers, its backends.
fn render_status(base: &str, s: &Value, admin: Result<Value, String>) -> String {
    let mut out = String::new();
    let state = str_of(s, "node_state");
    let _ = writeln!(
        out,
        "node {} ({}) at {base} — v{}",
        str_of(s, "name"),
        str_of(s, "node_id"),
        str_of(s, "version")
    );
    let _ = writeln!(
        out,
        "state: {}  participation: {}",
        state.to_uppercase(),
        str_of(s, "participation")
    );
    if let Some(msg) = s["message"].as_str().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "  {msg}");
    }
    let models: Vec<&str> = s["models"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !models.is_empty() {
        let _ = writeln!(out, "serving: {}", models.join(", "));
    }
    let _ = writeln!(out, "{}", peers_line(s));

    let rows: Vec<[String; 4]> = match &admin {
        Ok(list) => list
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let (n, o) = (&e["node"], &e["onboarding"]);
                        let mut msg = str_of(o, "message").to_string();
                        if n["phase"] == "failed" {
                            msg = format!("{msg} [load failed: {}]", str_of(n, "detail"));
                        }
                        let mut state = str_of(o, "backend_state").to_string();
                        if o["validated"] == true && state != "serving" {
                            state.push_str(" (validated)");
                        }
                        [
                            str_of(n, "id").to_string(),
                            str_of(n, "driver").to_string(),
                            state,
                            msg,
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => s["backends"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| {
                        [
                            str_of(b, "id").to_string(),
                            str_of(b, "driver").to_string(),
                            format!("phase {}", str_of(b, "phase")),
                            b["assigned"]
                                .as_str()
                                .map_or_else(String::new, |m| format!("assigned {m}")),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    if rows.is_empty() {
        let _ = writeln!(out, "backends: none");
    } else {
        let _ = writeln!(out, "backends:");
        let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
        let w2 = rows.iter().map(|r| r[2].len()).max().unwrap_or(0);
        for [id, driver, state, msg] in &rows {
            let line = format!("  {id:w0$}  {driver:w1$}  {state:w2$}  {msg}");
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    if let Err(e) = admin {
        let _ = writeln!(out, "(onboarding states unavailable: {e})");
    }
    out
}

/// "peers: 3 (2 serving, 1 standby)", counted in the state vocabulary's order.
fn peers_line(s: &Value) -> String {
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        return "peers: none".to_string();
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for p in &peers {
        let st = p["state"].as_str().unwrap_or("unknown").to_string();
        match counts.iter_mut().find(|(k, _)| *k == st) {
            Some((_, n)) => *n += 1,
            None => counts.push((st, 1)),
        }
    }
    let order = ["serving", "loading", "standby", "client"];
    counts.sort_by_key(|(k, _)| order.iter().position(|o| o == k).unwrap_or(order.len()));
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("peers: {} ({})", peers.len(), parts.join(", "))
}

// ----- infermesh test -------------------------------------------------------------------------

pub async fn test(args: TestArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(&args.url)?;
    let id = args.backend_id;
    // The node's id rule; anything else could not name a backend and would change the path.
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != "..";
    if !id_ok {
        return Err(fail(
            2,
            format!("error: `{id}` is not a backend id (letters, digits, `-`, `_`, `.`); see `infermesh status`"),
        ));
    }
    let node = match client.get("/api/status").await? {
        r if r.status.is_success() => str_of(&r.body, "name").to_string(),
        _ => client.base.clone(),
    };
    eprintln!("testing backend {id} on {node} (load → health → inference → stop per model)…");
    let path = format!("/admin/v1/nodes/{id}/test");
    let reply = client
        .mutate(Method::POST, &path, None, TEST_TIMEOUT)
        .await?;
    match reply.status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            let known = backend_ids(&client).await;
            let hint = if known.is_empty() {
                "hint: this node has no backends; register one with POST /admin/v1/nodes".into()
            } else {
                format!(
                    "hint: backends on this node: {} (see `infermesh status`)",
                    known.join(", ")
                )
            };
            return Err(fail(2, format!("error: {}\n{hint}", reply.error_message())));
        }
        StatusCode::CONFLICT => {
            let msg = reply.error_message();
            let hint = if msg.contains("already running") {
                "hint: one test per backend at a time; `infermesh status` shows `testing` until it ends"
            } else {
                "hint: tests run on backends that are not serving; register a standby backend \
                 (`infermesh up --standby`, or POST /admin/v1/nodes without `serve`) and test that"
            };
            return Err(fail(2, format!("error: {msg}\n{hint}")));
        }
        StatusCode::UNAUTHORIZED => {
            return Err(fail(
                2,
                format!(
                    "error: {}\nhint: this node accepts admin changes signed by an operator key \
                     listed in its config.toml [[operator]] (`infermesh keygen`), or unsigned \
                     when started with --admin-open (local experiments only)",
                    reply.error_message()
                ),
            ));
        }
        other => {
            return Err(fail(
                2,
                format!(
                    "error: POST {path} answered {other}: {}",
                    reply.error_message()
                ),
            ))
        }
    }
    let result = reply.body;
    let Some(ok) = result["ok"].as_bool() else {
        return Err(fail(
            2,
            format!("error: the node's test result is not a TestResult: {result}"),
        ));
    };
    print!("{}", render_table(&result));
    if ok {
        println!("PASS: backend {id} on {node}");
        Ok(())
    } else {
        let failing = result["failing_model"].as_str().unwrap_or("(none)");
        let cause = result["models"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["model"] == failing))
            .and_then(|m| m["error"].as_str())
            .unwrap_or("the backend lists no models");
        println!("FAIL: backend {id} on {node}: model {failing}: {cause}");
        Err(fail(
            1,
            format!("fix the backend and run `infermesh test {id}` again"),
        ))
    }
}

async fn backend_ids(client: &NodeClient) -> Vec<String> {
    match client.get("/admin/v1/nodes").await {
        Ok(r) if r.status.is_success() => r
            .body
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["node"]["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// One row per model: the step timings (`-` for a step that did not complete) and the result.
fn render_table(result: &Value) -> String {
    let ms = |m: &Value, k: &str| match m[k].as_u64() {
        Some(0) | None => "-".to_string(),
        Some(n) => format!("{n} ms"),
    };
    let mut rows = vec![[
        "MODEL".to_string(),
        "LOAD".to_string(),
        "HEALTH".to_string(),
        "INFER".to_string(),
        "RESULT".to_string(),
    ]];
    for m in result["models"].as_array().into_iter().flatten() {
        rows.push([
            str_of(m, "model").to_string(),
            ms(m, "load_ms"),
            ms(m, "health_ms"),
            ms(m, "infer_ms"),
            m["error"]
                .as_str()
                .map_or_else(|| "ok".to_string(), |e| format!("FAILED: {e}")),
        ]);
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    let mut out = String::new();
    for [model, load, health, infer, res] in &rows {
        let _ = writeln!(
            out,
            "{model:w0$}  {load:>w1$}  {health:>w2$}  {infer:>w3$}  {res}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_marks_incomplete_steps_and_errors() {
        let t = render_table(&json!({"ok": false, "models": [
            {"model": "a", "load_ms": 120, "health_ms": 2, "infer_ms": 95, "error": null},
            {"model": "bb", "load_ms": 0, "health_ms": 0, "infer_ms": 0, "error": "load failed: x"}
        ]}));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("MODEL"), "{t}");
        assert!(
            lines[1].contains("120 ms") && lines[1].ends_with("ok"),
            "{t}"
        );
        assert!(
            lines[2].contains(" - ") && lines[2].ends_with("FAILED: load failed: x"),
            "{t}"
        );
    }

    #[test]
    fn status_summary_counts_peers_and_lists_backends() {
        let s = json!({"name": "n1", "node_id": "abcd", "version": "0.1.0",
            "node_state": "standby", "participation": "inactive_waiting", "message": "Schedule syncing",
            "models": [], "peers": [{"state": "serving"}, {"state": "standby"}, {"state": "serving"}],
            "backends": []});
        let admin = json!([{"node": {"id": "embedded", "driver": "embedded", "phase": "idle"},
            "onboarding": {"backend_state": "waiting", "message": "Not yet validated"}}]);
        let out = render_status("http://x", &s, Ok(admin));
        assert!(out.contains("state: STANDBY"), "{out}");
        assert!(out.contains("peers: 3 (2 serving, 1 standby)"), "{out}");
        assert!(
            out.contains("embedded  embedded  waiting  Not yet validated"),
            "{out}"
        );
        let out = render_status("http://x", &s, Err("401".into()));
        assert!(out.contains("onboarding states unavailable"), "{out}");
    }
}

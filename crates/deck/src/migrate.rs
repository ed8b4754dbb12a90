//! Live migration of one replica, A → B, as the deck's action and `infermesh migrate` both run it:
//! B starts the model (marked as replacing A, so placement does not stop the pair as surplus),
//! A must see B serving *and admitted* before anything stops, then A drains (no new requests,
//! in-flight ones finish) and stops. One procedure for both front ends, so they cannot drift.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::request::{admin_request, describe, error_sentence};
use crate::signer::Signer;

/// How long B's start request may take (it only registers the replica; loading is async).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// A drain waits for in-flight requests; the node itself gives up on them after 120 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(250);

/// A node taking part: `node_id` from authenticated membership (what the signature binds),
/// `base` where its API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub node_id: String,
    pub name: String,
    pub base: String,
}

/// What the procedure reports as it goes, for a progress line.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// 1/3: B accepted the replica and is loading it.
    Loading,
    /// Still waiting for A to admit B, with what A sees of B now.
    Waiting(String),
    /// 2/3: A sees B serving and admitted after this many seconds.
    Admitted(f64),
}

/// 3/3: A drained and stopped serving the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub finished: u64,
    pub cut_off: u64,
    pub secs: f64,
}

/// The migration's whole run; `Err` is one operator sentence saying which step stopped it and
/// that nothing was drained when that is so.
pub async fn run(
    http: &reqwest::Client,
    signer: &dyn Signer,
    model: &str,
    from: &Endpoint,
    to: &Endpoint,
    admit_limit: Duration,
    mut progress: impl FnMut(Step),
) -> Result<Outcome, String> {
    if from.node_id == to.node_id {
        return Err("source and target are the same node".into());
    }
    let started = Instant::now();
    let body = json!({"model": model, "replaces": from.node_id})
        .to_string()
        .into_bytes();
    call(
        http,
        signer,
        (Method::POST, to, "/admin/v1/replicas"),
        body,
        START_TIMEOUT,
        &format!("{} could not be asked to start {model}", to.name),
        &format!("{} refused", to.name),
    )
    .await?;
    progress(Step::Loading);
    wait_admitted(http, model, from, to, admit_limit, &mut progress).await?;
    progress(Step::Admitted(started.elapsed().as_secs_f64()));
    let path = format!("/admin/v1/replicas/{}/drain", encode(model));
    let reply = call(
        http,
        signer,
        (Method::POST, from, &path),
        Vec::new(),
        DRAIN_TIMEOUT,
        &format!("{} could not be asked to drain", from.name),
        &format!("{} did not drain", from.name),
    )
    .await?;
    Ok(Outcome {
        finished: reply["in_flight_at_start"].as_u64().unwrap_or(0),
        cut_off: reply["cut_off"].as_u64().unwrap_or(0),
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Waits until A lists B as serving and admitted for `model`: only then has mesh traffic
/// somewhere to go when A stops.
async fn wait_admitted(
    http: &reqwest::Client,
    model: &str,
    from: &Endpoint,
    to: &Endpoint,
    limit: Duration,
    progress: &mut impl FnMut(Step),
) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let url = format!("{}/api/status", from.base);
        let now = match http.get(&url).timeout(STATUS_TIMEOUT).send().await {
            Ok(resp) => match resp.json::<Value>().await {
                Ok(s) => {
                    let peer = s["peers"]
                        .as_array()
                        .and_then(|ps| ps.iter().find(|p| p["node_id"] == to.node_id.as_str()))
                        .cloned()
                        .unwrap_or(Value::Null);
                    let admitted = peer["admitted_for"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|x| x == model));
                    if admitted {
                        return Ok(());
                    }
                    seen_by(&from.name, &to.name, &peer)
                }
                Err(e) => format!("{} answered its status unreadably: {e}", from.name),
            },
            Err(e) => format!("{} is unreachable: {}", from.name, describe(&e)),
        };
        if now != last {
            progress(Step::Waiting(now.clone()));
            last = now;
        }
        if started.elapsed() > limit {
            return Err(format!(
                "{} was not admitted for {model} within {} s; nothing was drained ({last})",
                to.name,
                limit.as_secs()
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// "B is loading (admission check in progress)" as A sees it.
fn seen_by(from: &str, to: &str, peer: &Value) -> String {
    let admission = peer["admission"]
        .as_str()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    match peer["state"].as_str() {
        Some(state) => format!("{from} sees {to} {state}{admission}"),
        None => format!("{from} does not see {to} yet"),
    }
}

/// One signed admin call; `Err` is "<unreachable>: why" or "<refused>: the node's sentence".
async fn call(
    http: &reqwest::Client,
    signer: &dyn Signer,
    (method, node, path): (Method, &Endpoint, &str),
    body: Vec<u8>,
    timeout: Duration,
    unreachable: &str,
    refused: &str,
) -> Result<Value, String> {
    let resp = admin_request(
        http,
        signer,
        method,
        (&node.node_id, &node.base),
        path,
        body,
    )
    .timeout(timeout)
    .send()
    .await
    .map_err(|e| format!("{unreachable}: {}", describe(&e)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{unreachable}: {}", describe(&e)))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("{refused}: {}", error_sentence(status, &body)));
    }
    Ok(body)
}

/// A model name as one path segment.
pub fn encode(model: &str) -> String {
    model
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_name_is_one_path_segment() {
        assert_eq!(encode("smollm2-135m_v1.q4"), "smollm2-135m_v1.q4");
        assert_eq!(encode("org/model x"), "org%2Fmodel%20x");
    }

    #[test]
    fn what_a_sees_of_b_reads_as_a_sentence() {
        let p = json!({"state": "loading", "admission": "admission check in progress"});
        assert_eq!(
            seen_by("A", "B", &p),
            "A sees B loading (admission check in progress)"
        );
        assert_eq!(seen_by("A", "B", &Value::Null), "A does not see B yet");
    }
}

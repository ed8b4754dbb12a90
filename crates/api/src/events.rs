//! `GET /api/events` (SSE: `status`, `log`, `request`) and `GET /api/logs`: the live feed decks and
//! dashboards render, so no client has to poll every endpoint.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures::Stream;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;
use crate::logs;
use crate::status::status;

/// Fastest status refresh a client gets, and the longest it waits without one.
const STATUS_MIN: Duration = Duration::from_millis(250);
const STATUS_HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub struct LogsQuery {
    tail: Option<usize>,
}

pub async fn get_logs(Query(q): Query<LogsQuery>) -> Json<Value> {
    let lines = logs::global().tail(q.tail.unwrap_or(200));
    Json(serde_json::json!({ "lines": lines }))
}

/// The status as JSON, minus what changes on every read without meaning anything (peer ages),
/// so "changed" means an operator-visible change.
fn fingerprint(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(peers) = v.get_mut("peers").and_then(Value::as_array_mut) {
        for p in peers {
            p["last_seen_ms"] = Value::Null;
        }
    }
    v
}

fn event(name: &str, data: &impl serde::Serialize) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "null".into())))
}

pub async fn get_events(State(app): State<Arc<App>>) -> impl IntoResponse {
    Sse::new(feed(app)).keep_alive(KeepAlive::default())
}

fn feed(app: Arc<App>) -> impl Stream<Item = Result<Event, Infallible>> {
    let logs = logs::global().subscribe();
    let requests = app.requests.subscribe();
    let state = Feed {
        app,
        logs,
        requests,
        last: None,
        sent_at: None,
        checked_at: None,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            let due = st
                .checked_at
                .map_or(Duration::ZERO, |t| STATUS_MIN.saturating_sub(t.elapsed()));
            tokio::select! {
                biased;
                line = st.logs.recv() => match line {
                    Ok(l) => return Some((event("log", &l), st)),
                    // A slow client misses lines rather than holding the node back.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                },
                rec = st.requests.recv() => match rec {
                    Ok(r) => return Some((event("request", &r), st)),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(due) => {
                    st.checked_at = Some(Instant::now());
                    let now = serde_json::to_value(status(&st.app)).unwrap_or(Value::Null);
                    let fp = fingerprint(&now);
                    let stale = st.sent_at.is_none_or(|t| t.elapsed() >= STATUS_HEARTBEAT);
                    if stale || st.last.as_ref() != Some(&fp) {
                        st.last = Some(fp);
                        st.sent_at = Some(Instant::now());
                        return Some((event("status", &now), st));
                    }
                }
            }
        }
    })
}

struct Feed {
    app: Arc<App>,
    logs: tokio::sync::broadcast::Receiver<logs::LogLine>,
    requests: tokio::sync::broadcast::Receiver<crate::requests::RequestRecord>,
    last: Option<Value>,
    sent_at: Option<Instant>,
    checked_at: Option<Instant>,
}

//! The node's recent log lines, kept in a bounded ring for `GET /api/logs` and streamed on
//! `/api/events`, so a deck or dashboard on any machine can read any node's log without a shell.
//! Captured by a `tracing` layer: exactly the lines the node prints, nothing reformatted.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept: a few minutes of a busy node, a day of a quiet one.
pub const LOG_CAPACITY: usize = 2000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub seq: u64,
    pub at_ms: i64,
    pub node_id: String,
    pub level: String,
    pub target: String,
    pub message: String,
}

pub struct LogRing {
    inner: Mutex<Inner>,
    events: broadcast::Sender<LogLine>,
}

struct Inner {
    seq: u64,
    node_id: String,
    lines: VecDeque<LogLine>,
}

impl Default for LogRing {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                seq: 0,
                node_id: String::new(),
                lines: VecDeque::with_capacity(LOG_CAPACITY),
            }),
            events: broadcast::channel(512).0,
        }
    }
}

impl LogRing {
    /// Lines logged before the identity is known keep an empty `node_id`.
    pub fn set_node_id(&self, id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.node_id = id.to_string();
        for l in g.lines.iter_mut().filter(|l| l.node_id.is_empty()) {
            l.node_id = id.to_string();
        }
    }

    pub fn push(&self, at_ms: i64, level: &str, target: &str, message: String) {
        let line = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.seq += 1;
            let line = LogLine {
                seq: g.seq,
                at_ms,
                node_id: g.node_id.clone(),
                level: level.to_string(),
                target: target.to_string(),
                message,
            };
            if g.lines.len() == LOG_CAPACITY {
                g.lines.pop_front();
            }
            g.lines.push_back(line.clone());
            line
        };
        let _ = self.events.send(line);
    }

    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let skip = g.lines.len().saturating_sub(n);
        g.lines.iter().skip(skip).cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.events.subscribe()
    }
}

/// The process's ring: logging is process-wide, so the capture is too.
pub fn global() -> &'static LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(LogRing::default)
}

/// A `tracing` layer feeding [`global`].
pub struct CaptureLayer;

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let meta = event.metadata();
        global().push(
            at_ms,
            &meta.level().as_str().to_ascii_lowercase(),
            meta.target(),
            f.message + &f.rest,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_backfills_the_node_id() {
        let ring = LogRing::default();
        ring.push(1, "info", "t", "before".into());
        ring.set_node_id("n1");
        for i in 0..LOG_CAPACITY + 3 {
            ring.push(2, "warn", "t", format!("l{i}"));
        }
        let all = ring.tail(usize::MAX);
        assert_eq!(all.len(), LOG_CAPACITY);
        assert!(all.iter().all(|l| l.node_id == "n1"));
        assert_eq!(
            all.last().unwrap().message,
            format!("l{}", LOG_CAPACITY + 2)
        );
        assert_eq!(ring.tail(1)[0].seq, (LOG_CAPACITY + 4) as u64);
    }

    #[test]
    fn the_layer_captures_message_and_fields() {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(CaptureLayer);
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(backend = "b1", n = 3, "unique-capture-line");
        });
        let line = global()
            .tail(LOG_CAPACITY)
            .into_iter()
            .find(|l| l.message.starts_with("unique-capture-line"))
            .expect("captured");
        assert_eq!(line.level, "warn");
        assert_eq!(line.message, "unique-capture-line backend=b1 n=3");
    }
}

//! The merged mesh log and the view over it.

use std::cmp::Ordering;
use std::collections::HashSet;

use crate::api::LogLine;

/// Lines kept across all nodes; the oldest go first.
pub const LOG_CAP: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// Unknown words count as `info` so a line is never hidden by a level nobody asked for.
    pub fn parse(s: &str) -> Level {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "warn" | "warning" => Level::Warn,
            "error" | "err" => Level::Error,
            _ => Level::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    pub fn next(self) -> Level {
        let i = Level::ALL.iter().position(|l| *l == self).unwrap_or(0);
        Level::ALL[(i + 1) % Level::ALL.len()]
    }
}

/// The merged mesh log: sorted by `at_ms`, deduplicated, bounded.
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    lines: Vec<LogLine>,
    // `at_ms` is part of the key because `seq` restarts from 0 when a node restarts.
    seen: HashSet<(String, u64, i64)>,
}

impl LogStore {
    pub fn lines(&self) -> &[LogLine] {
        &self.lines
    }

    /// Merges lines from one node; returns how many were new. Lines without `node_id` get `source` so the filter still works.
    pub fn merge(&mut self, source: &str, batch: impl IntoIterator<Item = LogLine>) -> usize {
        let mut inserted = 0;
        let mut unsorted = false;
        for mut l in batch {
            if l.node_id.is_empty() {
                l.node_id = source.to_string();
            }
            if !self.seen.insert((l.node_id.clone(), l.seq, l.at_ms)) {
                continue;
            }
            unsorted |= self.lines.last().is_some_and(|p| log_order(p, &l).is_gt());
            self.lines.push(l);
            inserted += 1;
        }
        if unsorted {
            // Stable sort over two pre-sorted runs is linear in practice.
            self.lines.sort_by(log_order);
        }
        if self.lines.len() > LOG_CAP {
            // Drop a slice at once so the O(n) drain is paid rarely, not on every line.
            let drop = self.lines.len() - LOG_CAP + LOG_CAP / 10;
            for l in self.lines.drain(..drop) {
                self.seen.remove(&(l.node_id, l.seq, l.at_ms));
            }
        }
        inserted
    }
}

fn log_order(a: &LogLine, b: &LogLine) -> Ordering {
    (a.at_ms, &a.node_id, a.seq).cmp(&(b.at_ms, &b.node_id, b.seq))
}

#[derive(Debug, Clone, Default)]
pub struct LogsView {
    /// `node_id` to show, `None` = all nodes.
    pub node_filter: Option<String>,
    pub min_level: Option<Level>,
    pub follow: bool,
    /// First visible line (index into the filtered list) while paused.
    pub top: usize,
    /// The applied substring search (case-insensitive); empty = none.
    pub search: String,
    /// The search being typed after `/`; keys go here until Enter or Esc.
    pub search_edit: Option<String>,
}

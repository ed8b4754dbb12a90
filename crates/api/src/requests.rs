//! The routed-request ring: one record per OpenAI request this node received, bounded so a busy
//! node's memory stays flat. Exposed at `GET /api/requests` and pushed to `/api/events`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How many records the ring keeps: enough for the deck's tail and a latency sparkline.
pub const RING_CAPACITY: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: u64,
    pub at_ms: i64,
    /// Node that received the request from the client.
    pub from: String,
    /// Node that answered; `None` when no replica could take it.
    pub to: Option<String>,
    pub to_name: Option<String>,
    pub model: String,
    /// `chat` or `completion`.
    pub endpoint: String,
    pub status: u16,
    pub latency_ms: u64,
    /// Time until the first byte of the answer reached the client.
    pub ttft_ms: Option<u64>,
    /// Completion tokens: from the answer's usage when it carries one, else counted chunks.
    pub tokens: u32,
    /// Replicas tried (1 = no failover).
    pub attempts: u32,
    pub stream: bool,
    pub error: Option<String>,
    /// Some node of the mesh serves `model`. Metrics label only such models, so a client sending
    /// arbitrary names cannot grow the series count; the log keeps the name as sent.
    #[serde(default = "yes")]
    pub model_known: bool,
    /// A peer's admission check of this node, not a client's request: listed, never counted in
    /// `/metrics` (which describe client traffic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admission_check: bool,
}

fn yes() -> bool {
    true
}

pub struct RequestLog {
    ring: Mutex<(u64, VecDeque<RequestRecord>)>,
    events: broadcast::Sender<RequestRecord>,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self {
            ring: Mutex::new((0, VecDeque::with_capacity(RING_CAPACITY))),
            events: broadcast::channel(256).0,
        }
    }
}

impl RequestLog {
    /// Stores `rec` (its `id` is assigned here) and announces it to live subscribers.
    pub fn push(&self, mut rec: RequestRecord) {
        {
            let mut g = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            g.0 += 1;
            rec.id = g.0;
            if g.1.len() == RING_CAPACITY {
                g.1.pop_front();
            }
            g.1.push_back(rec.clone());
        }
        // No subscriber is normal (no deck attached).
        let _ = self.events.send(rec);
    }

    /// The newest `limit` records, oldest first.
    pub fn tail(&self, limit: usize) -> Vec<RequestRecord> {
        let g = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let skip = g.1.len().saturating_sub(limit);
        g.1.iter().skip(skip).cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RequestRecord> {
        self.events.subscribe()
    }
}

/// Counts completion tokens in an OpenAI response body as it streams past, without buffering it:
/// the `usage.completion_tokens` value when present (non-stream answers, `include_usage`
/// streams), otherwise the number of SSE chunks that carry generated text.
#[derive(Debug, Default)]
pub struct TokenScan {
    /// Unfinished tail of the previous chunk, so a key split across chunks is still found.
    carry: Vec<u8>,
    usage: Option<u32>,
    text_chunks: u32,
}

const USAGE_KEY: &[u8] = b"\"completion_tokens\":";
/// Longest fragment that can still complete into the usage key and its number.
const CARRY_MAX: usize = 64;
/// An unfinished SSE line is carried whole up to this size; a peer sending longer lines only
/// loses the chunk count, never memory.
const CARRY_LINE_MAX: usize = 64 * 1024;

impl TokenScan {
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(bytes);
        let mut consumed = 0;
        // Scan complete lines for SSE text chunks; the remainder is carried.
        while let Some(nl) = memchr::memchr(b'\n', &buf[consumed..]) {
            let line = &buf[consumed..consumed + nl];
            self.scan_line(line);
            consumed += nl + 1;
        }
        let rest = &buf[consumed..];
        // A non-stream body is one long line; search it for usage without waiting for a newline.
        if let Some(n) = find_usage(rest) {
            self.usage = Some(n);
        }
        let keep = if rest.starts_with(b"data:") && rest.len() <= CARRY_LINE_MAX {
            rest.len()
        } else {
            rest.len().min(CARRY_MAX)
        };
        self.carry = rest[rest.len() - keep..].to_vec();
    }

    fn scan_line(&mut self, line: &[u8]) {
        if let Some(n) = find_usage(line) {
            self.usage = Some(n);
        }
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if contains(data, b"\"content\":\"") && !contains(data, b"\"content\":\"\"")
            || contains(data, b"\"text\":\"") && !contains(data, b"\"text\":\"\"")
        {
            self.text_chunks += 1;
        }
    }

    pub fn tokens(&self) -> u32 {
        self.usage.unwrap_or(self.text_chunks)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

fn find_usage(hay: &[u8]) -> Option<u32> {
    let at = memchr::memmem::find(hay, USAGE_KEY)?;
    let digits: Vec<u8> = hay[at + USAGE_KEY.len()..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    // A number cut at the chunk edge is read again, whole, from the carried tail.
    let complete = hay.len() > at + USAGE_KEY.len() + digits.len();
    if digits.is_empty() || !complete {
        return None;
    }
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(model: &str) -> RequestRecord {
        RequestRecord {
            id: 0,
            at_ms: 0,
            from: "a".into(),
            to: Some("b".into()),
            to_name: None,
            model: model.into(),
            endpoint: "chat".into(),
            status: 200,
            latency_ms: 1,
            ttft_ms: None,
            tokens: 0,
            attempts: 1,
            stream: false,
            error: None,
            model_known: true,
            admission_check: false,
        }
    }

    #[test]
    fn ring_is_bounded_and_ids_increase() {
        let log = RequestLog::default();
        for i in 0..RING_CAPACITY + 5 {
            log.push(rec(&format!("m{i}")));
        }
        let all = log.tail(usize::MAX);
        assert_eq!(all.len(), RING_CAPACITY);
        assert_eq!(all[0].id, 6);
        assert_eq!(all.last().unwrap().id, (RING_CAPACITY + 5) as u64);
        let two = log.tail(2);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].model, format!("m{}", RING_CAPACITY + 4));
    }

    fn scan(chunks: &[&str]) -> u32 {
        let mut s = TokenScan::default();
        for c in chunks {
            s.feed(c.as_bytes());
        }
        s.tokens()
    }

    #[test]
    fn usage_wins_in_a_json_body_even_when_split() {
        let body = r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":17,"total_tokens":26}}"#;
        assert_eq!(scan(&[body]), 17);
        for cut in 1..body.len() {
            assert_eq!(scan(&[&body[..cut], &body[cut..]]), 17, "cut at {cut}");
        }
    }

    #[test]
    fn sse_text_chunks_are_counted_without_usage() {
        let sse = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                   data: [DONE]\n\n";
        assert_eq!(scan(&[sse]), 2);
        for cut in 1..sse.len() {
            assert_eq!(scan(&[&sse[..cut], &sse[cut..]]), 2, "cut at {cut}");
        }
    }

    #[test]
    fn sse_usage_chunk_overrides_the_chunk_count() {
        let sse = "data: {\"choices\":[{\"text\":\"a\"}]}\n\n\
                   data: {\"choices\":[],\"usage\":{\"completion_tokens\":5}}\n\n";
        assert_eq!(scan(&[sse]), 5);
    }

    #[test]
    fn garbage_counts_nothing() {
        assert_eq!(scan(&["\u{0}\u{1}nonsense", "\"completion_tokens\":x"]), 0);
    }
}

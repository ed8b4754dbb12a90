//! A minimal Server-Sent Events parser for `/api/events`.
//!
//! Network chunks split lines, UTF-8 sequences and CRLF pairs anywhere, so the parser keeps raw
//! bytes until a full line is seen and remembers a trailing CR so a LF at the start of the next
//! chunk is not read as an extra blank line (which would dispatch a half-built event).

/// One dispatched event. `event` is `"message"` when the stream named none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns every event completed by them, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_done(&line) {
                        out.push(ev);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn line_done(&mut self, raw: &[u8]) -> Option<SseEvent> {
        if raw.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            // Per the spec an event with no data line is not dispatched.
            return data.map(|data| SseEvent {
                event: event.unwrap_or_else(|| "message".to_string()),
                data,
            });
        }
        let line = String::from_utf8_lossy(raw);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // `id` and `retry` steer browser reconnection; the deck has its own backoff.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_named_events_and_default_name() {
        let mut p = SseParser::new();
        let out = p.push(b"event: status\ndata: {\"a\":1}\n\ndata: hi\n\n");
        assert_eq!(out, vec![ev("status", "{\"a\":1}"), ev("message", "hi")]);
    }

    #[test]
    fn survives_arbitrary_chunk_boundaries() {
        let input = "event: log\r\ndata: {\"message\":\"héllo\"}\r\n\r\n: keepalive\n\nevent: request\ndata: 1\n\n";
        let whole = SseParser::new().push(input.as_bytes());
        assert_eq!(whole.len(), 2);
        for split in 1..input.len() {
            let mut p = SseParser::new();
            let (a, b) = input.as_bytes().split_at(split);
            let mut got = p.push(a);
            got.extend(p.push(b));
            assert_eq!(got, whole, "split at {split}");
        }
        assert_eq!(whole[0], ev("log", "{\"message\":\"héllo\"}"));
    }

    #[test]
    fn multiline_data_comments_and_unknown_fields() {
        let mut p = SseParser::new();
        let out = p.push(b": hello\nid: 7\nretry: 10\ndata:a\ndata: b\nbogus\n\n");
        assert_eq!(out, vec![ev("message", "a\nb")]);
    }

    #[test]
    fn bare_cr_line_endings_and_no_data_events() {
        let mut p = SseParser::new();
        assert!(p.push(b"event: x\n\n").is_empty(), "no data, no event");
        let out = p.push(b"data: 1\r\rdata: 2\r\r");
        assert_eq!(out, vec![ev("message", "1"), ev("message", "2")]);
    }

    #[test]
    fn incomplete_event_waits_for_blank_line() {
        let mut p = SseParser::new();
        assert!(p.push(b"event: status\ndata: {}\n").is_empty());
        assert_eq!(p.push(b"\n"), vec![ev("status", "{}")]);
    }
}

//! Incremental Server-Sent Events parsing, shared by the `openai` driver (streamed answers) and
//! the deck (`/api/events`). Pure bytes in, events out: no I/O.
//!
//! HTTP hands the body over in chunks cut at arbitrary byte offsets: in the middle of a line, of a
//! `\r\n` pair, or of a multi-byte UTF-8 character. [`SseParser`] keeps the unfinished line as
//! raw bytes and decodes only complete lines, so the events it yields do not depend on how the
//! body was split.

/// One dispatched event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet terminated.
    line: Vec<u8>,
    /// The last byte seen was `\r`: a `\n` right after it (even in the next chunk) is part of the
    /// same line terminator.
    skip_lf: bool,
    /// Fields of the event being assembled.
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the body; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in chunk {
            if std::mem::take(&mut self.skip_lf) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.skip_lf = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    /// The body ended. A last event without its blank line is still delivered: servers that
    /// close right after `data: [DONE]` would otherwise lose the end-of-stream marker.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut out);
        }
        self.dispatch(&mut out);
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let raw = std::mem::take(&mut self.line);
        if raw.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = String::from_utf8_lossy(&raw);
        if line.starts_with(':') {
            return; // comment, used by servers as keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            // `id` and `retry` steer reconnection, which a one-shot inference never does.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            out.push(SseEvent { event, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    fn parse_in(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out: Vec<SseEvent> = pieces.iter().flat_map(|c| p.push(c)).collect();
        out.extend(p.finish());
        out
    }

    const BODY: &str = "data: {\"a\":\"h\u{e9}llo\"}\r\n\r\n: keep-alive\n\nevent: error\ndata: {\"x\":1}\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: None,
                data: "{\"a\":\"h\u{e9}llo\"}".into(),
            },
            SseEvent {
                event: Some("error".into()),
                data: "{\"x\":1}".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn every_two_way_split_yields_the_same_events() {
        let bytes = BODY.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(parse_in(&[a, b]), expected(), "split at byte {cut}");
        }
    }

    #[test]
    fn byte_at_a_time_yields_the_same_events() {
        let pieces: Vec<&[u8]> = BODY.as_bytes().chunks(1).collect();
        assert_eq!(parse_in(&pieces), expected());
    }

    #[test]
    fn events_are_released_as_soon_as_their_blank_line_arrives() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: one").is_empty());
        assert!(p.push(b"\n").is_empty());
        assert_eq!(data(&p.push(b"\ndata: tw")), ["one"]);
        assert_eq!(data(&p.push(b"o\n\n")), ["two"]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let events = parse_in(&[b"data: a\ndata:b\ndata\n\n"]);
        assert_eq!(data(&events), ["a\nb\n"]);
    }

    #[test]
    fn bare_cr_terminates_lines_too() {
        assert_eq!(
            data(&parse_in(&[b"data: a\r\rdata: b\r", b"\r"])),
            ["a", "b"]
        );
    }

    #[test]
    fn a_last_event_without_blank_line_is_delivered_at_the_end() {
        assert_eq!(
            data(&parse_in(&[b"data: x\n\ndata: [DONE]"])),
            ["x", "[DONE]"]
        );
    }

    #[test]
    fn comments_ids_and_empty_events_yield_nothing() {
        assert!(parse_in(&[b": ping\n\nid: 3\nretry: 10\n\n\n\n"]).is_empty());
    }
}

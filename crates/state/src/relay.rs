//! Relaying an OpenAI-compatible server's event stream without decoding it: cut at event
//! boundaries, with only the `model` a chunk names set to the name the mesh serves it under
//! (servers report an alias or their file path there). Pure bytes in, bytes out.

/// Splits a byte stream into whole SSE events (each ending with its blank line), however the
/// transport cut it. An event longer than `max` is not held: [`Events::push`] says so.
#[derive(Debug, Default)]
pub struct Events {
    buf: Vec<u8>,
}

/// `buf` holds more than this many bytes of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

impl Events {
    /// Adds `bytes` and returns the events they completed, in order.
    pub fn push(&mut self, bytes: &[u8], max: usize) -> Result<Vec<Vec<u8>>, TooLong> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(n) = event_len(&self.buf[at..]) {
            out.push(self.buf[at..at + n].to_vec());
            at += n;
        }
        // One move of what is left, however many events this chunk held.
        self.buf.drain(..at);
        if self.buf.len() > max {
            return Err(TooLong);
        }
        Ok(out)
    }

    /// What is left when the stream ends: a last event without its blank line.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// The length of the first whole event at the start of `buf`, its blank line (`\n\n` or
/// `\r\n\r\n`) included; `None` while it is incomplete. One pass over the bytes.
pub fn event_len(buf: &[u8]) -> Option<usize> {
    buf.iter().enumerate().find_map(|(i, b)| {
        if *b != b'\n' {
            return None;
        }
        if buf.get(i + 1) == Some(&b'\n') {
            return Some(i + 2);
        }
        (i >= 1 && buf[i - 1] == b'\r' && buf.get(i + 1..i + 3) == Some(&b"\r\n"[..]))
            .then_some(i + 3)
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `data` of an event, when it has one `data:` line.
pub fn data(event: &[u8]) -> Option<&[u8]> {
    let line = event.strip_prefix(b"data:")?;
    let line = line.strip_prefix(b" ").unwrap_or(line);
    let end = line
        .iter()
        .position(|b| *b == b'\n' || *b == b'\r')
        .unwrap_or(line.len());
    Some(&line[..end])
}

/// `event` with the string value of its first `"model"` key set to `name`; `None` when it has
/// none or already says `name`. Safe on JSON because a quote inside a string is always escaped:
/// an unescaped `"model"` followed by `:` is a key.
pub fn set_model(event: &[u8], name: &str) -> Option<Vec<u8>> {
    let key = find(event, b"\"model\"")?;
    let mut i = key + b"\"model\"".len();
    while event.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if event.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while event.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if event.get(i) != Some(&b'"') {
        return None;
    }
    let start = i;
    let mut j = i + 1;
    loop {
        match event.get(j)? {
            b'\\' => j += 2,
            b'"' => break,
            _ => j += 1,
        }
    }
    let quoted = serde_json::to_string(name).ok()?;
    if &event[start..=j] == quoted.as_bytes() {
        return None;
    }
    let mut out = Vec::with_capacity(event.len() + quoted.len());
    out.extend_from_slice(&event[..start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&event[j + 1..]);
    Some(out)
}

/// The events of a whole answer from a server that ignored `stream: true`: one chunk with the
/// whole message (or text), one usage chunk when asked for, `[DONE]`.
pub fn whole_as_events(answer: &serde_json::Value, include_usage: bool) -> Vec<Vec<u8>> {
    use serde_json::{json, Value};
    let chat = answer["object"] != "text_completion" && answer["choices"][0]["text"].is_null();
    let choices: Vec<Value> = answer["choices"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let mut c = c.clone();
                    if let (true, Some(o)) = (chat, c.as_object_mut()) {
                        if let Some(m) = o.remove("message") {
                            o.insert("delta".into(), m);
                        }
                    }
                    c
                })
                .collect()
        })
        .unwrap_or_default();
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({"id": answer["id"], "object": object, "created": answer["created"],
                           "model": answer["model"], "choices": choices});
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n").into_bytes()
    };
    let mut out = vec![chunk(Value::Array(choices), None)];
    if include_usage && !answer["usage"].is_null() {
        out.push(chunk(json!([]), Some(&answer["usage"])));
    }
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"data: {\"id\":\"x\",\"model\":\"/m/smol.gguf\",\"choices\":[]}\n\n";
    const B: &[u8] = b": keep-alive\n\n";
    const C: &[u8] = b"data: [DONE]\n\n";

    #[test]
    fn events_come_out_whole_however_the_stream_is_cut() {
        let all = [A, B, C].concat();
        for cut in 0..=all.len() {
            let mut e = Events::default();
            let mut got = e.push(&all[..cut], 1 << 20).unwrap();
            got.extend(e.push(&all[cut..], 1 << 20).unwrap());
            assert_eq!(
                got,
                vec![A.to_vec(), B.to_vec(), C.to_vec()],
                "cut at {cut}"
            );
            assert_eq!(e.finish(), None);
        }
    }

    #[test]
    fn crlf_events_and_a_last_event_without_its_blank_line() {
        let mut e = Events::default();
        let got = e.push(b"data: 1\r\n\r\ndata: 2", 1 << 20).unwrap();
        assert_eq!(got, vec![b"data: 1\r\n\r\n".to_vec()]);
        assert_eq!(e.finish(), Some(b"data: 2".to_vec()));
        assert_eq!(data(b"data: 1\r\n\r\n"), Some(&b"1"[..]));
        assert_eq!(data(b": comment\n\n"), None);
    }

    #[test]
    fn event_len_finds_either_blank_line() {
        assert_eq!(event_len(b"data: 1\n\ndata: 2\n\n"), Some(9));
        assert_eq!(event_len(b"data: 1\r\n\r\nx"), Some(11));
        assert_eq!(event_len(b"data: 1\n"), None);
        assert_eq!(event_len(b"data: 1\r\n\r"), None);
    }

    #[test]
    fn an_event_that_never_ends_is_refused_not_held() {
        let mut e = Events::default();
        assert_eq!(e.push(&[b'x'; 100], 64), Err(TooLong));
    }

    #[test]
    fn a_whole_answer_becomes_one_chunk_then_usage_then_done() {
        let answer = serde_json::json!({"id": "a", "object": "chat.completion", "created": 1,
            "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi"}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}});
        let ev = whole_as_events(&answer, true);
        assert_eq!(ev.len(), 3);
        let first: serde_json::Value = serde_json::from_slice(data(&ev[0]).unwrap()).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(first["choices"][0]["finish_reason"], "stop");
        assert!(String::from_utf8_lossy(&ev[1]).contains("\"completion_tokens\":1"));
        assert_eq!(ev[2], b"data: [DONE]\n\n");
        assert_eq!(whole_as_events(&answer, false).len(), 2);
        let text = serde_json::json!({"object": "text_completion",
            "choices": [{"index": 0, "text": "Once", "finish_reason": "length"}]});
        let t: serde_json::Value =
            serde_json::from_slice(data(&whole_as_events(&text, false)[0]).unwrap()).unwrap();
        assert_eq!(t["choices"][0]["text"], "Once");
    }

    #[test]
    fn the_model_is_set_and_nothing_else_changes() {
        let out = set_model(A, "smol").unwrap();
        assert_eq!(
            out,
            b"data: {\"id\":\"x\",\"model\":\"smol\",\"choices\":[]}\n\n".to_vec()
        );
        assert_eq!(set_model(&out, "smol"), None, "already the name");
        // Spaces around the colon, escapes inside the old value, quotes in the new one.
        let spaced = b"data: {\"model\" : \"a\\\"b\", \"x\": 1}\n\n";
        assert_eq!(
            set_model(spaced, "q\"m").unwrap(),
            b"data: {\"model\" : \"q\\\"m\", \"x\": 1}\n\n".to_vec()
        );
        // Text that mentions a model inside a string is escaped, so it is never taken for the key.
        let content =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"model\\\": \\\"x\\\"\"}}]}\n\n";
        assert_eq!(set_model(content, "smol"), None);
        assert_eq!(set_model(B, "smol"), None);
    }
}

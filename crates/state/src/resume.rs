//! Mid-stream failover, the pure half: what a client has received of a streamed OpenAI answer
//! (its text, how many chunks carried it, the stream's id), and how the chunks of the replica
//! that continues it are made to read as the same stream. No I/O: the router feeds it the `data`
//! of each event it relayed.

use serde_json::Value;

/// What one relayed event's `data` is, as far as failover cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// `[DONE]`: the stream is complete.
    Done,
    /// An error the node reported in-band (its backend failed mid-answer): the answer is not
    /// complete and the client must not see this if another replica can finish it.
    Error,
    /// An answer chunk.
    Chunk,
}

/// Classifies `data` without parsing it: our nodes write `{"error":…}` for in-band errors.
pub fn classify(data: &str) -> Data {
    let d = data.trim_start();
    if d == "[DONE]" {
        Data::Done
    } else if d.starts_with("{\"error\"") {
        Data::Error
    } else {
        Data::Chunk
    }
}

/// The first choice of a chunk: its text (a chat delta's `content`, or a completion's `text`) and
/// whether it carries a finish reason.
fn first_choice(v: &Value) -> (Option<&str>, bool) {
    let c = &v["choices"][0];
    let text = c["delta"]["content"]
        .as_str()
        .or_else(|| c["text"].as_str());
    (text, !c["finish_reason"].is_null())
}

/// What the client has of the answer so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    /// The stream's `id` and `created`, which every later chunk must repeat.
    pub id: Value,
    pub created: Value,
    pub text: String,
    /// Chunks that carried text (each about one token).
    pub chunks: u32,
    /// A chunk said how the answer finished: only the closing usage or `[DONE]` were lost.
    pub finished: bool,
    /// The answer is calling tools: a call half sent cannot be continued as text.
    pub tool_calls: bool,
}

impl Transcript {
    /// Reads the chunks relayed so far, oldest first. Events that are not JSON chunks are
    /// skipped: they carried no text.
    pub fn of<'a>(datas: impl IntoIterator<Item = &'a str>) -> Transcript {
        let mut t = Transcript::default();
        for data in datas {
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if t.id.is_null() {
                t.id = v["id"].clone();
                t.created = v["created"].clone();
            }
            let (text, finished) = first_choice(&v);
            if let Some(text) = text.filter(|s| !s.is_empty()) {
                t.text.push_str(text);
                t.chunks += 1;
            }
            t.finished |= finished;
            t.tool_calls |= !v["choices"][0]["delta"]["tool_calls"].is_null();
        }
        t
    }
}

/// Rewrites a continuing replica's chunks so they read as the stream the client already has:
/// the same `id` and `created`, and no second opening chunk (the role announcement, or an empty
/// first text).
#[derive(Debug, Clone)]
pub struct Stitch {
    id: Value,
    created: Value,
    opened: bool,
}

impl Stitch {
    pub fn new(t: &Transcript) -> Stitch {
        Stitch {
            id: t.id.clone(),
            created: t.created.clone(),
            opened: false,
        }
    }

    /// The `data` to relay for the replica's `data`, or `None` to drop it. Data that is not a
    /// JSON object goes through as it came.
    pub fn rewrite(&mut self, data: &str) -> Option<String> {
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(data) else {
            return Some(data.to_string());
        };
        let v = Value::Object(chunk.clone());
        let (text, finished) = first_choice(&v);
        let opening = !self.opened
            && text.is_none_or(str::is_empty)
            && !finished
            && v["usage"].is_null()
            && v["choices"][0]["logprobs"].is_null();
        self.opened = true;
        if opening {
            return None;
        }
        if !self.id.is_null() {
            chunk.insert("id".into(), self.id.clone());
        }
        if !self.created.is_null() {
            chunk.insert("created".into(), self.created.clone());
        }
        Some(Value::Object(chunk).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(id: &str, content: Option<&str>, finish: Option<&str>) -> String {
        let delta = match content {
            Some(c) => json!({"content": c}),
            None => json!({}),
        };
        json!({"id": id, "object": "chat.completion.chunk", "created": 7, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }

    fn opening(id: &str) -> String {
        json!({"id": id, "created": 9, "choices": [{"index": 0,
               "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
        .to_string()
    }

    #[test]
    fn classify_tells_done_errors_and_chunks_apart() {
        assert_eq!(classify("[DONE]"), Data::Done);
        assert_eq!(classify(r#"{"error":{"message":"x"}}"#), Data::Error);
        assert_eq!(classify(&chat("a", Some("x"), None)), Data::Chunk);
        // A chunk whose text mentions errors is still a chunk.
        assert_eq!(classify(&chat("a", Some("{\"error\""), None)), Data::Chunk);
    }

    #[test]
    fn a_transcript_holds_the_text_the_chunks_and_the_id() {
        let datas = [
            opening("s1"),
            chat("s1", Some("The"), None),
            ": not json".to_string(),
            chat("s1", Some(" quick"), None),
        ];
        let t = Transcript::of(datas.iter().map(String::as_str));
        assert_eq!(t.text, "The quick");
        assert_eq!(t.chunks, 2);
        assert_eq!(t.id, json!("s1"));
        assert_eq!(t.created, json!(9));
        assert!(!t.finished);
        assert!(!t.tool_calls);
        let mut done = datas.to_vec();
        done.push(chat("s1", None, Some("stop")));
        assert!(Transcript::of(done.iter().map(String::as_str)).finished);
        let call = json!({"id": "s1", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{"}}]}}]})
        .to_string();
        assert!(Transcript::of([call.as_str()]).tool_calls);
    }

    #[test]
    fn completions_text_counts_too() {
        let d = json!({"id": "c", "created": 1, "choices": [{"index": 0, "text": "Once",
                        "finish_reason": null}]})
        .to_string();
        let t = Transcript::of([d.as_str()]);
        assert_eq!((t.text.as_str(), t.chunks), ("Once", 1));
    }

    #[test]
    fn the_continuation_reads_as_the_same_stream() {
        let t = Transcript::of([opening("s1").as_str()]);
        let mut s = Stitch::new(&t);
        assert_eq!(s.rewrite(&opening("s2")), None, "no second opening");
        let c: Value =
            serde_json::from_str(&s.rewrite(&chat("s2", Some(" fox"), None)).unwrap()).unwrap();
        assert_eq!(c["id"], "s1");
        assert_eq!(c["created"], 9);
        assert_eq!(c["choices"][0]["delta"]["content"], " fox");
        // Only the first chunk may be an opening; a later empty one (held-back logprobs) stays.
        assert!(s.rewrite(&chat("s2", Some(""), None)).is_some());
        assert_eq!(s.rewrite("[DONE]").as_deref(), Some("[DONE]"));
    }

    #[test]
    fn a_continuation_whose_first_chunk_has_text_loses_nothing() {
        let t = Transcript::of([chat("s1", Some("a"), None).as_str()]);
        let mut s = Stitch::new(&t);
        let c = s.rewrite(&chat("s2", Some("b"), None)).unwrap();
        assert!(c.contains("\"b\"") && c.contains("\"s1\""));
    }
}

//! `n > 1`, the wire part (pure): a request for `n` choices is answered by `n` sub-requests of one
//! choice each, which the router sends like any request, so they run side by side in the
//! engine's slots and across replicas. Here: the sub-requests' bodies, and the merge of their
//! answers into one answer (or one stream) in OpenAI's shape.

use serde_json::{json, Map, Value};

/// The most choices one request may ask for: each is a full generation.
pub const MAX_N: u8 = 8;

/// The body of sub-request `i` of `n`: `n` removed, and a `seed` moved to `seed + i`, so the
/// choices differ from each other (at a temperature above 0) and stay reproducible.
pub fn sub_body(body: &Value, i: u8) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("n");
        if let Some(seed) = o.get("seed").and_then(Value::as_i64) {
            o.insert("seed".into(), json!(seed.wrapping_add(i64::from(i))));
        }
    }
    b
}

/// Token counts over the sub-answers: the prompt is one prompt (the same in every sub-request),
/// the completion tokens add up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tokens {
    prompt: u64,
    completion: u64,
    seen: bool,
}

impl Tokens {
    fn add(&mut self, usage: &Value) {
        if !usage.is_object() {
            return;
        }
        self.seen = true;
        let get = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.prompt = self.prompt.max(get("prompt_tokens"));
        self.completion += get("completion_tokens");
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        })
    }
}

fn reindex(choices: Vec<Value>, index: usize) -> impl Iterator<Item = Value> {
    choices.into_iter().map(move |mut c| {
        if let Some(o) = c.as_object_mut() {
            o.insert("index".into(), json!(index));
        }
        c
    })
}

fn take_choices(o: &mut Map<String, Value>) -> Vec<Value> {
    match o.remove("choices") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

/// One non-streamed answer from the sub-answers, in sub-request order: the first answer's `id`,
/// `model` and `created`, every choice with its index, and the usage of all.
pub fn merge_answers(answers: Vec<Value>) -> Result<Value, String> {
    let mut tokens = Tokens::default();
    let mut choices = Vec::new();
    let mut head: Option<Map<String, Value>> = None;
    for (i, answer) in answers.into_iter().enumerate() {
        let Value::Object(mut o) = answer else {
            return Err(format!("answer {i} is not a JSON object"));
        };
        if let Some(u) = o.get("usage") {
            tokens.add(u);
        }
        choices.extend(reindex(take_choices(&mut o), i));
        head.get_or_insert(o);
    }
    let mut out = head.ok_or("no answers to merge")?;
    out.insert("choices".into(), Value::Array(choices));
    if tokens.seen {
        out.insert("usage".into(), tokens.usage());
    }
    Ok(Value::Object(out))
}

/// Merges `n` streams' chunks into one stream, chunk by chunk as they arrive.
#[derive(Debug, Default)]
pub struct StreamMerge {
    id: Option<String>,
    tokens: Tokens,
    /// The first usage-only chunk, kept as the model of the one sent at the end.
    usage_chunk: Option<Map<String, Value>>,
}

impl StreamMerge {
    /// Chunk `data` of sub-stream `i`, rewritten for the merged stream: its choices carry index
    /// `i` and every chunk the first chunk's `id`. `None`: nothing to send now (the sub-stream's
    /// own `[DONE]`, or its usage, which [`StreamMerge::trailer`] sends for all).
    pub fn chunk(&mut self, i: usize, data: &str) -> Option<String> {
        if data.trim() == "[DONE]" {
            return None;
        }
        let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(data) else {
            // Not a chunk (an error event, say): passed on as it came.
            return Some(data.to_string());
        };
        if let Some(u) = o.remove("usage").filter(|u| !u.is_null()) {
            self.tokens.add(&u);
        }
        let choices = take_choices(&mut o);
        if choices.is_empty() {
            self.usage_chunk.get_or_insert(o);
            return None;
        }
        match (&self.id, o.get("id").and_then(Value::as_str)) {
            (None, Some(id)) => self.id = Some(id.to_string()),
            (Some(id), Some(_)) => {
                o.insert("id".into(), json!(id));
            }
            _ => {}
        }
        o.insert(
            "choices".into(),
            Value::Array(reindex(choices, i).collect()),
        );
        Some(Value::Object(o).to_string())
    }

    /// What ends the merged stream: one usage chunk for all choices when the sub-streams sent
    /// usage (the client asked for it), then `[DONE]`.
    pub fn trailer(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (true, Some(head)) = (self.tokens.seen, &self.usage_chunk) {
            let mut o = head.clone();
            if let Some(id) = &self.id {
                o.insert("id".into(), json!(id));
            }
            o.insert("choices".into(), json!([]));
            o.insert("usage".into(), self.tokens.usage());
            out.push(Value::Object(o).to_string());
        }
        out.push("[DONE]".into());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_bodies_drop_n_and_step_the_seed() {
        let body = json!({"model": "m", "n": 3, "seed": 7, "messages": []});
        assert_eq!(
            sub_body(&body, 0),
            json!({"model": "m", "seed": 7, "messages": []})
        );
        assert_eq!(sub_body(&body, 2)["seed"], 9);
        let unseeded = sub_body(&json!({"model": "m", "n": 2}), 1);
        assert_eq!(unseeded, json!({"model": "m"}));
    }

    #[test]
    fn answers_merge_into_indexed_choices_and_summed_usage() {
        let answer = |text: &str, done: u64| {
            json!({"id": format!("chatcmpl-{text}"), "object": "chat.completion", "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": done, "total_tokens": 5 + done}})
        };
        let merged = merge_answers(vec![answer("a", 2), answer("b", 3)]).unwrap();
        assert_eq!(merged["id"], "chatcmpl-a");
        assert_eq!(merged["choices"][0]["index"], 0);
        assert_eq!(merged["choices"][1]["index"], 1);
        assert_eq!(merged["choices"][1]["message"]["content"], "b");
        assert_eq!(
            merged["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
        );
        assert!(merge_answers(Vec::new()).is_err());
        assert!(merge_answers(vec![json!([1])]).is_err());
        let no_usage =
            merge_answers(vec![json!({"choices": [{"index": 0, "text": "x"}]})]).unwrap();
        assert!(no_usage.get("usage").is_none());
    }

    #[test]
    fn streams_merge_chunk_by_chunk_with_one_usage_and_one_done() {
        let mut m = StreamMerge::default();
        let chunk = |id: &str, text: &str| {
            json!({"id": id, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": text}}]})
            .to_string()
        };
        let first: Value = serde_json::from_str(&m.chunk(0, &chunk("s0", "Hi")).unwrap()).unwrap();
        assert_eq!(first["choices"][0]["index"], 0);
        let second: Value = serde_json::from_str(&m.chunk(1, &chunk("s1", "Yo")).unwrap()).unwrap();
        assert_eq!(second["choices"][0]["index"], 1);
        assert_eq!(second["id"], "s0", "one stream, one id");
        let usage = |done: u64| {
            json!({"id": "x", "object": "chat.completion.chunk", "choices": [],
                   "usage": {"prompt_tokens": 4, "completion_tokens": done}})
            .to_string()
        };
        assert_eq!(m.chunk(0, &usage(2)), None);
        assert_eq!(m.chunk(1, &usage(6)), None);
        assert_eq!(m.chunk(0, "[DONE]"), None);
        assert_eq!(m.chunk(1, " [DONE] "), None);
        let tail = m.trailer();
        assert_eq!(tail.len(), 2);
        let u: Value = serde_json::from_str(&tail[0]).unwrap();
        assert_eq!(u["usage"]["completion_tokens"], 8);
        assert_eq!(u["usage"]["total_tokens"], 12);
        assert_eq!(u["id"], "s0");
        assert_eq!(tail[1], "[DONE]");
        // Not a chunk: passed on untouched.
        assert_eq!(m.chunk(0, "oops").as_deref(), Some("oops"));
    }

    #[test]
    fn a_stream_without_usage_ends_with_done_only() {
        let mut m = StreamMerge::default();
        m.chunk(0, r#"{"id":"a","choices":[{"index":0,"text":"x"}]}"#);
        assert_eq!(m.trailer(), vec!["[DONE]".to_string()]);
    }
}

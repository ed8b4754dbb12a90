//! Streamed completion chunks → [`InferEvent`]s.
//!
//! Chat (`choices[0].delta.content`) and legacy completions (`choices[0].text`) streams are
//! decoded alike. The single `Done` is emitted at `data: [DONE]`, not at the chunk carrying
//! `finish_reason`, because with `include_usage` the token counts arrive in a later chunk.

use serde_json::Value;

use crate::api::BackendError;
use crate::openai::wire::stream_error;
use crate::types::{FinishReason, InferEvent, TokenLogprob, Usage};

/// Decoding state of one response. Time is passed in (milliseconds since the request was sent)
/// so the decoder stays a pure function of its input.
#[derive(Debug)]
pub struct StreamDecoder {
    model: String,
    url: String,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// llama.cpp's own `timings`, more precise than what the client can measure.
    timings: Option<(f64, f64)>,
    first_text_ms: Option<f64>,
    text_chunks: u32,
    /// Chunks of a continued answer that an earlier node sent (see [`Self::continuing`]).
    continued: u32,
    /// The continued text, while the remote may still be sending it back.
    echo: Option<Echo>,
    done: bool,
}

/// A continued answer's start, as some servers send it back before what they generate
/// (llama-server re-sends a prefilled assistant message whole): held until it is known to be
/// that echo, then dropped; a server that does not echo loses nothing.
#[derive(Debug)]
struct Echo {
    prefix: String,
    held: String,
}

impl Echo {
    /// The text to pass on now, and whether the echo question is settled.
    fn feed(&mut self, t: &str) -> (String, bool) {
        self.held.push_str(t);
        if self.held.len() >= self.prefix.len() {
            let held = std::mem::take(&mut self.held);
            return match held.strip_prefix(self.prefix.as_str()) {
                Some(rest) => (rest.to_string(), true),
                None => (held, true),
            };
        }
        if self.prefix.starts_with(self.held.as_str()) {
            (String::new(), false)
        } else {
            (std::mem::take(&mut self.held), true)
        }
    }
}

impl StreamDecoder {
    pub fn new(model: &str, url: &str) -> Self {
        Self {
            model: model.to_string(),
            url: url.to_string(),
            finish: None,
            usage: None,
            timings: None,
            first_text_ms: None,
            text_chunks: 0,
            continued: 0,
            echo: None,
            done: false,
        }
    }

    /// The remote continues `c`, an answer begun elsewhere: it reads that text as prompt (the
    /// usage reported moves its chunks back to the completion), and may send it back first.
    pub fn continuing(mut self, c: Option<&crate::types::Continuation>) -> Self {
        if let Some(c) = c {
            self.continued = c.chunks;
            self.echo = (!c.text.is_empty()).then(|| Echo {
                prefix: c.text.clone(),
                held: String::new(),
            });
        }
        self
    }

    /// `Done` was emitted; anything the remote sends afterwards is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decodes one SSE `data` payload.
    pub fn feed(&mut self, data: &str, at_ms: f64) -> Result<Vec<InferEvent>, BackendError> {
        if self.done {
            return Ok(Vec::new());
        }
        if data.trim() == "[DONE]" {
            return Ok(vec![self.done_event(at_ms)]);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            BackendError::Failed(format!(
                "{} sent an unreadable stream chunk ({e}): {}",
                self.url,
                data.chars().take(200).collect::<String>()
            ))
        })?;
        if !chunk["error"].is_null() {
            return Err(stream_error(&chunk, &self.model, &self.url));
        }
        let mut events = Vec::new();
        if let Some(choice) = chunk["choices"].get(0) {
            // `message.content` covers a server that ignored `stream` and sent one whole answer.
            let text = [
                &choice["delta"]["content"],
                &choice["text"],
                &choice["message"]["content"],
            ]
            .into_iter()
            .find_map(Value::as_str)
            .unwrap_or("");
            let lps = logprobs(&choice["logprobs"]);
            if !lps.is_empty() {
                events.push(InferEvent::Logprobs(lps));
            }
            let text = match self.echo.as_mut() {
                Some(echo) if !text.is_empty() => {
                    let (out, settled) = echo.feed(text);
                    if settled {
                        self.echo = None;
                    }
                    out
                }
                _ => text.to_string(),
            };
            if !text.is_empty() {
                self.first_text_ms.get_or_insert(at_ms);
                self.text_chunks += 1;
                events.push(InferEvent::Text(text));
            }
            if let Some(calls) = choice["delta"]["tool_calls"]
                .as_array()
                .filter(|c| !c.is_empty())
            {
                self.first_text_ms.get_or_insert(at_ms);
                events.push(InferEvent::ToolCalls(Value::Array(calls.clone())));
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish = Some(finish_reason(reason));
            }
        }
        if let Some(u) = chunk["usage"].as_object() {
            let count = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
            self.usage = Some(Usage {
                prompt_tokens: count("prompt_tokens"),
                completion_tokens: count("completion_tokens"),
            });
        }
        let t = &chunk["timings"];
        if let (Some(p), Some(g)) = (t["prompt_ms"].as_f64(), t["predicted_ms"].as_f64()) {
            self.timings = Some((p, g));
        }
        Ok(events)
    }

    /// The body ended. Without `[DONE]`, a stream that at least reported how it finished is
    /// complete (some servers just close); one that did not was cut off.
    pub fn finish(&mut self, at_ms: f64) -> Result<Option<InferEvent>, BackendError> {
        if self.done {
            return Ok(None);
        }
        if self.finish.is_some() {
            return Ok(Some(self.done_event(at_ms)));
        }
        Err(BackendError::Failed(format!(
            "{} closed the stream before the completion finished",
            self.url
        )))
    }

    fn done_event(&mut self, at_ms: f64) -> InferEvent {
        self.done = true;
        let (prompt_ms, gen_ms) = self.timings.unwrap_or_else(|| {
            let first = self.first_text_ms.unwrap_or(at_ms);
            (first, at_ms - first)
        });
        InferEvent::Done {
            finish_reason: self.finish.unwrap_or(FinishReason::Stop),
            // A server that ignores `include_usage` still streams about one token per chunk;
            // the prompt size it never said is left at zero rather than guessed.
            usage: self
                .usage
                .map(|u| Usage {
                    prompt_tokens: u.prompt_tokens.saturating_sub(self.continued),
                    completion_tokens: u.completion_tokens + self.continued,
                })
                .unwrap_or(Usage {
                    prompt_tokens: 0,
                    completion_tokens: self.text_chunks + self.continued,
                }),
            prompt_ms,
            gen_ms,
        }
    }
}

/// A chunk's token log-probabilities, in either shape servers send: chat's
/// `{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}`, or the
/// legacy completions' parallel lists `{tokens, token_logprobs, top_logprobs: [{token: lp}]}`.
/// Entries without a token or a number are skipped, not invented.
fn logprobs(v: &Value) -> Vec<TokenLogprob> {
    fn bytes_of(e: &Value, token: &str) -> Vec<u8> {
        e["bytes"]
            .as_array()
            .map(|b| {
                b.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as u8))
                    .collect()
            })
            .unwrap_or_else(|| token.as_bytes().to_vec())
    }
    if let Some(content) = v["content"].as_array() {
        return content
            .iter()
            .filter_map(|e| {
                let token = e["token"].as_str()?;
                let top = e["top_logprobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| {
                        let tok = t["token"].as_str()?;
                        Some((
                            tok.to_string(),
                            bytes_of(t, tok),
                            t["logprob"].as_f64()? as f32,
                        ))
                    })
                    .collect();
                Some(TokenLogprob {
                    token: token.to_string(),
                    bytes: bytes_of(e, token),
                    logprob: e["logprob"].as_f64()? as f32,
                    top,
                })
            })
            .collect();
    }
    let (Some(tokens), Some(lps)) = (v["tokens"].as_array(), v["token_logprobs"].as_array()) else {
        return Vec::new();
    };
    let tops = v["top_logprobs"].as_array();
    tokens
        .iter()
        .zip(lps)
        .enumerate()
        .filter_map(|(i, (t, lp))| {
            let token = t.as_str()?;
            let mut top: Vec<_> = tops
                .and_then(|a| a.get(i))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(tok, lp)| {
                    Some((tok.clone(), tok.as_bytes().to_vec(), lp.as_f64()? as f32))
                })
                .collect();
            // A JSON object has no order: most likely first, as the chat shape lists them.
            top.sort_by(|a, b| b.2.total_cmp(&a.2));
            Some(TokenLogprob {
                token: token.to_string(),
                bytes: token.as_bytes().to_vec(),
                logprob: lp.as_f64()? as f32,
                top,
            })
        })
        .collect()
}

/// `length` is the only reason a client must treat differently (the answer was cut short);
/// `stop`, `eos`, `tool_calls`, `content_filter` all mean the model ended the answer itself.
pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dec() -> StreamDecoder {
        StreamDecoder::new("m", "http://h/v1")
    }

    fn text(events: &[InferEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                InferEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn chat_stream_with_usage_chunk_decodes_to_text_then_one_done() {
        let mut d = dec();
        let mut events = Vec::new();
        let payloads = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#,
            "[DONE]",
        ];
        for (i, p) in payloads.iter().enumerate() {
            events.extend(d.feed(p, 10.0 * (i as f64 + 1.0)).unwrap());
        }
        assert_eq!(text(&events), "Hello");
        assert_eq!(
            events.last().unwrap(),
            &InferEvent::Done {
                finish_reason: FinishReason::Length,
                usage: Usage {
                    prompt_tokens: 12,
                    completion_tokens: 2
                },
                prompt_ms: 20.0,
                gen_ms: 40.0,
            }
        );
        assert!(d.is_done());
        assert_eq!(d.feed(r#"{"choices":[{"text":"late"}]}"#, 70.0), Ok(vec![]));
        assert_eq!(d.finish(80.0), Ok(None));
    }

    #[test]
    fn completions_text_and_llama_cpp_timings_are_used() {
        let mut d = dec();
        let a = d
            .feed(r#"{"choices":[{"text":"Once","finish_reason":null}]}"#, 5.0)
            .unwrap();
        assert_eq!(a, vec![InferEvent::Text("Once".into())]);
        d.feed(
            r#"{"choices":[{"text":"","finish_reason":"stop"}],"timings":{"prompt_ms":1.5,"predicted_ms":9.25}}"#,
            6.0,
        )
        .unwrap();
        match d.feed("[DONE]", 7.0).unwrap().as_slice() {
            [InferEvent::Done {
                finish_reason,
                usage,
                prompt_ms,
                gen_ms,
            }] => {
                assert_eq!(*finish_reason, FinishReason::Stop);
                // No usage chunk: completion tokens estimated from the chunks streamed.
                assert_eq!(
                    *usage,
                    Usage {
                        prompt_tokens: 0,
                        completion_tokens: 1
                    }
                );
                assert_eq!((*prompt_ms, *gen_ms), (1.5, 9.25));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_payload_mid_stream_is_an_error() {
        let mut d = dec();
        let err = d
            .feed(
                r#"{"error":{"message":"context size exceeded","code":400}}"#,
                1.0,
            )
            .unwrap_err();
        assert_eq!(
            err,
            BackendError::BadRequest("context size exceeded".into())
        );
        let err = dec().feed(r#"{"error":"kaput"}"#, 1.0).unwrap_err();
        assert_eq!(
            err,
            BackendError::Failed("http://h/v1 failed mid-stream: kaput".into())
        );
    }

    #[test]
    fn garbage_chunk_is_a_clear_error() {
        match dec().feed("{not json", 1.0) {
            Err(BackendError::Failed(m)) => {
                assert!(m.contains("unreadable stream chunk") && m.contains("{not json"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn end_of_body_without_done_marker() {
        let mut d = dec();
        d.feed(r#"{"choices":[{"delta":{"content":"x"}}]}"#, 1.0)
            .unwrap();
        assert!(
            matches!(d.finish(2.0), Err(BackendError::Failed(m)) if m.contains("closed the stream"))
        );

        let mut d = dec();
        d.feed(
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
            1.0,
        )
        .unwrap();
        assert!(matches!(d.finish(2.0), Ok(Some(InferEvent::Done { .. }))));
    }

    #[test]
    fn a_continued_answer_counts_the_text_sent_before_as_completion() {
        let c = crate::types::Continuation {
            text: String::new(),
            chunks: 5,
        };
        let mut d = dec().continuing(Some(&c));
        d.feed(
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2}}"#,
            1.0,
        )
        .unwrap();
        let Ok(Some(InferEvent::Done { usage, .. })) = d.finish(2.0) else {
            panic!("a finished stream ends with Done")
        };
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 7,
                completion_tokens: 7
            }
        );
    }

    fn texts(d: &mut StreamDecoder, pieces: &[&str]) -> String {
        pieces
            .iter()
            .flat_map(|p| {
                let data = json!({"choices": [{"delta": {"content": p}}]}).to_string();
                d.feed(&data, 1.0).unwrap()
            })
            .map(|e| match e {
                InferEvent::Text(t) => t,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn an_echoed_continuation_is_dropped_and_a_fresh_one_kept() {
        let c = crate::types::Continuation {
            text: "The sea is".into(),
            chunks: 3,
        };
        // llama-server: the prefilled text comes back first, with the first new token.
        let mut d = dec().continuing(Some(&c));
        assert_eq!(
            texts(&mut d, &["The sea is vast", ",", " deep"]),
            " vast, deep"
        );
        // The echo split over chunks.
        let mut d = dec().continuing(Some(&c));
        assert_eq!(texts(&mut d, &["The ", "sea", " is", " blue"]), " blue");
        // A server that sends only what follows.
        let mut d = dec().continuing(Some(&c));
        assert_eq!(texts(&mut d, &[" vast", " and"]), " vast and");
        // One that starts like the echo but is not it.
        let mut d = dec().continuing(Some(&c));
        assert_eq!(texts(&mut d, &["The", " end"]), "The end");
    }

    #[test]
    fn streamed_tool_calls_come_through_as_sent() {
        let mut d = dec();
        let calls = json!([{"index": 0, "id": "c1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"ci"}}]);
        let data = json!({"choices": [{"delta": {"tool_calls": calls}}]}).to_string();
        assert_eq!(
            d.feed(&data, 1.0).unwrap(),
            vec![InferEvent::ToolCalls(calls)]
        );
        let end = json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}).to_string();
        d.feed(&end, 2.0).unwrap();
        let Ok(Some(InferEvent::Done { finish_reason, .. })) = d.finish(3.0) else {
            panic!("a finished stream ends with Done")
        };
        assert_eq!(finish_reason, FinishReason::ToolCalls);
    }

    #[test]
    fn whole_non_streamed_answer_is_accepted() {
        let mut d = dec();
        let body = r#"{"choices":[{"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        assert_eq!(
            d.feed(body, 4.0).unwrap(),
            vec![InferEvent::Text("Hi".into())]
        );
        assert!(matches!(
            d.finish(4.0),
            Ok(Some(InferEvent::Done {
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: 1
                },
                ..
            }))
        ));
    }

    #[test]
    fn logprobs_of_both_shapes_come_before_their_text() {
        let mut d = dec();
        let chat = r#"{"choices":[{"delta":{"content":"Hi"},"logprobs":{"content":[
            {"token":"Hi","logprob":-0.25,"bytes":[72,105],
             "top_logprobs":[{"token":"Hi","logprob":-0.25},{"token":"Hello","logprob":-1.5}]}]}}]}"#;
        let ev = d.feed(chat, 1.0).unwrap();
        let InferEvent::Logprobs(l) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(ev[1], InferEvent::Text("Hi".into()));
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].token.as_str(), l[0].logprob), ("Hi", -0.25));
        assert_eq!(l[0].bytes, b"Hi".to_vec());
        assert_eq!(l[0].top[1], ("Hello".to_string(), b"Hello".to_vec(), -1.5));

        let legacy = r#"{"choices":[{"text":" a b","logprobs":{"tokens":[" a"," b"],
            "token_logprobs":[-0.5,-2.0],"top_logprobs":[{" x":-3.0," a":-0.5},{" b":-2.0}]}}]}"#;
        let ev = d.feed(legacy, 2.0).unwrap();
        let InferEvent::Logprobs(l) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            l.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            [-0.5, -2.0]
        );
        assert_eq!(l[0].top[0].0, " a", "most likely first");
        assert_eq!(ev[1], InferEvent::Text(" a b".into()));

        // No logprobs, or a malformed entry: no event, and nothing made up.
        let plain = d
            .feed(r#"{"choices":[{"delta":{"content":"x"}}]}"#, 3.0)
            .unwrap();
        assert_eq!(plain, vec![InferEvent::Text("x".into())]);
        let bad =
            r#"{"choices":[{"delta":{"content":"y"},"logprobs":{"content":[{"logprob":-1}]}}]}"#;
        assert_eq!(
            d.feed(bad, 4.0).unwrap(),
            vec![InferEvent::Text("y".into())]
        );
    }

    #[test]
    fn finish_reasons_map_to_stop_unless_cut_by_length() {
        assert_eq!(finish_reason("length"), FinishReason::Length);
        assert_eq!(finish_reason("tool_calls"), FinishReason::ToolCalls);
        for r in ["stop", "eos", "content_filter"] {
            assert_eq!(finish_reason(r), FinishReason::Stop);
        }
    }
}

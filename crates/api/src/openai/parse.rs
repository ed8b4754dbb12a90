//! OpenAI request bodies → driver-neutral [`InferRequest`]s, with validation whose messages
//! name the offending field. Pure: no I/O.

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageContent as AssistantContent,
    ChatCompletionRequestAssistantMessageContentPart as AssistantPart,
    ChatCompletionRequestDeveloperMessageContent as DeveloperContent,
    ChatCompletionRequestDeveloperMessageContentPart as DeveloperPart,
    ChatCompletionRequestMessage as Msg,
    ChatCompletionRequestSystemMessageContent as SystemContent,
    ChatCompletionRequestSystemMessageContentPart as SystemPart,
    ChatCompletionRequestUserMessageContent as UserContent,
    ChatCompletionRequestUserMessageContentPart as UserPart, CreateChatCompletionRequest,
    Prompt as OaPrompt, ResponseFormat, StopConfiguration,
};
use async_openai::types::completions::CreateCompletionRequest;
#[cfg(feature = "llama")]
use infermesh_backend::grammar::json_grammar;
use infermesh_backend::{ChatMessage, GenParams, InferRequest, Priority, Prompt};
use serde::de::DeserializeOwned;

use super::choices::MAX_N;
use crate::error::OpenAiError;

/// A validated request plus the response options the handler needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub req: InferRequest,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices asked for (1..=[`MAX_N`]); more than one is answered by that many sub-requests.
    pub n: u8,
}

/// Deserializes with the JSON path of the first bad field in the message and in `param`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, OpenAiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde reports a missing field at its parent's path; name the field itself.
        let missing = inner
            .to_string()
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next().map(str::to_string));
        let field = match (path.as_str(), missing) {
            (".", Some(m)) => Some(m),
            (p, Some(m)) => Some(format!("{p}.{m}")),
            (".", None) => None,
            (p, None) => Some(p.to_string()),
        };
        match field {
            Some(f) => OpenAiError::bad_request(format!("invalid `{f}`: {inner}"), Some(&f)),
            None => OpenAiError::bad_request(format!("invalid JSON body: {inner}"), None),
        }
    })
}

struct Common {
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    n: Option<u8>,
    stop: Option<StopConfiguration>,
    seed: Option<i64>,
    grammar: Option<String>,
    logprobs: Option<u8>,
    response_format: Option<serde_json::Value>,
}

fn params(c: Common) -> Result<GenParams, OpenAiError> {
    let bad = |m: &str, p: Option<&str>| OpenAiError::bad_request(m, p);
    if let Some(n) = c.n.filter(|n| !(1..=MAX_N).contains(n)) {
        return Err(bad(
            &format!(
                "`n` must be between 1 and {MAX_N} (got {n}): each choice is a full generation"
            ),
            Some("n"),
        ));
    }
    let max_tokens = match c.max_tokens {
        Some(0) => return Err(bad("`max_tokens` must be at least 1", Some("max_tokens"))),
        Some(m) => m,
        // OpenAI semantics: without a limit, generate until the model stops or the context is full.
        None => u32::MAX,
    };
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad(
            &format!("`temperature` must be between 0 and 2 (got {temperature})"),
            Some("temperature"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad(
            &format!("`top_p` must be in (0, 1] (got {top_p})"),
            Some("top_p"),
        ));
    }
    let stop = match c.stop {
        None => Vec::new(),
        Some(StopConfiguration::String(s)) => vec![s],
        Some(StopConfiguration::StringArray(v)) => v,
    };
    if stop.len() > 4 {
        return Err(bad("`stop` takes at most 4 sequences", Some("stop")));
    }
    Ok(GenParams {
        max_tokens,
        temperature,
        top_p,
        stop,
        // Seeds are 64-bit on the wire and 32-bit in llama.cpp; fold rather than truncate.
        seed: c.seed.map(|s| (s as u64 ^ ((s as u64) >> 32)) as u32),
        grammar: c.grammar,
        logprobs: c.logprobs,
        response_format: c.response_format,
        // Only a member's continuation request sets this (route::resume), never a client.
        continuation: None,
        tools: None,
    })
}

fn text_parts<'a>(
    parts: impl Iterator<Item = Option<&'a str>>,
    field: &str,
) -> Result<String, OpenAiError> {
    let mut out = String::new();
    for p in parts {
        match p {
            Some(t) => out.push_str(t),
            None => {
                return Err(OpenAiError::bad_request(
                    format!("`{field}`: only text content parts are supported"),
                    Some(field),
                ))
            }
        }
    }
    Ok(out)
}

/// What a backend that takes tools needs of a request with `tools`, as the client sent it: the
/// tool definitions and choice, and the messages whole (assistant tool calls and tool results
/// are more than role and text).
fn tool_fields(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, OpenAiError> {
    let Ok(serde_json::Value::Object(mut all)) = serde_json::from_slice(body) else {
        return Err(OpenAiError::bad_request("invalid JSON body", None));
    };
    Ok(["tools", "tool_choice", "parallel_tool_calls", "messages"]
        .into_iter()
        .filter_map(|k| all.remove_entry(k))
        .collect())
}

fn message(i: usize, m: &Msg, tool_use: bool) -> Result<ChatMessage, OpenAiError> {
    let field = format!("messages[{i}].content");
    let (role, content) = match m {
        Msg::System(s) => (
            "system",
            match &s.content {
                SystemContent::Text(t) => t.clone(),
                SystemContent::Array(a) => text_parts(
                    a.iter().map(|SystemPart::Text(t)| Some(t.text.as_str())),
                    &field,
                )?,
            },
        ),
        // Developer messages are the newer name for system instructions.
        Msg::Developer(d) => (
            "system",
            match &d.content {
                DeveloperContent::Text(t) => t.clone(),
                DeveloperContent::Array(a) => text_parts(
                    a.iter().map(|DeveloperPart::Text(t)| Some(t.text.as_str())),
                    &field,
                )?,
            },
        ),
        Msg::User(u) => (
            "user",
            match &u.content {
                UserContent::Text(t) => t.clone(),
                UserContent::Array(a) => text_parts(
                    a.iter().map(|p| match p {
                        UserPart::Text(t) => Some(t.text.as_str()),
                        _ => None,
                    }),
                    &field,
                )?,
            },
        ),
        Msg::Assistant(a) => (
            "assistant",
            match &a.content {
                None => String::new(),
                Some(AssistantContent::Text(t)) => t.clone(),
                Some(AssistantContent::Array(parts)) => text_parts(
                    parts.iter().map(|p| match p {
                        AssistantPart::Text(t) => Some(t.text.as_str()),
                        AssistantPart::Refusal(r) => Some(r.refusal.as_str()),
                    }),
                    &field,
                )?,
            },
        ),
        // A tool's result travels in the request's own messages (see `tool_fields`).
        Msg::Tool(_) if tool_use => ("tool", String::new()),
        Msg::Tool(_) | Msg::Function(_) => {
            return Err(OpenAiError::bad_request(
                format!(
                    "`messages[{i}].role`: tool messages come with the request's `tools` \
                     (function messages are not supported)"
                ),
                Some(&format!("messages[{i}].role")),
            ))
        }
    };
    Ok(ChatMessage {
        role: role.to_string(),
        content,
    })
}

/// The grammar that enforces `response_format`, or `None` for plain text.
fn response_grammar(f: Option<&ResponseFormat>) -> Result<Option<String>, OpenAiError> {
    let schema = match f {
        None | Some(ResponseFormat::Text) => return Ok(None),
        Some(ResponseFormat::JsonObject) => None,
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(&json_schema.schema),
    };
    #[cfg(feature = "llama")]
    return json_grammar(schema)
        .map(Some)
        .map_err(crate::openai::backend_error);
    #[cfg(not(feature = "llama"))]
    {
        let _ = schema;
        Err(OpenAiError::bad_request(
            "`response_format` needs llama.cpp's grammars, which this build of infermesh does \
             not include (built without the `llama` feature)",
            Some("response_format"),
        ))
    }
}

/// OpenAI's chat `logprobs` (bool) and `top_logprobs` (0..=20, needs `logprobs`).
fn chat_logprobs(logprobs: Option<bool>, top: Option<u8>) -> Result<Option<u8>, OpenAiError> {
    match (logprobs.unwrap_or(false), top) {
        (_, Some(t)) if t > 20 => Err(OpenAiError::bad_request(
            format!("`top_logprobs` must be between 0 and 20 (got {t})"),
            Some("top_logprobs"),
        )),
        (false, Some(_)) => Err(OpenAiError::bad_request(
            "`top_logprobs` needs `logprobs: true`",
            Some("top_logprobs"),
        )),
        (false, None) => Ok(None),
        (true, t) => Ok(Some(t.unwrap_or(0))),
    }
}

#[allow(deprecated)] // `max_tokens` and `seed` are deprecated upstream but still sent by clients.
pub fn chat(body: &[u8]) -> Result<Parsed, OpenAiError> {
    let r: CreateChatCompletionRequest = decode(body)?;
    if r.model.trim().is_empty() {
        return Err(OpenAiError::bad_request(
            "`model` must not be empty",
            Some("model"),
        ));
    }
    if r.messages.is_empty() {
        return Err(OpenAiError::bad_request(
            "`messages` must contain at least one message",
            Some("messages"),
        ));
    }
    let tools = match r.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        true => Some(tool_fields(body)?),
        false => None,
    };
    let messages = r
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m, tools.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    let n = r.n.unwrap_or(1);
    let params = params(Common {
        max_tokens: r.max_completion_tokens.or(r.max_tokens),
        temperature: r.temperature,
        top_p: r.top_p,
        n: r.n,
        stop: r.stop,
        seed: r.seed,
        grammar: response_grammar(r.response_format.as_ref())?,
        logprobs: chat_logprobs(r.logprobs, r.top_logprobs)?,
        response_format: r
            .response_format
            .as_ref()
            .filter(|f| !matches!(f, ResponseFormat::Text))
            .and_then(|f| serde_json::to_value(f).ok()),
    })?;
    let params = GenParams { tools, ..params };
    Ok(Parsed {
        req: InferRequest {
            model: r.model,
            prompt: Prompt::Chat(messages),
            params,
            priority: Priority::User,
        },
        stream: r.stream.unwrap_or(false),
        include_usage: r
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        n,
    })
}

pub fn completion(body: &[u8]) -> Result<Parsed, OpenAiError> {
    let r: CreateCompletionRequest = decode(body)?;
    let prompt = match r.prompt {
        OaPrompt::String(s) => s,
        OaPrompt::StringArray(v) if v.len() == 1 => v.into_iter().next().unwrap_or_default(),
        _ => {
            return Err(OpenAiError::bad_request(
                "`prompt` must be one string (batched and token prompts are not supported)",
                Some("prompt"),
            ))
        }
    };
    let n = r.n.unwrap_or(1);
    let params = params(Common {
        // The legacy endpoint's documented default.
        max_tokens: Some(r.max_tokens.unwrap_or(16)),
        temperature: r.temperature,
        top_p: r.top_p,
        n: r.n,
        stop: r.stop,
        seed: r.seed,
        grammar: None,
        logprobs: match r.logprobs {
            Some(n) if n > 5 => {
                return Err(OpenAiError::bad_request(
                    format!("`logprobs` must be between 0 and 5 (got {n})"),
                    Some("logprobs"),
                ))
            }
            n => n,
        },
        response_format: None,
    })?;
    if r.echo == Some(true) {
        return Err(OpenAiError::bad_request(
            "`echo` is not supported: the answer holds the completion only",
            Some("echo"),
        ));
    }
    Ok(Parsed {
        req: InferRequest {
            model: r.model,
            prompt: Prompt::Raw(prompt),
            params,
            priority: Priority::User,
        },
        stream: r.stream.unwrap_or(false),
        include_usage: r
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> OpenAiError {
        chat(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn tools_travel_as_the_client_sent_them_with_the_whole_conversation() {
        let body = br#"{"model":"m","tool_choice":"auto","temperature":0,
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "messages":[{"role":"user","content":"hi"},
                        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                        {"role":"tool","tool_call_id":"c1","content":"42"}]}"#;
        let p = chat(body).unwrap();
        let t = p.req.params.tools.expect("tools kept");
        let keys: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(keys, ["messages", "tool_choice", "tools"]);
        assert_eq!(t["messages"][1]["tool_calls"][0]["id"], "c1");
        assert_eq!(t["messages"][2]["tool_call_id"], "c1");
        // Without tools, a tool message has no conversation to belong to.
        let e =
            err(r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"1","content":"x"}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let plain = chat(br#"{"model":"m","tools":[],"messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!(
            plain.unwrap().req.params.tools,
            None,
            "an empty list is no tools"
        );
    }

    #[test]
    fn minimal_chat_request_parses_with_defaults() {
        let p = chat(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(p.req.model, "m");
        assert!(!p.stream);
        assert_eq!(p.req.params.max_tokens, u32::MAX);
        assert_eq!(
            p.req.prompt,
            Prompt::Chat(vec![ChatMessage {
                role: "user".into(),
                content: "hi".into()
            }])
        );
    }

    #[test]
    fn content_parts_system_developer_and_stop_are_mapped() {
        let p = chat(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"stop":"x",
                "max_tokens":5,"temperature":0,
                "messages":[{"role":"developer","content":"be brief"},
                            {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert!(p.stream && p.include_usage);
        assert_eq!(p.req.params.stop, vec!["x".to_string()]);
        assert_eq!(p.req.params.max_tokens, 5);
        assert_eq!(p.req.params.temperature, 0.0);
        let Prompt::Chat(m) = p.req.prompt else {
            panic!()
        };
        assert_eq!(m[0].role, "system");
        assert_eq!(m[1].content, "ab");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (r#"{"messages":[]}"#, "model"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
                "messages[0]",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0}"#,
                "top_p",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":9}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
                "stop",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
                "model",
            ),
        ];
        for (body, field) in cases {
            let e = err(body);
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.contains(field), "{body}: {}", e.message);
            assert!(
                e.param.as_deref().is_some_and(|p| p.starts_with(field)),
                "{body}: {:?}",
                e.param
            );
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let e = err(r#"{"model":"m"}"#);
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = err(r#"{"model":"m","messages":[{"role":"user"}]}"#);
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content"),
            "{}",
            e.message
        );
    }

    #[test]
    fn malformed_json_is_a_400_without_param() {
        for body in ["", "{", "[]", "null", "{\"model\":"] {
            let e = err(body);
            assert_eq!(e.status, 400, "{body:?}");
        }
    }

    #[test]
    fn image_parts_are_rejected() {
        let e = err(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x"}}]}]}"#,
        );
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
    }

    #[test]
    fn response_format_becomes_a_grammar() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"x"}]"#;
        let p = chat(format!(r#"{base},"response_format":{{"type":"json_object"}}}}"#).as_bytes())
            .unwrap();
        assert!(p.req.params.grammar.unwrap().contains("root ::="));
        let p =
            chat(format!(r#"{base},"response_format":{{"type":"text"}}}}"#).as_bytes()).unwrap();
        assert_eq!(p.req.params.grammar, None);
        let p = chat(
            format!(
                r#"{base},"response_format":{{"type":"json_schema","json_schema":{{"name":"p",
                "schema":{{"type":"object","properties":{{"age":{{"type":"integer"}}}},"required":["age"]}}}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(p.req.params.grammar.unwrap().contains("age"));
        let e = err(&format!(
            r##"{base},"response_format":{{"type":"json_schema","json_schema":{{"name":"p","schema":{{"$ref":"#/nowhere"}}}}}}}}"##
        ));
        assert_eq!(e.status, 400);
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
    }

    #[test]
    fn logprobs_options_are_checked() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"x"}]"#;
        let lp = |extra: &str| chat(format!("{base},{extra}}}").as_bytes());
        assert_eq!(
            lp(r#""logprobs":true"#).unwrap().req.params.logprobs,
            Some(0)
        );
        assert_eq!(
            lp(r#""logprobs":true,"top_logprobs":3"#)
                .unwrap()
                .req
                .params
                .logprobs,
            Some(3)
        );
        assert_eq!(lp(r#""logprobs":false"#).unwrap().req.params.logprobs, None);
        for bad in [
            r#""top_logprobs":2"#,
            r#""logprobs":true,"top_logprobs":21"#,
        ] {
            assert_eq!(
                lp(bad).unwrap_err().param.as_deref(),
                Some("top_logprobs"),
                "{bad}"
            );
        }
        let p = completion(br#"{"model":"m","prompt":"a","logprobs":2}"#).unwrap();
        assert_eq!(p.req.params.logprobs, Some(2));
        let e = completion(br#"{"model":"m","prompt":"a","logprobs":6}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("logprobs"));
        let e = completion(br#"{"model":"m","prompt":"a","echo":true}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("echo"));
    }

    #[test]
    fn legacy_completion_takes_one_prompt() {
        let p = completion(br#"{"model":"m","prompt":"Once"}"#).unwrap();
        assert_eq!(p.req.prompt, Prompt::Raw("Once".into()));
        assert_eq!(p.req.params.max_tokens, 16);
        assert!(completion(br#"{"model":"m","prompt":["a","b"]}"#).is_err());
    }
}

//! A model's args → `llama-server` command line.

use std::collections::BTreeMap;

use serde_json::Value;

/// Flags the driver sets itself: the process must listen where the driver polls it and report
/// the model under the name the mesh routes by.
const RESERVED: &[&str] = &["host", "port", "model", "m", "alias", "a"];

/// The GGUF file named by the model's `path` arg.
pub fn model_path(model: &str, args: &BTreeMap<String, Value>) -> Result<String, String> {
    match args.get("path") {
        Some(Value::String(p)) if !p.trim().is_empty() => Ok(p.clone()),
        Some(other) => Err(format!(
            "model `{model}`: `path` must be the GGUF file's path as a string, not {other}"
        )),
        None => Err(format!(
            "model `{model}` has no `path` arg (the GGUF file llama-server should load)"
        )),
    }
}

/// Every arg except `path` as flags: `--key value`, `true` → `--key`, `false`/`null` → left
/// out, an array → the flag repeated per element. Keys may be written `n_gpu_layers`,
/// `n-gpu-layers` or `--n-gpu-layers` (TOML favours underscores; llama-server takes dashes);
/// a one-letter key is a short flag (`c` → `-c`).
pub fn cli_flags(args: &BTreeMap<String, Value>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (key, value) in args {
        if key == "path" {
            continue;
        }
        let name = key.trim_start_matches('-').replace('_', "-");
        if name.is_empty() {
            return Err(format!("arg `{key}` has no flag name"));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "arg `{key}` is set by the llama_server driver itself; remove it from the model's args"
            ));
        }
        let flag = if name.chars().count() == 1 {
            format!("-{name}")
        } else {
            format!("--{name}")
        };
        let values = match value {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for v in values {
            match v {
                Value::Bool(true) => out.push(flag.clone()),
                Value::Bool(false) | Value::Null => {}
                Value::String(s) => out.extend([flag.clone(), s.clone()]),
                Value::Number(n) => out.extend([flag.clone(), n.to_string()]),
                Value::Array(_) | Value::Object(_) => {
                    return Err(format!(
                        "arg `{key}`: {v} cannot be written as a command-line value"
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// Whether llama-server renders chat with the model's own Jinja template: its default (since
/// llama.cpp made `--jinja` the default), unless the args turn it off (`jinja: false`,
/// `no-jinja: true`).
pub fn jinja(args: &BTreeMap<String, Value>) -> bool {
    let mut on = true;
    for (key, value) in args {
        match key.trim_start_matches('-').replace('_', "-").as_str() {
            "jinja" => on = value.as_bool().unwrap_or(true),
            "no-jinja" => on = !value.as_bool().unwrap_or(false),
            _ => {}
        }
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jinja_is_on_unless_the_args_turn_it_off() {
        assert!(jinja(&args(json!({"path": "m.gguf"}))));
        assert!(jinja(&args(json!({"jinja": true}))));
        assert!(!jinja(&args(json!({"jinja": false}))));
        assert!(!jinja(&args(json!({"no_jinja": true}))));
        assert!(!jinja(&args(json!({"--no-jinja": true}))));
    }

    fn args(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn values_become_flags_and_path_is_not_one() {
        let flags = cli_flags(&args(json!({
            "path": "/m.gguf", "n_gpu_layers": 99, "flash-attn": true, "mlock": false,
            "--temp": 0.5, "lora": ["a.gguf", "b.gguf"], "c": 4096, "chat-template": "chatml",
            "draft": null
        })))
        .unwrap();
        assert_eq!(
            flags,
            [
                "--temp",
                "0.5",
                "-c",
                "4096",
                "--chat-template",
                "chatml",
                "--flash-attn",
                "--lora",
                "a.gguf",
                "--lora",
                "b.gguf",
                "--n-gpu-layers",
                "99"
            ]
        );
    }

    #[test]
    fn driver_owned_and_unwritable_args_are_rejected_with_the_key() {
        for key in ["port", "--host", "alias", "m"] {
            let err = cli_flags(&args(json!({ key: 1 }))).unwrap_err();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains("driver"),
                "{err}"
            );
        }
        let err = cli_flags(&args(json!({"override": {"a": 1}}))).unwrap_err();
        assert!(err.starts_with("arg `override`"), "{err}");
        assert!(cli_flags(&args(json!({"--": 1}))).is_err());
    }

    #[test]
    fn path_must_be_a_non_empty_string() {
        assert_eq!(
            model_path("m", &args(json!({"path": "/x.gguf"}))),
            Ok("/x.gguf".into())
        );
        assert!(model_path("m", &args(json!({})))
            .unwrap_err()
            .contains("has no `path` arg"));
        assert!(model_path("m", &args(json!({"path": 3})))
            .unwrap_err()
            .contains("must be the GGUF file's path"));
        assert!(model_path("m", &args(json!({"path": " "}))).is_err());
    }
}

//! Grammars for structured output, from llama.cpp's own JSON-schema converter: a hand-written
//! converter would drift from what llama.cpp's grammar sampler accepts.

use crate::api::BackendError;

/// The GBNF grammar for OpenAI's `response_format`: any JSON object for `json_object`
/// (`schema: None`), or the given JSON schema for `json_schema`.
pub fn json_grammar(schema: Option<&serde_json::Value>) -> Result<String, BackendError> {
    let any_object = serde_json::json!({"type": "object"});
    let schema = schema.unwrap_or(&any_object);
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| BackendError::BadParam {
        message: format!(
            "`response_format.json_schema.schema` cannot be turned into a grammar by llama.cpp: {e}"
        ),
        param: "response_format.json_schema.schema".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_and_schema_grammars_come_from_llama_cpp() {
        let g = json_grammar(None).unwrap();
        assert!(g.contains("root ::="), "{g}");
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"]
        });
        let g = json_grammar(Some(&schema)).unwrap();
        assert!(
            g.contains("root ::=") && g.contains("\"\\\"age\\\"\""),
            "{g}"
        );
    }

    #[test]
    fn an_unconvertible_schema_names_the_field() {
        let schema = serde_json::json!({"type": "object", "$ref": "#/definitions/missing"});
        match json_grammar(Some(&schema)) {
            Err(BackendError::BadParam { param, .. }) => {
                assert_eq!(param, "response_format.json_schema.schema")
            }
            other => panic!("{other:?}"),
        }
    }
}

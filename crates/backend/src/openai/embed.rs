//! `/v1/embeddings` on an OpenAI-speaking remote: one call, the vectors read back in input order.

use serde_json::{json, Value};

use super::OpenAiBackend;
use crate::api::BackendError;
use crate::types::Embeddings;

impl OpenAiBackend {
    pub(super) async fn embed_once(
        &self,
        model: &str,
        inputs: &[String],
    ) -> Result<Embeddings, BackendError> {
        self.loaded_spec(model)?;
        let url = self.url("embeddings");
        let body = json!({"model": model, "input": inputs, "encoding_format": "float"});
        let answer = self.post_for_json(&url, &body, model).await?;
        read_embeddings(&answer, inputs.len())
            .ok_or_else(|| BackendError::Failed(format!("{url} sent no embeddings for each input")))
    }
}

/// The vectors of an OpenAI embeddings answer, ordered by their `index`; `None` unless there is
/// exactly one numeric vector per input.
fn read_embeddings(answer: &Value, n: usize) -> Option<Embeddings> {
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
    for (pos, item) in answer["data"].as_array()?.iter().enumerate() {
        let i = item["index"].as_u64().map_or(pos, |i| i as usize);
        let v = item["embedding"]
            .as_array()?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()?;
        *vectors.get_mut(i)? = Some(v);
    }
    Some(Embeddings {
        vectors: vectors.into_iter().collect::<Option<_>>()?,
        prompt_tokens: answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_follow_their_index_and_every_input_needs_one() {
        let a = json!({"data": [{"index": 1, "embedding": [0.5]}, {"index": 0, "embedding": [1.0, 0.0]}],
                       "usage": {"prompt_tokens": 7}});
        let e = read_embeddings(&a, 2).unwrap();
        assert_eq!(e.vectors, vec![vec![1.0, 0.0], vec![0.5]]);
        assert_eq!(e.prompt_tokens, 7);
        assert!(
            read_embeddings(&a, 3).is_none(),
            "an input without a vector"
        );
        assert!(read_embeddings(&a, 1).is_none(), "an index past the inputs");
        let text = json!({"data": [{"index": 0, "embedding": "AAAA"}]});
        assert!(
            read_embeddings(&text, 1).is_none(),
            "base64 is not a vector"
        );
        assert!(read_embeddings(&json!({}), 1).is_none());
    }
}

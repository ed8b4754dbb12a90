"""langchain-openai's ChatOpenAI and OpenAI, unmodified, against a real infermesh node.

Usage: python3 langchain_client.py BASE_URL MODEL   (exits non-zero on any mismatch)
"""
import sys

import openai
from langchain_openai import ChatOpenAI, OpenAI, OpenAIEmbeddings

base, model = sys.argv[1], sys.argv[2]
chat = ChatOpenAI(base_url=base + "/v1", api_key="unused", model=model, temperature=0,
                  max_tokens=16, max_retries=0)

m = chat.invoke("What is the capital of France?")
assert m.content and m.content.strip(), m
usage = m.usage_metadata
assert usage and usage["output_tokens"] >= 1 and usage["total_tokens"] > usage["input_tokens"], m

parts = [c.content for c in chat.stream("What is the capital of France?")]
assert "".join(parts) == m.content, (parts, m.content)

j = chat.bind(response_format={"type": "json_object"}).invoke("Name a color.")
assert j.content.strip().startswith("{"), j

lp = chat.bind(logprobs=True, top_logprobs=2).invoke("Hi")
content = lp.response_metadata["logprobs"]["content"]
assert content and all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 2 for t in content), lp

# check_embedding_ctx_length=False: send the text, not tiktoken ids (which need a download).
emb = OpenAIEmbeddings(base_url=base + "/v1", api_key="unused", model=model, max_retries=0,
                       check_embedding_ctx_length=False)
vectors = emb.embed_documents(["hello", "world"])
assert len(vectors) == 2 and len(vectors[0]) > 0 and len(emb.embed_query("hi")) == len(vectors[0])

try:
    ChatOpenAI(base_url=base + "/v1", api_key="unused", model="no-such-model",
               max_retries=0).invoke("x")
    raise SystemExit("unknown model must fail")
except openai.NotFoundError as e:
    assert "no-such-model" in str(e), e

legacy = OpenAI(base_url=base + "/v1", api_key="unused", model=model, temperature=0,
                max_tokens=4, max_retries=0)
assert legacy.invoke("The capital of France is"), "empty completion"
print("langchain-openai OK:", repr(m.content))

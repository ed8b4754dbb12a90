"""The official OpenAI Python client, unmodified, against a real infermesh node.

Usage: python3 openai_client.py BASE_URL MODEL   (exits non-zero on any mismatch)
"""
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)

ids = [m.id for m in client.models.list().data]
assert model in ids, ids

r = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=16,
    temperature=0,
)
text = r.choices[0].message.content
assert text and text.strip(), r
assert r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.completion_tokens >= 1 and r.usage.total_tokens > r.usage.prompt_tokens, r.usage

parts, usage = [], None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=16,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
assert "".join(parts) == text, ("".join(parts), text)
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage

j = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Name a color."}],
    max_tokens=24,
    temperature=0,
    response_format={"type": "json_object"},
)
assert j.choices[0].message.content.strip().startswith("{"), j

lp = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0,
    logprobs=True, top_logprobs=2,
)
content = lp.choices[0].logprobs.content
assert content and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content), lp

two = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, n=2, seed=5,
)
assert [ch.index for ch in two.choices] == [0, 1], two
assert all(ch.message.content for ch in two.choices), two
assert two.usage.completion_tokens >= 2, two.usage

emb = client.embeddings.create(model=model, input=["hello", "world"])
assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) > 0, emb
assert emb.usage.prompt_tokens >= 2, emb.usage

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("unknown model must fail")
except openai.NotFoundError as e:
    assert "no-such-model" in str(e), e

try:
    client.chat.completions.create(model=model, messages=[], max_tokens=1)
    raise SystemExit("empty messages must fail")
except openai.BadRequestError as e:
    assert "messages" in str(e), e

c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0)
assert c.choices[0].text, c
print("openai client OK:", repr(text))

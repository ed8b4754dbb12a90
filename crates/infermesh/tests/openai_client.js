// The official OpenAI Node.js package, unmodified, against a real infermesh node.
//
// Usage: node openai_client.js BASE_URL MODEL   (exits non-zero on any mismatch; the package is
// found through NODE_PATH, which the Rust test sets to target/node-openai/node_modules)
"use strict";

const assert = require("node:assert/strict");
const mod = require("openai");
const OpenAI = mod.OpenAI || mod.default || mod;

const [base, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base + "/v1", apiKey: "unused", maxRetries: 0 });
const ask = [{ role: "user", content: "What is the capital of France?" }];

async function main() {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), String(ids));

  const r = await client.chat.completions.create({ model, messages: ask, max_tokens: 16, temperature: 0 });
  const text = r.choices[0].message.content;
  assert.ok(text && text.trim(), JSON.stringify(r));
  assert.ok(["stop", "length"].includes(r.choices[0].finish_reason), JSON.stringify(r));
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.total_tokens > r.usage.prompt_tokens);

  const parts = [];
  let usage = null;
  const stream = await client.chat.completions.create({
    model, messages: ask, max_tokens: 16, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) if (c.delta && c.delta.content) parts.push(c.delta.content);
  }
  assert.equal(parts.join(""), text);
  assert.ok(usage && usage.completion_tokens === r.usage.completion_tokens, JSON.stringify(usage));

  const j = await client.chat.completions.create({
    model, max_tokens: 24, temperature: 0, response_format: { type: "json_object" },
    messages: [{ role: "user", content: "Name a color." }],
  });
  const answer = j.choices[0].message.content;
  assert.ok(answer.trim().startsWith("{"), answer);

  const lp = await client.chat.completions.create({
    model, messages: ask, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const content = lp.choices[0].logprobs.content;
  assert.ok(content.length >= 1, JSON.stringify(lp));
  for (const t of content) {
    assert.ok(t.logprob <= 0 && t.top_logprobs.length === 2, JSON.stringify(t));
  }

  const emb = await client.embeddings.create({ model, input: ["hello", "world"] });
  assert.deepEqual(emb.data.map((d) => d.index), [0, 1]);
  assert.ok(emb.data[0].embedding.length > 0 && emb.usage.prompt_tokens >= 2, JSON.stringify(emb.usage));

  await assert.rejects(
    client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.NotFoundError && String(e.message).includes("no-such-model"),
  );
  await assert.rejects(
    client.chat.completions.create({ model, messages: [], max_tokens: 1 }),
    (e) => e instanceof OpenAI.BadRequestError && String(e.message).includes("messages"),
  );

  const c = await client.completions.create({ model, prompt: "The capital of France is", max_tokens: 4, temperature: 0 });
  assert.ok(c.choices[0].text, JSON.stringify(c));
  console.log("openai node client OK:", JSON.stringify(text));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

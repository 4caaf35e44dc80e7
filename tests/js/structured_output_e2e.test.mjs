// Structured output end to end through the official `openai` SDK. The demo model is random, so
// unconstrained it writes garbage; constrained, every output must parse and validate. Outputs are
// checked with peers we did not write: ajv (+ ajv-formats) for JSON Schema, JavaScript's RegExp
// for regexes. Requests run concurrently over every adapter family, so constrained sequences
// share mixed batches with each other and with unconstrained ones.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import OpenAI from "openai";

import { makeAdapterRoot, request as call, startServer } from "./server_harness.mjs";

const ADAPTERS = ["mixlora", "loramoe", "mhmoe", "lora"];
const MODELS = ["tiny", ...ADAPTERS];

const SCHEMAS = {
  person: {
    type: "object",
    properties: {
      name: { type: "string", minLength: 1, maxLength: 12 },
      age: { type: "integer", minimum: 0, maximum: 130 },
      email: { type: "string", format: "email" },
      nickname: { type: ["string", "null"], maxLength: 5 },
    },
    required: ["name", "age"],
    additionalProperties: false,
  },
  nested: {
    type: "object",
    properties: {
      order: {
        type: "object",
        properties: {
          id: { type: "string", pattern: "^[A-Z]{3}-\\d{4}$" },
          items: {
            type: "array", minItems: 1, maxItems: 3,
            items: {
              type: "object",
              properties: {
                sku: { type: "string", maxLength: 6 },
                qty: { type: "integer", exclusiveMinimum: 0, maximum: 99 },
                price: { type: "number", minimum: 0.5, maximum: 1000 },
              },
              required: ["sku", "qty", "price"],
              additionalProperties: false,
            },
          },
          placed: { type: "string", format: "date-time" },
        },
        required: ["id", "items", "placed"],
        additionalProperties: false,
      },
      status: { enum: ["new", "paid", "shipped", 3, null] },
    },
    required: ["order", "status"],
    additionalProperties: false,
  },
  variants: {
    type: "object",
    properties: {
      shape: {
        anyOf: [
          { type: "object", properties: { kind: { const: "circle" }, r: { type: "number", minimum: 0, maximum: 10 } },
            required: ["kind", "r"], additionalProperties: false },
          { type: "object", properties: { kind: { const: "box" }, w: { type: "integer", minimum: -5, maximum: 5 } },
            required: ["kind", "w"], additionalProperties: false },
        ],
      },
      tags: { type: "array", items: { type: "string", maxLength: 4 }, maxItems: 4 },
      when: { type: "string", format: "date" },
      id: { type: "string", format: "uuid" },
      ok: { type: "boolean" },
    },
    required: ["shape", "when", "id", "ok"],
    additionalProperties: false,
  },
  recursive: {
    $defs: {
      node: {
        type: "object",
        properties: {
          v: { type: "integer", minimum: -9, maximum: 9 },
          kids: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 2 },
        },
        required: ["v"],
        additionalProperties: false,
      },
    },
    $ref: "#/$defs/node",
  },
  tuple: {
    type: "array",
    prefixItems: [{ type: "string", maxLength: 3 }, { type: "integer", minimum: 10, maximum: 20 }],
    items: false,
    minItems: 2,
  },
  unbounded_string: {
    type: "object",
    properties: { note: { type: "string" }, ip: { type: "string", format: "ipv4" } },
    required: ["note", "ip"],
    additionalProperties: false,
  },
};

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather for a city",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string", maxLength: 10 },
        unit: { enum: ["celsius", "fahrenheit"] },
        days: { type: "integer", minimum: 1, maximum: 7 },
      },
      required: ["city", "days"],
      additionalProperties: false,
    },
  },
};
const SEARCH = {
  type: "function",
  function: {
    name: "search",
    parameters: { type: "object", properties: { q: { type: "string", maxLength: 8 } }, required: ["q"],
                  additionalProperties: false },
  },
};

describe("structured output", () => {
  let server, openai, ajv;
  before(async () => {
    server = await startServer(["--adapter-root", makeAdapterRoot(ADAPTERS), "--served-model-name",
                                "tiny", ...ADAPTERS.flatMap((a) => ["--adapter", `${a}=${a}`])]);
    openai = new OpenAI({ baseURL: `${server.http}/v1`, apiKey: "none", maxRetries: 0 });
    ajv = new Ajv2020({ strict: false });
    addFormats(ajv);
  });
  after(async () => {
    await server?.stop();
  });

  function validate(schema, text, what) {
    let value;
    assert.doesNotThrow(() => { value = JSON.parse(text); }, `${what}: parses: ${text}`);
    const check = ajv.compile(schema);
    assert.ok(check(value), `${what}: ${JSON.stringify(check.errors)} in ${text}`);
    return value;
  }

  test("json_schema outputs validate with ajv, over schemas, seeds and adapters", async () => {
    const jobs = [];
    let k = 0;
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      for (let seed = 0; seed < 8; seed++) {
        const model = MODELS[k++ % MODELS.length];
        jobs.push(openai.chat.completions.create({
          model, seed, temperature: 1, max_tokens: 2000, n: 2,
          messages: [{ role: "user", content: `Write a ${name} as JSON.` }],
          response_format: { type: "json_schema", json_schema: { name, schema, strict: true } },
        }).then((r) => ({ name, schema, seed, model, r })));
      }
    }
    // Unconstrained requests in the same batches.
    for (let i = 0; i < 8; i++) {
      jobs.push(openai.completions.create({ model: MODELS[i % MODELS.length], prompt: "free text",
                                            max_tokens: 20, seed: i }).then(() => null));
    }
    let checked = 0;
    for (const job of await Promise.all(jobs)) {
      if (job === null) continue;
      for (const choice of job.r.choices) {
        const what = `${job.name} seed ${job.seed} on ${job.model}`;
        assert.equal(choice.finish_reason, "stop", `${what}: ${choice.message.content}`);
        validate(job.schema, choice.message.content, what);
        checked++;
      }
    }
    assert.equal(checked, Object.keys(SCHEMAS).length * 8 * 2);
  });

  test("streamed constrained output equals a valid document", async () => {
    for (let seed = 0; seed < 4; seed++) {
      const stream = await openai.chat.completions.create({
        model: MODELS[seed % MODELS.length], seed, max_tokens: 1500, stream: true,
        messages: [{ role: "user", content: "order" }],
        response_format: { type: "json_schema", json_schema: { name: "nested", schema: SCHEMAS.nested } },
      });
      let text = "", finish = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, "stop");
      validate(SCHEMAS.nested, text, `stream seed ${seed}`);
    }
  });

  test("json_object gives an object; unconstrained output is not JSON", async () => {
    for (let seed = 0; seed < 6; seed++) {
      const r = await openai.chat.completions.create({
        model: "tiny", seed, max_tokens: 1500, messages: [{ role: "user", content: "json" }],
        response_format: { type: "json_object" },
      });
      const c = r.choices[0];
      assert.equal(c.finish_reason, "stop", c.message.content);
      const value = JSON.parse(c.message.content);
      assert.equal(typeof value, "object");
      assert.ok(value !== null && !Array.isArray(value));
    }
    const free = await openai.chat.completions.create({
      model: "tiny", seed: 1, max_tokens: 40, messages: [{ role: "user", content: "json" }] });
    assert.throws(() => JSON.parse(free.choices[0].message.content), "the model is random");
  });

  test("vLLM's guided_regex, guided_choice, guided_grammar and structured_outputs", async () => {
    const cases = [
      { body: { guided_regex: "[A-Z][a-z]{2,5} \\d{1,3}(\\.\\d)?" },
        check: (t) => assert.match(t, /^[A-Z][a-z]{2,5} \d{1,3}(\.\d)?$/) },
      { body: { structured_outputs: { regex: "(yes|no)!{0,2}" } },
        check: (t) => assert.match(t, /^(yes|no)!{0,2}$/) },
      { body: { guided_choice: ["red", "green", "blue and gold"] },
        check: (t) => assert.ok(["red", "green", "blue and gold"].includes(t), t) },
      { body: { guided_choice: ["café", "日本語", "😀!"] },
        check: (t) => assert.ok(["café", "日本語", "😀!"].includes(t), t) },
      { body: { guided_json: { enum: ["Zoé", "élan"] } },
        check: (t) => assert.ok(["\"Zoé\"", "\"élan\""].includes(t), t) },
      { body: { guided_grammar: 'root ::= "(" num ("+" num)* ")"\nnum ::= [1-9] [0-9]?\n' },
        check: (t) => assert.match(t, /^\([1-9][0-9]?(\+[1-9][0-9]?)*\)$/) },
      { body: { guided_json: SCHEMAS.tuple }, check: (t) => validate(SCHEMAS.tuple, t, "guided_json") },
    ];
    for (const { body, check } of cases) {
      for (let seed = 0; seed < 5; seed++) {
        const r = await call(server, "POST", "/v1/completions",
                             { model: MODELS[seed % MODELS.length], prompt: "x", max_tokens: 300, seed, ...body });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.choices[0].finish_reason, "stop", r.text);
        check(r.json.choices[0].text);
      }
    }
  });

  test("tool_choice required and a named function: arguments validate; a full round trip", async () => {
    for (let seed = 0; seed < 6; seed++) {
      const r = await openai.chat.completions.create({
        model: MODELS[seed % MODELS.length], seed, max_tokens: 600, tools: [WEATHER, SEARCH],
        tool_choice: "required", messages: [{ role: "user", content: "weather in Paris?" }],
      });
      const m = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, "stop");
      assert.equal(m.content, null);
      assert.ok(m.tool_calls.length >= 1);
      for (const call of m.tool_calls) {
        const tool = [WEATHER, SEARCH].find((t) => t.function.name === call.function.name);
        assert.ok(tool, call.function.name);
        validate(tool.function.parameters, call.function.arguments, `required seed ${seed}`);
        assert.match(call.id, /^call_/);
      }
    }
    const named = await openai.chat.completions.create({
      model: "lora", seed: 3, max_tokens: 600, tools: [WEATHER, SEARCH], parallel_tool_calls: false,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      messages: [{ role: "user", content: "weather in Paris?" }],
    });
    const call0 = named.choices[0].message.tool_calls[0];
    assert.equal(named.choices[0].message.tool_calls.length, 1);
    assert.equal(call0.function.name, "get_weather");
    validate(WEATHER.function.parameters, call0.function.arguments, "named");
    // The call goes back as a tool message; the answer is ordinary text.
    const answer = await openai.chat.completions.create({
      model: "lora", seed: 4, max_tokens: 10, tools: [WEATHER, SEARCH], tool_choice: "none",
      messages: [{ role: "user", content: "weather in Paris?" }, named.choices[0].message,
                 { role: "tool", tool_call_id: call0.id, content: "{\"temp\": 21}" }],
    });
    assert.equal(typeof answer.choices[0].message.content, "string");
    // Streamed, the named call arrives as one tool_calls delta.
    const stream = await openai.chat.completions.create({
      model: "tiny", seed: 5, max_tokens: 600, stream: true, tools: [WEATHER],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      messages: [{ role: "user", content: "weather?" }],
    });
    const calls = [];
    for await (const chunk of stream) calls.push(...(chunk.choices[0]?.delta?.tool_calls ?? []));
    assert.equal(calls.length, 1);
    validate(WEATHER.function.parameters, calls[0].function.arguments, "streamed named");
  });

  test("bad constraints are 400s naming the problem; the server keeps serving", async () => {
    const bad = [
      [{ response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "array", uniqueItems: true } } } },
       /uniqueItems/],
      [{ response_format: { type: "json_schema", json_schema: { name: "x" } } }, /json_schema.schema/],
      [{ response_format: { type: "xml" } }, /response_format/],
      [{ guided_regex: "(a)\\1" }, /backreference/],
      [{ guided_grammar: "root ::= missing" }, /'missing' is not defined/],
      [{ guided_grammar: "root ::= root \"a\"" }, /left-recursive/],
      [{ guided_choice: [] }, /guided_choice/],
      [{ guided_json: { type: "object" }, guided_regex: "a" }, /give one output constraint/],
      [{ guided_json: "{not json" }, /guided_json/],
      [{ tools: [WEATHER], tool_choice: { type: "function", function: { name: "nope" } } }, /not in tools/],
      [{ tools: [WEATHER], tool_choice: "required", response_format: { type: "json_object" } }, /cannot be combined/],
    ];
    for (const [extra, pattern] of bad) {
      const r = await call(server, "POST", "/v1/chat/completions",
                           { model: "tiny", messages: [{ role: "user", content: "x" }], max_tokens: 5, ...extra });
      assert.equal(r.status, 400, `${JSON.stringify(extra)}: ${r.text}`);
      assert.match(r.json.error.message, pattern);
    }
    const ok = await call(server, "POST", "/v1/completions",
                          { model: "tiny", prompt: "x", max_tokens: 50, guided_choice: ["a", "b"] });
    assert.equal(ok.status, 200);
  });

  test("max_tokens cuts a constrained output with finish_reason length", async () => {
    const r = await call(server, "POST", "/v1/completions",
                         { model: "tiny", prompt: "x", max_tokens: 3, seed: 1,
                           guided_json: SCHEMAS.nested });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].finish_reason, "length");
  });
});

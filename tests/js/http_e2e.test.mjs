// End to end over the OpenAI-compatible HTTP API, with the server as a real process on loopback:
// the official `openai` npm SDK (a client we did not write) for completions and chat, streaming
// and not, adapters chosen by `model`, n > 1, stop strings, log-probs and errors; raw HTTP for the
// SSE framing, status codes and bodies, client disconnects, limits, vLLM's adapter endpoints while
// streams run, and draining on SIGTERM.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import {
  freePort, makeAdapterRoot, request as call, startServer, unary, waitIdle,
} from "./server_harness.mjs";

const TOKEN = "s3cret";
const ADAPTERS = ["mixlora", "loramoe", "mhmoe", "lora"];
const BASE = "tiny-base";
const PROMPT = "The quick brown fox";

// Requests finished since the server started, from its log: [{ id, finish, completion_tokens }].
function finishedRequests(server) {
  const out = [];
  for (const m of server.stderr().matchAll(
    /request id=(\d+) adapter=(\S+) finish=(\w+) .*?completion_tokens=(\d+)/g)) {
    out.push({ id: Number(m[1]), adapter: m[2], finish: m[3], completion_tokens: Number(m[4]) });
  }
  return out;
}


async function until(predicate, what) {
  for (let i = 0; i < 1000; i++) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}


// The events of a Server-Sent Events body; asserts the framing.
function sseEvents(text) {
  assert.ok(text.endsWith("\n\n"), "every event ends with a blank line");
  const events = text.slice(0, -2).split("\n\n");
  for (const e of events) assert.match(e, /^data: /, `an event is one data line: ${e}`);
  assert.equal(events.at(-1), "data: [DONE]", "the stream ends with [DONE]");
  return events.slice(0, -1).map((e) => JSON.parse(e.slice("data: ".length)));
}

function assertErrorBody(r, status, pattern) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.headers.get("content-type"), "application/json");
  const e = r.json?.error;
  assert.ok(e, `an OpenAI error object: ${r.text}`);
  assert.deepEqual(Object.keys(e).sort(), ["code", "message", "param", "type"]);
  assert.match(e.message, pattern);
  return e;
}

// A streamed completion over a raw socket that the test can drop: resolves `first` with the
// first event's text.
function openStream(server, body) {
  const url = new URL(`${server.http}/v1/completions`);
  let resolveFirst, rejectFirst;
  const first = new Promise((res, rej) => { resolveFirst = res; rejectFirst = rej; });
  const req = http.request({
    host: url.hostname, port: url.port, path: url.pathname, method: "POST",
    headers: { "content-type": "application/json" },
  }, (res) => {
    let buf = "";
    res.setEncoding("utf8");
    res.on("data", (d) => { buf += d; if (buf.includes("\n\n")) resolveFirst({ status: res.statusCode, buf }); });
    res.on("error", () => {});
  });
  req.on("error", (e) => rejectFirst(e));
  req.end(JSON.stringify({ ...body, stream: true }));
  first.catch(() => {});  // a stream the test drops at once never gets its first event
  return { req, first };
}

describe("the OpenAI SDK against switchyard-server", () => {
  let server, root, openai;
  before(async () => {
    root = makeAdapterRoot([...ADAPTERS, "mixlora_twin", "router"]);
    server = await startServer(["--adapter-root", root, "--admin-token", TOKEN,
                                "--served-model-name", BASE, "--log-level", "info",
                                ...ADAPTERS.flatMap((a) => ["--adapter", `${a}=${a}`])]);
    openai = new OpenAI({ baseURL: `${server.http}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "graceful exit");
    fs.rmSync(root, { recursive: true, force: true });
  });

  test("models lists the base model and every adapter with its parent", async () => {
    const models = [];
    for await (const m of openai.models.list()) models.push(m);
    const ids = models.map((m) => m.id);
    assert.deepEqual(ids.sort(), [BASE, ...ADAPTERS].sort());
    for (const m of models) {
      assert.equal(m.object, "model");
      if (m.id !== BASE) assert.equal(m.parent, BASE, `${m.id}'s parent`);
    }
  });

  test("a completion picks its adapter by model and matches the gRPC path", async () => {
    const params = { prompt: PROMPT, max_tokens: 10, temperature: 0, ignore_eos: true };
    const viaAdapter = await openai.completions.create({ model: "mixlora", ...params });
    const viaBase = await openai.completions.create({ model: BASE, ...params });
    assert.equal(viaAdapter.object, "text_completion");
    assert.equal(viaAdapter.model, "mixlora");
    assert.equal(viaAdapter.choices.length, 1);
    assert.equal(viaAdapter.choices[0].finish_reason, "length");
    assert.equal(viaAdapter.usage.completion_tokens, 10);
    assert.equal(viaAdapter.usage.total_tokens,
                 viaAdapter.usage.prompt_tokens + viaAdapter.usage.completion_tokens);
    assert.notEqual(viaAdapter.choices[0].text, viaBase.choices[0].text, "the adapter applies");
    // One generation path underneath: gRPC gives the same text for the same request.
    for (const [adapter, http] of [["mixlora", viaAdapter], ["", viaBase]]) {
      const g = await unary(server.client, "Generate", {
        text: PROMPT, adapter, max_tokens: 10, ignore_eos: true, sampling: { temperature: 0 },
      });
      assert.equal(http.choices[0].text, g.text, `adapter "${adapter}"`);
    }
  });

  test("streamed completions and chats concatenate to the non-streamed ones", async () => {
    const params = { model: "loramoe", prompt: PROMPT, max_tokens: 12, temperature: 0,
                     ignore_eos: true };
    const whole = await openai.completions.create(params);
    let text = "", usage = null, finish = null;
    for await (const chunk of await openai.completions.create({
      ...params, stream: true, stream_options: { include_usage: true } })) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) { text += c.text; finish = c.finish_reason ?? finish; }
    }
    assert.equal(text, whole.choices[0].text);
    assert.equal(finish, "length");
    assert.deepEqual(usage, whole.usage);

    const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello" }];
    const chat = await openai.chat.completions.create({
      model: "mhmoe", messages, max_tokens: 12, temperature: 0, ignore_eos: true });
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0].message.role, "assistant");
    assert.ok(chat.choices[0].message.content.length > 0);
    let content = "", role = null, chunks = 0;
    for await (const chunk of await openai.chat.completions.create({
      model: "mhmoe", messages, max_tokens: 12, temperature: 0, ignore_eos: true, stream: true })) {
      assert.equal(chunk.object, "chat.completion.chunk");
      assert.match(chunk.id, /^chatcmpl-/);
      const d = chunk.choices[0].delta;
      if (d.role) role = d.role;
      content += d.content ?? "";
      chunks++;
    }
    assert.equal(role, "assistant");
    assert.ok(chunks > 2, "tokens arrive as they are generated");
    assert.equal(content, chat.choices[0].message.content);
  });

  test("every sampling parameter reaches the sampler as over gRPC", async () => {
    // Each parameter changes the output (else the comparison proves nothing), and HTTP gives
    // exactly what gRPC gives with the same setting: nothing is dropped or renamed on the way.
    const base = { prompt: PROMPT, max_tokens: 48, ignore_eos: true };
    const cases = [
      [{ temperature: 0, repetition_penalty: 1.8 }, { temperature: 0, repetition_penalty: 1.8 }],
      [{ temperature: 0, frequency_penalty: 1.5 }, { temperature: 0, frequency_penalty: 1.5 }],
      [{ temperature: 0, presence_penalty: 1.5 }, { temperature: 0, presence_penalty: 1.5 }],
      [{ temperature: 1, seed: 5, top_k: 3 }, { temperature: 1, seed: 5, top_k: 3 }],
      [{ temperature: 1, seed: 5, top_p: 0.3 }, { temperature: 1, seed: 5, top_p: 0.3 }],
      [{ temperature: 1, seed: 5, min_p: 0.5 }, { temperature: 1, seed: 5, min_p: 0.5 }],
    ];
    const neutral = (c) => Object.fromEntries(Object.entries(c).filter(([k]) =>
      ["temperature", "seed"].includes(k)));
    for (const [httpParams, sampling] of cases) {
      const viaHttp = (await openai.completions.create(
        { model: "mixlora", ...base, ...httpParams })).choices[0].text;
      const without = (await openai.completions.create(
        { model: "mixlora", ...base, ...neutral(httpParams) })).choices[0].text;
      const viaGrpc = await unary(server.client, "Generate", {
        text: PROMPT, adapter: "mixlora", max_tokens: 48, ignore_eos: true, sampling });
      const what = JSON.stringify(httpParams);
      assert.notEqual(viaHttp, without, `${what} changes the output`);
      assert.equal(viaHttp, viaGrpc.text, `${what}: HTTP and gRPC agree`);
    }
  });

  test("n > 1 gives distinct seeded choices, streamed and not, reproducibly", async () => {
    const params = { model: "mixlora", prompt: PROMPT, max_tokens: 8, n: 3, temperature: 1.0,
                     seed: 42, ignore_eos: true };
    const a = await openai.completions.create(params);
    const b = await openai.completions.create(params);
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text), "seeded");
    assert.ok(new Set(a.choices.map((c) => c.text)).size > 1, "the choices differ");
    assert.equal(a.usage.completion_tokens, 24);
    const streamed = ["", "", ""];
    for await (const chunk of await openai.completions.create({ ...params, stream: true })) {
      for (const c of chunk.choices) streamed[c.index] += c.text;
    }
    assert.deepEqual(streamed, a.choices.map((c) => c.text));
    const chat = await openai.chat.completions.create({
      model: "lora", messages: [{ role: "user", content: "Hi" }], n: 2, max_tokens: 5,
      temperature: 1, seed: 7 });
    assert.deepEqual(chat.choices.map((c) => c.index), [0, 1]);
  });

  test("logit_bias steers sampling as OpenAI's does", async () => {
    const base = { model: BASE, prompt: PROMPT, max_tokens: 6, temperature: 0 };
    // Banning the greedy first token changes it, over gRPC and HTTP alike.
    const greedy = await unary(server.client, "Generate", {
      text: PROMPT, sampling: { temperature: 0 }, max_tokens: 1 });
    const firstId = greedy.token_ids[0];
    const banned = await unary(server.client, "Generate", {
      text: PROMPT, sampling: { temperature: 0, logit_bias: { [firstId]: -100 } }, max_tokens: 1 });
    assert.notEqual(banned.token_ids[0], firstId);
    const bannedHttp = await openai.completions.create({
      ...base, max_tokens: 1, logit_bias: { [firstId]: -100 } });
    const bannedText = (await call(server, "POST", "/detokenize",
                                   { tokens: banned.token_ids })).json.prompt;
    assert.equal(bannedHttp.choices[0].text, bannedText);
    // Forcing a token repeats it.
    const forced = await openai.completions.create({ ...base, logit_bias: { 42: 100 }, temperature: 1,
                                                     seed: 7 });
    const text42 = (await call(server, "POST", "/detokenize", { tokens: [42] })).json.prompt;
    assert.equal(forced.choices[0].text, text42.repeat(6));
    const chat = await openai.chat.completions.create({
      model: BASE, messages: [{ role: "user", content: "hi" }], max_tokens: 3, logit_bias: { 42: 100 } });
    assert.equal(chat.choices[0].message.content, text42.repeat(3));
  });

  test("stop strings end the text before them", async () => {
    const params = { model: "mixlora", prompt: PROMPT, max_tokens: 24, temperature: 0,
                     ignore_eos: true };
    const full = (await openai.completions.create(params)).choices[0].text;
    const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
    assert.ok(stop.length === 3, `a stop string from the middle of ${JSON.stringify(full)}`);
    const cut = await openai.completions.create({ ...params, stop: [stop, "never-appears"] });
    assert.equal(cut.choices[0].text, full.slice(0, full.indexOf(stop)));
    assert.equal(cut.choices[0].finish_reason, "stop");
    let streamed = "";
    for await (const chunk of await openai.completions.create({ ...params, stop, stream: true })) {
      streamed += chunk.choices[0]?.text ?? "";
    }
    assert.equal(streamed, cut.choices[0].text);
  });

  test("log-probs: completions' and chat's formats, greedy picks the top one", async () => {
    const comp = await openai.completions.create({
      model: "lora", prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 3,
      ignore_eos: true });
    const lp = comp.choices[0].logprobs;
    assert.equal(lp.tokens.length, 6);
    assert.equal(lp.tokens.join(""), comp.choices[0].text);
    let offset = 0;
    for (let i = 0; i < 6; i++) {
      assert.ok(lp.token_logprobs[i] <= 0);
      const tops = Object.values(lp.top_logprobs[i]);
      assert.ok(tops.length >= 1 && tops.length <= 3);
      assert.ok(Math.abs(Math.max(...tops) - lp.token_logprobs[i]) < 1e-5,
                `greedy = top: ${JSON.stringify(lp)}`);
      assert.equal(lp.text_offset[i], offset);
      offset += lp.tokens[i].length;
    }
    const chat = await openai.chat.completions.create({
      model: "lora", messages: [{ role: "user", content: "Hi" }], max_tokens: 5,
      temperature: 0, logprobs: true, top_logprobs: 2, ignore_eos: true });
    const content = chat.choices[0].logprobs.content;
    assert.equal(content.length, 5);
    for (const t of content) {
      assert.ok(t.logprob <= 0);
      assert.deepEqual(t.bytes, [...Buffer.from(t.token, "utf8")]);
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5);
    }
  });

  test("errors reach the SDK as exceptions carrying our message", async () => {
    await assert.rejects(
      openai.completions.create({ model: "nope", prompt: "x", max_tokens: 2 }),
      (e) => e instanceof OpenAI.NotFoundError && /nope/.test(e.message));
    await assert.rejects(
      openai.completions.create({ model: BASE, prompt: "x", temperature: -1 }),
      (e) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message) &&
             e.param === "temperature");
    await assert.rejects(
      openai.chat.completions.create({ model: BASE, messages: [] }),
      (e) => e.status === 400 && /messages/.test(e.message));
    await assert.rejects(
      openai.completions.create({ model: BASE, prompt: "x", max_tokens: 100000000 }),
      (e) => e.status === 400 && /context length/.test(e.message));
  });

  test("SSE framing: data lines, blank-line separators, [DONE], one id", async () => {
    const res = await fetch(`${server.http}/v1/chat/completions`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "mixlora", messages: [{ role: "user", content: "Hi" }],
                             max_tokens: 6, temperature: 0, ignore_eos: true, stream: true,
                             stream_options: { include_usage: true } }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    assert.equal(res.headers.get("transfer-encoding"), "chunked");
    const events = sseEvents(await res.text());
    assert.equal(new Set(events.map((e) => e.id)).size, 1);
    const usage = events.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 6);
    const last = events.at(-2);
    assert.equal(last.choices[0].finish_reason, "length");
    for (const e of events.slice(0, -2)) assert.equal(e.choices[0].finish_reason, null);
  });

  test("a mixture of adapters by the adapters extension field, as over gRPC", async () => {
    const params = { model: BASE, prompt: PROMPT, max_tokens: 10, temperature: 0,
                     ignore_eos: true };
    const text = async (extra) => (await openai.completions.create({ ...params, ...extra }))
      .choices[0].text;
    const mixture = [{ name: "mixlora", weight: 0.6 }, { name: "loramoe", weight: 0.4 }];
    const mixed = await openai.completions.create({ ...params, adapters: mixture });
    assert.equal(mixed.model, BASE);
    assert.equal(mixed.usage.completion_tokens, 10);
    // Weight 1 is the adapter itself, weight 0 the base model, exactly.
    assert.equal(await text({ adapters: [{ name: "mixlora" }] }),
                 await text({ model: "mixlora" }));
    assert.equal(await text({ adapters: [{ name: "mixlora", weight: 0 }] }), await text({}));
    // One generation path: gRPC's adapters field gives the same text, and each member's routing.
    const before = (await call(server, "GET", "/v1/adapters/loramoe/routing")).json;
    const g = await unary(server.client, "Generate", {
      text: PROMPT, adapters: mixture, max_tokens: 10, ignore_eos: true,
      sampling: { temperature: 0 }, include_routing: true,
    });
    assert.equal(g.text, mixed.choices[0].text);
    assert.match(g.adapter_version, /^\d+,\d+$/, "each member's version");
    const routedBy = new Set(g.routing.sites.map((site) => site.adapter));
    assert.deepEqual([...routedBy].sort(), ["loramoe", "mixlora"]);
    assert.ok(g.routing.sites.some((site) => site.adapter === "mixlora" && site.site === "ffn"));
    const after = (await call(server, "GET", "/v1/adapters/loramoe/routing")).json;
    const tokens = (snap) => snap.total.reduce((n, site) => n + site.tokens, 0);
    assert.ok(tokens(after) > tokens(before), "a member's routing counts as its own");
  });

  test("a router over adapters: served by name, its members as experts in its routing",
       async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    const load = await call(server, "POST", "/v1/load_lora_adapter",
                            { lora_name: "routed", lora_path: "router" }, auth);
    assert.equal(load.status, 200, load.text);
    const params = { prompt: PROMPT, max_tokens: 6, temperature: 0, ignore_eos: true };
    const routed = await openai.completions.create({ model: "routed", ...params });
    const base = await openai.completions.create({ model: BASE, ...params });
    assert.equal(routed.usage.completion_tokens, 6);
    assert.notEqual(routed.choices[0].text, base.choices[0].text, "the router's members apply");
    const r = await call(server, "GET", "/v1/adapters/routed/routing");
    assert.equal(r.status, 200, r.text);
    const ffn = r.json.total.filter((site) => site.site === "ffn");
    assert.equal(ffn.length, 3, "a router per layer");
    for (const site of ffn) {
      assert.equal(site.load.length, 3, "three members");
      assert.ok(Math.abs(site.load.reduce((a, b) => a + b, 0) - 1) < 1e-6);
      assert.equal(site.experts_per_token_histogram[2], site.tokens, "top-2 of the members");
    }
    const g = await unary(server.client, "Generate", {
      text: PROMPT, adapter: "routed", max_tokens: 6, ignore_eos: true,
      sampling: { temperature: 0 }, include_routing: true,
    });
    assert.equal(g.text, routed.choices[0].text);
    assert.deepEqual(new Set(g.routing.sites.map((site) => site.site)), new Set(["ffn"]));
    for (const site of g.routing.sites) assert.equal(site.expert_tokens.length, 3);
    const gone = await call(server, "POST", "/v1/unload_lora_adapter", { lora_name: "routed" },
                            auth);
    assert.equal(gone.status, 200, gone.text);
  });

  test("malformed mixtures: 400 naming the field, 404 for an unknown member", async () => {
    const post = (adapters, model = BASE) => call(server, "POST", "/v1/completions",
                                                  { model, prompt: "x", max_tokens: 2, adapters });
    let e = assertErrorBody(await post([{ name: "nope" }]), 404, /nope/);
    e = assertErrorBody(await post([{ name: "lora", weight: "x" }]), 400, /number/);
    assert.equal(e.param, "adapters[0].weight");
    e = assertErrorBody(await post([{ name: "lora" }, { name: "mixlora", weight: 1e9 }]), 400,
                        /\[-100, 100\]/);
    assert.equal(e.param, "adapters[1].weight");
    assertErrorBody(await post([{ weight: 1 }]), 400, /required/);
    assertErrorBody(await post([{ name: "lora", scale: 1 }]), 400, /unknown field "scale"/);
    assertErrorBody(await post([]), 400, /empty/);
    assertErrorBody(await post("lora"), 400, /array/);
    assertErrorBody(await post([{ name: "lora" }], "mixlora"), 400, /base model/);
    assertErrorBody(await post([{ name: "lora" }, { name: "lora" }]), 400, /named twice/);
    assertErrorBody(await post(Array.from({ length: 17 }, () => ({ name: "lora" }))), 400,
                    /at most 16/);
    await assert.rejects(unary(server.client, "Generate", {
      text: "x", adapters: [{ name: "lora", weight: NaN }], max_tokens: 2 }), /weight/);
    assert.equal((await call(server, "GET", "/health")).status, 200);
  });

  test("bad requests: 400, 404, 405 with OpenAI's error object", async () => {
    let e = assertErrorBody(await call(server, "POST", "/v1/completions", "{not json"), 400,
                            /JSON/);
    assert.equal(e.type, "BadRequestError");
    assertErrorBody(await call(server, "POST", "/v1/completions", "[1,2]"), 400, /object/);
    e = assertErrorBody(await call(server, "POST", "/v1/completions",
                                   { model: BASE, prompt: "x", top_p: "high" }), 400, /top_p/);
    assert.equal(e.param, "top_p");
    assertErrorBody(await call(server, "POST", "/v1/completions",
                               { model: BASE, prompt: "x", n: 0 }), 400, /\bn\b/);
    assertErrorBody(await call(server, "POST", "/v1/completions",
                               { model: BASE, prompt: [999999] }), 400, /vocabulary/);
    assertErrorBody(await call(server, "POST", "/v1/chat/completions",
                               { model: BASE, messages: [{ role: "user" }] }), 400, /content/);
    for (const logit_bias of [{ 5: 101 }, { x: 1 }, { 5: "1" }, [1], { 999999: 1 }]) {
      assertErrorBody(await call(server, "POST", "/v1/completions",
                                 { model: BASE, prompt: "x", logit_bias }), 400, /logit_bias/);
    }
    e = assertErrorBody(await call(server, "POST", "/v1/completions",
                                   { model: "nope", prompt: "x" }), 404, /nope/);
    assert.equal(e.code, "model_not_found");
    assertErrorBody(await call(server, "GET", "/v1/nothing"), 404, /no route/);
    assertErrorBody(await call(server, "GET", "/v1/completions"), 405, /method/);
    assertErrorBody(await call(server, "GET", "/v1/adapters/nope/routing"), 404, /nope/);
    // A bug in a request costs that request only: the server still answers.
    assert.equal((await call(server, "GET", "/health")).status, 200);
  });

  test("a client that disconnects mid-stream has its request cancelled", async () => {
    await waitIdle(server);
    const before = finishedRequests(server).length;
    const s = openStream(server, { model: "mixlora", prompt: PROMPT, max_tokens: 3000,
                                   ignore_eos: true });
    const { status } = await s.first;
    assert.equal(status, 200);
    s.req.destroy();
    await waitIdle(server);
    await until(() => finishedRequests(server).length > before, "the request's log line");
    const done = finishedRequests(server).slice(before);
    assert.equal(done.length, 1);
    assert.equal(done[0].finish, "cancelled");
    assert.ok(done[0].completion_tokens < 3000, `${done[0].completion_tokens} tokens`);
  });

  test("many streams cut off at random leave nothing behind", async () => {
    await waitIdle(server);
    const streams = Array.from({ length: 120 }, (_, i) => openStream(server, {
      model: ["mixlora", "lora", BASE][i % 3], prompt: `${PROMPT} ${i}`, max_tokens: 400,
      ignore_eos: true, temperature: 1, seed: i }));
    // Some go before their first byte, some after a few chunks, the rest read to the end.
    let cut = 0;
    await Promise.all(streams.map(async (s, i) => {
      if (i % 3 === 0) { s.req.destroy(); cut++; return; }
      try { await s.first; } catch { return; }
      if (i % 3 === 1) { s.req.destroy(); cut++; }
    }));
    assert.equal(cut, 80);
    await waitIdle(server);  // every request finished or was cancelled; KV blocks free
    const after = await openai.completions.create({ model: "mixlora", prompt: PROMPT,
                                                    max_tokens: 4 });
    assert.equal(after.choices[0].finish_reason, "length", "the server still serves");
  });

  test("routing statistics as JSON", async () => {
    await openai.completions.create({ model: "mixlora", prompt: PROMPT, max_tokens: 4 });
    const r = await call(server, "GET", "/v1/adapters/mixlora/routing");
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.adapter, "mixlora");
    assert.ok(r.json.window_tokens > 0);
    const ffn = r.json.window.filter((s) => s.site === "ffn");
    assert.ok(ffn.length > 0, r.text);
    for (const s of ffn) {
      const sum = s.load.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - 1) < 1e-6, `load sums to 1 in layer ${s.layer}`);
      assert.ok(s.router_entropy >= 0 && s.load_cv >= 0 && s.switch_aux_loss > 0);
    }
  });

  test("expert diagnostics as JSON, and the routing of the version before a swap", async () => {
    let r = await call(server, "GET", "/v1/adapters/mixlora/experts");
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.similarity_threshold, 0.9);
    const ffn = r.json.sites.filter((s) => s.site.startsWith("ffn."));
    assert.ok(ffn.length > 0, r.text);
    let pairs = 0;
    for (const s of r.json.sites) {
      assert.equal(s.similarity.length, s.experts);
      s.similarity.forEach((row, i) => assert.ok(Math.abs(row[i] - 1) < 1e-9, "diagonal"));
      s.effective_rank.forEach((e, i) => assert.ok(e >= 1 && e <= s.rank[i] + 1e-9, `${e}`));
      pairs += s.experts * (s.experts - 1) / 2;
    }
    for (const s of ffn) assert.equal(s.router_norm.length, s.experts);
    assert.deepEqual(r.json.redundant_pairs, [], "random experts are not alike");
    assert.equal(r.json.summary.sites, r.json.sites.length);
    r = await call(server, "GET", "/v1/adapters/mixlora/experts?similarity_threshold=-1");
    assert.equal(r.json.redundant_pairs.length, pairs, "every pair at threshold -1");
    for (const q of ["abc", "2", "nan"]) {
      assertErrorBody(await call(server, "GET", `/v1/adapters/mixlora/experts?similarity_threshold=${q}`),
                      400, /similarity_threshold/);
    }
    assertErrorBody(await call(server, "GET", "/v1/adapters/nope/experts"), 404, /nope/);

    // A swap to an adapter whose expert 3 copies expert 1: flagged in every MixLoRA projection.
    const auth = { authorization: `Bearer ${TOKEN}` };
    const load = (body) => call(server, "POST", "/v1/load_lora_adapter", body, auth);
    assert.equal((await load({ lora_name: "twin", lora_path: "mixlora" })).status, 200);
    assertErrorBody(await call(server, "GET", "/v1/adapters/twin/routing?version=previous"), 404,
                    /before its current one/);
    await openai.completions.create({ model: "twin", prompt: PROMPT, max_tokens: 4 });
    const before = (await call(server, "GET", "/v1/adapters/twin/routing")).json;
    assert.equal((await load({ lora_name: "twin", lora_path: "mixlora_twin",
                               load_inplace: true })).status, 200);
    r = await call(server, "GET", "/v1/adapters/twin/experts");
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.redundant_pairs.length, ffn.length, r.text);
    for (const p of r.json.redundant_pairs) {
      assert.deepEqual(p.experts, [1, 3]);
      assert.ok(p.similarity > 0.9999 && p.site.startsWith("ffn."), JSON.stringify(p));
    }
    assert.ok(r.json.summary.max_similarity > 0.9999);
    // Before the new version routes, and after: the previous version's statistics stay.
    for (let i = 0; i < 2; i++) {
      r = await call(server, "GET", "/v1/adapters/twin/routing?version=previous");
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.version, before.version);
      assert.deepEqual(r.json.total, before.total);
      await openai.completions.create({ model: "twin", prompt: PROMPT, max_tokens: 4 });
    }
    const now = (await call(server, "GET", "/v1/adapters/twin/routing")).json;
    assert.ok(now.version > before.version && now.total.length > 0);
    assertErrorBody(await call(server, "GET", "/v1/adapters/twin/routing?version=old"), 400,
                    /version/);
    const gone = await call(server, "POST", "/v1/unload_lora_adapter", { lora_name: "twin" }, auth);
    assert.equal(gone.status, 200, gone.text);
  });

  test("load and unload adapters as vLLM does, while streams run", async () => {
    const streams = [];
    for (let i = 0; i < 6; i++) {
      streams.push(call(server, "POST", "/v1/completions", {
        model: i % 2 ? "mixlora" : BASE, prompt: PROMPT, max_tokens: 200, ignore_eos: true,
        temperature: 0, stream: true }));
    }
    const auth = { authorization: `Bearer ${TOKEN}` };
    const load = (body, headers = auth) => call(server, "POST", "/v1/load_lora_adapter", body,
                                                 headers);
    assertErrorBody(await load({ lora_name: "hot", lora_path: "loramoe" }, {}), 401, /token/);
    assertErrorBody(await load({ lora_name: "hot", lora_path: "loramoe" },
                               { authorization: "Bearer wrong" }), 403, /token/);
    assertErrorBody(await load({ lora_name: "hot", lora_path: "../x" }), 403, /adapter root/);
    assertErrorBody(await load({ lora_name: "hot", lora_path: "missing" }), 404, /missing/);
    assertErrorBody(await load({ lora_name: "hot" }), 400, /lora_path/);
    // vLLM answers 400 for a name in use.
    assertErrorBody(await load({ lora_name: "mixlora", lora_path: "lora" }), 400,
                    /already loaded/);
    const ok = await load({ lora_name: "hot", lora_path: "loramoe" });
    assert.equal(ok.status, 200, ok.text);
    assert.match(ok.text, /Success: LoRA adapter 'hot' added/);
    let models = (await call(server, "GET", "/v1/models")).json.data.map((m) => m.id);
    assert.ok(models.includes("hot"));
    const viaHot = await openai.completions.create({ model: "hot", prompt: PROMPT, max_tokens: 6,
                                                     temperature: 0, ignore_eos: true });
    const viaLoramoe = await openai.completions.create({
      model: "loramoe", prompt: PROMPT, max_tokens: 6, temperature: 0, ignore_eos: true });
    assert.equal(viaHot.choices[0].text, viaLoramoe.choices[0].text, "same weights");
    // load_inplace replaces the weights under the same name.
    const swapped = await load({ lora_name: "hot", lora_path: "mhmoe", load_inplace: true });
    assert.equal(swapped.status, 200, swapped.text);
    const unload = (body, headers = auth) => call(server, "POST", "/v1/unload_lora_adapter", body,
                                                   headers);
    assertErrorBody(await unload({ lora_name: "hot" }, {}), 401, /token/);
    assertErrorBody(await unload({ lora_name: "nope" }), 404, /nope/);
    const gone = await unload({ lora_name: "hot" });
    assert.equal(gone.status, 200, gone.text);
    assert.match(gone.text, /Success: LoRA adapter 'hot' removed/);
    models = (await call(server, "GET", "/v1/models")).json.data.map((m) => m.id);
    assert.ok(!models.includes("hot"));
    assertErrorBody(await call(server, "POST", "/v1/completions", { model: "hot", prompt: "x" }),
                    404, /hot/);
    // Every stream that ran meanwhile completed in full.
    for (const s of await Promise.all(streams)) {
      assert.equal(s.status, 200, s.text);
      const events = sseEvents(s.text);
      assert.equal(events.at(-1).choices[0].finish_reason, "length");
    }
  });

  test("tokenize and detokenize as vLLM does, the same ids as the gRPC tokenizer", async () => {
    const t = await call(server, "POST", "/tokenize", { model: "mixlora", prompt: PROMPT });
    assert.equal(t.status, 200, t.text);
    const g = await unary(server.client, "Tokenize", { text: PROMPT });
    assert.deepEqual(t.json.tokens, g.token_ids);
    assert.equal(t.json.count, g.token_ids.length);
    assert.ok(t.json.max_model_len > 0);
    const plain = await call(server, "POST", "/tokenize",
                             { prompt: PROMPT, add_special_tokens: false });
    assert.ok(plain.json.count <= t.json.count);
    const chat = await call(server, "POST", "/tokenize",
                            { messages: [{ role: "user", content: "Hi" }] });
    assert.equal(chat.status, 200, chat.text);
    assert.ok(chat.json.count > plain.json.count / 4, "the template's tokens are there");
    const d = await call(server, "POST", "/detokenize", { tokens: plain.json.tokens });
    assert.equal(d.status, 200, d.text);
    assert.equal(d.json.prompt, PROMPT);
    assertErrorBody(await call(server, "POST", "/detokenize", { tokens: [1, 999999] }), 400,
                    /vocabulary/);
    assertErrorBody(await call(server, "POST", "/tokenize", { prompt: 5 }), 400, /prompt/);
    assertErrorBody(await call(server, "POST", "/tokenize", { model: "nope", prompt: "x" }), 404,
                    /nope/);
    assertErrorBody(await call(server, "GET", "/tokenize"), 405, /method/);
  });

  test("health and version", async () => {
    const h = await call(server, "GET", "/health");
    assert.equal(h.status, 200);
    assert.deepEqual(h.json, { status: "ok" });
    const v = await call(server, "GET", "/version");
    assert.equal(v.status, 200);
    assert.match(v.json.version, /\d+\.\d+/);
  });
});

describe("HTTP limits and draining", () => {
  test("413 over the body cap, 429 with Retry-After over the concurrency cap, 503 draining",
       async () => {
    const server = await startServer(["--http-max-body-bytes", "4096", "--http-max-concurrent",
                                      "2", "--log-level", "info"]);
    try {
      const big = { model: "tiny", prompt: "x".repeat(8000) };
      const r413 = await call(server, "POST", "/v1/completions", big);
      assert.equal(assertErrorBody(r413, 413, /4096 bytes/).code, 413);
      // Announced with Expect: 100-continue, an oversized body is refused before it is sent, and
      // a body within the cap gets "100 Continue" at once (curl would otherwise wait a second).
      const raw = (head, body) => new Promise((resolve, reject) => {
        const s = net.connect(Number(new URL(server.http).port), "127.0.0.1");
        let got = "";
        s.on("data", (d) => {
          got += d;
          if (body !== undefined && got.startsWith("HTTP/1.1 100")) {
            s.write(body);
            body = undefined;
          }
          if (/\r\n\r\n[\s\S]*\}$/.test(got)) { s.end(); resolve(got); }
        });
        s.on("error", reject);
        s.write(head);
      });
      const head = (n) => `POST /v1/completions HTTP/1.1\r\nHost: x\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${n}\r\nExpect: 100-continue\r\n\r\n`;
      const refused = await raw(head(10000000));
      assert.match(refused, /^HTTP\/1.1 413/);
      const small = JSON.stringify({ model: "tiny", prompt: "hi", max_tokens: 2 });
      const ok = await raw(head(Buffer.byteLength(small)), small);
      assert.match(ok, /^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200/);
      const long = { model: "tiny", prompt: PROMPT, max_tokens: 3000, ignore_eos: true };
      const a = openStream(server, long), b = openStream(server, long);
      await Promise.all([a.first, b.first]);
      const r429 = await call(server, "POST", "/v1/completions", { ...long, max_tokens: 2 });
      assertErrorBody(r429, 429, /too many concurrent/);
      assert.equal(r429.headers.get("retry-after"), "1");
      a.req.destroy();
      b.req.destroy();
      await waitIdle(server);
      // Capacity is back once they are gone.
      const again = await call(server, "POST", "/v1/completions", { ...long, max_tokens: 2 });
      assert.equal(again.status, 200, again.text);

      // SIGTERM: /health says 503 and new requests are refused while a stream finishes.
      const inFlight = call(server, "POST", "/v1/completions", { ...long, max_tokens: 2000,
                                                                stream: true });
      await until(async () => (await unary(server.client, "GetServerInfo", {})).running === 1,
                  "the stream to run");
      server.proc.kill("SIGTERM");
      await until(async () => (await call(server, "GET", "/health")).status === 503,
                  "/health to say 503");
      assertErrorBody(await call(server, "POST", "/v1/completions", { ...long, max_tokens: 2 }),
                      503, /shutting down/);
      const finished = await inFlight;
      assert.equal(sseEvents(finished.text).at(-1).choices[0].finish_reason, "length");
      const { code } = await server.exited;
      assert.equal(code, 0);
    } finally {
      await server.stop();
    }
  });
});

describe("HTTP while the model loads", () => {
  test("/health says 503 loading and requests get 503 until the server serves", async () => {
    // Thirty adapters to load make the loading phase long enough to watch.
    const root = makeAdapterRoot(["mixlora"]);
    const names = Array.from({ length: 30 }, (_, i) => `copy${i}`);
    for (const n of names) fs.cpSync(path.join(root, "mixlora"), path.join(root, n), { recursive: true });
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const starting = startServer(["--http-port", String(port), "--adapter-root", root,
                                  ...names.flatMap((n) => ["--adapter", n])]);
    const seen = new Set();
    let refused = null;
    for (let i = 0; i < 4000 && !seen.has(200); i++) {
      try {
        const h = await fetch(`${url}/health`);
        const body = await h.json();
        seen.add(h.status);
        if (h.status === 503) {
          assert.deepEqual(body, { status: "loading" });
          refused ??= await fetch(`${url}/v1/completions`, {
            method: "POST", headers: { "content-type": "application/json" },
            body: JSON.stringify({ prompt: "x", max_tokens: 1 }),
          }).then(async (r) => ({ status: r.status, body: await r.json() }));
          assert.equal((await fetch(`${url}/version`)).status, 200, "/version answers");
        }
      } catch {}  // not listening yet
      await new Promise((r) => setTimeout(r, 2));
    }
    const server = await starting;
    try {
      assert.ok(seen.has(503), "/health said 503 while loading");
      assert.ok(seen.has(200), "then 200");
      if (refused.status !== 200) {  // the load may have finished in between
        assert.equal(refused.status, 503);
        assert.match(refused.body.error.message, /loading/);
      }
    } finally {
      await server.stop();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

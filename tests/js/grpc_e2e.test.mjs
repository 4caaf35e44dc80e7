// End to end over gRPC with the server as a real process on loopback, driven by @grpc/grpc-js
// from the .proto files alone (a client we did not write): generation of several adapters at
// once, hot swap under load, cancellation and deadlines, every kind of bad request, the standard
// health protocol, reflection, and a graceful shutdown.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  admin, BIN, grpc, makeAdapterRoot, startServer, stream, unary, waitIdle,
} from "./server_harness.mjs";

const TOKEN = "s3cret";
const ADAPTERS = ["mixlora", "loramoe", "mhmoe", "lora"];
const greedy = (extra = {}) => ({
  text: "The quick brown fox", max_tokens: 12, ignore_eos: true,
  sampling: { temperature: 0 }, ...extra,
});


describe("switchyard-server over gRPC", () => {
  let server;
  let root;
  before(async () => {
    root = makeAdapterRoot([...ADAPTERS, "truncated"]);
    fs.symlinkSync("/tmp", path.join(root, "escape"));
    server = await startServer(["--adapter-root", root, "--admin-token", TOKEN,
                                ...ADAPTERS.flatMap((a) => ["--adapter", `${a}=${a}`])]);
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, "graceful exit");
    fs.rmSync(root, { recursive: true, force: true });
  });

  test("the standard health protocol says SERVING", async () => {
    const all = await unary(server.health, "Check", { service: "" });
    assert.equal(all.status, "SERVING");
    const svc = await unary(server.health, "Check", { service: "switchyard.v1.Switchyard" });
    assert.equal(svc.status, "SERVING");
    await assert.rejects(unary(server.health, "Check", { service: "no.such.Service" }),
                         (e) => e.code === grpc.status.NOT_FOUND);
  });

  test("reflection lists the services", async () => {
    const call = server.reflection.ServerReflectionInfo();
    const reply = new Promise((resolve, reject) => {
      call.on("data", resolve);
      call.on("error", reject);
    });
    call.write({ list_services: "" });
    const r = await reply;
    call.end();
    const names = r.list_services_response.service.map((s) => s.name);
    assert.ok(names.includes("switchyard.v1.Switchyard"), names.join(","));
    assert.ok(names.includes("grpc.health.v1.Health"), names.join(","));
  });

  test("unary and streaming agree, for the base model and every adapter at once", async () => {
    const names = ["", ...ADAPTERS];
    const alone = {};
    for (const a of names) alone[a] = await unary(server.client, "Generate", greedy({ adapter: a }));
    const outputs = await Promise.all(names.flatMap((a) => [0, 1, 2].map(async () => {
      const s = stream(server.client, greedy({ adapter: a }));
      await s.done;
      return [a, s];
    })));
    for (const [a, s] of outputs) {
      assert.deepEqual(s.token_ids, alone[a].token_ids, `adapter ${a || "base"}`);
      assert.equal(s.text, alone[a].text);
      assert.equal(s.last.finish_reason, "FINISH_REASON_LENGTH");
      assert.equal(s.last.usage.completion_tokens, 12);
    }
    // Adapters change the output (the fixtures are not no-ops).
    assert.notDeepEqual(alone.mixlora.token_ids, alone[""].token_ids);
    assert.ok(alone.mixlora.adapter_version !== "");
  });

  test("chat, echo, stop strings, logprobs and the routing summary", async () => {
    const chat = await unary(server.client, "Generate", {
      messages: { messages: [{ role: "user", content: "Hello" }] }, max_tokens: 4,
      sampling: { temperature: 0 }, echo: true,
    });
    assert.ok(chat.prompt_text.length > 0);
    const base = await unary(server.client, "Generate", greedy({ max_tokens: 20 }));
    const stopAt = base.text.slice(3, 6);
    if (stopAt.length === 3) {
      const stopped = await unary(server.client, "Generate", greedy({ max_tokens: 20, stop: [stopAt] }));
      assert.equal(stopped.finish_reason, "FINISH_REASON_STOP_STRING");
      assert.equal(stopped.text, base.text.slice(0, base.text.indexOf(stopAt)));
    }
    const lp = await unary(server.client, "Generate", greedy({ logprobs: 3, max_tokens: 3 }));
    assert.equal(lp.logprobs.length, 3);
    assert.equal(lp.logprobs[0].top.length, 3);
    assert.equal(lp.logprobs[0].token_id, lp.token_ids[0]);
    const routed = await unary(server.client, "Generate",
                               greedy({ adapter: "mixlora", include_routing: true }));
    const ffn = routed.routing.sites.filter((s) => s.site === "ffn");
    assert.ok(ffn.length > 0);
    const promptTokens = routed.usage.prompt_tokens;
    for (const s of ffn) {
      assert.equal(s.expert_tokens.reduce((a, b) => a + b, 0), 2 * (promptTokens + 12 - 1));
    }
    const stats = await unary(server.client, "GetRoutingStats", { adapter: "mixlora" });
    assert.ok(stats.window.length > 0);
    assert.ok(stats.window[0].experts.length === 4);
    assert.ok(stats.window[0].tokens > 0);
  });

  test("a hot swap under load fails nothing and mixes no versions", async () => {
    await unary(server.client, "LoadAdapter", { name: "swappy", path: "mixlora" },
                { metadata: admin(TOKEN) });
    const v1 = await unary(server.client, "Generate", greedy({ adapter: "swappy" }));
    const expected = { [v1.adapter_version]: v1.token_ids };
    const running = [];
    let swapped = false;
    const load = (async () => {
      while (!swapped || running.length < 60) {
        running.push(stream(server.client, greedy({ adapter: "swappy" })));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await new Promise((r) => setTimeout(r, 150));
    const info = await unary(server.client, "LoadAdapter",
                             { name: "swappy", path: "loramoe", replace: true },
                             { metadata: admin(TOKEN) });
    swapped = true;
    await load;
    const v2 = await unary(server.client, "Generate", greedy({ adapter: "swappy" }));
    assert.equal(v2.adapter_version, String(info.adapter.version));
    expected[v2.adapter_version] = v2.token_ids;
    assert.notDeepEqual(v1.token_ids, v2.token_ids);
    const seen = new Set();
    for (const s of running) {
      await s.done;  // none failed
      assert.ok(s.version in expected, `unknown version ${s.version}`);
      assert.deepEqual(s.token_ids, expected[s.version], `a request on version ${s.version}`);
      seen.add(s.version);
    }
    assert.equal(seen.size, 2, "requests ran on both versions");
  });

  test("cancellation and deadlines free the request's resources", async () => {
    const long = greedy({ max_tokens: 3000, text: "a b c" });
    const s = stream(server.client, long, {
      onMessage: (m, call) => { if (s.messages.length === 3) call.cancel(); },
    });
    await assert.rejects(s.done, (e) => e.code === grpc.status.CANCELLED);
    await waitIdle(server);
    await assert.rejects(
      unary(server.client, "Generate", long, { deadline: Date.now() + 200 }),
      (e) => e.code === grpc.status.DEADLINE_EXCEEDED);
    await waitIdle(server);
  });

  test("structured output: a JSON schema, a regex, a choice and a grammar constrain the text", async () => {
    const schema = { type: "object", properties: { n: { type: "integer", minimum: 1, maximum: 9 } },
                     required: ["n"], additionalProperties: false };
    const cases = [
      [{ json_schema: JSON.stringify(schema) },
       (t) => { const v = JSON.parse(t); assert.ok(v.n >= 1 && v.n <= 9 && Object.keys(v).length === 1, t); }],
      [{ json_object: true }, (t) => assert.equal(typeof JSON.parse(t), "object")],
      [{ regex: "[a-f]{4}-\\d" }, (t) => assert.match(t, /^[a-f]{4}-\d$/)],
      [{ choice: { choices: ["left", "right"] } }, (t) => assert.ok(["left", "right"].includes(t), t)],
      [{ grammar: 'root ::= "<" [0-9]+ ">"' }, (t) => assert.match(t, /^<[0-9]+>$/)],
    ];
    for (const [constraint, check] of cases) {
      for (const adapter of ["", ...ADAPTERS]) {
        const r = await unary(server.client, "Generate", {
          text: "x", adapter, max_tokens: 3000, sampling: { seed: 7 }, constraint });
        assert.equal(r.finish_reason, "FINISH_REASON_STOP", JSON.stringify(r));
        check(r.text);
      }
    }
    await assert.rejects(
      unary(server.client, "Generate", { text: "x", constraint: { regex: "(a" } }),
      (e) => e.code === grpc.status.INVALID_ARGUMENT && /constraint.regex/.test(e.details));
    await assert.rejects(
      unary(server.client, "Generate", { text: "x", constraint: { json_schema: "{\"not\": {}}" } }),
      (e) => e.code === grpc.status.INVALID_ARGUMENT && /'not'/.test(e.details));
  });

  test("bad requests get the right code and a message naming the problem", async () => {
    const bad = async (method, request, code, pattern, metadata) => {
      await assert.rejects(unary(server.client, method, request, { metadata }), (e) => {
        assert.equal(e.code, code, `${method} ${JSON.stringify(request)}: ${e.details}`);
        assert.match(e.details, pattern);
        return true;
      });
    };
    const I = grpc.status.INVALID_ARGUMENT;
    await bad("Generate", { max_tokens: 3 }, I, /prompt/);
    await bad("Generate", { token_ids: { ids: [1, 999999] } }, I, /vocabulary/);
    await bad("Generate", { token_ids: { ids: [] } }, I, /prompt/);
    await bad("Generate", greedy({ sampling: { temperature: -1 } }), I, /temperature/);
    await bad("Generate", greedy({ sampling: { top_p: 0 } }), I, /top_p/);
    await bad("Generate", greedy({ max_tokens: 100000000 }), I, /context length/);
    await bad("Generate", greedy({ max_tokens: -5 }), I, /max_tokens/);
    await bad("Generate", greedy({ logprobs: 1000 }), I, /logprobs/);
    await bad("Generate", greedy({ stop_token_ids: [-3] }), I, /stop_token_ids/);
    await bad("Generate", { messages: { messages: [] } }, I, /messages/);
    await bad("Generate", greedy({ adapter: "nope" }), grpc.status.NOT_FOUND, /nope/);
    await bad("Detokenize", { token_ids: [5, -1] }, I, /vocabulary/);
    await bad("GetRoutingStats", { adapter: "nope" }, grpc.status.NOT_FOUND, /nope/);
    // Admin calls: the token, the adapter root, the files.
    const load = (name, p, md, replace = false) => bad(
      "LoadAdapter", { name, path: p, replace }, ...md);
    await load("x", "mixlora", [grpc.status.UNAUTHENTICATED, /token/, admin()]);
    await load("x", "mixlora", [grpc.status.PERMISSION_DENIED, /token/, admin("wrong")]);
    await load("x", "../mixlora", [grpc.status.PERMISSION_DENIED, /adapter root/, admin(TOKEN)]);
    await load("x", "/etc", [I, /relative/, admin(TOKEN)]);
    await load("x", "escape", [grpc.status.PERMISSION_DENIED, /outside/, admin(TOKEN)]);
    await load("x", "missing", [grpc.status.NOT_FOUND, /missing/, admin(TOKEN)]);
    await load("x", "truncated", [I, /truncated|short|size|bytes/i, admin(TOKEN)]);
    await load("mixlora", "lora", [grpc.status.ALREADY_EXISTS, /already loaded/, admin(TOKEN)]);
    await bad("UnloadAdapter", { name: "nope" }, grpc.status.NOT_FOUND, /nope/, admin(TOKEN));
    await bad("UnloadAdapter", { name: "lora" }, grpc.status.UNAUTHENTICATED, /token/, admin());
    // Unloading an adapter in use is refused, then allowed once it is idle.
    const s = stream(server.client, greedy({ adapter: "lora", max_tokens: 3000 }));
    await new Promise((r) => { const t = setInterval(() => { if (s.messages.length >= 1) { clearInterval(t); r(); } }, 2); });
    await bad("UnloadAdapter", { name: "lora" }, grpc.status.FAILED_PRECONDITION, /in use|requests/,
              admin(TOKEN));
    s.call.cancel();
    await assert.rejects(s.done, (e) => e.code === grpc.status.CANCELLED);
    await waitIdle(server);
    await unary(server.client, "UnloadAdapter", { name: "lora" }, { metadata: admin(TOKEN) });
    const list = await unary(server.client, "ListAdapters", {});
    assert.ok(!list.adapters.some((a) => a.name === "lora"));
  });

  test("switchyard-cli drives every command", async () => {
    const cli = (...args) => execFileSync(path.join(BIN, "switchyard-cli"),
                                          ["--target", server.target, ...args],
                                          { encoding: "utf8", env: { ...process.env, SWITCHYARD_ADMIN_TOKEN: TOKEN } });
    assert.match(cli("health"), /SERVING/);
    assert.equal(JSON.parse(cli("info")).model, "tiny");
    const gen = execFileSync(path.join(BIN, "switchyard-cli"),
                             ["--target", server.target, "generate", "--adapter", "mixlora",
                              "--max_tokens", "5", "--temperature", "0", "--routing", "Hello"],
                             { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    assert.ok(gen.length > 0);
    assert.match(cli("adapters", "list"), /mixlora\s+v\d+\s+mixlora/);
    assert.match(cli("adapters", "load", "cli-test", "mhmoe"), /cli-test/);
    // stats --compare: no earlier version until a swap; then the old one beside the new.
    assert.throws(() => cli("stats", "cli-test", "--compare"),
                  (e) => e.status === 1 && /NOT_FOUND.*before its current one/.test(e.stderr));
    cli("generate", "--adapter", "cli-test", "--max_tokens", "3", "--temperature", "0", "Hi");
    assert.match(cli("adapters", "swap", "cli-test", "loramoe"), /loramoe/);
    cli("generate", "--adapter", "cli-test", "--max_tokens", "3", "--temperature", "0", "Hi");
    const compare = cli("stats", "cli-test", "--compare", "--total");
    assert.match(compare, /v\d+ -> v\d+/, compare);
    assert.match(compare, /layer\s+\d+ (gate|up|down)_proj\s+e0 /, compare);
    const both = JSON.parse(cli("stats", "cli-test", "--compare", "--json"));
    assert.ok(Number(both.previous.version) < Number(both.current.version));
    assert.match(cli("adapters", "unload", "cli-test"), /unloaded/);
    // inspect: heatmaps of the experts' similarity, effective ranks, router norms.
    const inspect = cli("inspect", "mixlora", "--layer", "0");
    assert.match(inspect, /max expert similarity/);
    assert.match(inspect, /layer 0 ffn\.gate_proj: 4 experts/);
    assert.match(inspect, /effective rank/);
    assert.match(inspect, /router norm/);
    assert.doesNotMatch(inspect, /layer 1 /, "--layer keeps one layer");
    const diag = JSON.parse(cli("inspect", "mixlora", "--json", "--similarity_threshold", "-1"));
    assert.ok(diag.redundant_pairs.length > 0, "every pair is at least -1 similar");
    assert.throws(() => cli("inspect", "mixlora", "--similarity_threshold", "3"),
                  (e) => e.status === 1 && /INVALID_ARGUMENT/.test(e.stderr));
    assert.throws(() => cli("inspect", "nope"), (e) => e.status === 1 && /NOT_FOUND/.test(e.stderr));
    const stats = cli("stats", "mixlora");
    assert.match(stats, /ffn: load per expert/);
    assert.match(stats, /layer\s+e0\s+e1\s+e2\s+e3/);
    let report;
    try {
      report = cli("bench", "--duration_s", "1", "--concurrency", "8", "--adapters",
                   "mixlora,base", "--prompt_tokens", "4:16", "--output_tokens", "4:16", "--json");
    } catch (e) {
      // It exits 1 when a request failed: show which, and the server's first error message.
      console.log(`switchyard-cli bench failed: ${e.stdout}\n${e.stderr}`);
      throw e;
    }
    const bench = JSON.parse(report);
    assert.ok(bench.requests_ok > 0);
    assert.deepEqual(bench.errors, {});
    assert.equal(bench.max_streams_open, 8);
  });

  test("the server survived all of it", async () => {
    const h = await unary(server.health, "Check", { service: "" });
    assert.equal(h.status, "SERVING");
    const r = await unary(server.client, "Generate", greedy({ adapter: "mixlora" }));
    assert.equal(r.token_ids.length, 12);
    const tok = await unary(server.client, "Tokenize", { text: "hello world" });
    const detok = await unary(server.client, "Detokenize", { token_ids: tok.token_ids });
    assert.match(detok.text, /hello world/);
  });
});

describe("limits and shutdown", () => {
  test("a full queue is refused at once; SIGTERM drains and exits 0", async () => {
    const server = await startServer(["--max-batch-seqs", "2", "--max-batch-tokens", "64",
                                      "--max-waiting", "3", "--shutdown-grace-s", "20"]);
    const streams = [];
    for (let i = 0; i < 12; i++) {
      streams.push(stream(server.client, greedy({ max_tokens: 40 })));
    }
    const results = await Promise.allSettled(streams.map((s) => s.done));
    const refused = results.filter((r) => r.status === "rejected");
    assert.ok(refused.length > 0, "some requests must be refused");
    for (const r of refused) {
      assert.equal(r.reason.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(r.reason.details, /queue is full/);
    }
    assert.ok(results.some((r) => r.status === "fulfilled"));
    // A request in flight when SIGTERM arrives still completes.
    const inflight = stream(server.client, greedy({ max_tokens: 200 }));
    await new Promise((r) => { const t = setInterval(() => { if (inflight.messages.length > 1) { clearInterval(t); r(); } }, 2); });
    server.proc.kill("SIGTERM");
    const done = await inflight.done;
    assert.equal(done.last.finish_reason, "FINISH_REASON_LENGTH");
    const { code } = await server.exited;
    assert.equal(code, 0);
  });
});

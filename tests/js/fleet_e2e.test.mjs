// Two replicas on loopback, routed by a stand-in for the inference extension's endpoint picker
// that knows only what it scrapes from each replica's /metrics: queue and KV use, the adapters
// running and waiting (vllm:lora_requests_info) and which adapters a replica holds
// (switchyard_adapter_resident). Every adapter's requests must reach a replica that holds it, and
// a new version rolled out with tools/rollout_adapter.sh while traffic flows fails no request
// and is what every request after the rollout sees.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";

import { BIN, makeAdapterRoot, request, ROOT, startServer } from "./server_harness.mjs";

const TOKEN = "fleet-token";
const BASE = "tiny";

// One scrape: { waiting, running, kv, maxLora, active: Set, waitingAdapters: Set, held: Set }.
async function scrape(replica) {
  const text = await (await fetch(`${replica.http}/metrics`)).text();
  const value = (name) => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
    assert.ok(m, `${name} in /metrics`);
    return Number(m[1]);
  };
  const info = /^vllm:lora_requests_info\{([^}]*)\} \S+$/m.exec(text);
  assert.ok(info, "vllm:lora_requests_info in /metrics");
  const labels = Object.fromEntries([...info[1].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  const names = (s) => new Set(s ? s.split(",") : []);
  return {
    waiting: value("vllm:num_requests_waiting"),
    running: value("vllm:num_requests_running"),
    kv: value("vllm:kv_cache_usage_perc"),
    maxLora: Number(labels.max_lora),
    active: names(labels.running_lora_adapters),
    waitingAdapters: names(labels.waiting_lora_adapters),
    held: new Set([...text.matchAll(/^switchyard_adapter_resident\{adapter="([^"]+)"\} /gm)]
      .map((m) => m[1])),
  };
}

// The endpoint picker's decision: replicas that can serve `model`, scored by LoRA affinity
// (1.0 running there, 0.8 waiting there, 0.6 room for one more adapter, else 0), then by load.
async function pick(replicas, model) {
  const scored = [];
  for (const r of replicas) {
    const m = await scrape(r);
    if (model !== BASE && !m.held.has(model)) continue;
    let affinity = 1.0;
    if (model !== BASE) {
      affinity = m.active.has(model) ? 1.0 : m.waitingAdapters.has(model) ? 0.8
               : m.active.size < m.maxLora ? 0.6 : 0;
    }
    scored.push({ r, score: affinity - 0.01 * m.waiting - 0.01 * m.kv });
  }
  assert.ok(scored.length > 0, `no replica holds ${model}`);
  scored.sort((a, b) => b.score - a.score);
  return scored[0].r;
}

const complete = (replica, body) => request(replica, "POST", "/v1/completions", body);

describe("a fleet of two replicas behind a metrics-driven endpoint picker", () => {
  let a, b, root;
  before(async () => {
    root = makeAdapterRoot(["mixlora", "loramoe", "lora", "mhmoe"]);
    const common = ["--adapter-root", root, "--admin-token", TOKEN, "--served-model-name", BASE];
    a = await startServer([...common, "--adapter", "mixlora", "--adapter", "shared=lora"]);
    b = await startServer([...common, "--adapter", "loramoe", "--adapter", "shared=lora"]);
    a.name = "a";
    b.name = "b";
  });
  after(async () => {
    for (const s of [a, b]) assert.equal((await s.stop()).code, 0);
    fs.rmSync(root, { recursive: true, force: true });
  });

  test("each adapter's requests go to a replica that holds it", async () => {
    const sent = { a: [], b: [] };
    const models = ["mixlora", "loramoe", "shared", BASE];
    await Promise.all([0, 1, 2, 3].map(async (worker) => {
      for (let i = 0; i < 10; i++) {
        const model = models[(worker + i) % models.length];
        const r = await pick([a, b], model);
        const res = await complete(r, { model, prompt: `w${worker} r${i}`, max_tokens: 16,
                                         ignore_eos: true });
        assert.equal(res.status, 200, JSON.stringify(res.json));
        sent[r.name].push(model);
      }
    }));
    assert.ok(!sent.a.includes("loramoe") && !sent.b.includes("mixlora"));
    assert.ok(sent.a.includes("mixlora") && sent.b.includes("loramoe"));
    assert.equal(sent.a.length + sent.b.length, 40);
  });

  test("a rollout under traffic fails nothing; afterwards every request sees the new version",
       async () => {
    const greedy = { prompt: "The quick brown fox", max_tokens: 12, temperature: 0,
                     ignore_eos: true };
    const before = (await complete(a, { model: "shared", ...greedy })).json.choices[0].text;
    // The new version's output: its weights loaded under another name.
    const load = await fetch(`${a.http}/v1/load_lora_adapter`, {
      method: "POST", headers: { authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ lora_name: "reference", lora_path: "mhmoe" }),
    });
    assert.equal(load.status, 200, await load.text());
    const want = (await complete(a, { model: "reference", ...greedy })).json.choices[0].text;
    assert.notEqual(want, before, "the versions differ");

    let stop = false, failures = 0, served = 0;
    const traffic = [0, 1, 2, 3].map(async () => {
      while (!stop) {
        const r = await pick([a, b], "shared");
        const res = await complete(r, { model: "shared", prompt: "traffic", max_tokens: 24,
                                         ignore_eos: true });
        if (res.status === 200) served++; else failures++;
      }
    });
    await new Promise((r) => setTimeout(r, 300));
    const { stdout } = await promisify(execFile)(
      path.join(ROOT, "tools/rollout_adapter.sh"), ["shared", "mhmoe", a.target, b.target],
      { env: { ...process.env, SWITCHYARD_ADMIN_TOKEN: TOKEN,
               SWITCHYARD_CLI: path.join(BIN, "switchyard-cli") } });
    assert.match(stdout, /on 2 replica/);
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await Promise.all(traffic);
    assert.equal(failures, 0);
    assert.ok(served > 10, `${served} requests during the rollout`);
    for (const r of [a, b, a, b, a, b]) {
      const res = await complete(r, { model: "shared", ...greedy });
      assert.equal(res.status, 200);
      assert.equal(res.json.choices[0].text, want, `replica ${r.name} after the rollout`);
    }
    // A rollout that fails part-way says so and exits non-zero.
    await assert.rejects(
      promisify(execFile)(path.join(ROOT, "tools/rollout_adapter.sh"),
                          ["shared", "missing", a.target, b.target],
                          { env: { ...process.env, SWITCHYARD_ADMIN_TOKEN: TOKEN,
                                   SWITCHYARD_CLI: path.join(BIN, "switchyard-cli") } }),
      (e) => e.code === 1 && /failed at .*\n.*new version: none/.test(e.stderr));
  });
});

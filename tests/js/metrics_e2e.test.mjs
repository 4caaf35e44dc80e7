// Metrics end to end: a real Prometheus server (Debian's `prometheus`) scrapes a running
// switchyard-server under load with two adapters, and PromQL reads back what the routing must
// show: per layer, tokens routed per expert sum to rows x top-k; an adapter whose router can never
// choose expert 3 shows it dead; vLLM's lora_requests_info names the adapters while they run.
// promtool checks our exposition and the shipped Prometheus files; every PromQL expression in the
// Grafana dashboard runs against the scraped data; docker-compose validates the compose file.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { freePort, makeAdapterRoot, request, ROOT, startServer } from "./server_harness.mjs";

const LAYERS = 3;  // the test model's
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));


// promtool's complaints about an exposition, less the one vLLM's names cannot avoid: the
// Inference Extension reads `vllm:`-prefixed names, and promtool reserves ':' for recording rules.
function promtoolProblems(text) {
  let out = "";
  try {
    execFileSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  } catch (e) {
    out = `${e.stdout ?? ""}${e.stderr ?? ""}`;
  }
  return out.split("\n").filter((l) => l.trim() && !/^vllm:\S+ metric names should not contain ':'$/.test(l.trim()));
}

async function complete(server, body) {
  const res = await request(server, "POST", "/v1/completions", body);
  assert.equal(res.status, 200, res.text);
  return res.json;
}

describe("metrics scraped by a real Prometheus", () => {
  let server, root, prom, promUrl, promDir;

  const query = async (q) => {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = await res.json();
    assert.equal(body.status, "success", `${q}: ${JSON.stringify(body)}`);
    return body.data.result;
  };
  // Polls until `check(result)` holds (scrapes come every second).
  const eventually = async (q, check, what) => {
    let last;
    for (let i = 0; i < 150; i++) {
      last = await query(q);
      if (check(last)) return last;
      await sleep(200);
    }
    assert.fail(`${what}: ${q} gave ${JSON.stringify(last)}`);
  };

  before(async () => {
    root = makeAdapterRoot(["mixlora", "mixlora_dead", "mixlora_twin"]);
    server = await startServer(["--adapter-root", root, "--metrics-port", "0",
                                "--routing-window-tokens", "64", "--served-model-name", "tiny",
                                "--adapter", "mixlora", "--adapter", "dead=mixlora_dead",
                                "--adapter", "twin=mixlora_twin"]);
    promDir = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-prom-"));
    fs.copyFileSync(path.join(ROOT, "deploy/prometheus/rules.yml"), path.join(promDir, "rules.yml"));
    fs.writeFileSync(path.join(promDir, "prometheus.yml"), [
      "global: { scrape_interval: 1s, evaluation_interval: 1s }",
      "rule_files: [rules.yml]",
      "scrape_configs:",
      "  - job_name: switchyard",
      `    static_configs: [{ targets: ["127.0.0.1:${server.ports.metrics}"] }]`,
    ].join("\n"));
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prom = spawn("prometheus", [`--config.file=${path.join(promDir, "prometheus.yml")}`,
                                `--storage.tsdb.path=${path.join(promDir, "data")}`,
                                `--web.listen-address=127.0.0.1:${port}`],
                 { stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    prom.stderr.on("data", (d) => { log += d; });
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${promUrl}/-/ready`)).ok) break;
      } catch {}
      if (i > 300 || prom.exitCode !== null) throw new Error(`prometheus did not start: ${log}`);
      await sleep(100);
    }
  });
  after(async () => {
    prom?.kill("SIGTERM");
    const { code } = await server.stop();
    assert.equal(code, 0);
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(promDir, { recursive: true, force: true });
  });

  test("under load, PromQL sees the routing, the dead expert and the running adapters", async () => {
    // Load on both adapters until a scrape has caught both running (and at least 2 s).
    let stop = false, requests = 0;
    const clients = ["mixlora", "dead", "mixlora", "dead", "tiny"].map(async (model, i) => {
      while (!stop) {
        requests++;
        await complete(server, { model, prompt: `request ${i} ${requests}`, max_tokens: 200,
                                 ignore_eos: true, temperature: 1, seed: requests });
      }
    });
    try {
      await sleep(2000);
      await eventually(
        'count by(running_lora_adapters) (last_over_time(vllm:lora_requests_info[1m]))',
        (r) => r.some((s) => /(^|,)dead(,|$)/.test(s.metric.running_lora_adapters) &&
                             /(^|,)mixlora(,|$)/.test(s.metric.running_lora_adapters)),
        "lora_requests_info names both adapters while their requests run");
    } finally {
      stop = true;
      await Promise.all(clients);
    }
    const info = await query("vllm:lora_requests_info");
    assert.equal(info.length, 1);
    assert.equal(info[0].metric.max_lora, "8");
    assert.ok(Math.abs(Number(info[0].value[1]) - Date.now() / 1000) < 30, "the value is the time");

    // Wait for a scrape after the load: the counters stop moving.
    const finished = await eventually(
      'sum(switchyard_adapter_requests_total)', (r) => r.length === 1 && Number(r[0].value[1]) === requests,
      "every request counted");
    assert.equal(Number(finished[0].value[1]), requests);

    // Top-2 MixLoRA: per layer, tokens routed over its experts = 2 x rows routed.
    const perExpert = await query(
      'sum by(layer) (switchyard_expert_routed_tokens_total{adapter="mixlora"})');
    const rows = await query('switchyard_routing_tokens_total{adapter="mixlora"}');
    assert.equal(perExpert.length, LAYERS);
    assert.equal(rows.length, LAYERS);
    for (const r of rows) {
      const selected = perExpert.find((p) => p.metric.layer === r.metric.layer);
      assert.ok(Number(r.value[1]) > 100, `rows in layer ${r.metric.layer}`);
      assert.equal(Number(selected.value[1]), 2 * Number(r.value[1]), `layer ${r.metric.layer}`);
    }
    // Top-1 with an expert the router can never choose: dead in every layer.
    const deadRows = await query('switchyard_expert_routed_tokens_total{adapter="dead",expert="3"}');
    assert.equal(deadRows.length, LAYERS);
    for (const r of deadRows) assert.equal(Number(r.value[1]), 0);
    const deadLoad = await query('switchyard_expert_load{adapter="dead",expert="3"}');
    assert.equal(deadLoad.length, LAYERS);
    for (const r of deadLoad) assert.equal(Number(r.value[1]), 0);
    const dead = await query('switchyard_routing_dead_experts{adapter="dead"}');
    assert.equal(dead.length, LAYERS);
    // Exactly the experts that no windowed token chose, per layer, and their sum per adapter.
    const windowLoad = await query('switchyard_expert_load{adapter="dead"}');
    let deadSum = 0;
    for (const r of dead) {
      const zero = windowLoad.filter((w) => w.metric.layer === r.metric.layer &&
                                            Number(w.value[1]) === 0).length;
      assert.ok(zero >= 1, `layer ${r.metric.layer}: expert 3 at least`);
      assert.equal(Number(r.value[1]), zero, `layer ${r.metric.layer}: dead = experts with no load`);
      deadSum += zero;
    }
    const deadTotal = await query('switchyard_adapter_dead_experts{adapter="dead"}');
    assert.equal(Number(deadTotal[0].value[1]), deadSum);
    const live = await query('switchyard_expert_load{adapter="dead",expert!="3"}');
    assert.ok(live.some((r) => Number(r.value[1]) > 0));
    // The Switch aux loss N * sum_i f_i * P_i, exactly, from the window's per-expert fractions f
    // and mean router probabilities P that the routing JSON reports (traffic has stopped, so the
    // window no longer moves); f must be what Prometheus has as expert_load.
    const aux = await query('switchyard_routing_switch_aux_loss{adapter="mixlora"}');
    const load = await query('switchyard_expert_load{adapter="mixlora"}');
    const routing = (await request(server, "GET", "/v1/adapters/mixlora/routing")).json;
    assert.equal(aux.length, LAYERS);
    for (const r of aux) {
      const site = routing.window.find((w) => `${w.layer}` === r.metric.layer &&
                                              w.site === r.metric.site);
      assert.ok(site, `layer ${r.metric.layer} site ${r.metric.site} in the routing JSON`);
      const n = site.load.length;
      assert.equal(n, 4);
      assert.ok(Math.abs(site.load.reduce((a, b) => a + b, 0) - 1) < 1e-12, "sum f = 1");
      assert.ok(Math.abs(site.mean_prob.reduce((a, b) => a + b, 0) - 1) < 1e-6, "sum P = 1");
      const expected = n * site.load.reduce((acc, f, i) => acc + f * site.mean_prob[i], 0);
      const v = Number(r.value[1]);
      assert.ok(Math.abs(v - expected) <= 1e-9 * Math.max(1, expected),
                `layer ${r.metric.layer}: Switch aux loss ${v}, N·Σ f·P = ${expected}`);
      for (let e = 0; e < n; ++e) {
        const g = load.find((x) => x.metric.layer === r.metric.layer &&
                                   x.metric.site === r.metric.site && x.metric.expert === `${e}`);
        assert.ok(Math.abs(Number(g.value[1]) - site.load[e]) < 1e-12, `expert ${e} load`);
      }
    }

    // The Inference Extension's gauges and vLLM's serving metrics.
    for (const name of ["vllm:num_requests_waiting", "vllm:num_requests_running",
                        "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"]) {
      const r = await query(`${name}{model_name="tiny"}`);
      assert.equal(r.length, 1, name);
      assert.equal(Number(r[0].value[1]), 0, `${name} once idle`);
    }
    const cache = await query("vllm:cache_config_info");
    assert.equal(cache[0].metric.block_size, "16");
    assert.ok(Number(cache[0].metric.num_gpu_blocks) > 0);
    const ok = await query('sum(vllm:request_success_total{finished_reason="length"})');
    assert.equal(Number(ok[0].value[1]), requests);
    const ttft = await query("sum(vllm:time_to_first_token_seconds_count)");
    assert.equal(Number(ttft[0].value[1]), requests);
    const generated = await query("vllm:generation_tokens_total");
    assert.equal(Number(generated[0].value[1]), 200 * requests);
    const itl = await query("vllm:inter_token_latency_seconds_count");
    assert.equal(Number(itl[0].value[1]), 199 * requests, "one gap per token but the first");
    const perAdapter = await query("switchyard_adapter_requests_total");
    assert.deepEqual(perAdapter.map((r) => r.metric.adapter).sort(), ["_base", "dead", "mixlora"]);
    // A recording rule of the dashboard has data.
    await eventually("switchyard:adapter_generation_tokens:rate1m", (r) => r.length === 3,
                     "the recording rules evaluate");
  });

  test("every PromQL expression of the Grafana dashboard runs against the data", async () => {
    const dash = JSON.parse(fs.readFileSync(
      path.join(ROOT, "deploy/grafana/dashboards/switchyard.json"), "utf8"));
    const exprs = [];
    for (const p of dash.panels) for (const t of p.targets) exprs.push(t.expr);
    for (const v of dash.templating.list) {
      const m = /^label_values\((.*), *(\w+)\)$/.exec(v.definition);
      assert.ok(m, `a label_values query: ${v.definition}`);
      exprs.push(m[1]);
    }
    assert.ok(exprs.length >= 15);
    for (const e of exprs) {
      const q = e.replaceAll("$adapter", "mixlora").replaceAll("$site", ".*")
                 .replaceAll("$__rate_interval", "1m");
      await query(q);  // asserts the query API accepts it
    }
    const heat = await query('switchyard_expert_load{adapter="mixlora", site=~".*"}');
    assert.equal(heat.length, LAYERS * 4, "the heatmap has a cell per layer and expert");
    // The expert diagnostics: twin's expert 3 copies expert 1 in each MixLoRA projection.
    const pairs = Object.fromEntries((await query("switchyard_adapter_redundant_expert_pairs"))
      .map((r) => [r.metric.adapter, Number(r.value[1])]));
    assert.deepEqual(pairs, { mixlora: 0, dead: 0, twin: 3 * LAYERS });
    const most = await query('switchyard_adapter_expert_similarity_max{adapter="twin"}');
    assert.ok(Number(most[0].value[1]) > 0.9999, JSON.stringify(most));
    const rank = await query("switchyard_adapter_expert_effective_rank_min");
    assert.equal(rank.length, 3);
    for (const r of rank) assert.ok(Number(r.value[1]) >= 1, JSON.stringify(r));
  });

  test("promtool accepts the exposition on both ports and the shipped files", async () => {
    const mirrored = await (await fetch(`${server.http}/metrics`)).text();
    const own = await (await fetch(`http://127.0.0.1:${server.ports.metrics}/metrics`)).text();
    assert.deepEqual(promtoolProblems(mirrored), []);
    assert.deepEqual(promtoolProblems(own), []);
    const names = (t) => [...t.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]).sort();
    assert.deepEqual(names(mirrored), names(own), "the same families on both ports");
    execFileSync("promtool", ["check", "config", path.join(ROOT, "deploy/prometheus/prometheus.yml")]);
    execFileSync("promtool", ["check", "rules", path.join(ROOT, "deploy/prometheus/rules.yml")]);
    execFileSync("docker-compose", ["-f", path.join(ROOT, "docker-compose.yml"), "config", "-q"]);
  });
});

// Soak: Poisson load near saturation over gRPC and HTTP (streams and unary), client cancellations
// and disconnects, a hot swap every second and load/unload churn, a KV cache (48 blocks of 16
// tokens) small enough to
// force preemption, shared prompt prefixes for the prefix cache. Every request is accounted for,
// and every completed greedy output is compared with the same request run alone on the quiet
// server afterwards (same adapter weights).
//
//   node bench/soak.mjs [--seconds 600] [--rate 20] [--kv-cache-blocks 48] [--json]
//
// Prints requests sent, completed, cancelled by the client, refused (with reasons), lost and
// wrong outputs, near-tie divergences (a greedy pick whose top-2 log-probabilities on the quiet
// run are within 1e-3: F32 rounding in another batch shape may decide it either way), RSS at start
// and end, step-time p99, preemptions and prefix-cache hits. Exits 1 when anything was lost,
// wrong or failed. tests/js/soak.test.mjs runs a short version in `make test`.
import fs from "node:fs";
import { fileURLToPath } from "node:url";

import {
  makeAdapterRoot, request as httpCall, startServer, stream, unary, waitIdle,
} from "../tests/js/server_harness.mjs";

const TIE = 1e-3;
const FIXED = ["mixlora", "loramoe", "mixlora_dead"];  // adapters that stay loaded
const SWAP = ["mixlora", "mhmoe"];                   // "hot" alternates between these folders
const CHURN = "lora";                                // "churn" is loaded and unloaded

function rng(seed) {  // mulberry32: reproducible load
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssMiB(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) / 1024 : NaN;
}

// Upper bound of the bucket holding quantile q of a Prometheus histogram.
function histogramQuantile(metrics, name, q) {
  const buckets = [...metrics.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`,
                                                  "gm"))]
    .map((m) => [m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
  if (buckets.length === 0) return NaN;
  const total = buckets.at(-1)[1];
  return buckets.find(([, c]) => c >= q * total)?.[0] ?? NaN;
}

function counter(metrics, name) {
  const m = metrics.match(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, "m"));
  return m ? Number(m[2]) : NaN;
}

// One HTTP completion, streamed or not; `cancelAfter` chunks then the client disconnects.
async function httpCompletion(server, body, cancelAfter) {
  const ac = new AbortController();
  const res = await fetch(`${server.http}/v1/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(body), signal: ac.signal,
  });
  if (!body.stream) {
    const json = await res.json();
    if (res.status !== 200) return { refused: `HTTP ${res.status}: ${json.error?.message}` };
    return { text: json.choices[0].text, finish: json.choices[0].finish_reason };
  }
  if (res.status !== 200) {
    const json = await res.json();
    return { refused: `HTTP ${res.status}: ${json.error?.message}` };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "", text = "", finish = null, chunks = 0;
  for (;;) {
    let part;
    try {
      part = await reader.read();
    } catch (e) {
      if (ac.signal.aborted) return { cancelled: true };
      throw e;
    }
    if (part.done) break;
    buffered += decoder.decode(part.value, { stream: true });
    let cut;
    while ((cut = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, cut).replace(/^data: /, "");
      buffered = buffered.slice(cut + 2);
      if (event === "[DONE]") continue;
      const j = JSON.parse(event);
      if (j.error) return { failed: `stream error: ${j.error.message}` };
      text += j.choices[0].text;
      finish = j.choices[0].finish_reason ?? finish;
      if (++chunks === cancelAfter) {
        ac.abort();
        return { cancelled: true };
      }
    }
  }
  return { text, finish };
}

async function grpcCompletion(server, req, streamed, cancelAfter) {
  if (!streamed) {
    try {
      const r = await unary(server.client, "Generate", req);
      return { tokens: r.token_ids, version: r.adapter_version, finish: r.finish_reason };
    } catch (e) {
      return { refused: `gRPC ${e.code}: ${e.details}` };
    }
  }
  let got = 0, cancelled = false;
  const s = stream(server.client, req, {
    onMessage: (m, call) => { if (++got === cancelAfter) { cancelled = true; call.cancel(); } },
  });
  try {
    await s.done;
  } catch (e) {
    if (cancelled) return { cancelled: true };
    return got === 0 ? { refused: `gRPC ${e.code}: ${e.details}` }
                     : { failed: `gRPC ${e.code} after ${got} messages: ${e.details}` };
  }
  return { tokens: s.token_ids, version: s.version, finish: s.last?.finish_reason };
}

// The admin thread: swaps "hot" every second, loads and unloads "churn".
async function adminLoop(server, until, versions, log) {
  let i = 0;
  while (Date.now() < until) {
    const folder = SWAP[++i % 2];
    try {
      const r = await unary(server.client, "LoadAdapter", { name: "hot", path: folder, replace: true });
      versions.set(String(r.adapter.version), folder);
      log.swaps++;
    } catch (e) {
      log.adminErrors.push(`swap: ${e.details}`);
    }
    try {
      if (i % 2) {
        await unary(server.client, "LoadAdapter", { name: "churn", path: CHURN });
      } else {
        await unary(server.client, "UnloadAdapter", { name: "churn", drain: true });
      }
      log.churn++;
    } catch (e) {
      log.adminErrors.push(`churn: ${e.details}`);
    }
    await sleep(1000);
  }
}

export async function runSoak({ seconds = 600, rate = 20, kvCacheBlocks = 48, seed = 1 } = {}) {
  const random = rng(seed);
  const root = makeAdapterRoot([...new Set([...FIXED, ...SWAP, CHURN])]);
  const server = await startServer(["--adapter-root", root, "--kv-cache-blocks", String(kvCacheBlocks),
                                    "--max-batch-seqs", "32", "--served-model-name", "base",
                                    ...FIXED.map((a) => `--adapter=${a}=${a}`),
                                    `--adapter=hot=${SWAP[0]}`]);
  const versions = new Map();  // adapter version -> folder, for "hot"
  const hot0 = await unary(server.client, "ListAdapters", {});
  for (const a of hot0.adapters) if (a.name === "hot") versions.set(String(a.version), SWAP[0]);
  const rssStart = rssMiB(server.proc.pid);
  const prefixes = Array.from({ length: 6 }, (_, i) =>
    `Shared prefix number ${i}: the quick brown fox jumps over the lazy dog again and again, `);
  const log = { swaps: 0, churn: 0, adminErrors: [] };
  const requests = [];
  const until = Date.now() + seconds * 1000;
  const admin = adminLoop(server, until, versions, log);
  let next = Date.now();
  while (next < until) {
    next += -Math.log(1 - random()) * 1000 / rate;
    await sleep(Math.max(0, next - Date.now()));
    const adapter = [null, ...FIXED, "hot", "churn"][Math.floor(random() * 6)];
    const prompt = prefixes[Math.floor(random() * prefixes.length)] + `item ${Math.floor(random() * 1e6)}`;
    const maxTokens = 16 + Math.floor(random() * 240);
    const kind = random();
    const transport = kind < 0.45 ? "grpc-stream" : kind < 0.65 ? "grpc-unary"
                    : kind < 0.9 ? "http-stream" : "http-unary";
    const cancelAfter = transport.endsWith("stream") && random() < 0.12
      ? 1 + Math.floor(random() * 4) : 0;
    const r = { adapter, prompt, maxTokens, transport, cancelAfter, outcome: null };
    requests.push(r);
    const run = transport.startsWith("grpc")
      ? grpcCompletion(server, { text: prompt, adapter: adapter ?? "", max_tokens: maxTokens,
                                 ignore_eos: true, sampling: { temperature: 0 } },
                       transport === "grpc-stream", cancelAfter)
      : httpCompletion(server, { model: adapter ?? "base", prompt, max_tokens: maxTokens,
                                 temperature: 0, ignore_eos: true,
                                 stream: transport === "http-stream" }, cancelAfter);
    r.done = run.then((o) => { r.outcome = o; }, (e) => { r.outcome = { failed: String(e) }; });
  }
  await admin;
  // Every request settles within a bound: one that does not is lost.
  let timer;
  await Promise.race([Promise.all(requests.map((r) => r.done)),
                      new Promise((r) => { timer = setTimeout(r, 120000); })]);
  clearTimeout(timer);
  await waitIdle(server);
  const metrics = (await httpCall(server, "GET", "/metrics")).text;
  const rssEnd = rssMiB(server.proc.pid);

  // The quiet replays: each completed request alone, by stable names for each folder.
  for (const f of new Set([...SWAP, CHURN])) {
    await unary(server.client, "LoadAdapter", { name: `quiet-${f}`, path: f });
  }
  const quietCache = new Map();
  const quiet = async (folder, r) => {
    const key = JSON.stringify([folder, r.prompt, r.maxTokens]);
    if (!quietCache.has(key)) {
      quietCache.set(key, await unary(server.client, "Generate", {
        text: r.prompt, adapter: folder ?? "", max_tokens: r.maxTokens, ignore_eos: true,
        sampling: { temperature: 0 }, logprobs: 2 }));
    }
    return quietCache.get(key);
  };
  // Which weights a request may have run on.
  const candidates = (r) => {
    if (r.adapter === "hot") {
      const v = r.outcome.version && versions.get(String(r.outcome.version));
      return (v ? [v] : SWAP).map((f) => `quiet-${f}`);  // HTTP carries no version: either
    }
    if (r.adapter === "churn") return [`quiet-${CHURN}`];
    return [r.adapter];
  };
  const summary = { sent: requests.length, completed: 0, cancelled: 0, refused: 0, failed: 0,
                    lost: 0, wrong: 0, near_ties: 0, refusals: {}, failures: [], wrong_examples: [] };
  for (const r of requests) {
    const o = r.outcome;
    if (o === null) { summary.lost++; continue; }
    if (o.cancelled) { summary.cancelled++; continue; }
    if (o.refused) {
      summary.refused++;
      const reason = o.refused.replace(/"[^"]*"/g, "\"…\"").slice(0, 90);
      summary.refusals[reason] = (summary.refusals[reason] ?? 0) + 1;
      continue;
    }
    if (o.failed) { summary.failed++; summary.failures.push(o.failed); continue; }
    summary.completed++;
    let verdict = "wrong";
    for (const c of candidates(r)) {
      const q = await quiet(c, r);
      const got = o.tokens ?? null;
      const same = got ? got.length === q.token_ids.length && got.every((t, i) => t === q.token_ids[i])
                       : o.text === q.text;
      if (same) { verdict = "same"; break; }
      if (got) {  // the first divergence: a near-tie on the quiet run?
        const at = got.findIndex((t, i) => t !== q.token_ids[i]);
        const top = q.logprobs[at]?.top ?? [];
        if (top.length >= 2 && top[0].logprob - top[1].logprob < TIE) verdict = "tie";
      }
    }
    if (verdict === "tie") summary.near_ties++;
    if (verdict === "wrong") {
      summary.wrong++;
      if (summary.wrong_examples.length < 3) summary.wrong_examples.push({ ...r, done: undefined });
    }
  }
  Object.assign(summary, {
    seconds, rate, swaps: log.swaps, churn_ops: log.churn, admin_errors: log.adminErrors.length,
    rss_start_mib: Number(rssStart.toFixed(1)), rss_end_mib: Number(rssEnd.toFixed(1)),
    step_p99_s_at_most: histogramQuantile(metrics, "switchyard_step_seconds", 0.99),
    preemptions: counter(metrics, "vllm:num_preemptions_total"),
    prefix_cache_hits: counter(metrics, "vllm:prefix_cache_hits_total"),
  });
  const { code } = await server.stop();
  summary.exit_code = code;
  fs.rmSync(root, { recursive: true, force: true });
  return summary;
}

function print(s) {
  const rows = [
    ["duration (s), arrival rate (/s)", `${s.seconds}, ${s.rate}`],
    ["requests sent", s.sent], ["completed", s.completed], ["cancelled by the client", s.cancelled],
    ["refused", s.refused], ["failed", s.failed], ["lost", s.lost], ["wrong outputs", s.wrong],
    [`near-tie divergences (top-2 gap < ${TIE})`, s.near_ties],
    ["hot swaps, churn loads/unloads, admin errors",
     `${s.swaps}, ${s.churn_ops}, ${s.admin_errors}`],
    ["preemptions, prefix-cache hit tokens", `${s.preemptions}, ${s.prefix_cache_hits}`],
    ["RSS start → end (MiB)", `${s.rss_start_mib} → ${s.rss_end_mib}`],
    ["step time p99 (s, bucket bound)", `≤ ${s.step_p99_s_at_most}`],
    ["server exit code", s.exit_code],
  ];
  for (const [k, v] of rows) console.log(`${k.padEnd(46)} ${v}`);
  for (const [k, v] of Object.entries(s.refusals)) console.log(`  refused ${v}× ${k}`);
  for (const f of s.failures.slice(0, 5)) console.log(`  failure: ${f}`);
  for (const w of s.wrong_examples) console.log(`  wrong: ${JSON.stringify(w)}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : fallback;
  };
  const s = await runSoak({ seconds: arg("seconds", 600), rate: arg("rate", 20),
                            kvCacheBlocks: arg("kv-cache-blocks", 48), seed: arg("seed", 1) });
  if (process.argv.includes("--json")) console.log(JSON.stringify(s));
  else print(s);
  process.exit(s.lost || s.wrong || s.failed || s.exit_code ? 1 : 0);
}

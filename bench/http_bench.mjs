// Closed-loop load over the OpenAI-compatible HTTP API: `concurrency` clients each send a
// streamed /v1/completions request (adapter drawn from --models), read it to [DONE], and send the
// next, for `duration` seconds. Prints requests/s, generated tokens/s, time to first token and the
// gap between chunks, and any errors.
//
//   node bench/http_bench.mjs --url http://127.0.0.1:8000 --concurrency 32 --duration 20 \
//     --models mixlora,loramoe,switchyard-demo --prompt-tokens 16:64 --output-tokens 32:128
import http from "node:http";
import { parseArgs } from "node:util";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8000" },
    concurrency: { type: "string", default: "32" },
    duration: { type: "string", default: "20" },
    models: { type: "string", default: "switchyard-demo" },
    "prompt-tokens": { type: "string", default: "16:64" },
    "output-tokens": { type: "string", default: "32:128" },
    seed: { type: "string", default: "1" },
  },
});

let state = Number(opt.seed) >>> 0 || 1;
const random = () => {  // xorshift32: the same request mix on every run
  state ^= state << 13; state >>>= 0; state ^= state >>> 17; state ^= state << 5; state >>>= 0;
  return state / 4294967296;
};
const range = (spec) => {
  const [lo, hi] = spec.split(":").map(Number);
  return lo + Math.floor(random() * ((hi ?? lo) - lo + 1));
};
const models = opt.models.split(",");
const words = "the quick brown fox jumps over a lazy dog while routers pick experts".split(" ");
const url = new URL(opt.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

function percentile(values, p) {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function oneRequest(stats) {
  const body = JSON.stringify({
    model: models[Math.floor(random() * models.length)],
    prompt: Array.from({ length: range(opt["prompt-tokens"]) },
                       () => words[Math.floor(random() * words.length)]).join(" "),
    max_tokens: range(opt["output-tokens"]), ignore_eos: true, temperature: 0.8, stream: true,
    stream_options: { include_usage: true },
  });
  return new Promise((resolve) => {
    const start = performance.now();
    let last = start, first = true, buf = "";
    const req = http.request({
      host: url.hostname, port: url.port, path: "/v1/completions", method: "POST", agent,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
    }, (res) => {
      if (res.statusCode !== 200) {
        stats.errors[res.statusCode] = (stats.errors[res.statusCode] ?? 0) + 1;
        res.resume();
        res.on("end", resolve);
        return;
      }
      res.setEncoding("utf8");
      res.on("data", (d) => {
        const now = performance.now();
        if (first) { stats.ttft.push(now - start); first = false; } else stats.gaps.push(now - last);
        last = now;
        buf += d;
      });
      res.on("end", () => {
        const events = buf.split("\n\n").filter((e) => e.startsWith("data: {"));
        const usage = events.length ? JSON.parse(events.at(-1).slice(6)).usage : null;
        if (usage) { stats.tokens += usage.completion_tokens; stats.requests++; }
        else stats.errors.incomplete = (stats.errors.incomplete ?? 0) + 1;
        resolve();
      });
    });
    req.on("error", (e) => { stats.errors[e.code ?? e.message] = (stats.errors[e.code] ?? 0) + 1; resolve(); });
    req.end(body);
  });
}

const stats = { requests: 0, tokens: 0, ttft: [], gaps: [], errors: {} };
const deadline = performance.now() + Number(opt.duration) * 1000;
const t0 = performance.now();
await Promise.all(Array.from({ length: Number(opt.concurrency) }, async () => {
  while (performance.now() < deadline) await oneRequest(stats);
}));
const elapsed = (performance.now() - t0) / 1000;
const f = (x) => x.toFixed(1);
console.log(`requests ${stats.requests} in ${f(elapsed)} s: ${f(stats.requests / elapsed)} req/s, ` +
            `${f(stats.tokens / elapsed)} generated tok/s`);
console.log(`time to first token ms: p50 ${f(percentile(stats.ttft, 50))} ` +
            `p99 ${f(percentile(stats.ttft, 99))}`);
console.log(`gap between chunks ms: p50 ${f(percentile(stats.gaps, 50))} ` +
            `p99 ${f(percentile(stats.gaps, 99))}`);
console.log(`errors: ${JSON.stringify(stats.errors)}`);
process.exit(Object.keys(stats.errors).length ? 1 : 0);

// The soak (bench/soak.mjs) for 12 seconds: gRPC and HTTP, streams and unary, client
// cancellations and disconnects, a hot swap every second, load/unload churn, preemption and prefix
// reuse. Nothing may be lost, fail or differ from the same request run alone on the quiet server,
// and the server must exit cleanly (keep-alive connections still open at shutdown once corrupted
// its heap).
import assert from "node:assert/strict";
import { test } from "node:test";

import { runSoak } from "../../bench/soak.mjs";

test("a short soak loses nothing and changes no output", async () => {
  const s = await runSoak({ seconds: 12, rate: 20 });
  console.log(JSON.stringify({ ...s, failures: s.failures.slice(0, 3) }));
  assert.equal(s.lost, 0, "lost requests");
  assert.equal(s.failed, 0, `failed requests: ${s.failures.slice(0, 3).join("; ")}`);
  assert.equal(s.wrong, 0, `wrong outputs: ${JSON.stringify(s.wrong_examples)}`);
  assert.equal(s.exit_code, 0, "the server exits cleanly");
  assert.equal(s.admin_errors, 0);
  assert.ok(s.completed > 60 && s.cancelled > 0 && s.swaps >= 8, JSON.stringify(s));
  assert.ok(s.preemptions > 0, "the KV cache was small enough to preempt");
  assert.ok(s.prefix_cache_hits > 0);
  for (const reason of Object.keys(s.refusals)) {
    assert.match(reason, /churn|is not loaded/, "only the churned adapter is ever refused");
  }
});

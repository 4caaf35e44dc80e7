// Hardening end to end: adapter files crafted to attack the loader are refused with a clear error
// over HTTP and gRPC while other requests keep streaming, and adapter admin is closed by default on
// a server that listens beyond loopback; connection, slow-client, gRPC stream and adapter-load
// limits refuse (or queue) cleanly and leave everyone else served.
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import { describe, test } from "node:test";

import {
  admin, grpc, makeAdapterRoot, protos, request as call, startServer, stream, unary, waitIdle,
} from "./server_harness.mjs";

const TOKEN = "s3cret";
const HOSTILE = ["overflowing_strides", "wrapping_storage", "zero_strides", "overlapping_views",
                 "claimed_entry_size", "zip_bomb", "deep_nesting", "self_reference", "negative_stride",
                 "memo_aliasing"].map((c) => `hostile_${c}`);
const PROMPT = "The quick brown fox";

describe("hostile adapter files", () => {
  test("are refused over HTTP and gRPC while streams keep running", async () => {
    const root = makeAdapterRoot(["mixlora", ...HOSTILE]);
    const server = await startServer(["--adapter-root", root, "--admin-token", TOKEN,
                                      "--adapter", "mixlora=mixlora"]);
    try {
      const streams = [];
      for (let i = 0; i < 4; i++) {
        streams.push(call(server, "POST", "/v1/completions", {
          model: "mixlora", prompt: PROMPT, max_tokens: 120, ignore_eos: true, temperature: 0,
          stream: true }));
      }
      const auth = { authorization: `Bearer ${TOKEN}` };
      for (const name of HOSTILE) {
        const r = await call(server, "POST", "/v1/load_lora_adapter",
                             { lora_name: name, lora_path: name }, auth);
        assert.equal(r.status, 400, `${name}: ${r.text}`);
        assert.match(r.json.error.message, /adapter_model\.bin|not part of/, name);
        await assert.rejects(
          unary(server.client, "LoadAdapter", { name, path: name }, { metadata: admin(TOKEN) }),
          (e) => e.code === grpc.status.INVALID_ARGUMENT, name);
      }
      for (const s of await Promise.all(streams)) assert.equal(s.status, 200, s.text);
      const models = (await call(server, "GET", "/v1/models")).json.data.map((m) => m.id);
      assert.ok(!models.some((m) => m.startsWith("hostile_")), "nothing half-loaded");
      assert.equal((await call(server, "GET", "/health")).status, 200);
      await waitIdle(server);
    } finally {
      const { code, signal } = await server.stop();
      assert.equal(signal, null, "the server was not killed by a signal");
      assert.equal(code, 0);
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("adapter admin without a token", () => {
  const tryLoad = async (extra) => {
    const root = makeAdapterRoot(["lora"]);
    const server = await startServer(["--adapter-root", root, ...extra]);
    try {
      const http = await call(server, "POST", "/v1/load_lora_adapter",
                              { lora_name: "x", lora_path: "lora" });
      return { http, stderr: server.stderr() };
    } finally {
      await server.stop();
      fs.rmSync(root, { recursive: true, force: true });
    }
  };

  test("is off on a server that listens beyond loopback", async () => {
    const { http, stderr } = await tryLoad(["--host", "0.0.0.0", "--log-level", "info"]);
    assert.equal(http.status, 403, http.text);
    assert.match(http.json.error.message, /admin is off.*--admin-token.*--insecure-admin/);
    assert.match(stderr, /adapter admin is off/);
  });

  test("is open there only with --insecure-admin, with a warning", async () => {
    const { http, stderr } = await tryLoad(["--host", "0.0.0.0", "--insecure-admin"]);
    assert.equal(http.status, 200, http.text);
    assert.match(stderr, /adapter admin is OPEN/);
  });

  test("is open on loopback", async () => {
    const { http } = await tryLoad([]);
    assert.equal(http.status, 200, http.text);
  });
});

// A raw TCP connection from `localAddress` (any loopback address) to the server's HTTP port.
function connect(server, localAddress = "127.0.0.1") {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port: server.ports.http, localAddress });
    s.setEncoding("utf8");
    s.received = "";
    s.on("data", (d) => { s.received += d; });
    s.gone = new Promise((r) => s.on("close", r));
    s.on("connect", () => resolve(s));
    s.on("error", reject);
  });
}

describe("connection limits", () => {
  test("past the per-client and total caps a connection gets 503; others are served", async () => {
    const server = await startServer(["--http-max-connections", "3",
                                      "--http-max-connections-per-client", "2",
                                      "--http-request-timeout-s", "30"]);
    try {
      const a1 = await connect(server), a2 = await connect(server);
      const a3 = await connect(server);
      await a3.gone;
      assert.match(a3.received, /^HTTP\/1\.1 503/);
      assert.match(a3.received, /too many connections/);
      const b1 = await connect(server, "127.0.0.2");  // another client: the third slot
      const b2 = await connect(server, "127.0.0.2");
      await b2.gone;
      assert.match(b2.received, /^HTTP\/1\.1 503/, "the total cap");
      // gRPC is not affected; once a connection closes, HTTP serves again.
      const r = await unary(server.client, "Generate", { text: PROMPT, max_tokens: 3,
                                                         ignore_eos: true });
      assert.equal(r.token_ids.length, 3);
      a1.destroy();
      await a1.gone;
      await new Promise((res) => setTimeout(res, 100));
      const ok = await call(server, "GET", "/v1/models");
      assert.equal(ok.status, 200);
      for (const s of [a2, b1]) s.destroy();
    } finally {
      await server.stop();
    }
  });

  test("a client that sends its header slowly is cut off; others are served", async () => {
    const server = await startServer(["--http-request-timeout-s", "1"]);
    try {
      const slow = await connect(server);
      slow.write("POST /v1/completions HTTP/1.1\r\nHost: x\r\n");  // and never the rest
      const idle = await connect(server);  // sends nothing at all
      const started = Date.now();
      const ok = await call(server, "POST", "/v1/completions",
                            { model: "tiny", prompt: PROMPT, max_tokens: 3 });
      assert.notEqual(ok.status, 503, ok.text);
      await Promise.all([slow.gone, idle.gone]);
      const took = Date.now() - started;
      assert.ok(took < 5000, `closed after ${took} ms`);
    } finally {
      await server.stop();
    }
  });
});

describe("gRPC streams per connection", () => {
  // Calls past the cap wait in the client (HTTP/2 MAX_CONCURRENT_STREAMS); nobody is refused, and
  // another connection is served meanwhile. Without the flag all four run at once (checked too).
  for (const [cap, expected] of [[2, 2], [null, 4]]) {
    const name = cap ? `past a cap of ${cap} calls queue in the client` : "without a cap all run";
    test(name, async () => {
      const server = await startServer(cap ? ["--grpc-max-streams-per-connection", `${cap}`] : []);
      try {
        let open = 0, most = 0;
        const streams = Array.from({ length: 4 }, () => {
          let started = false;
          const onMessage = () => {
            if (started) return;
            started = true;
            most = Math.max(most, ++open);
          };
          const s = stream(server.client, { text: PROMPT, max_tokens: 200, ignore_eos: true },
                           { onMessage });
          s.done.then(() => { if (started) --open; });
          return s;
        });
        // Another connection (its own subchannel) is served while the first is at its cap.
        const own = { "grpc.use_local_subchannel_pool": 1 };
        const other = new protos.switchyard.Switchyard(server.target,
                                                       grpc.credentials.createInsecure(), own);
        const r = await unary(other, "Generate", { text: PROMPT, max_tokens: 3, ignore_eos: true });
        assert.equal(r.token_ids.length, 3);
        other.close();
        for (const s of streams) {
          const done = await s.done;
          assert.equal(done.token_ids.length, 200);
        }
        assert.equal(most, expected, `calls open at once on one connection`);
      } finally {
        await server.stop();
      }
    });
  }
});

describe("adapter loads", () => {
  test("past the pending-load cap are refused with 429, and the rest load", async () => {
    const root = makeAdapterRoot(["mixlora"]);
    const server = await startServer(["--adapter-root", root, "--max-pending-adapter-loads", "1"]);
    try {
      const results = await Promise.all(Array.from({ length: 24 }, (_, i) => call(
        server, "POST", "/v1/load_lora_adapter", { lora_name: `m${i}`, lora_path: "mixlora" })));
      const codes = results.map((r) => r.status);
      assert.ok(codes.every((c) => c === 200 || c === 429), codes.join(","));
      assert.ok(codes.includes(429), `no load was refused: ${codes.join(",")}`);
      assert.ok(codes.includes(200));
      for (const r of results.filter((x) => x.status === 429)) {
        assert.match(r.json.error.message, /already queued or running/);
      }
      const models = (await call(server, "GET", "/v1/models")).json.data.map((m) => m.id);
      assert.equal(models.filter((m) => /^m\d+$/.test(m)).length,
                   codes.filter((c) => c === 200).length);
    } finally {
      await server.stop();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

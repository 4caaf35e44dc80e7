// Hardening end to end: adapter files crafted to attack the loader are refused with a clear error
// over HTTP and gRPC while other requests keep streaming, and adapter admin is closed by default on
// a server that listens beyond loopback.
import assert from "node:assert/strict";
import fs from "node:fs";
import { describe, test } from "node:test";

import {
  admin, grpc, makeAdapterRoot, request as call, startServer, unary, waitIdle,
} from "./server_harness.mjs";

const TOKEN = "s3cret";
const HOSTILE = ["overflowing_strides", "wrapping_storage", "zero_strides", "overlapping_views",
                 "claimed_entry_size", "deep_nesting", "self_reference", "negative_stride",
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

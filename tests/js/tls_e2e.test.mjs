// TLS end to end: one self-signed certificate (--tls-cert/--tls-key) serves the HTTP API, the
// metrics port and gRPC; the official OpenAI SDK and curl verify it against the certificate;
// plain-text clients are refused; a TLS client that disconnects mid-stream has its request
// cancelled, as over plain HTTP.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { grpc, protos, startServer, unary } from "./server_harness.mjs";

const PROMPT = "The quick brown fox";

describe("TLS on every port", () => {
  let server, dir, cert, openai, grpcClient;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-tls-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                             "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"),
                             "-subj", "/CN=localhost",
                             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                 { stdio: "ignore" });
    cert = fs.readFileSync(path.join(dir, "cert.pem"));
    server = await startServer(["--tls-cert", path.join(dir, "cert.pem"),
                                "--tls-key", path.join(dir, "key.pem"),
                                "--served-model-name", "tiny", "--log-level", "info"]);
    openai = new OpenAI({ baseURL: `https://127.0.0.1:${server.ports.http}/v1`, apiKey: "none",
                          maxRetries: 0, httpAgent: new https.Agent({ ca: cert, keepAlive: true }) });
    grpcClient = new protos.switchyard.Switchyard(`127.0.0.1:${server.ports.grpc}`,
                                                 grpc.credentials.createSsl(cert),
                                                 { "grpc.ssl_target_name_override": "localhost" });
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("the OpenAI SDK completes and streams over HTTPS, verifying the certificate", async () => {
    const r = await openai.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 8,
                                                temperature: 0, ignore_eos: true });
    assert.equal(r.usage.completion_tokens, 8);
    let text = "";
    const s = await openai.completions.create({ model: "tiny", prompt: PROMPT, max_tokens: 8,
                                                temperature: 0, ignore_eos: true, stream: true });
    for await (const chunk of s) text += chunk.choices[0]?.text ?? "";
    assert.equal(text, r.choices[0].text, "streamed = unary, over keep-alive TLS connections");
    // gRPC over the same certificate gives the same tokens.
    const g = await unary(grpcClient, "Generate", { text: PROMPT, max_tokens: 8, ignore_eos: true,
                                                   sampling: { temperature: 0 } });
    assert.deepEqual(g.token_ids.length, 8);
  });

  test("curl verifies the HTTP and metrics ports; plain text is refused", () => {
    const ca = path.join(dir, "cert.pem");
    const code = execFileSync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                       "--cacert", ca,
                                       `https://127.0.0.1:${server.ports.http}/health`]);
    assert.equal(code.toString(), "200");
    const metrics = execFileSync("curl", ["-sS", "--cacert", ca,
                                          `https://127.0.0.1:${server.ports.metrics}/metrics`]);
    assert.match(metrics.toString(), /vllm:num_requests_running/);
    assert.throws(() => execFileSync("curl", ["-sS", "--max-time", "5",
                                              `http://127.0.0.1:${server.ports.http}/health`],
                                     { stdio: "pipe" }));
    assert.throws(() => execFileSync("curl", ["-sS", "--max-time", "5",
                                              `https://127.0.0.1:${server.ports.http}/health`],
                                     { stdio: "pipe" }), "an unverified certificate is refused");
  });

  test("a TLS client that disconnects mid-stream has its request cancelled", async () => {
    const ac = new AbortController();
    const s = await openai.completions.create(
      { model: "tiny", prompt: PROMPT, max_tokens: 3000, ignore_eos: true, stream: true },
      { signal: ac.signal });
    let chunks = 0;
    try {
      for await (const _ of s) { if (++chunks === 3) ac.abort(); }
    } catch { /* the SDK may throw its abort error */ }
    assert.ok(chunks >= 3 && chunks < 3000, `${chunks} chunks`);
    for (let i = 0; i < 500; i++) {
      const info = await unary(grpcClient, "GetServerInfo", {});
      if (Number(info.outstanding) === 0 && info.running === 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const m = server.stderr().match(/finish=cancelled .*?completion_tokens=(\d+)/);
    assert.ok(m, "the request was cancelled");
    assert.ok(Number(m[1]) < 3000);
  });
});

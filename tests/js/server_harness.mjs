// Starts switchyard-server as a real process on loopback (every port a free one) for
// end-to-end tests, and gRPC clients built with @grpc/grpc-js from the .proto files alone.
//
// Environment (set by ctest): SWITCHYARD_BIN (build/bin), SWITCHYARD_TEST_MODEL,
// SWITCHYARD_TEST_ADAPTERS (adapter fixtures), SWITCHYARD_ROOT (the repository).
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = process.env.SWITCHYARD_ROOT ?? path.resolve(here, "../..");
export const BIN = process.env.SWITCHYARD_BIN ?? path.join(ROOT, "build/bin");
export const MODEL = process.env.SWITCHYARD_TEST_MODEL ?? path.join(ROOT, "build/test-models/tiny");
export const FIXTURES = process.env.SWITCHYARD_TEST_ADAPTERS ?? path.join(ROOT, "build/test-adapters");

function load(file, includeDirs) {
  const def = protoLoader.loadSync(file, {
    keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs,
  });
  return grpc.loadPackageDefinition(def);
}

export const protos = {
  switchyard: load("switchyard/v1/switchyard.proto", [path.join(ROOT, "proto")]).switchyard.v1,
  health: load("grpc/health/v1/health.proto", [path.join(ROOT, "proto")]).grpc.health.v1,
  reflection: load("grpc/reflection/v1alpha/reflection.proto", [
    path.join(here, "node_modules/@grpc/reflection/build/proto"),
  ]).grpc.reflection.v1alpha,
};

// An adapter root of copies of the fixtures (symlinks would resolve outside it and be refused).
export function makeAdapterRoot(names) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-e2e-"));
  for (const n of names) fs.cpSync(path.join(FIXTURES, n), path.join(root, n), { recursive: true });
  return root;
}

export async function startServer(args, { env = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-server-"));
  const portsFile = path.join(dir, "ports.json");
  const proc = spawn(path.join(BIN, "switchyard-server"),
                     ["--model", MODEL, "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0",
                      "--host", "127.0.0.1",
                      // The default (auto) would take BF16 products in prefill on a CPU with BF16
                      // dot-product instructions: the suite's expectations stay exact everywhere.
                      "--matmul_precision", "f32",
                      "--ports-file", portsFile, "--log-level", "warning", ...args],
                     { env: { ...process.env, ...env }, stdio: ["ignore", "inherit", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => { stderr += d; process.stderr.write(d); });
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 60000;
  while (!fs.existsSync(portsFile)) {
    if (proc.exitCode !== null) throw new Error(`server exited ${proc.exitCode}: ${stderr}`);
    if (Date.now() > deadline) throw new Error("server did not start in 60 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  const ports = JSON.parse(fs.readFileSync(portsFile, "utf8"));
  const target = `127.0.0.1:${ports.grpc}`;
  const creds = grpc.credentials.createInsecure();
  return {
    proc, exited, target, ports,
    http: `http://127.0.0.1:${ports.http}`,
    stderr: () => stderr,
    client: new protos.switchyard.Switchyard(target, creds),
    health: new protos.health.Health(target, creds),
    reflection: new protos.reflection.ServerReflection(target, creds),
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      return exited;
    },
  };
}

// Promise wrappers.
export function unary(client, method, request, { metadata = new grpc.Metadata(), deadline } = {}) {
  return new Promise((resolve, reject) => {
    const options = deadline ? { deadline } : {};
    client[method](request, metadata, options, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

// Collects a GenerateStream call: { messages, text, token_ids, last, version }.
export function stream(client, request, { onMessage, deadline } = {}) {
  const call = client.GenerateStream(request, new grpc.Metadata(), deadline ? { deadline } : {});
  const result = { messages: [], text: "", token_ids: [], last: null, version: "", call };
  result.done = new Promise((resolve, reject) => {
    call.on("data", (m) => {
      result.messages.push(m);
      result.text += m.text;
      result.token_ids.push(...m.token_ids);
      if (m.adapter_version) result.version = m.adapter_version;
      result.last = m;
      if (onMessage) onMessage(m, call);
    });
    call.on("error", reject);
    call.on("end", () => resolve(result));
  });
  result.done.catch(() => {});  // awaited by the test; never an unhandled rejection meanwhile
  return result;
}

// A free TCP port on loopback (for a server that must be told its port up front).
export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// A JSON request to the server's HTTP port: { status, headers, text, json }.
export async function request(server, method, route, body, headers = {}) {
  const res = await fetch(`${server.http}${route}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

// Waits until nothing is outstanding, running or waiting and no KV block is held: the proof that
// finished and cancelled requests freed their resources.
export async function waitIdle(server) {
  for (let i = 0; i < 500; i++) {
    const info = await unary(server.client, "GetServerInfo", {});
    if (Number(info.outstanding) === 0 && info.running === 0 && info.waiting === 0 &&
        info.kv_usage === 0) {
      return info;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("the server did not become idle: resources were not freed");
}

export function admin(token) {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("authorization", `Bearer ${token}`);
  return md;
}

export { grpc };

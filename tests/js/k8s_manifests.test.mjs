// deploy/: every YAML document parses; built-in kinds validate against the Kubernetes OpenAPI
// schemas of the pinned `kubernetes-models` package, Gateway and HTTPRoute against
// `@kubernetes-models/gateway-api`, the inference extension's objects against
// deploy/kubernetes/crds; the objects refer to each other consistently (selectors, ports, names,
// the flags switchyard-server knows); yamllint passes on every YAML file; the Dockerfiles build
// with the repository's own scripts, run as non-root, and check health.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";

import Ajv from "ajv";
import { parseAllDocuments } from "yaml";
import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";
import * as rbac from "kubernetes-models/rbac.authorization.k8s.io/v1";
import * as gateway from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1";

import os from "node:os";

import { BIN, makeAdapterRoot, ROOT, startServer, unary } from "./server_harness.mjs";

const K8S = path.join(ROOT, "deploy/kubernetes");

function yamlFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(e.name) ? [p] : [];
  });
}

function load(file) {
  return parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => {
    assert.deepEqual(d.errors, [], `${file}: ${d.errors.join("; ")}`);
    return d.toJS();
  }).filter((d) => d !== null);
}

// The objects `kubectl apply -k` would create from a kustomization folder (resources only).
function resources(dir) {
  const k = load(path.join(dir, "kustomization.yaml"))[0];
  return k.resources.flatMap((r) => {
    const p = path.join(dir, r);
    assert.ok(fs.existsSync(p), `${dir}/kustomization.yaml: ${r} exists`);
    return fs.statSync(p).isDirectory() ? resources(p) : load(p);
  });
}

const BUILT_IN = {
  "v1/Namespace": core.Namespace, "v1/ConfigMap": core.ConfigMap,
  "v1/PersistentVolumeClaim": core.PersistentVolumeClaim, "v1/Service": core.Service,
  "v1/ServiceAccount": core.ServiceAccount, "apps/v1/Deployment": apps.Deployment,
  "rbac.authorization.k8s.io/v1/Role": rbac.Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": rbac.RoleBinding,
  "gateway.networking.k8s.io/v1/Gateway": gateway.Gateway,
  "gateway.networking.k8s.io/v1/HTTPRoute": gateway.HTTPRoute,
};
const schema = JSON.parse(fs.readFileSync(path.join(K8S, "crds/inference-extension.schema.json"), "utf8"));
const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addSchema(schema, "crds");

function validate(obj) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  if (BUILT_IN[key]) {
    new BUILT_IN[key](obj).validate();  // throws with the offending path
    return;
  }
  assert.ok(schema.definitions[obj.kind] && obj.apiVersion.startsWith("inference.networking."),
            `a schema for ${key}`);
  const check = ajv.getSchema(`crds#/definitions/${obj.kind}`);
  assert.ok(check(obj), `${key} ${obj.metadata.name}: ${ajv.errorsText(check.errors)}`);
}

test("every manifest parses and validates against its schema", () => {
  let n = 0;
  for (const file of yamlFiles(K8S)) {
    for (const doc of load(file)) {
      if (doc.kind === "Kustomization" || file.endsWith("cuda/gpu.yaml")) continue;  // below
      validate(doc);
      n++;
    }
  }
  assert.ok(n >= 15, `${n} objects`);
  // The schemas do catch mistakes.
  assert.throws(() => validate({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" },
                                 spec: { selector: {}, template: { spec: { containers: [
                                   { name: "c", ports: [{ containerPort: "http" }] }] } } } }));
  assert.throws(() => validate({ apiVersion: "inference.networking.k8s.io/v1",
                                 kind: "InferencePool", metadata: { name: "p" },
                                 spec: { selector: { matchLabels: {} }, targetPorts: [] } }));
});

test("the objects refer to each other consistently", () => {
  const objs = resources(K8S);
  const get = (kind, name) => {
    const o = objs.find((x) => x.kind === kind && (!name || x.metadata.name === name));
    assert.ok(o, `${kind} ${name ?? ""}`);
    return o;
  };
  const server = get("Deployment", "switchyard");
  const pod = server.spec.template;
  const container = pod.spec.containers[0];
  const port = (name) => container.ports.find((p) => p.name === name).containerPort;
  const pool = get("InferencePool", "switchyard");
  for (const [k, v] of Object.entries(pool.spec.selector.matchLabels)) {
    assert.equal(pod.metadata.labels[k], v, "the pool selects the server pods");
  }
  assert.equal(pool.spec.targetPorts[0].number, port("http"), "the pool targets the HTTP port");
  const eppService = get("Service", pool.spec.extensionRef.name);
  assert.ok(eppService.spec.ports.some((p) => p.port === pool.spec.extensionRef.portNumber));
  const epp = get("Deployment", "switchyard-epp");
  const args = epp.spec.template.spec.containers[0].args;
  assert.ok(args.includes(`--pool-name=${pool.metadata.name}`));
  for (const metric of ["vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                        "vllm:lora_requests_info", "vllm:cache_config_info"]) {
    assert.ok(args.some((a) => a.endsWith(`=${metric}`)), `the picker reads ${metric}`);
  }
  const route = get("HTTPRoute", "switchyard");
  assert.equal(route.spec.parentRefs[0].name, get("Gateway").metadata.name);
  assert.deepEqual(route.spec.rules[0].backendRefs[0],
                   { group: "inference.networking.k8s.io", kind: "InferencePool", name: "switchyard" });
  for (const o of objs.filter((x) => x.spec?.poolRef)) assert.equal(o.spec.poolRef.name, "switchyard");
  assert.equal(pod.metadata.annotations["prometheus.io/port"], String(port("metrics")));
  assert.equal(container.readinessProbe.httpGet.path, "/health");
  assert.ok(pod.spec.terminationGracePeriodSeconds > 50 && container.lifecycle.preStop);

  // The flags file: every flag is one switchyard-server knows; the drain fits the grace period;
  // the model rewrite targets adapters the replicas load.
  const flags = get("ConfigMap", "switchyard-flags").data["server.flags"].trim().split("\n");
  // (--helpfull prints the flags and exits 1, as Abseil's flags do.)
  const help = spawnSync(path.join(BIN, "switchyard-server"), ["--helpfull"],
                         { encoding: "utf8" }).stdout;
  assert.match(help, /--model/);
  const adapters = [];
  for (const f of flags) {
    const [, name, value] = /^--([\w-]+)=(.*)$/.exec(f);
    assert.match(help, new RegExp(`--${name.replaceAll("-", "_")}\\b`), `--${name} is a flag`);
    if (name === "adapter") adapters.push(value);
    if (name === "shutdown-grace-s") assert.ok(Number(value) + 5 < pod.spec.terminationGracePeriodSeconds);
  }
  for (const rule of get("InferenceModelRewrite").spec.rules) {
    for (const t of rule.targets) assert.ok(adapters.includes(t.modelRewrite), t.modelRewrite);
  }

  // The CUDA overlay: the base plus a GPU limit on the same Deployment.
  const overlay = load(path.join(K8S, "cuda/kustomization.yaml"))[0];
  assert.deepEqual(overlay.resources, [".."]);
  const patch = load(path.join(K8S, "cuda", overlay.patches[0].path))[0];
  assert.equal(patch.metadata.name, server.metadata.name);
  assert.equal(patch.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"], 1);
  const patched = structuredClone(server);
  Object.assign(patched.spec.template.spec, { nodeSelector: patch.spec.template.spec.nodeSelector,
                                              tolerations: patch.spec.template.spec.tolerations });
  patched.spec.template.spec.containers[0].resources = patch.spec.template.spec.containers[0].resources;
  validate(patched);
});

test("yamllint, docker-compose and the Dockerfiles", () => {
  execFileSync("yamllint", ["--strict", "."], { cwd: ROOT });
  execFileSync("docker-compose", ["-f", path.join(ROOT, "docker-compose.yml"), "config", "-q"]);
  for (const file of ["deploy/Dockerfile", "deploy/Dockerfile.cuda"]) {
    const text = fs.readFileSync(path.join(ROOT, file), "utf8");
    const stages = text.split(/^FROM /m).slice(1);
    assert.equal(stages.length, 2, `${file}: a build and a runtime stage`);
    assert.match(stages[0], /^RUN .*\bmake build\b/m, `${file} builds with the repository's scripts`);
    assert.doesNotMatch(stages[1], /build-essential|cmake|nvcc|cuda-toolkit/, `${file}: no compilers`);
    assert.match(stages[1], /^USER 10001/m, `${file}: non-root`);
    assert.match(stages[1], /^HEALTHCHECK .*switchyard-cli.*health/ms, `${file}: a health check`);
  }
  // `make build` is what installs the dependencies (and what CI's `make test` runs first).
  assert.match(fs.readFileSync(path.join(ROOT, "Makefile"), "utf8"), /^configure: deps$/m);
});

test("switchyard-server starts from the ConfigMap's flags file as the pods run it", async () => {
  const objs = resources(K8S);
  const text = objs.find((o) => o.kind === "ConfigMap").data["server.flags"];
  const adapters = [...text.matchAll(/^--adapter=(\S+)$/gm)].map((m) => m[1]);
  // The cluster's paths and ports, swapped for the test fixtures and free ports.
  const root = makeAdapterRoot(adapters);
  const local = text.replace(/^--model=.*$/m, "")
    .replace(/^--adapter-root=.*$/m, `--adapter-root=${root}`)
    .replace(/^--host=.*$/m, "--host=127.0.0.1")
    .replace(/^--(http|grpc|metrics)-port=.*$/gm, "--$1-port=0")
    .replace(/^--kv-cache-mib=.*$/m, "--kv-cache-mib=64");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-flags-"));
  const file = path.join(dir, "server.flags");
  fs.writeFileSync(file, local);
  const server = await startServer([`--flagfile=${file}`]);
  try {
    const list = await unary(server.client, "ListAdapters", {});
    assert.deepEqual(list.adapters.map((a) => a.name).sort(), [...adapters].sort());
    const info = await unary(server.client, "GetServerInfo", {});
    assert.equal(info.model, /^--served-model-name=(.*)$/m.exec(text)[1]);
  } finally {
    assert.equal((await server.stop()).code, 0);
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
});


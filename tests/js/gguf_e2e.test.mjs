// A GGUF model served end to end: the test model converted to a Q8_0 GGUF file
// (tools/modelgen/gguf.py, as llama.cpp's converter lays it out) and the same folder quantized at
// load (--quantization int8) hold the same bytes, so through the official `openai` SDK both
// servers must answer greedy requests identically — the file's tokenizer and chat template
// against the folder's tokenizer.json and tokenizer_config.json. A truncated GGUF file must stop
// the server at start with a message naming it, not crash it.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { BIN, MODEL, ROOT, startServer } from "./server_harness.mjs";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-gguf-"));
const GGUF = path.join(tmp, "tiny-q8_0.gguf");

describe("a GGUF model through the OpenAI SDK", () => {
  let fromFile, fromFolder, fileClient, folderClient;

  before(async () => {
    const convert = spawnSync("/usr/bin/python3", [
      path.join(ROOT, "tools/modelgen/gguf.py"), "convert", "--model", MODEL, "--out", GGUF,
      "--type", "q8_0"], { encoding: "utf8" });
    assert.equal(convert.status, 0, convert.stderr);
    fromFile = await startServer(["--model", GGUF]);
    fromFolder = await startServer(["--quantization", "int8", "--served-model-name", "tiny-q8_0"]);
    fileClient = new OpenAI({ baseURL: `${fromFile.http}/v1`, apiKey: "unused", maxRetries: 0 });
    folderClient = new OpenAI({ baseURL: `${fromFolder.http}/v1`, apiKey: "unused",
                                maxRetries: 0 });
  });

  after(async () => {
    await fromFile?.stop();
    await fromFolder?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("the served name is the file's name without .gguf", async () => {
    const models = await fileClient.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["tiny-q8_0"]);
  });

  test("chat completions match the folder quantized at load, prompt and answer", async () => {
    for (const content of ["Hello there!", "Mixture of experts, in one line.", "½ ünïcödé 🙂"]) {
      const request = { model: "tiny-q8_0", messages: [{ role: "user", content }],
                        max_tokens: 12, temperature: 0 };
      const a = await fileClient.chat.completions.create(request);
      const b = await folderClient.chat.completions.create(request);
      assert.equal(a.usage.prompt_tokens, b.usage.prompt_tokens, "the same rendered prompt");
      assert.ok(a.usage.prompt_tokens > 5, "the chat template added its headers");
      assert.equal(a.choices[0].message.content, b.choices[0].message.content, content);
    }
  });

  test("streamed completions match too", async () => {
    const collect = async (client) => {
      let text = "";
      const s = await client.completions.create({ model: "tiny-q8_0", prompt: "Once upon",
                                                  max_tokens: 16, temperature: 0, stream: true });
      for await (const chunk of s) text += chunk.choices[0]?.text ?? "";
      return text;
    };
    assert.equal(await collect(fileClient), await collect(folderClient));
  });

  test("a truncated GGUF file stops the server at start, naming the file", () => {
    const bytes = fs.readFileSync(GGUF);
    const bad = path.join(tmp, "truncated.gguf");
    fs.writeFileSync(bad, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const run = spawnSync(path.join(BIN, "switchyard-server"),
                          ["--model", bad, "--grpc-port", "0", "--http-port", "0",
                           "--metrics-port", "-1", "--host", "127.0.0.1"],
                          { encoding: "utf8", timeout: 60000 });
    assert.notEqual(run.status, 0);
    assert.equal(run.signal, null, "an exit, not a crash");
    assert.match(run.stderr, /truncated\.gguf/);
    assert.match(run.stderr, /malformed GGUF|outside/);
  });
});

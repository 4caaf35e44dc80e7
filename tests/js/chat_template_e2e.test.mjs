// Chat templates end to end: the server renders the real Llama 3.1 Instruct template (passed with
// --chat-template FILE, as vLLM takes it) for chat completions through the official `openai` SDK
// and for /tokenize with messages, tools, add_generation_prompt and chat_template_kwargs; every
// prompt tokenizes to exactly the ids of the text Python's jinja2 renders in Hugging Face's
// environment (tests/reference/jinja_reference.py). Template errors and raise_exception reach the
// client as 400s naming the template's message.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { ROOT, request as call, startServer } from "./server_harness.mjs";

// meta-llama/Llama-3.1-8B-Instruct's template (dated system block, tools), from the corpus the
// parity suite carries.
const LLAMA31 = {
  chat_template: JSON.parse(fs.readFileSync(path.join(
    ROOT, "tests/reference/chat_templates/huggingface_jinja_e2e.json"), "utf8"))[
    "meta-llama/Llama-3.1-8B-Instruct"].template,
};
const DEMO_CONFIG = JSON.parse(fs.readFileSync(
  path.join(process.env.SWITCHYARD_TEST_MODEL ?? path.join(ROOT, "build/test-models/tiny"),
            "tokenizer_config.json"), "utf8"));

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city — “quoted”.",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

const token = (t) => (typeof t === "string" ? t : t?.content);

// What Hugging Face would render for this request (Python's jinja2; strftime_now is not used by
// this template once date_string is given).
function reference(context) {
  const full = { bos_token: token(DEMO_CONFIG.bos_token), eos_token: token(DEMO_CONFIG.eos_token),
                 tools: null, add_generation_prompt: true, ...context };
  const out = execFileSync("/usr/bin/python3", [path.join(ROOT, "tests/reference/jinja_reference.py")],
                           { input: JSON.stringify({ template: LLAMA31.chat_template, context: full }) });
  const r = JSON.parse(out);
  assert.ok(r.ok, `the reference renders: ${r.error}`);
  return r.text;
}

describe("chat templates", () => {
  let server, dir, openai;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "switchyard-template-"));
    const file = path.join(dir, "llama31.jinja");
    fs.writeFileSync(file, LLAMA31.chat_template);
    server = await startServer(["--chat-template", file]);
    openai = new OpenAI({ baseURL: `${server.http}/v1`, apiKey: "none" });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // The ids of the text the reference renders, as the server tokenizes plain text.
  async function idsOf(text) {
    const r = await call(server, "POST", "/tokenize", { prompt: text, add_special_tokens: false });
    assert.equal(r.status, 200, r.text);
    return r.json.tokens;
  }

  async function tokenizeChat(body) {
    const r = await call(server, "POST", "/tokenize", body);
    assert.equal(r.status, 200, r.text);
    return r.json.tokens;
  }

  test("/tokenize renders messages, tools and kwargs exactly as Hugging Face", async () => {
    const messages = [
      { role: "system", content: "You are terse." },
      { role: "user", content: "Weather in Hanoi? 中文 😀" },
      { role: "assistant", content: "",
        tool_calls: [{ id: "call1", type: "function",
                       function: { name: "get_weather", arguments: "{\"city\": \"Hanoi\"}" } }] },
      { role: "tool", tool_call_id: "call1", content: "{\"temperature\": 31}" },
      { role: "assistant", content: "31 °C." },
      { role: "user", content: "Thanks" },
    ];
    // OpenAI sends tool-call arguments as a string; templates receive the object (as vLLM does).
    const asTemplateSees = structuredClone(messages);
    asTemplateSees[2].tool_calls[0].function.arguments = { city: "Hanoi" };
    const cases = [
      [{ messages }, { messages: asTemplateSees }],
      [{ messages, add_generation_prompt: false },
       { messages: asTemplateSees, add_generation_prompt: false }],
      [{ messages, tools: [WEATHER], chat_template_kwargs: { date_string: "01 Jan 2030" } },
       { messages: asTemplateSees, tools: [WEATHER], date_string: "01 Jan 2030" }],
      [{ messages: messages.slice(0, 2), tools: [WEATHER],
         chat_template_kwargs: { tools_in_user_message: false } },
       { messages: asTemplateSees.slice(0, 2), tools: [WEATHER], tools_in_user_message: false }],
    ];
    for (const [body, context] of cases) {
      const want = reference(context);
      assert.deepEqual(await tokenizeChat(body), await idsOf(want), JSON.stringify(body));
    }
    // continue_final_message: transformers' cut after the final message's (stripped) content.
    const prefill = [...messages.slice(0, 2), { role: "assistant", content: "  It is " }];
    const full = reference({ messages: prefill.map((m, i) => i === 2 ? m : asTemplateSees[i]),
                             add_generation_prompt: false });
    const cut = full.slice(0, full.lastIndexOf("It is") + "It is".length);
    assert.deepEqual(await tokenizeChat({ messages: prefill, add_generation_prompt: false,
                                          continue_final_message: true }), await idsOf(cut));
    const dated = await call(server, "POST", "/detokenize", {
      tokens: await tokenizeChat(cases[2][0]) });
    assert.match(dated.json.prompt, /Today Date: 01 Jan 2030/);
    assert.match(dated.json.prompt, /"name": "get_weather"/);
  });

  test("chat completions render the same prompt (usage counts its tokens)", async () => {
    const messages = [{ role: "user", content: [{ type: "text", text: "Describe" },
                                                 { type: "text", text: "briefly." }] }];
    const want = await idsOf(reference({ messages: [{ role: "user", content: "Describe\nbriefly." }] }));
    const r = await openai.chat.completions.create({
      model: "tiny", messages, max_tokens: 3, temperature: 0 });
    assert.equal(r.usage.prompt_tokens, want.length);
    const withTools = await openai.chat.completions.create({
      model: "tiny", messages, max_tokens: 3, temperature: 0, tools: [WEATHER], tool_choice: "none" });
    const toolIds = await idsOf(reference({
      messages: [{ role: "user", content: "Describe\nbriefly." }], tools: [WEATHER] }));
    assert.equal(withTools.usage.prompt_tokens, toolIds.length);
  });

  test("the template's own errors become 400s naming its message", async () => {
    const twoCalls = [{ role: "user", content: "x" },
                      { role: "assistant", content: "",
                        tool_calls: [{ type: "function", function: { name: "a", arguments: "{}" } },
                                     { type: "function", function: { name: "b", arguments: "{}" } }] }];
    await assert.rejects(openai.chat.completions.create({ model: "tiny", messages: twoCalls }),
      (e) => e.status === 400 && /only supports single tool-calls at once/.test(e.message));
    const r = await call(server, "POST", "/tokenize", { messages: twoCalls });
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /chat template refused the request: This model only supports/);
  });

  test("malformed chat fields are refused by name", async () => {
    const messages = [{ role: "user", content: "x" }];
    const bad = [
      [{ messages, chat_template_kwargs: 5 }, /chat_template_kwargs/],
      [{ messages, chat_template_kwargs: { messages: [] } }, /set by the request itself/],
      [{ messages, add_generation_prompt: "yes" }, /add_generation_prompt/],
      [{ messages, continue_final_message: true }, /cannot be combined with add_generation_prompt/],
      [{ messages, tools: { type: "function" } }, /tools/],
      [{ messages, tools: [{ type: "function", function: {} }] }, /tools\[0\]\.function\.name/],
      [{ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] },
       /only parts of type "text"/],
    ];
    for (const [body, pattern] of bad) {
      const r = await call(server, "POST", "/tokenize", body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.json.error.message, pattern);
    }
    // "required" and a named function are constrained (docs/structured-output.md): the call's
    // arguments follow the function's parameters whatever the template.
    for (const tool_choice of ["required", { type: "function", function: { name: "get_weather" } }]) {
      const r = await openai.chat.completions.create({
        model: "tiny", messages, tools: [WEATHER], tool_choice, max_tokens: 2000, seed: 3 });
      const call = r.choices[0].message.tool_calls?.[0];
      assert.equal(call?.function.name, "get_weather", JSON.stringify(r.choices[0]));
      assert.equal(typeof JSON.parse(call.function.arguments).city, "string");
    }
    await assert.rejects(openai.chat.completions.create({ model: "tiny", messages, tool_choice: "auto" }),
      (e) => e.status === 400 && /tool_choice/.test(e.message));
  });

  test("tool_choice auto: output is parsed in the template's format (llama3_json here)", async () => {
    // The demo model is random: it writes no call, so its text comes back as content, streamed
    // and not alike (the parser holds back nothing that is not a call).
    const messages = [{ role: "user", content: "Weather in Hanoi?" }];
    const params = { model: "tiny", messages, tools: [WEATHER], max_tokens: 8, temperature: 0 };
    const plain = await openai.chat.completions.create(params);
    assert.equal(plain.choices[0].message.tool_calls, undefined);
    assert.equal(typeof plain.choices[0].message.content, "string");
    const stream = await openai.chat.completions.create({ ...params, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(text, plain.choices[0].message.content);
  });
});

describe("--chat-template", () => {
  test("a missing file or a broken template stops the server at start, naming it", async () => {
    for (const [value, pattern] of [["/nonexistent/t.jinja", /--chat-template/],
                                    ["{% for m in messages %}", /endfor/]]) {
      await assert.rejects(startServer(["--chat-template", value]), pattern);
    }
  });
});

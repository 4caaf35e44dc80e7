// Renders chat templates with Hugging Face's Jinja (@huggingface/jinja), as transformers.js does,
// for comparison with our built-in renderers (engine/tokenizer/chat_template.cc).
//
//   node chat_reference.mjs JOB.json > OUT.json
//   JOB: {"templates": [{"name", "text", "bos", "eos"}], "conversations": [[{role, content}]]}
import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const result = {};
for (const t of job.templates) {
  const template = new Template(t.text);
  result[t.name] = job.conversations.map((messages) => {
    const out = {};
    for (const [key, options] of [
      ["prompt", { add_generation_prompt: true }],
      ["no_prompt", { add_generation_prompt: false }],
      ["no_thinking", { add_generation_prompt: true, enable_thinking: false }],
    ]) {
      try {
        out[key] = template.render({
          messages,
          bos_token: t.bos,
          eos_token: t.eos,
          ...options,  // raise_exception is built into @huggingface/jinja
        });
      } catch (e) {
        out[key] = null;  // the template refused this conversation
      }
    }
    return out;
  });
}
process.stdout.write(JSON.stringify(result));

// Hugging Face's own JavaScript tokenizer (@huggingface/tokenizers) over a job file, printing
// what our C++ driver prints (tests/tokenizer/tokenizer_driver.cc) so the two can be compared.
//
//   node tokenizer_reference.mjs JOB.json > OUT.json
//   JOB: {"tokenizers": [{"name", "dir"}], "texts": [...], "invalid_hex": [...],
//         "decode_ids": {name: [[ids]...]}}
import { readFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const result = {};
const decode = (tok, ids, skip) => (ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: skip }));

for (const { name, dir } of job.tokenizers) {
  const tokenizerJson = JSON.parse(readFileSync(`${dir}/tokenizer.json`, "utf8"));
  let config = {};
  try {
    config = JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8"));
  } catch {}
  const tok = new Tokenizer(tokenizerJson, config);
  const texts = job.texts.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: true }).ids;
    const plain = tok.encode(text, { add_special_tokens: false }).ids;
    return { ids, plain, decoded: decode(tok, ids, false), decoded_skip: decode(tok, ids, true) };
  });
  // Invalid UTF-8 reaches a JS tokenizer only after a lossy TextDecoder pass.
  const invalid = job.invalid_hex.map((hex) => {
    const text = new TextDecoder().decode(Buffer.from(hex, "hex"));
    return { ids: tok.encode(text, { add_special_tokens: false }).ids };
  });
  const decodes = (job.decode_ids[name] ?? []).map((ids) => decode(tok, ids, false));
  result[name] = { texts, invalid, decodes };
}
process.stdout.write(JSON.stringify(result));

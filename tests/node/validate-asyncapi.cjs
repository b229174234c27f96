// Validates an AsyncAPI document with the official parser (@asyncapi/parser from npm).
// Usage: NODE_PATH=<node_modules> node validate-asyncapi.cjs docs/asyncapi.json [more.json...]
// Prints every diagnostic and one VALID/INVALID line per document; exits 1 when the parser
// reports an error (severity 0) in any of them.
"use strict";
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

async function validate(parser, path) {
  const text = fs.readFileSync(path, "utf8");
  const { document, diagnostics } = await parser.parse(text, { source: path });
  for (const d of diagnostics) {
    console.log(`${["error", "warning", "info", "hint"][d.severity]} ${d.code} ${d.path.join(".")}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (document === undefined || errors.length > 0) {
    console.log(`INVALID ${path}: ${errors.length} error(s)`);
    return false;
  }
  const channels = document.channels().all().map((c) => c.address());
  const operations = document.operations().all().length;
  const messages = document.components().messages().all().length;
  console.log(`VALID ${path}: asyncapi ${document.version()}, ${channels.length} channels (${channels.join(", ")}), ${operations} operations, ${messages} messages`);
  return true;
}

async function main() {
  const parser = new Parser();
  let ok = true;
  for (const path of process.argv.slice(2)) ok = (await validate(parser, path)) && ok;
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`validate-asyncapi failed: ${err && err.stack ? err.stack : err}`);
  process.exit(2);
});

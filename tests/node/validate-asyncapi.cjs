// Validates an AsyncAPI document with the official parser (@asyncapi/parser from npm).
// Usage: NODE_PATH=<node_modules> node validate-asyncapi.cjs docs/asyncapi.json
// Prints every diagnostic; exits 1 when the parser reports an error (severity 0).
"use strict";
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

async function main() {
  const path = process.argv[2];
  const text = fs.readFileSync(path, "utf8");
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(text, { source: path });
  for (const d of diagnostics) {
    console.log(`${["error", "warning", "info", "hint"][d.severity]} ${d.code} ${d.path.join(".")}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (document === undefined || errors.length > 0) {
    console.log(`INVALID: ${errors.length} error(s)`);
    process.exit(1);
  }
  const channels = document.channels().all().map((c) => c.address());
  const operations = document.operations().all().length;
  const messages = document.components().messages().all().length;
  console.log(`VALID asyncapi ${document.version()}: ${channels.length} channels (${channels.join(", ")}), ${operations} operations, ${messages} messages`);
}

main().catch((err) => {
  console.error(`validate-asyncapi failed: ${err && err.stack ? err.stack : err}`);
  process.exit(2);
});

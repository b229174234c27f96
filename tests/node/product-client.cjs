// An independent client of framepipe's product streams, written against the published
// contract only: it reads every message of DETECTIONS (and EVENTS, where that stream
// exists) with @nats-io/jetstream and validates each body against the JSON Schema in
// docs/schemas/<stream>.schema.json (ajv, draft 2020-12), and its headers against the
// kind it claims. Prints one JSON summary line; exits 1 on any invalid message or an
// empty DETECTIONS stream.
// Usage: NODE_PATH=<node_modules> node product-client.cjs <nats-url> <schemas-dir> [stream...]
"use strict";
const fs = require("fs");
const path = require("path");
const { connect } = require("@nats-io/transport-node");
const { jetstream, jetstreamManager } = require("@nats-io/jetstream");
const Ajv2020 = require("ajv/dist/2020").default;

async function readStream(js, jsm, stream, validate) {
  let info;
  try {
    info = await jsm.streams.info(stream);
  } catch (err) {
    return { stream, exists: false };
  }
  const summary = { stream, exists: true, messages: 0, kinds: {}, invalid: [] };
  const last = info.state.last_seq;
  if (info.state.messages === 0) return summary;
  const consumer = await js.consumers.get(stream); // ordered, from the first message
  const messages = await consumer.consume({ max_messages: 256 });
  for await (const m of messages) {
    summary.messages += 1;
    let body;
    const problems = [];
    try {
      body = m.json();
    } catch (err) {
      problems.push(`not JSON: ${err.message}`);
    }
    if (body !== undefined && !validate(body)) {
      problems.push(...validate.errors.map((e) => `${e.instancePath || "/"} ${e.message}`));
    }
    // Envelopes name their kind in Framepipe-Kind and `kind`; events (plain documents) in
    // Framepipe-Event and `type`, with their `id` as the Nats-Msg-Id.
    const isEvent = stream === "EVENTS";
    const kind = m.headers ? m.headers.get(isEvent ? "Framepipe-Event" : "Framepipe-Kind") : "";
    const bodyKind = body === undefined ? undefined : isEvent ? body.type : body.kind;
    if (m.headers === undefined || m.headers.get("Content-Type") !== "application/json") {
      problems.push("Content-Type header is not application/json");
    }
    if (body !== undefined && bodyKind !== kind) problems.push(`header kind ${kind} != body kind ${bodyKind}`);
    if (isEvent && body !== undefined && m.headers && m.headers.get("Nats-Msg-Id") !== body.id) {
      problems.push("Nats-Msg-Id != event id");
    }
    if (body !== undefined && m.subject.split(".").pop() !== body.camera) problems.push("camera != subject");
    if (problems.length) summary.invalid.push({ seq: m.seq, subject: m.subject, problems });
    if (body !== undefined) summary.kinds[bodyKind] = (summary.kinds[bodyKind] || 0) + 1;
    if (m.seq >= last) break;
  }
  return summary;
}

async function main() {
  const [url, schemasDir, ...wanted] = process.argv.slice(2);
  const streams = wanted.length ? wanted : ["DETECTIONS", "EVENTS"];
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  const nc = await connect({ servers: url, name: "framepipe-node-contract-client" });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const results = [];
  for (const stream of streams) {
    const file = path.join(schemasDir, `${stream.toLowerCase()}.schema.json`);
    if (!fs.existsSync(file)) {
      results.push({ stream, exists: false, schema: false });
      continue;
    }
    const validate = ajv.compile(JSON.parse(fs.readFileSync(file, "utf8")));
    results.push(await readStream(js, jsm, stream, validate));
  }
  await nc.close();
  console.log(JSON.stringify({ results }));
  const detections = results.find((r) => r.stream === "DETECTIONS");
  const bad = results.some((r) => r.invalid && r.invalid.length) || !detections || !detections.messages;
  process.exit(bad ? 1 : 0);
}

main().catch((err) => {
  console.error(`product-client failed: ${err && err.stack ? err.stack : err}`);
  process.exit(2);
});

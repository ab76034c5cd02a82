#!/usr/bin/env node
// A DataDog client in Node.js, built at run time from the repository's protos/
// with @grpc/proto-loader and @grpc/grpc-js (devDependencies in package.json).
//
//   node run_pipeline.js ADDRESS [PIPELINE_JSON]     (stdin when omitted or "-")
//
// PIPELINE_JSON is a Pipeline in the proto3 JSON mapping: the same format as the
// YAML/JSON pipeline files (`datadog pipeline create -f`), snake_case or
// lowerCamelCase field names. The client creates the pipeline, runs it, polls
// GetRun until the run is finished and prints the final Run as proto3 JSON on
// stdout.
//
// Exit codes: 0 the run succeeded, 1 it finished in another state, 2 usage,
// 3 an RPC failed (code and message on stderr), 4 the run did not finish in time.
//
// Well-known types: the protos import only google/protobuf/{duration,struct,
// timestamp}.proto, which protobufjs (proto-loader's parser) bundles and
// resolves by name before looking in includeDirs; its own google/ directory
// (descriptor.proto, ...) is added to includeDirs for the others.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const REPO = path.resolve(__dirname, "..", "..", "..");
const PROTOS = path.join(REPO, "protos");
const PKG = "datadog_platform.api.scheduler.v1";
const FINAL_STATES = new Set(["RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"]);
const CALL_DEADLINE_MS = 10_000;
const POLL_INTERVAL_MS = 200;
const RUN_TIMEOUT_MS = Number(process.env.RUN_TIMEOUT_SECONDS || 60) * 1000;

function googleProtoDirs() {
  // protobufjs ships google/protobuf/*.proto beside its package.json.
  try {
    const protobufjs = path.dirname(
      require.resolve("protobufjs/package.json", {
        paths: [path.dirname(require.resolve("@grpc/proto-loader"))],
      }),
    );
    return [protobufjs];
  } catch {
    return [];
  }
}

const packageDefinition = protoLoader.loadSync(
  "datadog_platform/api/scheduler/v1/scheduler_service.proto",
  {
    includeDirs: [PROTOS, ...googleProtoDirs()],
    keepCase: true, // field names as in the .proto files
    longs: String, // int64 as decimal strings, as in proto3 JSON
    enums: String, // enum values by name
    bytes: String, // base64, as in proto3 JSON
    defaults: false, // unset fields stay absent (proto3 JSON omits them)
    oneofs: false,
  },
);
const proto = grpc.loadPackageDefinition(packageDefinition);

// --- proto3 JSON mapping, driven by the descriptors proto-loader returns ---

// Every message descriptor by full name, nested ones (map entries) included.
const MESSAGES = new Map();
for (const [name, def] of Object.entries(packageDefinition)) {
  if (def.format === "Protocol Buffer 3 DescriptorProto") indexMessage(name, def.type);
}
function indexMessage(fullName, descriptor) {
  MESSAGES.set(fullName, descriptor);
  for (const nested of descriptor.nestedType || []) {
    indexMessage(`${fullName}.${nested.name}`, nested);
  }
}

// A field's type name as written in its file, resolved from the scope of the
// message that declares it (protobuf scoping rules: innermost first).
function resolveType(scope, typeName) {
  if (typeName.startsWith(".")) return typeName.slice(1);
  const parts = scope.split(".");
  for (let i = parts.length; i >= 0; i--) {
    const candidate = [...parts.slice(0, i), typeName].join(".");
    if (MESSAGES.has(candidate)) return candidate;
  }
  return typeName; // an enum (enums pass through by name)
}

function camel(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

function isMapEntry(typeName) {
  const descriptor = MESSAGES.get(typeName);
  return Boolean(descriptor && descriptor.options && descriptor.options.mapEntry);
}

// proto3 JSON value -> the object form grpc-js serialises.
function fromJson(typeName, json) {
  switch (typeName) {
    case "google.protobuf.Struct":
      return { fields: mapValues(json, valueFromJson) };
    case "google.protobuf.Value":
      return valueFromJson(json);
    case "google.protobuf.ListValue":
      return { values: json.map(valueFromJson) };
    case "google.protobuf.Timestamp":
      return timestampFromJson(json);
    case "google.protobuf.Duration":
      return durationFromJson(json);
    default:
      break;
  }
  const descriptor = MESSAGES.get(typeName);
  if (!descriptor) throw new Error(`unknown message type ${typeName}`);
  const out = {};
  for (const [key, value] of Object.entries(json)) {
    const field = descriptor.field.find((f) => f.name === key || camel(f.name) === key);
    if (!field) throw new Error(`${typeName} has no field ${JSON.stringify(key)}`);
    if (value === null) continue;
    out[field.name] = fieldFromJson(typeName, field, value);
  }
  return out;
}

function fieldFromJson(scope, field, value) {
  const type = field.type === "TYPE_MESSAGE" ? resolveType(scope, field.typeName) : null;
  if (type && isMapEntry(type)) {
    const valueField = MESSAGES.get(type).field.find((f) => f.name === "value");
    return mapValues(value, (v) => scalarOrMessage(type, valueField, v));
  }
  if (field.label === "LABEL_REPEATED") {
    return value.map((v) => scalarOrMessage(scope, field, v));
  }
  return scalarOrMessage(scope, field, value);
}

function scalarOrMessage(scope, field, value) {
  if (field.type === "TYPE_MESSAGE") return fromJson(resolveType(scope, field.typeName), value);
  return value; // strings, numbers, bools, enum names, int64 strings, base64 bytes
}

function valueFromJson(v) {
  if (v === null) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(valueFromJson) } };
  return { structValue: { fields: mapValues(v, valueFromJson) } };
}

function timestampFromJson(text) {
  const match = /^(.*?)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  const millis = match ? Date.parse(`${match[1]}${match[3]}`) : Number.NaN;
  if (Number.isNaN(millis)) throw new Error(`bad timestamp ${JSON.stringify(text)}`);
  return { seconds: String(Math.floor(millis / 1000)), nanos: Number((match[2] || "").padEnd(9, "0")) };
}

function durationFromJson(text) {
  const match = /^(-?)(\d+)(?:\.(\d{1,9}))?s$/.exec(text);
  if (!match) throw new Error(`bad duration ${JSON.stringify(text)}`);
  const nanos = Number((match[3] || "").padEnd(9, "0"));
  return { seconds: `${match[1]}${match[2]}`, nanos: match[1] ? -nanos : nanos };
}

// The object grpc-js deserialised -> proto3 JSON (lowerCamelCase names).
function toJson(typeName, obj) {
  switch (typeName) {
    case "google.protobuf.Struct":
      return mapValues(obj.fields || {}, valueToJson);
    case "google.protobuf.Value":
      return valueToJson(obj);
    case "google.protobuf.ListValue":
      return (obj.values || []).map(valueToJson);
    case "google.protobuf.Timestamp":
      return timestampToJson(obj);
    case "google.protobuf.Duration":
      return durationToJson(obj);
    default:
      break;
  }
  const descriptor = MESSAGES.get(typeName);
  const out = {};
  for (const field of descriptor.field) {
    const value = obj[field.name];
    if (value === undefined || value === null) continue;
    if (Array.isArray(value) && value.length === 0) continue;
    const type = field.type === "TYPE_MESSAGE" ? resolveType(typeName, field.typeName) : null;
    let json;
    if (type && isMapEntry(type)) {
      const valueField = MESSAGES.get(type).field.find((f) => f.name === "value");
      const valueType =
        valueField.type === "TYPE_MESSAGE" ? resolveType(type, valueField.typeName) : null;
      json = mapValues(value, (v) => (valueType ? toJson(valueType, v) : v));
      if (Object.keys(json).length === 0) continue;
    } else if (type) {
      json = Array.isArray(value) ? value.map((v) => toJson(type, v)) : toJson(type, value);
    } else {
      json = value;
    }
    out[camel(field.name)] = json;
  }
  return out;
}

function valueToJson(v) {
  if (v.structValue !== undefined) return mapValues(v.structValue.fields || {}, valueToJson);
  if (v.listValue !== undefined) return (v.listValue.values || []).map(valueToJson);
  if (v.numberValue !== undefined) return v.numberValue;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return null;
}

// 0, 3, 6 or 9 fractional digits, as every proto3 JSON printer writes them.
function fraction(nanos) {
  if (!nanos) return "";
  const digits = String(Math.abs(nanos)).padStart(9, "0");
  if (nanos % 1_000_000 === 0) return `.${digits.slice(0, 3)}`;
  if (nanos % 1_000 === 0) return `.${digits.slice(0, 6)}`;
  return `.${digits}`;
}

function timestampToJson(ts) {
  const iso = new Date(Number(ts.seconds || 0) * 1000).toISOString().slice(0, 19);
  return `${iso}${fraction(ts.nanos)}Z`;
}

function durationToJson(d) {
  const seconds = String(d.seconds || 0);
  const sign = (d.nanos || 0) < 0 && !seconds.startsWith("-") ? "-" : "";
  return `${sign}${seconds}${fraction(d.nanos)}s`;
}

function mapValues(obj, fn) {
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, fn(v)]));
}

// --- the client ---

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + CALL_DEADLINE_MS);
    client[method](request, { deadline }, (err, response) => {
      if (err) {
        err.method = method;
        reject(err);
      } else {
        resolve(response);
      }
    });
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main(argv) {
  if (argv.length < 1 || argv.length > 2 || argv[0].startsWith("-")) {
    process.stderr.write("usage: node run_pipeline.js ADDRESS [PIPELINE_JSON|-]\n");
    return 2;
  }
  const [address, specPath = "-"] = argv;
  const specText = fs.readFileSync(specPath === "-" ? 0 : specPath, "utf8");
  const pipeline = fromJson(`${PKG}.Pipeline`, JSON.parse(specText));

  const client = new proto.datadog_platform.api.scheduler.v1.SchedulerService(
    address,
    grpc.credentials.createInsecure(),
  );
  try {
    const created = await call(client, "CreatePipeline", {
      pipeline,
      request_id: crypto.randomUUID(),
    });
    process.stderr.write(
      `created pipeline ${created.pipeline.name} version ${created.pipeline.version ?? "?"}\n`,
    );
    const started = await call(client, "RunPipeline", {
      pipeline: created.pipeline.name,
      request_id: crypto.randomUUID(),
    });
    const runId = started.run.run_id;
    process.stderr.write(`started run ${runId}\n`);

    const giveUp = Date.now() + RUN_TIMEOUT_MS;
    let run = started.run;
    while (!FINAL_STATES.has(run.state)) {
      if (Date.now() > giveUp) {
        process.stderr.write(`run ${runId} still ${run.state} after ${RUN_TIMEOUT_MS} ms\n`);
        process.stdout.write(`${JSON.stringify(toJson(`${PKG}.Run`, run), null, 2)}\n`);
        return 4;
      }
      await sleep(POLL_INTERVAL_MS);
      run = (await call(client, "GetRun", { run_id: runId })).run;
    }
    process.stdout.write(`${JSON.stringify(toJson(`${PKG}.Run`, run), null, 2)}\n`);
    return run.state === "RUN_STATE_SUCCEEDED" ? 0 : 1;
  } catch (err) {
    if (err.code === undefined) throw err;
    const code = grpc.status[err.code] ?? err.code;
    process.stderr.write(`${err.method}: ${code}: ${err.details}\n`);
    return 3;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${err.stack || err}\n`);
    process.exitCode = 2;
  },
);

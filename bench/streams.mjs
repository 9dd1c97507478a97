#!/usr/bin/env node
// The streaming rig of `make bench` (node:http only, no packages): a paced OpenAI upstream and
// a client that opens one wave of concurrent streams and judges every frame of every stream.
// bench/run.py starts both pinned to the load core and reads the wave's JSON from stdout.
//
//   node bench/streams.mjs serve --port 18160
//       POST .../chat/completions with "stream": true: a role chunk at once, 64 content deltas
//       on one shared 20 ms clock (a single timer writes the next frame of every open stream),
//       then a finish chunk, a usage chunk and `data: [DONE]`. Without "stream": one
//       chat.completion. GET .../models: one model.
//   node bench/streams.mjs wave --url http://127.0.0.1:18140/v1/chat/completions --n 400
//       [--model M] [--key K] [--header 'name: value']... [--ramp-ms 1000]
//       Opens N streams spread over --ramp-ms (one new connection each), reads them to the end
//       and prints one JSON object: failures by reason, first-token and inter-frame-gap
//       percentiles, how long the wave took to open.
//
// The rules (the neutral public board's, plus the first-token limit of the shared rig): a stream
// fails on an HTTP error, a missing or out-of-order delta, no [DONE], a gap between two frames
// over 200 ms, a first token later than 2 s after the request, or 30 s without an end.
import http from "node:http";
import { performance } from "node:perf_hooks";

const DELTAS = 64;
const TICK_MS = 20;
const GAP_LIMIT_MS = 200;
const TTFT_LIMIT_MS = 2000;
const TIMEOUT_MS = 30000;
const WORDS = Array.from({ length: DELTAS }, (_, i) => `w${String(i).padStart(2, "0")} `);
const TEXT = WORDS.join("");

function options(argv) {
  const o = { cmd: argv[0], header: [] };
  for (let i = 1; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (name === "header") o.header.push(argv[i + 1]);
    else o[name] = argv[i + 1];
  }
  return o;
}

// ------------------------------------------------------------------ the paced upstream

function frame(choices, extra = {}) {
  const body = { id: "chatcmpl-paced", object: "chat.completion.chunk", created: 1700000000, model: "gpt-4o-mini",
    choices, ...extra };
  return Buffer.from(`data: ${JSON.stringify(body)}\n\n`);
}

function serve(port) {
  const head = frame([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]);
  const deltas = WORDS.map((w) => frame([{ index: 0, delta: { content: w }, finish_reason: null }]));
  const usage = { prompt_tokens: 12, completion_tokens: DELTAS, total_tokens: 12 + DELTAS };
  const tail = Buffer.concat([frame([{ index: 0, delta: {}, finish_reason: "stop" }]), frame([], { usage }),
    Buffer.from("data: [DONE]\n\n")]);
  const completion = JSON.stringify({ id: "chatcmpl-paced", object: "chat.completion", created: 1700000000,
    model: "gpt-4o-mini", choices: [{ index: 0, message: { role: "assistant", content: TEXT }, finish_reason: "stop" }],
    usage });
  const models = JSON.stringify({ object: "list", data: [{ id: "gpt-4o-mini", object: "model", owned_by: "bench" }] });
  const open = new Set();
  const server = http.createServer((req, res) => {
    const parts = [];
    req.on("data", (d) => parts.push(d));
    req.on("end", () => {
      if (req.method === "GET" && req.url.endsWith("/models")) {
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(models);
      }
      if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) {
        res.writeHead(404, { "content-type": "application/json" });
        return res.end('{"error":{"message":"not found","type":"not_found"}}');
      }
      let stream = false;
      try { stream = JSON.parse(Buffer.concat(parts).toString() || "{}").stream === true; } catch { /* plain */ }
      if (!stream) {
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(completion);
      }
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.write(head);
      const s = { res, next: 0 };
      open.add(s);
      res.on("close", () => open.delete(s));
    });
  });
  server.keepAliveTimeout = 120000; // gateways keep their pooled connections between waves
  server.headersTimeout = 125000;
  server.requestTimeout = 0;
  const t0 = performance.now();
  let ticks = 0;
  const tick = () => { // one clock for every stream, on an absolute grid (no drift under load)
    for (const s of open) {
      if (s.next < DELTAS) s.res.write(deltas[s.next++]);
      else { open.delete(s); s.res.end(tail); }
    }
    ticks++;
    setTimeout(tick, Math.max(0, t0 + ticks * TICK_MS - performance.now()));
  };
  setTimeout(tick, TICK_MS);
  server.listen({ port, host: "127.0.0.1", backlog: 16384 });
  for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
}

// ------------------------------------------------------------------ the client

function contentOf(data) { // the delta's text without JSON.parse when it has no escapes
  const at = data.indexOf('"content":"');
  if (at < 0) return data.includes('"content"') ? JSON.parse(data).choices?.[0]?.delta?.content : undefined;
  const end = data.indexOf('"', at + 11);
  if (data.charCodeAt(end - 1) === 92) return JSON.parse(data).choices?.[0]?.delta?.content;
  return data.slice(at + 11, end);
}

function onFrame(rec, data, now) {
  if (rec.last !== null) {
    const gap = now - rec.last;
    rec.gaps.push(gap);
    if (gap > rec.maxGap) rec.maxGap = gap;
  }
  rec.last = now;
  if (data === "[DONE]") { rec.done = true; return; }
  const content = contentOf(data);
  if (!content) return;
  if (rec.ttft === null) rec.ttft = now - rec.start;
  rec.text += content;
}

function readEvents(rec, res) {
  let buf = "";
  res.setEncoding("utf8");
  res.on("data", (chunk) => {
    const now = performance.now();
    buf += chunk.includes("\r") ? chunk.replace(/\r\n/g, "\n") : chunk;
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, at);
      buf = buf.slice(at + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) {
        try { onFrame(rec, data, now); } catch { rec.error ||= "a frame that is not JSON"; }
      }
    }
  });
}

function oneStream(target, body, rec) {
  return new Promise((resolve) => {
    let timer = null;
    const end = (error) => {
      if (rec.end !== null) return;
      clearTimeout(timer);
      rec.end = performance.now();
      if (error && !rec.error) rec.error = error;
      resolve();
    };
    const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body),
      authorization: `Bearer ${target.key}`, connection: "close", ...target.headers };
    rec.start = performance.now();
    const req = http.request(target.url, { method: "POST", headers, agent: false });
    timer = setTimeout(() => { end(`no end after ${TIMEOUT_MS} ms`); req.destroy(); }, TIMEOUT_MS);
    req.on("error", (e) => end(`${e.code || e.name}: ${e.message}`));
    req.on("response", (res) => {
      res.on("error", (e) => end(`${e.code || e.name}: ${e.message}`));
      res.on("aborted", () => end("response aborted"));
      if (res.statusCode !== 200) {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => { text += d; });
        res.on("end", () => end(`HTTP ${res.statusCode}: ${text.replace(/\s+/g, " ").slice(0, 300)}`));
        return;
      }
      readEvents(rec, res);
      res.on("end", () => end(null));
    });
    req.end(body);
  });
}

function verdict(rec) {
  if (rec.error) return "error";
  if (rec.text !== TEXT) return "missing or wrong deltas";
  if (!rec.done) return "no [DONE]";
  if (rec.maxGap > GAP_LIMIT_MS) return `a gap over ${GAP_LIMIT_MS} ms`;
  if (rec.ttft > TTFT_LIMIT_MS) return `first token after ${TTFT_LIMIT_MS} ms`;
  return null;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const v = sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
  return Math.round(v * 1000) / 1000;
}

function summary(n, recs, openedIn, wall) {
  const reasons = {};
  const samples = [];
  for (const r of recs) {
    const why = verdict(r);
    if (!why) continue;
    reasons[why] = (reasons[why] || 0) + 1;
    if (samples.length < 3) samples.push(r.error || `${why}: ${r.text.length / 4} deltas, done ${r.done}, ` +
      `max gap ${r.maxGap.toFixed(1)} ms, first token ${r.ttft === null ? "-" : r.ttft.toFixed(1)} ms`);
  }
  const failed = Object.values(reasons).reduce((a, b) => a + b, 0);
  const ttft = Float64Array.from(recs.filter((r) => r.ttft !== null), (r) => r.ttft).sort();
  const gaps = Float64Array.from(recs.flatMap((r) => r.gaps)).sort();
  return { n, failed, pass: failed < n * 0.001, reasons, samples, opened_in_ms: Math.round(openedIn),
    wall_ms: Math.round(wall), ttft_p50_ms: percentile(ttft, 50), ttft_p99_ms: percentile(ttft, 99),
    ttft_max_ms: percentile(ttft, 100), gap_p50_ms: percentile(gaps, 50), gap_p99_ms: percentile(gaps, 99),
    gap_max_ms: percentile(gaps, 100), frames: gaps.length };
}

async function wave(o) {
  const n = Number(o.n || 1);
  const ramp = Number(o["ramp-ms"] || 1000);
  const headers = Object.fromEntries(o.header.map((h) => [h.slice(0, h.indexOf(":")).trim().toLowerCase(),
    h.slice(h.indexOf(":") + 1).trim()]));
  const target = { url: o.url, key: o.key || "sk-bench", headers };
  const body = JSON.stringify({ model: o.model || "gpt-4o-mini", stream: true, max_tokens: DELTAS,
    messages: [{ role: "user", content: "Count to sixty-four." }] });
  const recs = [];
  const done = [];
  const t0 = performance.now();
  const slots = Math.max(1, Math.min(n, Math.floor(ramp / 5)));
  for (let slot = 0; slot < slots; slot++) { // N streams over the ramp, in 5 ms slots
    const upTo = Math.round(((slot + 1) * n) / slots);
    while (recs.length < upTo) {
      const rec = { start: 0, end: null, ttft: null, last: null, gaps: [], maxGap: 0, text: "", done: false,
        error: null };
      recs.push(rec);
      done.push(oneStream(target, body, rec));
    }
    if (slot + 1 < slots) await new Promise((r) => setTimeout(r, 5));
  }
  const openedIn = performance.now() - t0;
  await Promise.all(done);
  process.stdout.write(JSON.stringify(summary(n, recs, openedIn, performance.now() - t0)) + "\n");
}

const o = options(process.argv.slice(2));
if (o.cmd === "serve") serve(Number(o.port || 18160));
else if (o.cmd === "wave") wave(o).catch((e) => { process.stderr.write(`${e.stack || e}\n`); process.exit(2); });
else { process.stderr.write("usage: streams.mjs serve --port P | wave --url URL --n N [...]\n"); process.exit(2); }

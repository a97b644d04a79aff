// node --test: the studio's history, waveform geometry and REST client (run from tests/server/test_server_studio.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError, errorLine, makeClient, openEnvelope } from "../../mlx_acestep/server/studio/js/api.js";
import { History, KEEP } from "../../mlx_acestep/server/studio/js/history.js";
import { peaks, regionOf } from "../../mlx_acestep/server/studio/js/waveform.js";

class Memory {
  constructor() {
    this.data = {};
  }
  getItem(k) {
    return k in this.data ? this.data[k] : null;
  }
  setItem(k, v) {
    this.data[k] = String(v);
  }
  removeItem(k) {
    delete this.data[k];
  }
}

test("history: newest first, updated in place, bounded, an unreadable store read as empty", () => {
  const storage = new Memory();
  const history = new History(storage);
  history.add({ id: "a", body: {} });
  history.add({ id: "b", body: {} });
  history.update("a", { state: "succeeded" });
  assert.deepEqual(history.list().map((r) => r.id), ["b", "a"]);
  assert.equal(history.get("a").state, "succeeded");
  history.remove("b");
  assert.deepEqual(history.list().map((r) => r.id), ["a"]);
  for (let i = 0; i < KEEP + 5; i++) history.add({ id: `n${i}` });
  assert.equal(history.list().length, KEEP);
  storage.setItem("mlx-acestep.history", "{not json");
  assert.deepEqual(new History(storage).list(), []);
});

test("waveform: peaks of each column, a dragged region in seconds", () => {
  const samples = Float32Array.from([0, 0.5, -0.25, 0, 1, -1, 0.1, 0.2]);
  assert.deepEqual(peaks(samples, 2), [[-0.25, 0.5], [-1, 1]]);
  assert.deepEqual(regionOf(600, 150, 600, 10), { start: 2.5, end: 10 }); // either direction
  assert.deepEqual(regionOf(-20, 120, 600, 10), { start: 0, end: 2 }); // clamped to the song
});

test("errors: the server's one line, whichever shape it sends", () => {
  assert.equal(errorLine(400, { detail: "bpm must be between 30 and 300, got 500", error: "bpm must be between 30 and 300, got 500" }), "bpm must be between 30 and 300, got 500");
  assert.equal(errorLine(401, { detail: "Invalid API key" }), "Invalid API key");
  assert.equal(errorLine(422, { detail: [{ loc: ["query", "path"], msg: "Field required" }] }), "query.path: Field required");
  assert.equal(errorLine(502, null, "Bad Gateway\n<html>"), "HTTP 502: Bad Gateway");
  assert.equal(openEnvelope(200, { data: { a: 1 }, code: 200 }).a, 1);
  assert.throws(() => openEnvelope(200, { data: null, code: 500, error: "format_sample failed: x" }), /format_sample failed/);
});

test("client: the key in the header, asked for again on 401, then the call repeated", async () => {
  const storage = new Memory();
  const seen = [];
  const fetchImpl = async (path, init) => {
    seen.push(init.headers.Authorization);
    const ok = init.headers.Authorization === "Bearer right";
    return new Response(JSON.stringify(ok ? { data: { n: 1 }, code: 200 } : { detail: "Invalid API key" }), { status: ok ? 200 : 401 });
  };
  const asked = [];
  const keys = {
    get: () => storage.getItem("k") || "",
    ask: async (why) => {
      asked.push(why);
      storage.setItem("k", "right");
      return "right";
    },
  };
  const api = makeClient({ keys, fetchImpl });
  assert.deepEqual(await api.post("/release_task", {}), { n: 1 });
  assert.deepEqual(seen, [undefined, "Bearer right"]);
  assert.deepEqual(asked, ["Invalid API key"]);
  const refused = makeClient({ keys: { get: () => "", ask: async () => null }, fetchImpl });
  await assert.rejects(refused.get("/v1/stats"), (e) => e instanceof ApiError && e.status === 401);
});

test("wav: a RIFF header as the format defines it, samples as 16-bit little-endian, clipped", async () => {
  const { encodeWav } = await import("../../mlx_acestep/server/studio/js/wav.js");
  const bytes = new DataView(encodeWav([Float32Array.from([0, 1, -1]), Float32Array.from([0.5, 2, -0.25])], 48000));
  const text = (at, n) => String.fromCharCode(...Array.from({ length: n }, (_, i) => bytes.getUint8(at + i)));
  assert.equal(bytes.byteLength, 44 + 3 * 2 * 2);
  assert.deepEqual([text(0, 4), text(8, 4), text(12, 4), text(36, 4)], ["RIFF", "WAVE", "fmt ", "data"]);
  assert.equal(bytes.getUint32(4, true), bytes.byteLength - 8);
  assert.deepEqual([bytes.getUint16(20, true), bytes.getUint16(22, true), bytes.getUint32(24, true)], [1, 2, 48000]);
  assert.deepEqual([bytes.getUint32(28, true), bytes.getUint16(32, true), bytes.getUint16(34, true)], [192000, 4, 16]);
  const samples = Array.from({ length: 6 }, (_, i) => bytes.getInt16(44 + 2 * i, true));
  assert.deepEqual(samples, [0, 16384, 32767, 32767, -32768, -8192]); // interleaved L R, 2 clipped to 1
});

// node --test: reading /query_result entries and the task's events (run from tests/server/test_server_studio.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { advance, describe, fileName, isFinished, parseEntry } from "../../mlx_acestep/server/studio/js/results.js";

// The example of shared/spec/UPSTREAM-API.md section 3.2: one task succeeded, one running, one unknown.
const DONE = {
  task_id: "7c1e2f4a",
  status: 1,
  progress_text: "10:42:07 | INFO | done",
  result: JSON.stringify([
    {
      file: "/v1/audio?path=%2Fsrv%2Face%2Fapi_audio%2F0a1b.wav",
      wave: "",
      status: 1,
      create_time: 1770531000,
      env: "development",
      prompt: "dreamy synthwave, female vocal",
      lyrics: "[Verse]\nNeon rain",
      metas: { bpm: 96, duration: 45.0, genres: "N/A", keyscale: "A minor", timesignature: "4" },
      generation_info: "...",
      seed_value: "3141592653",
      lm_model: "acestep-5Hz-lm-1.7B",
      dit_model: "acestep-v15-turbo",
      progress: 1.0,
      stage: "succeeded",
    },
  ]),
};
const RUNNING = {
  task_id: "b2d4f6a8",
  status: 0,
  progress_text: " 40%|████      | 4/10",
  result: JSON.stringify([{ file: "", wave: "", status: 0, create_time: 1, env: "development", progress: 0.61, stage: "Generating music (batch size: 2)..." }]),
};

test("a succeeded entry: its songs, their seeds and metadata", () => {
  const job = parseEntry(DONE);
  assert.equal(job.state, "succeeded");
  assert.equal(job.progress, 1);
  assert.equal(job.songs.length, 1);
  assert.equal(job.songs[0].seed, "3141592653");
  assert.equal(job.songs[0].metas.keyscale, "A minor");
  assert.equal(fileName(job.songs[0].file), "0a1b.wav");
  assert.ok(isFinished(job));
});

test("a running entry: its progress and stage, not finished", () => {
  const job = parseEntry(RUNNING);
  assert.equal(job.state, "running");
  assert.equal(job.progress, 0.61);
  assert.equal(job.stage, "Generating music (batch size: 2)...");
  assert.ok(!isFinished(job));
});

test("unknown, failed, cancelled and queued entries", () => {
  assert.equal(parseEntry({ task_id: "x", status: 0, result: "[]" }).state, "running");
  const failed = parseEntry({ task_id: "x", status: 2, progress_text: "failed", result: JSON.stringify([{ status: 2, stage: "failed", error: "the caption is empty" }]) });
  assert.equal(failed.state, "failed");
  assert.equal(describe(failed), "failed: the caption is empty");
  assert.equal(parseEntry({ status: 2, progress_text: "cancelled", result: "[]" }).state, "cancelled");
  const cancelled = parseEntry({ status: 2, progress_text: "cancelled", result: JSON.stringify([{ error: "cancelled during dit 1/8" }]) });
  assert.equal(describe(cancelled), "cancelled during dit 1/8"); // not "cancelled: cancelled during ..."
  const queued = parseEntry({ status: 0, queue_position: 2, progress: 0, stage: "queued" }); // a progress event
  assert.equal(queued.state, "queued");
  assert.equal(describe(queued), "waiting, number 2 in the queue");
  assert.equal(parseEntry({ status: 0, result: "not json" }).songs.length, 0);
});

test("the bar never goes back, and a finished job stays finished", () => {
  const a = parseEntry({ status: 0, progress: 0.6, stage: "dit" });
  const b = advance(a, parseEntry({ status: 0, progress: 0.4, stage: "dit" }));
  assert.equal(b.progress, 0.6);
  const done = advance(b, parseEntry(DONE));
  assert.equal(advance(done, parseEntry(RUNNING)).state, "succeeded");
});

// node --test: the studio's request building (run from tests/server/test_server_studio.py).
import assert from "node:assert/strict";
import { test } from "node:test";
import { INSTRUMENTAL, multipart, taskBody, typed, valuesOf, varyBody } from "../../mlx_acestep/server/studio/js/request.js";

test("typed: numbers as numbers, anything else as typed", () => {
  assert.equal(typed("120"), 120);
  assert.equal(typed(" 2.5 "), 2.5);
  assert.equal(typed("-1"), -1);
  assert.equal(typed("two"), "two"); // sent as is: the server names the field
  assert.equal(typed("1,2"), "1,2"); // a seed list, upstream's comma form
});

test("taskBody: empty fields left out, the seed fixed, instrumental as upstream's marker", () => {
  const body = taskBody({
    prompt: "soft rain",
    lyrics: "[verse]\nla la",
    audio_duration: "10",
    bpm: "",
    seed: "42",
    instrumental: false,
    thinking: true,
    track_classes: [],
  });
  assert.deepEqual(body, {
    prompt: "soft rain",
    lyrics: "[verse]\nla la",
    audio_duration: 10,
    seed: 42,
    use_random_seed: false,
    thinking: true,
  });
  assert.equal(taskBody({ lyrics: "words", instrumental: true }).lyrics, "[Instrumental]");
  assert.equal(INSTRUMENTAL, "[Instrumental]");
  assert.equal(taskBody({ seed: "" }).use_random_seed, undefined); // no seed: the server's random default
  assert.deepEqual(taskBody({ track_classes: ["drums", "bass"] }), { track_classes: ["drums", "bass"] });
});

test("valuesOf undoes taskBody (use these settings again)", () => {
  const values = { prompt: "p", lyrics: "", instrumental: true, audio_duration: "30", seed: "7", bpm: "90" };
  const back = valuesOf(taskBody(values));
  assert.deepEqual(back, { prompt: "p", lyrics: "", instrumental: true, audio_duration: "30", seed: "7", bpm: "90" });
  assert.equal(valuesOf({ seed: 5, use_random_seed: true }).seed, undefined); // a seed the server did not use
});

test("varyBody: the song's seed, one song, a retake seed at a subtle variance unless one was chosen", () => {
  const body = { prompt: "p", batch_size: 4 };
  assert.deepEqual(varyBody(body, 11, 99), {
    prompt: "p",
    batch_size: 1,
    seed: 11,
    use_random_seed: false,
    retake_seed: 99,
    retake_variance: 0.1,
  });
  assert.equal(varyBody({ retake_variance: 0.5 }, 1, 2).retake_variance, 0.5);
});

test("multipart: fields as the form reader takes them, and the file", async () => {
  const file = new Blob([new Uint8Array([1, 2, 3])], { type: "audio/wav" });
  file.name = "take.wav"; // a File's name, on a Blob (Node 18 has no global File)
  const form = multipart({ task_type: "complete", track_classes: ["drums", "bass"], audio_cover_strength: 0.5, thinking: false }, { src_audio: file });
  assert.equal(form.get("track_classes"), "drums,bass");
  assert.equal(form.get("audio_cover_strength"), "0.5");
  assert.equal(form.get("thinking"), "false");
  assert.equal(form.get("src_audio").name, "take.wav");
  assert.equal((await form.get("src_audio").arrayBuffer()).byteLength, 3);
});

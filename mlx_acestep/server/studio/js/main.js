// The studio page: settings from the server, the key, the tabs, and the song form feeding the results panel.
import { Adapters } from "./adapters.js";
import { makeClient } from "./api.js";
import { $, $$ } from "./dom.js";
import { SongForm } from "./form.js";
import { History } from "./history.js";
import { Jobs } from "./jobs.js";
import { makeKeys } from "./keys.js";
import { multipart, randomSeed, varyBody } from "./request.js";

const keys = makeKeys($("#key-dialog"), localStorage);
const api = makeClient({ keys });
const history = new History(localStorage);
const sources = new Map(); // a job's source recording, while this page is open (the storage keeps no audio)

function title(body, source) {
  const text = body.prompt || body.sample_query || (body.full_analysis_only ? "describe" : "");
  const tracks = body.track_name || (body.track_classes || []).join(", ");
  const task = body.task_type && body.task_type !== "text2music" ? `${body.task_type} ${tracks}`.trim() + ": " : "";
  const short = text.length > 80 ? `${text.slice(0, 77)}...` : text;
  const vary = body.retake_seed !== undefined ? "vary: " : "";
  return `${vary}${task}${short || "(no caption)"}${source ? ` (${source})` : ""}`;
}

function selectTab(name) {
  for (const tab of $$("nav [role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  $("#song").hidden = name === "adapters";
  $("#adapters").hidden = name !== "adapters";
  if (name !== "adapters") form.setMode(name);
  else adapters.refresh();
}

async function start() {
  const settings = await api.get("/v1/studio/settings");
  const { model } = settings;
  $("#model").textContent = `${model.name}${model.planner ? " + planner" : ""}`;
  form = new SongForm($("#song"), { api, settings, submit });
  jobs = new Jobs($("#jobs"), { api, keys, history, actions, rate: settings.sample_rate });
  for (const tab of $$("nav [role=tab]")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  $("#key-button").addEventListener("click", () => keys.ask(""));
  $("#describe").addEventListener("click", describeSource);
  await queue(); // asks for the key now if the server wants one
  await jobs.restore();
  document.body.dataset.ready = "true";
}

let form;
let jobs;
const adapters = new Adapters(api);

function submit(record) {
  record.title = title(record.body, record.source);
  if (record.source && form.source) sources.set(record.id, form.source);
  jobs.add(record);
  queue();
}

async function queue() {
  try {
    const stats = await api.get("/v1/stats");
    $("#queue").textContent = stats.queue_size ? `${stats.queue_size} waiting` : "";
  } catch (e) {
    $("#queue").textContent = e.message;
  }
}

async function describeSource() {
  if (!form.source) return form.error("choose a recording to describe first");
  const body = { full_analysis_only: true, batch_size: 1 };
  try {
    const file = new File([form.source.blob], form.source.name, { type: form.source.blob.type });
    const data = await api.upload("/release_task", multipart(body, { src_audio: file }));
    submit({ id: data.task_id, body, source: form.source.name, mode: "edit", created: Date.now() });
  } catch (e) {
    form.error(e.message);
  }
}

const actions = {
  useAgain(record) {
    selectTab(record.mode === "edit" ? "edit" : "create");
    form.load(record);
    const source = sources.get(record.id);
    if (source) form.useSource(source.blob, source.name);
    $("#song").scrollIntoView({ behavior: "smooth" });
  },
  // A recording's description (full_analysis_only's item) as the form's song, to cover or create from.
  useDescription(item) {
    form.set({
      prompt: item.prompt,
      lyrics: item.lyrics,
      bpm: item.bpm,
      key_scale: item.keyscale,
      time_signature: item.timesignature,
      vocal_language: item.language,
      audio_duration: item.duration,
    });
  },
  useAsSource(blob, name) {
    selectTab("edit");
    form.useSource(blob, name);
  },
  async vary(record, song) {
    const seed = Number(String(song.seed).split(",")[0]);
    const body = varyBody(record.body, seed, randomSeed());
    const source = sources.get(record.id);
    const data = source
      ? await api.upload("/release_task", multipart(body, { src_audio: new File([source.blob], source.name) }))
      : await api.post("/release_task", body);
    if (source) sources.set(data.task_id, source);
    submit({ id: data.task_id, body, source: record.source, mode: record.mode, created: Date.now() });
  },
  changed: queue,
  async remove(record) {
    try {
      await api.post("/delete_task", { task_id: record.id });
    } catch (e) {
      if (e.status !== 404) throw e; // already gone from the server (expired): only the page's entry is left
    }
  },
};

start().catch((e) => {
  document.body.dataset.ready = "error";
  $("#form-error").textContent = e.message;
});

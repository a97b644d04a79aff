// The song form: Create (caption, lyrics, metadata; simple mode; format) and Edit (a source recording, its task and
// region), one form whose edit part is a fieldset disabled outside the Edit tab (so its fields are not sent).
import { $, $$, fillForm, formValues, h } from "./dom.js";
import { INSTRUMENTAL, multipart, taskBody, valuesOf } from "./request.js";
import { Waveform, decode } from "./waveform.js";

// The structure tags the model knows (the lyrics' section marks of upstream's examples).
const TAGS = ["[intro]", "[verse]", "[pre-chorus]", "[chorus]", "[bridge]", "[outro]", "[instrumental]"];

function options(select, values, label = (v) => v) {
  select.append(...values.map((v) => h("option", { value: v }, label(v))));
}

export class SongForm {
  constructor(form, { api, settings, submit }) {
    Object.assign(this, { form, api, settings, submit });
    this.source = null; // {blob, name}
    this.wave = new Waveform($("#source-wave"), (r) => this.region(r));
    this.fill(settings);
    this.wire();
  }

  fill({ defaults, limits, choices, model }) {
    options($("#language"), choices.vocal_language);
    $("#language").value = defaults.vocal_language;
    $("#language").defaultValue = defaults.vocal_language;
    options($("#time-signature"), choices.time_signature, (v) => `${v === "6" ? "6/8" : `${v}/4`}`);
    options($("#audio-format"), choices.audio_format);
    $("#audio-format").value = defaults.audio_format;
    $("#keys").append(...choices.key_scale.map((k) => h("option", { value: k })));
    options($("#track"), choices.track);
    $("#track-classes").append(
      h("span.muted", {}, "Tracks to add:"),
      ...choices.track.map((t) => h("label", {}, h("input", { type: "checkbox", name: "track_classes", value: t }), t)),
    );
    const [lo, hi] = limits.audio_duration;
    $("#duration").placeholder = "auto";
    $("#duration").title = `${lo}-${hi} s; auto: the source's length, the planner's choice, else ${defaults.audio_duration} s`;
    $("#bpm").placeholder = `auto (${limits.bpm.join("-")})`;
    $("#batch").placeholder = `${defaults.batch_size} (1-${limits.batch_size[1]})`;
    $("#steps").placeholder = `${defaults.inference_steps} (${limits.inference_steps.join("-")})`;
    $("#shift").placeholder = String(defaults.shift);
    $("#guidance").placeholder = String(defaults.guidance_scale);
    $("#thinking").checked = defaults.thinking;
    $("#tags").append(
      ...TAGS.map((tag) => h("button", { type: "button", onclick: () => this.insertTag(tag) }, tag)),
    );
    document.body.classList.toggle("planner", model.planner);
    document.body.classList.toggle("turbo", model.family === "turbo");
  }

  wire() {
    const form = this.form;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    $("#instrumental").addEventListener("change", (e) => {
      $("#lyrics").disabled = e.target.checked;
    });
    $("#simple-mode").addEventListener("change", (e) => {
      $("#simple").hidden = !e.target.checked;
    });
    $("#write").addEventListener("click", () => this.write());
    $("#format").addEventListener("click", () => this.format());
    $("#task").addEventListener("change", () => this.showTask());
    for (const input of [$("#region-start"), $("#region-end")]) {
      input.addEventListener("input", () => {
        const start = Number($("#region-start").value);
        const end = Number($("#region-end").value);
        if (Number.isFinite(start) && Number.isFinite(end) && end > start) this.wave.setRegion({ start, end });
      });
    }
    const drop = $("#drop");
    $("#source-file").addEventListener("change", (e) => e.target.files[0] && this.useSource(e.target.files[0]));
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files[0]) this.useSource(e.dataTransfer.files[0]);
    });
    this.showTask();
  }

  setMode(mode) {
    this.form.dataset.mode = mode;
    $("#source-panel").disabled = mode !== "edit";
    $("#go").textContent = mode === "edit" ? "Edit" : "Create";
  }

  showTask() {
    const task = $("#task").value;
    for (const row of $$(".task-field")) {
      const on = row.dataset.tasks.split(" ").includes(task);
      row.hidden = !on;
      for (const el of $$("input, select", row)) el.disabled = !on;
    }
  }

  insertTag(tag) {
    const area = $("#lyrics");
    const at = area.selectionStart ?? area.value.length;
    const before = area.value.slice(0, at);
    const text = `${before && !before.endsWith("\n") ? "\n" : ""}${tag}\n`;
    area.setRangeText(text, at, area.selectionEnd ?? at, "end");
    area.focus();
  }

  error(message) {
    $("#form-error").textContent = message || "";
  }

  async useSource(blob, name = blob.name || "source") {
    this.source = { blob, name };
    $("#source-name").textContent = `${name} (choose another, or drop one here)`;
    const audio = await decode(blob, this.settings.sample_rate);
    $("#source-wave").classList.toggle("loaded", Boolean(audio));
    this.wave.show(audio);
    this.duration = audio ? audio.duration : null;
  }

  region({ start, end }) {
    $("#region-start").value = String(start);
    $("#region-end").value = String(end);
  }

  values() {
    return formValues(this.form);
  }

  // The body and the files of what the form says now.
  request() {
    const body = taskBody(this.values());
    const files = {};
    if (this.form.dataset.mode === "edit") {
      if (!this.source) throw new Error("choose a source recording first (a file, or a result's 'Use as source')");
      const file = new File([this.source.blob], this.source.name, { type: this.source.blob.type });
      files[body.task_type === "text2music" ? "ref_audio" : "src_audio"] = file;
    }
    return { body, files };
  }

  async send(extra = {}) {
    this.error("");
    let request;
    try {
      request = this.request();
    } catch (e) {
      this.error(e.message);
      return;
    }
    const body = { ...request.body, ...extra };
    const source = Object.keys(request.files).length ? this.source.name : null;
    try {
      const data = source
        ? await this.api.upload("/release_task", multipart(body, request.files))
        : await this.api.post("/release_task", body);
      this.submit({ id: data.task_id, body, source, mode: this.form.dataset.mode, created: Date.now() });
    } catch (e) {
      this.error(e.message);
    }
  }

  // "Use these settings again": the form as it was for that job (its source too, if this page still holds it).
  load(record) {
    const values = valuesOf(record.body);
    fillForm(this.form, values);
    $("#lyrics").disabled = values.instrumental;
    this.showTask();
    if (values.repainting_start !== undefined && values.repainting_end !== undefined) {
      this.wave.setRegion({ start: Number(values.repainting_start), end: Number(values.repainting_end) });
    }
  }

  // Simple mode: the planner writes the song from one sentence; the form shows it, to edit before creating.
  async write() {
    this.error("");
    const button = $("#write");
    button.disabled = true;
    try {
      const sheet = await this.api.post("/v1/create_sample", {
        query: $("#query").value,
        instrumental: $("#query-instrumental").checked,
        vocal_language: $("#language").value,
      });
      this.set({
        prompt: sheet.caption,
        lyrics: sheet.lyrics === INSTRUMENTAL ? "" : sheet.lyrics,
        audio_duration: sheet.duration,
        bpm: sheet.bpm,
        key_scale: sheet.keyscale,
        time_signature: sheet.timesignature,
        vocal_language: sheet.vocal_language,
      });
      $("#instrumental").checked = $("#query-instrumental").checked;
      $("#lyrics").disabled = $("#instrumental").checked;
    } catch (e) {
      this.error(e.message);
    } finally {
      button.disabled = false;
    }
  }

  // Format: the planner tidies the caption and lyrics and fills the metadata it can.
  async format() {
    this.error("");
    const v = this.values();
    try {
      const sheet = await this.api.post("/format_input", {
        prompt: v.prompt,
        lyrics: v.lyrics,
        param_obj: taskBody({ bpm: v.bpm, duration: v.audio_duration, key: v.key_scale, language: v.vocal_language }),
      });
      this.set({
        prompt: sheet.caption,
        lyrics: sheet.lyrics,
        audio_duration: sheet.duration,
        bpm: sheet.bpm,
        key_scale: sheet.key_scale,
        time_signature: sheet.time_signature,
        vocal_language: sheet.vocal_language,
      });
    } catch (e) {
      this.error(e.message);
    }
  }

  set(values) {
    for (const [name, v] of Object.entries(values)) {
      const el = this.form.elements[name];
      if (el && v !== undefined && v !== null && v !== "") el.value = String(v);
    }
  }
}

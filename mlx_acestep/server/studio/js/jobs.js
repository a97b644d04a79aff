// The results panel: one card per job (progress, cancel, players, downloads, settings, and what to do next).
import { $, h } from "./dom.js";
import { describe, fileName, isFinished, parseEntry } from "./results.js";
import { watch } from "./watch.js";
import { wavBlob } from "./wav.js";
import { Waveform, decode } from "./waveform.js";

const EAGER = 4; // restored jobs whose audio loads at once; the older ones load when asked

export class Jobs {
  // actions: {useAgain(record), useAsSource(blob, name), vary(record, song), remove(record), changed(),
  // useDescription(item)}
  constructor(list, { api, keys, history, actions, rate }) {
    Object.assign(this, { list, api, keys, history, actions, rate });
    this.cards = new Map();
    this.watches = new Map();
  }

  empty() {
    $("#no-jobs").hidden = this.cards.size > 0;
  }

  // A job just submitted: its card on top, watched until it ends.
  add(record) {
    this.history.add(record);
    const card = this.card(record);
    this.list.prepend(card.el);
    this.follow(record);
    if (window.matchMedia("(max-width: 900px)").matches) card.el.scrollIntoView({ behavior: "smooth" }); // a phone
  }

  // The jobs of earlier visits, brought up to date with one /query_result.
  async restore() {
    const records = this.history.list();
    for (const record of records) this.list.append(this.card(record).el);
    this.empty();
    if (!records.length) return;
    let entries = [];
    try {
      entries = await this.api.post("/query_result", { task_id_list: records.map((r) => r.id) });
    } catch (e) {
      $("#queue").textContent = e.message;
      return;
    }
    entries.forEach((entry, i) => {
      const job = parseEntry(entry);
      if (!isFinished(job)) this.follow(records[i]);
      else this.show(records[i], job, i < EAGER);
    });
  }

  follow(record) {
    const handle = watch(this.api, this.keys.get(), record.id, (job) => this.show(record, job, true));
    this.watches.set(record.id, handle);
  }

  card(record) {
    const el = h(`li.job.${record.state || "queued"}`, { "data-id": record.id });
    const cancel = h("button.small.cancel", { type: "button", onclick: () => this.cancel(record) }, "Cancel");
    el.append(
      h("header", {}, h("span.title", {}, record.title), h("span.state", {}, record.state || "submitted"), cancel),
      h("progress", { max: 1, value: 0 }),
      h("div.songs"),
      this.settings(record),
      h(
        "div.tools",
        {},
        h("button.small.again", { type: "button", onclick: () => this.actions.useAgain(record) }, "Use these settings again"),
        h("button.small.delete", { type: "button", onclick: () => this.remove(record) }, "Delete"),
      ),
    );
    const card = { el, record, shown: null };
    this.cards.set(record.id, card);
    this.empty();
    return card;
  }

  settings(record) {
    const rows = Object.entries(record.body).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)]);
    if (record.source) rows.push(["source audio", record.source]);
    return h(
      "details.settings-box",
      {},
      h("summary", {}, "Settings"),
      h("dl.settings", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    );
  }

  show(record, job, loadAudio) {
    const card = this.cards.get(record.id);
    if (!card) return;
    const { el } = card;
    el.className = `job ${job.state}`;
    $(".state", el).textContent = describe(job) + (job.note ? ` (${job.note})` : "");
    $("progress", el).value = job.progress;
    $(".cancel", el).hidden = isFinished(job);
    if (isFinished(job) && record.state !== job.state) {
      record.state = job.state;
      this.history.update(record.id, { state: job.state });
      this.actions.changed();
    }
    if (isFinished(job) && card.shown !== job.state) {
      card.shown = job.state;
      $("progress", el).hidden = true;
      this.songs(card, job, loadAudio);
    }
  }

  songs(card, job, loadAudio) {
    const box = $(".songs", card.el);
    box.replaceChildren();
    for (const item of job.analysis) {
      const rows = ["prompt", "lyrics", "bpm", "keyscale", "timesignature", "duration", "language"]
        .filter((k) => item[k] !== undefined && item[k] !== null && item[k] !== "")
        .map((k) => [h("dt", {}, k), h("dd", {}, String(item[k]))]);
      const use = () => this.actions.useDescription(item);
      box.append(
        h("dl.settings.analysis", {}, rows),
        h("button.small", { type: "button", onclick: use }, "Use this description"),
      );
    }
    job.songs.forEach((song, i) => box.append(this.song(card.record, song, i, loadAudio)));
  }

  song(record, song, i, loadAudio) {
    const canvas = h("canvas.wave");
    const audio = h("audio", { controls: true, preload: "metadata" });
    const name = fileName(song.file);
    const suffix = name.split(".").pop();
    const download = h("a.download", { download: name, hidden: true }, `Download ${suffix}`);
    const wav = h("a.wav", { download: name.replace(/\.[^.]+$/, ".wav"), hidden: true }, "WAV");
    const source = h("button.small", { type: "button", disabled: true }, "Use as source");
    const load = h("button.small.load", { type: "button" }, "Load the audio");
    const metas = song.metas || {};
    const known = (v) => v !== undefined && v !== null && v !== "" && v !== "N/A"; // upstream's "N/A": not known
    const facts = [
      `seed ${song.seed}`,
      known(metas.duration) && `${metas.duration} s`,
      known(metas.bpm) && `${metas.bpm} bpm`,
      known(metas.keyscale) && metas.keyscale,
    ]
      .filter(Boolean)
      .join(" · ");
    const el = h(
      "div.song",
      { "data-index": i },
      canvas,
      audio,
      h(
        "div.tools",
        {},
        load,
        download,
        wav,
        source,
        h("button.small.vary", { type: "button", onclick: () => this.actions.vary(record, song) }, "Vary this"),
        h("span.muted", {}, facts),
      ),
      song.info ? h("div.muted", {}, song.info) : null,
    );
    const fetchAudio = async () => {
      load.disabled = true;
      try {
        const blob = await this.api.blob(song.file);
        const url = URL.createObjectURL(blob);
        audio.src = url;
        download.href = url;
        download.hidden = false;
        load.hidden = true;
        source.disabled = false;
        source.onclick = () => this.actions.useAsSource(blob, name);
        const decoded = await decode(blob, this.rate);
        new Waveform(canvas, () => {}).show(decoded);
        if (decoded && suffix !== "wav") {
          wav.href = URL.createObjectURL(wavBlob(decoded));
          wav.hidden = false;
        }
      } catch (e) {
        load.disabled = false;
        load.textContent = `Load the audio (${e.message})`;
      }
    };
    load.onclick = fetchAudio;
    if (loadAudio) fetchAudio();
    return el;
  }

  async cancel(record) {
    try {
      await this.api.post("/cancel_task", { task_id: record.id });
    } catch (e) {
      $(".state", this.cards.get(record.id).el).textContent = e.message;
    }
  }

  async remove(record) {
    const card = this.cards.get(record.id);
    try {
      await this.actions.remove(record);
    } catch (e) {
      $(".state", card.el).textContent = e.message;
      return;
    }
    this.watches.get(record.id)?.stop();
    this.history.remove(record.id);
    card.el.remove();
    this.cards.delete(record.id);
    this.empty();
  }
}

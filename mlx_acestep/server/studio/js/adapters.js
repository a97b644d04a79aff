// The Adapters tab: the LoRA / LoKr adapters loaded on the server, their scales, load and unload (upstream's LoRA
// routes: GET /v1/lora/status's `adapters` and `scales`).
import { $, h } from "./dom.js";
import { typed } from "./request.js";

export class Adapters {
  constructor(api) {
    this.api = api;
    this.wired = false;
  }

  wire() {
    if (this.wired) return;
    this.wired = true;
    $("#adapter-load").addEventListener("submit", (e) => {
      e.preventDefault();
      const body = { lora_path: $("#adapter-path").value.trim() };
      if ($("#adapter-name").value.trim()) body.adapter_name = $("#adapter-name").value.trim();
      this.call("/v1/lora/load", body);
    });
    $("#use-lora").addEventListener("change", (e) => this.call("/v1/lora/toggle", { use_lora: e.target.checked }));
  }

  async call(path, body) {
    $("#adapter-error").textContent = "";
    try {
      await this.api.post(path, body);
    } catch (e) {
      $("#adapter-error").textContent = e.message;
    }
    await this.refresh();
  }

  async refresh() {
    this.wire();
    let status;
    try {
      status = await this.api.get("/v1/lora/status");
    } catch (e) {
      $("#adapter-error").textContent = e.message;
      return;
    }
    $("#use-lora").checked = Boolean(status.use_lora);
    const names = status.adapters || []; // upstream's status: the names, and `scales` by name
    $("#adapter-list").replaceChildren(
      ...(names.length ? [] : [h("li.muted", {}, "none loaded")]),
      ...names.map((name) => this.row(name, (status.scales || {})[name] ?? 1, name === status.active_adapter)),
    );
  }

  row(name, scale, active) {
    const input = h("input", { type: "number", step: "0.05", min: "0", value: String(scale), size: 5 });
    return h(
      "li",
      {},
      h("strong", {}, name),
      active ? h("span.muted", {}, " (active)") : null,
      " scale ",
      input,
      h("button.small", { type: "button", onclick: () => this.call("/v1/lora/scale", { adapter_name: name, scale: typed(input.value) }) }, "Set"),
      " ",
      h("button.small", { type: "button", onclick: () => this.call("/v1/lora/unload", { name }) }, "Unload"),
    );
  }
}

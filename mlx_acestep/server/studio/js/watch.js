// A job's progress as it happens: the task's event stream, or polling /query_result where the stream fails.
import { advance, isFinished, parseEntry } from "./results.js";

export const POLL_MS = 1000;

export function watch(api, key, id, onUpdate) {
  let job = null;
  let stopped = false;
  let source = null;
  const update = (entry) => {
    job = advance(job, parseEntry(entry));
    onUpdate(job);
    return isFinished(job);
  };
  const poll = async () => {
    while (!stopped) {
      try {
        const [entry] = await api.post("/query_result", { task_id_list: [id] });
        if (entry && update(entry)) return;
      } catch (e) {
        onUpdate({ ...(job || parseEntry({ task_id: id })), note: e.message });
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  };
  if (typeof EventSource === "function") {
    const query = key ? `?ai_token=${encodeURIComponent(key)}` : "";
    source = new EventSource(`/v1/tasks/${encodeURIComponent(id)}/events${query}`);
    source.addEventListener("progress", (e) => update(JSON.parse(e.data)));
    source.addEventListener("result", (e) => {
      source.close();
      update(JSON.parse(e.data));
    });
    source.onerror = () => {
      source.close();
      if (!stopped && !(job && isFinished(job))) poll();
    };
  } else {
    poll();
  }
  return {
    stop() {
      stopped = true;
      if (source) source.close();
    },
  };
}

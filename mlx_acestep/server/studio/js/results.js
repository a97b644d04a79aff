// What /query_result and the task's events say about one job, read into one shape the page draws: pure.

const FINISHED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

export function isFinished(job) {
  return FINISHED.has(job.state);
}

function items(entry) {
  if (typeof entry.result !== "string") return [];
  try {
    const parsed = JSON.parse(entry.result);
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

function stateOf(entry, first) {
  if (entry.status === 1) return "succeeded";
  if (entry.status === 2) {
    const said = String(entry.progress_text || first.stage || "");
    return said === "cancelled" || said === "interrupted" ? said : "failed";
  }
  return entry.queue_position > 0 || (first.stage || entry.stage) === "queued" ? "queued" : "running";
}

// An entry of /query_result, or a `progress` event of /v1/tasks/{id}/events (the same fields, no `result`).
export function parseEntry(entry) {
  const list = items(entry);
  const first = list[0] || {};
  const state = stateOf(entry, first);
  const progress = Number(entry.progress ?? first.progress ?? 0);
  const songs = list
    .filter((item) => item.file)
    .map((item) => ({
      file: item.file,
      seed: item.seed_value,
      metas: item.metas || {},
      prompt: item.prompt,
      lyrics: item.lyrics,
      model: item.dit_model,
      loras: item.loras || [],
      info: item.generation_info || "",
    }));
  return {
    id: entry.task_id,
    state,
    progress: state === "succeeded" ? 1 : progress,
    stage: entry.stage ?? first.stage ?? "",
    text: entry.progress_text || "",
    position: entry.queue_position || 0,
    error: first.error || (state === "failed" ? entry.progress_text : "") || "",
    songs,
    analysis: list.filter((item) => item.status_message), // a description of a recording (full_analysis_only)
  };
}

// The bar never goes back, whatever order the answers arrive in.
export function advance(previous, next) {
  if (!previous || isFinished(next)) return next;
  if (isFinished(previous)) return previous;
  return { ...next, progress: Math.max(previous.progress, next.progress) };
}

export function describe(job) {
  if (job.state === "queued") return job.position ? `waiting, number ${job.position} in the queue` : "waiting";
  if (job.state === "running") return job.text || job.stage || "running";
  if (job.state === "succeeded") return "done";
  if (!job.error) return job.state;
  return job.error.startsWith(job.state) ? job.error : `${job.state}: ${job.error}`; // "cancelled during dit 1/8"
}

// The file's name, from /v1/audio?path=<percent-encoded path>.
export function fileName(file) {
  const query = String(file).split("?")[1] || "";
  const path = new URLSearchParams(query).get("path") || String(file);
  return path.split(/[\\/]/).pop();
}

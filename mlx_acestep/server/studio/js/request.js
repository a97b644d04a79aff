// The /release_task body a form's values make, and back: pure functions, no DOM (tested with node --test).
// Values are not checked here: the server has the rules, and the page shows its one-line message.

export const INSTRUMENTAL = "[Instrumental]"; // upstream's marker of a song without vocals
// "Vary this": upstream's retake (its variation controls: 0.05-0.15 is a subtle change), on the song's own seed.
export const VARY_VARIANCE = 0.1;

const NUMBER = /^-?\d+(\.\d+)?$/;

// A typed value as JSON: a number where it reads as one, else the text as typed (the server names what is wrong).
export function typed(value) {
  if (typeof value !== "string") return value;
  const text = value.trim();
  return NUMBER.test(text) ? Number(text) : text;
}

const VERBATIM = new Set(["prompt", "lyrics"]); // free text: sent as written

// values: {name: string | boolean | string[]} from the form's enabled controls.
export function taskBody(values) {
  const body = {};
  for (const [name, raw] of Object.entries(values)) {
    if (raw === undefined || raw === null || name === "instrumental") continue;
    if (Array.isArray(raw)) {
      if (raw.length) body[name] = raw;
    } else if (typeof raw === "boolean") {
      body[name] = raw;
    } else if (VERBATIM.has(name)) {
      if (raw.trim()) body[name] = raw;
    } else if (String(raw).trim() !== "") {
      body[name] = typed(String(raw));
    }
  }
  if (values.instrumental) body.lyrics = INSTRUMENTAL;
  if (body.seed !== undefined) body.use_random_seed = false; // upstream reads a seed only so
  return body;
}

// The form's values for a body sent before ("use these settings again").
export function valuesOf(body) {
  const values = { ...body };
  values.instrumental = body.lyrics === INSTRUMENTAL;
  if (values.instrumental) values.lyrics = "";
  if (body.use_random_seed !== false) delete values.seed;
  delete values.use_random_seed;
  for (const [name, v] of Object.entries(values)) {
    if (typeof v === "number") values[name] = String(v);
  }
  return values;
}

// "Vary this": the song's own seed again, with a retake seed mixed in (upstream's retake).
export function varyBody(body, seed, retakeSeed) {
  const variance = Number(body.retake_variance) > 0 ? body.retake_variance : VARY_VARIANCE;
  return { ...body, seed, use_random_seed: false, batch_size: 1, retake_seed: retakeSeed, retake_variance: variance };
}

// A multipart body: the fields as the server's form reader takes them (lists comma-joined), and the files.
export function multipart(body, files) {
  const form = new FormData();
  for (const [name, v] of Object.entries(body)) {
    form.append(name, Array.isArray(v) ? v.join(",") : typeof v === "object" ? JSON.stringify(v) : String(v));
  }
  for (const [name, file] of Object.entries(files)) {
    if (file) form.append(name, file, file.name || `${name}.wav`);
  }
  return form;
}

// A seed as upstream draws one (0 .. 2**32 - 1).
export function randomSeed(random = Math.random) {
  return Math.floor(random() * 2 ** 32);
}

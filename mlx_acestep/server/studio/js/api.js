// The REST client: the key on every call, the envelope opened, and any failure as the server's one-line message.

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// The one line to show for a failed answer: the envelope's `error`, else upstream's `detail` (a string, or
// FastAPI's list of validation errors), else the status and the first line of the text.
export function errorLine(status, body, text = "") {
  if (body && typeof body === "object") {
    if (typeof body.error === "string" && body.error) return body.error;
    if (typeof body.detail === "string" && body.detail) return body.detail;
    if (Array.isArray(body.detail) && body.detail.length) {
      return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    }
  }
  const first = String(text).trim().split("\n")[0];
  return first ? `HTTP ${status}: ${first}` : `HTTP ${status}`;
}

export function authHeaders(key) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The payload of an answer, or an ApiError: HTTP errors, and an envelope whose `code` is not 200 (upstream answers
// some failures so, with HTTP 200).
export function openEnvelope(status, body, text) {
  const failed = status >= 400 || (body && typeof body.code === "number" && body.code !== 200);
  if (failed) throw new ApiError(errorLine(status, body, text), status);
  return body && "data" in body ? body.data : body;
}

// `keys.get()` the stored key, `keys.ask(message)` a promise of a new one (null: the user gave up).
export function makeClient({ keys, fetchImpl = (...a) => fetch(...a) }) {
  async function send(path, init, retry = true) {
    const response = await fetchImpl(path, {
      ...init,
      headers: { ...(init.headers || {}), ...authHeaders(keys.get()) },
    });
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (response.status === 401 && retry) {
      const key = await keys.ask(errorLine(401, body, text));
      if (key !== null) return send(path, init, retry);
    }
    return openEnvelope(response.status, body, text);
  }
  return {
    get: (path) => send(path, { method: "GET" }),
    post: (path, json) =>
      send(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(json) }),
    upload: (path, form) => send(path, { method: "POST", body: form }),
    // Audio comes as a blob (an <audio> cannot send the key's header to /v1/audio).
    async blob(path) {
      let response = await fetchImpl(path, { headers: authHeaders(keys.get()) });
      if (response.status === 401 && (await keys.ask("the audio needs the API key")) !== null) {
        response = await fetchImpl(path, { headers: authHeaders(keys.get()) });
      }
      if (!response.ok) {
        const text = await response.text();
        let body = null;
        try {
          body = JSON.parse(text);
        } catch {
          body = null;
        }
        throw new ApiError(errorLine(response.status, body, text), response.status);
      }
      return response.blob();
    },
  };
}

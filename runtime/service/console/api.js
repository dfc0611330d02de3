// Every call the console makes to the service: same origin, the API key (if any) as a Bearer
// header from sessionStorage, never in a URL. A 401 asks for the key (again, with the reason,
// after a wrong one) and retries with it.
const KEY_SLOT = "foundry.apiKey";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let askForKey = null; // set by app.js: () => Promise<void> that resolves once a key is stored

export function onKeyNeeded(handler) {
  askForKey = handler;
}

export function storedKey() {
  return sessionStorage.getItem(KEY_SLOT);
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_SLOT, key);
  else sessionStorage.removeItem(KEY_SLOT);
}

function headers(extra) {
  const result = new Headers(extra || {});
  const key = storedKey();
  if (key) result.set("Authorization", `Bearer ${key}`);
  return result;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    const error = body && body.error;
    if (error && typeof error === "object") {
      message = error.message || message;
      code = error.code || null;
    } else if (typeof error === "string") {
      message = error;
    }
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, message, code);
}

/** fetch() against the service; throws ApiError for any non-2xx answer. */
export async function request(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: headers(options.headers),
    credentials: "omit",
    cache: "no-store",
  });
  if (response.ok) return response;
  const error = await errorOf(response);
  if (response.status === 401 && askForKey) {
    await askForKey(error);
    return request(path, options);
  }
  throw error;
}

export async function getJSON(path) {
  return (await request(path)).json();
}

export async function postJSON(path, body, options = {}) {
  return request(path, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "Content-Type": "application/json" },
    ...options,
  });
}

/** Yield the lines of a streamed response body as they arrive. */
export async function* lines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        yield buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
      }
    }
    if (buffer) yield buffer;
  } finally {
    reader.releaseLock();
  }
}

/** Yield each `data:` payload of a server-sent event stream, parsed as JSON, until [DONE]. */
export async function* events(response) {
  for await (const line of lines(response)) {
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (data === "[DONE]") return;
    yield JSON.parse(data);
  }
}

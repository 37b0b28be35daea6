// The API, as the page uses it: the key from sessionStorage in the X-API-Key header (never in a
// URL), JSON in and out, and every failure turned into an ApiError worded for people.

const KEY_ITEM = "sealexports.key";

export const session = {
  get key() { return sessionStorage.getItem(KEY_ITEM); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  },
};

export class ApiError extends Error {
  constructor(status, message, fields = []) {
    super(message);
    this.status = status;  // 0 when the server could not be reached
    this.fields = fields;  // [{field, message}] for bad input
  }
}

// Paths are relative to the page, so that the page works behind a path prefix.
function url(path, query = {}) {
  const u = new URL(`api/v1/${path}`, document.baseURI);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(name, value);
  }
  return u;
}

export async function call(method, path, { query, body, key = session.key } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "The server could not be reached. Check that it is running and try again.");
  }
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch { /* not JSON: an error page of a proxy */ }
  if (!response.ok) throw failure(response, data);
  return data;
}

function failure(response, data) {
  const status = response.status;
  const said = (data && typeof data.detail === "string") ? data.detail : "";
  const fields = (data && data.error && Array.isArray(data.error.detail))
    ? data.error.detail.filter((f) => f && typeof f.message === "string")
    : [];
  const sentence = (text) => text ? text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".") : "";
  let message;
  switch (status) {
    case 401:
      message = "This API key was not accepted: it is missing, unknown or revoked. Sign in with a valid key.";
      break;
    case 403:
      message = `This key may not do that. ${sentence(said)}`;
      break;
    case 404:
      message = `Not found. ${sentence(said)}`;
      break;
    case 410:
      message = "This download link has expired. Create the export again.";
      break;
    case 413:
      message = `Too large. ${sentence(said)}`;
      break;
    case 422:
      message = sentence(said) || "Some of the input is not valid.";
      break;
    case 429: {
      const wait = response.headers.get("Retry-After");
      message = `${sentence(said) || "Too many requests."} Try again${wait ? ` in ${wait} seconds` : " shortly"}.`;
      break;
    }
    default:
      message = status >= 500
        ? `The server ran into a problem${data && data.request_id ? ` (reference ${data.request_id})` : ""}. Try again in a moment.`
        : sentence(said) || "The request was refused.";
  }
  return new ApiError(status, message.trim(), fields);
}

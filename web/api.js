// The hub's REST API as the page's user: the connection token as `Authorization: Bearer`.

/** The token REST calls send (the one the page connects with, renewed with it). */
let apiToken = '';

/** Use `token` for the REST calls from now on. */
export function setApiToken(/** @type {string} */ token) {
  apiToken = token;
}

/** A REST error: the hub's `{"error":{"code","message"}}`, or what went wrong on the way. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {number} [retryAfter]  seconds, from a 429's Retry-After
   */
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/**
 * Call the hub's REST API as the page's user; resolves with the JSON answer (null for 204).
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @param {AbortSignal} [signal]
 */
export async function api(method, path, body, signal) {
  /** @type {Record<string, string>} */
  const headers = { Authorization: `Bearer ${apiToken}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', signal });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: the status says it
  }
  if (!res.ok) {
    const err = json && json.error;
    const retry = Number(res.headers.get('Retry-After'));
    throw new ApiError(res.status, err?.code || 'http', err?.message || `HTTP ${res.status}`, Number.isFinite(retry) ? retry : undefined);
  }
  return json;
}

/** The text of an error for people. */
export function errorText(/** @type {unknown} */ err) {
  return err instanceof Error ? err.message : String(err);
}

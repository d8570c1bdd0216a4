// The coordinator's /v1 API as the dashboard uses it: the signed-in token and JSON requests.

const TOKEN_KEY = "fleetwave.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Accept `#token=...` once (the demo prints such a URL) and drop it from the address bar. */
export function takeTokenFromFragment() {
  const match = /^#token=([^&]*)/.exec(window.location.hash);
  if (!match) return false;
  const token = decodeURIComponent(match[1]);
  history.replaceState(null, "", `${window.location.pathname}${window.location.search}#/jobs`);
  if (!token.trim()) return false;
  setToken(token);
  return true;
}

/** kind: "unauthorized" (401), "down" (no answer, or a proxy says the coordinator is gone),
 * "http" (any other error answer; message is the coordinator's own). */
export class ApiError extends Error {
  constructor(kind, status, message, details = {}) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.details = details;
  }
}

export const DOWN_MESSAGE =
  "The coordinator does not answer. It may be stopped or restarting; the dashboard keeps retrying.";

/** What the sign-in form says after a 401; ``why`` is the coordinator's reason (revoked, ...). */
export function unauthorizedMessage(why = "") {
  return `The coordinator refused the token (401)${why ? `: ${why}` : ""}. Sign in with a valid token.`;
}

export function authHeaders() {
  return { Authorization: `Bearer ${getToken()}` };
}

let linkObserver = () => {};

/** Tell ``listener(outcome, reason)`` how each request went: "answered", "unreachable" (no
 * answer, or a proxy's 502/504) or "unavailable" (503; ``reason`` is the coordinator's message). */
export function observeLink(listener) {
  linkObserver = listener;
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { ...authHeaders(), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    linkObserver("unreachable");
    throw new ApiError("down", 0, DOWN_MESSAGE);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const error = !resp.ok && data && data.error;
  if (resp.status === 503) linkObserver("unavailable", (error && error.message) || "");
  else linkObserver([502, 504].includes(resp.status) ? "unreachable" : "answered");
  if (!resp.ok) {
    if (resp.status === 401) throw new ApiError("unauthorized", 401, unauthorizedMessage(error && error.message));
    if (!error && [502, 503, 504].includes(resp.status)) {
      throw new ApiError("down", resp.status, DOWN_MESSAGE);
    }
    const message = error ? error.message : `${method} ${path} failed with HTTP ${resp.status}`;
    throw new ApiError("http", resp.status, message, (error && error.details) || {});
  }
  return data;
}

export const enc = encodeURIComponent;

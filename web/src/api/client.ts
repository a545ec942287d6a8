// The typed API client, generated from the server's OpenAPI document (`npm run gen`).
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type S = components["schemas"];

let csrf: string | null = null;

/** The session's CSRF token, sent as `x-csrf-token` on every write. */
export function setCsrf(token: string | null | undefined) {
  csrf = token ?? null;
}
export function csrfHeader(): Record<string, string> {
  return csrf ? { "x-csrf-token": csrf } : {};
}

const withCsrf: Middleware = {
  onRequest({ request }) {
    if (csrf && request.method !== "GET") request.headers.set("x-csrf-token", csrf);
    return request;
  },
};

/** How often a write is sent again when its outcome is unknown, after the first try. */
const RETRIES = 3;

/**
 * `fetch` for the API, used by every call of this app. A write (any method but GET and HEAD)
 * carries an `Idempotency-Key` (made here, one per call, as one call is one user action; a key
 * the caller set is kept) and is sent again with that same key while its outcome is unknown: the network failed, the server was briefly unavailable (502, 503, 504) or still
 * working on the first try (409 `idempotency_key_in_flight`). The server answers a repeated
 * key with the first answer, so a retry never writes twice. It waits `Retry-After` seconds
 * (1 s without one, at most 10 s), tries at most RETRIES more times, and sends a clone each
 * time so the body can go again. Any other answer is final.
 *
 * It wraps `fetch` rather than being a middleware: openapi-fetch 0.17's middleware sees one
 * request and one answer and cannot send again.
 */
export async function apiFetch(input: Request | string, init?: RequestInit): Promise<Response> {
  const request = new Request(input, init);
  if (request.method === "GET" || request.method === "HEAD") return fetch(request);
  if (!request.headers.has("idempotency-key")) request.headers.set("idempotency-key", newKey());
  for (let retry = 0; ; retry++) {
    let response: Response;
    try {
      response = await fetch(request.clone());
    } catch (e) {
      // A TypeError is a network failure; an abort or timeout is the caller's and final.
      if (retry === RETRIES || !(e instanceof TypeError)) throw e;
      await pause(1000, request.signal);
      continue;
    }
    if (retry === RETRIES || !(await outcomeUnknown(response))) return response;
    const after = Number.parseFloat(response.headers.get("retry-after") ?? "");
    await pause(after >= 0 ? Math.min(after, 10) * 1000 : 1000, request.signal);
  }
}

/** Answers after which a write may or may not have happened (besides the in-flight 409). */
const UNAVAILABLE = [502, 503, 504];
const IN_FLIGHT = "idempotency_key_in_flight";

async function outcomeUnknown(r: Response): Promise<boolean> {
  if (UNAVAILABLE.includes(r.status)) return true;
  if (r.status !== 409) return false;
  const body = (await r.clone().json().catch(() => null)) as { code?: string } | null;
  return body?.code === IN_FLIGHT;
}

/**
 * Whether a write that failed with `e` (after apiFetch's retries) may still have happened, so
 * that a Retry button must send it again under the same key; after any other failure the
 * server has answered for good and trying again is a new action with a new key.
 */
export function mayHaveHappened(e: unknown): boolean {
  if (!(e instanceof ApiError)) return true;
  return UNAVAILABLE.includes(e.status) || e.code === IN_FLIGHT;
}

/** A new `Idempotency-Key`; `crypto.randomUUID` exists only on secure origins (a desk on plain http). */
export function newKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Waits, but no longer than the caller's signal allows (a send's 10 s timeout). */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      if (signal.aborted) reject(signal.reason);
      else resolve();
    };
    const timer = setTimeout(done, signal.aborted ? 0 : ms);
    signal.addEventListener("abort", done);
  });
}

export const api = createClient<paths>({ baseUrl: "", credentials: "same-origin", fetch: (r) => apiFetch(r) });
api.use(withCsrf);

/** An error answer of the API: `{code, message, field?}`. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public field?: string,
  ) {
    super(message);
  }
}

/** Unwraps an openapi-fetch result, throwing [`ApiError`] on an error answer. */
export async function unwrap<T>(p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const r = await p;
  if (!r.response.ok) {
    const e = (r.error ?? {}) as Partial<S["ErrorBody"]>;
    throw new ApiError(r.response.status, e.code ?? "http_error", e.message ?? r.response.statusText, e.field ?? undefined);
  }
  return r.data as T;
}

/** Uploads a file for a reply (multipart field `file`). */
export async function uploadFile(file: File): Promise<S["Attachment"]> {
  const fd = new FormData();
  fd.append("file", file, file.name);
  const r = await apiFetch("/api/v1/files", { method: "POST", body: fd, headers: csrfHeader(), credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, body.code ?? "http_error", body.message ?? r.statusText, body.field);
  return body as S["Attachment"];
}

/** A message for the operator in their language: known error codes are translated. */
export function errorText(t: (key: string) => string, e: unknown): string {
  if (e instanceof ApiError) {
    const key = `errors.${e.code}`;
    const tr = t(key);
    return tr !== key ? tr : e.message;
  }
  return e instanceof TypeError || (e instanceof DOMException && e.name === "TimeoutError") ? t("errors.network") : String((e as Error)?.message ?? e);
}

/**
 * A JSON call outside the typed client, for operations whose generated types are wrong
 * (the OpenAPI document reuses the operation ids `list` and `create_channel`).
 */
export async function apiJson<T>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = method === "GET" ? {} : { ...csrfHeader() };
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await apiFetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const data = r.status === 204 ? undefined : await r.json().catch(() => undefined);
  if (!r.ok) {
    const e = (data ?? {}) as Partial<S["ErrorBody"]>;
    throw new ApiError(r.status, e.code ?? "http_error", e.message ?? r.statusText, e.field ?? undefined);
  }
  return data as T;
}

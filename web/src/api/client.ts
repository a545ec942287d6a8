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

export const api = createClient<paths>({ baseUrl: "", credentials: "same-origin" });
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
  const r = await fetch("/api/v1/files", { method: "POST", body: fd, headers: csrfHeader(), credentials: "same-origin" });
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
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const data = r.status === 204 ? undefined : await r.json().catch(() => undefined);
  if (!r.ok) {
    const e = (data ?? {}) as Partial<S["ErrorBody"]>;
    throw new ApiError(r.status, e.code ?? "http_error", e.message ?? r.statusText, e.field ?? undefined);
  }
  return data as T;
}

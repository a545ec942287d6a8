// Building blocks shared by the administration screens: form state with per-field errors
// (client-side checks and the server's `ApiError.field`), fields tied to their labels, the
// "Saved" flash, inline confirmations and a copy button.
import { useEffect, useId, useRef, useState, type ReactNode } from "react";
import { useTranslation } from "react-i18next";
import type { TFunction } from "i18next";
import { useQuery } from "@tanstack/react-query";
import { api, ApiError, unwrap } from "../../api/client";

/** Errors by field name; [`GENERAL`] holds an error that belongs to no field. */
export type Errors = Record<string, string>;
export const GENERAL = "_";

/** Error codes with a translated message (`admin.errors.*`). */
const CODES = ["username_taken", "name_taken", "queue_in_use", "forbidden", "not_found", "rate_limited"];
/** Conflicts that name no field but are about one. */
const CODE_FIELD: Record<string, string> = { username_taken: "username", name_taken: "name" };

/** The form field a server field name or JSON pointer refers to: "/role" → "role", "members/0" → "members". */
export function fieldFor(raw: string, fields: readonly string[]): string | null {
  const path = raw.replace(/^\//, "");
  if (fields.includes(path)) return path;
  const top = path.split("/")[0];
  return fields.includes(top) ? top : null;
}

/** A readable message for an error; `bare` drops the server's "field: " prefix. */
export function errorMessage(e: unknown, t: TFunction, bare = false): string {
  if (e instanceof ApiError) {
    if (CODES.includes(e.code)) return t(`admin.errors.${e.code}`);
    if (bare && e.field && e.message.startsWith(`${e.field}: `)) return e.message.slice(e.field.length + 2);
    return e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

/** Places an error next to the field it names, or above the submit button. */
export function errorsFrom(e: unknown, fields: readonly string[], t: TFunction): Errors {
  if (e instanceof ApiError) {
    const raw = e.field ?? CODE_FIELD[e.code];
    const f = raw ? fieldFor(raw, fields) : null;
    if (f) return { [f]: errorMessage(e, t, true) };
  }
  return { [GENERAL]: errorMessage(e, t) };
}

/** Client-side checks; each returns a message or `undefined`. */
export function useChecks() {
  const { t } = useTranslation();
  return {
    required: (v: string) => (v.trim() ? undefined : t("admin.common.required")),
    length: (v: string, min: number, max: number) => {
      const n = [...v.trim()].length;
      if (n === 0 && min > 0) return t("admin.common.required");
      return n < min || n > max ? t("admin.common.length", { min, max }) : undefined;
    },
    int: (v: string, min: number, max: number) =>
      /^\s*\d+\s*$/.test(v) && Number(v) >= min && Number(v) <= max ? undefined : t("admin.common.range", { min, max }),
  };
}

/** Keeps the messages of failed checks. */
export function compact(errs: Record<string, string | undefined>): Errors {
  const out: Errors = {};
  for (const [k, v] of Object.entries(errs)) if (v) out[k] = v;
  return out;
}

/** Parses an optional whole number: "" → null. */
export function optInt(v: string): number | null {
  return v.trim() === "" ? null : Number(v);
}

export interface FormApi {
  errors: Errors;
  errId: (name: string) => string;
  hintId: (name: string) => string;
  aria: (name: string, hint?: boolean) => { "aria-invalid"?: true; "aria-describedby"?: string };
}

/**
 * The values of a form and its errors. Changing a field clears its error; after a failed
 * submit the first invalid field gets the focus (attach `ref` to the `<form>`).
 */
export function useForm<V extends Record<string, unknown>>(initial: () => V) {
  const { t } = useTranslation();
  const uid = useId();
  const ref = useRef<HTMLFormElement>(null);
  const [values, setValues] = useState<V>(initial);
  const [errors, setErrorsState] = useState<Errors>({});
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (attempt === 0) return;
    const form = ref.current;
    const bad = form?.querySelector<HTMLElement>("[aria-invalid=true]") ?? form?.querySelector<HTMLElement>("[role=alert]");
    bad?.focus();
  }, [attempt]);

  const setErrors = (e: Errors) => {
    setErrorsState(e);
    if (Object.keys(e).length > 0) setAttempt((n) => n + 1);
  };
  const set = <K extends keyof V>(k: K, v: V[K]) => {
    setValues((cur) => ({ ...cur, [k]: v }));
    setErrorsState((cur) => {
      if (!(k in cur) && !(GENERAL in cur)) return cur;
      const next = { ...cur };
      delete next[k as string];
      delete next[GENERAL];
      return next;
    });
  };
  const errId = (name: string) => `${uid}-${name}-err`;
  const hintId = (name: string) => `${uid}-${name}-hint`;
  const form: FormApi & {
    ref: typeof ref;
    values: V;
    set: typeof set;
    setErrors: typeof setErrors;
    fail: (e: unknown) => void;
  } = {
    ref,
    values,
    set,
    errors,
    setErrors,
    fail: (e: unknown) => setErrors(errorsFrom(e, Object.keys(values), t)),
    errId,
    hintId,
    aria: (name: string, hint = false) => {
      const ids = [errors[name] ? errId(name) : "", hint ? hintId(name) : ""].filter(Boolean).join(" ");
      return { ...(errors[name] ? { "aria-invalid": true as const } : {}), ...(ids ? { "aria-describedby": ids } : {}) };
    },
  };
  return form;
}

/** A labelled control with its hint and its error. */
export function Field({ form, name, label, hint, children }: { form: FormApi; name: string; label: ReactNode; hint?: ReactNode; children: ReactNode }) {
  const err = form.errors[name];
  return (
    <div className={err ? "fld invalid" : "fld"}>
      <label>
        <span className="lbl">{label}</span>
        {children}
      </label>
      {hint && (
        <small className="hint" id={form.hintId(name)}>
          {hint}
        </small>
      )}
      {err && (
        <span className="field-error" id={form.errId(name)} data-testid={`error-${name}`}>
          {err}
        </span>
      )}
    </div>
  );
}

/** The general error, the submit button, an optional close button and the "Saved" flash. */
export function FormFooter({ form, busy, saved, onClose }: { form: FormApi; busy: boolean; saved: boolean; onClose?: () => void }) {
  const { t } = useTranslation();
  return (
    <>
      {form.errors[GENERAL] && (
        <p className="error" role="alert" tabIndex={-1} data-testid="form-error">
          {form.errors[GENERAL]}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={busy} data-testid="save">
          {busy ? t("admin.common.saving") : t("admin.common.save")}
        </button>
        {onClose && (
          <button type="button" onClick={onClose} data-testid="close">
            {t("admin.common.close")}
          </button>
        )}
        <span role="status" className="saved">
          {saved && <span data-testid="saved">✓ {t("admin.common.saved")}</span>}
        </span>
      </div>
    </>
  );
}

/** A flag that turns itself off after a few seconds (the "Saved" message). */
export function useFlash(ms = 4000) {
  const [n, setN] = useState(0);
  useEffect(() => {
    if (n === 0) return;
    const h = setTimeout(() => setN(0), ms);
    return () => clearTimeout(h);
  }, [n, ms]);
  return { on: n > 0, show: () => setN((x) => x + 1), hide: () => setN(0) };
}

/** Loading and load errors of a list. */
export function LoadState({ loading, error }: { loading: boolean; error: unknown }) {
  const { t } = useTranslation();
  if (error) return <p className="error" role="alert">{t("admin.common.loadFailed", { message: errorMessage(error, t) })}</p>;
  if (loading) return <p className="muted">{t("admin.common.loading")}</p>;
  return null;
}

/** A button that asks "Yes / No" in place before acting. */
export function Confirm({
  label,
  question,
  onConfirm,
  disabled,
  danger = true,
  testId,
}: {
  label: string;
  question: string;
  onConfirm: () => void;
  disabled?: boolean;
  danger?: boolean;
  testId?: string;
}) {
  const { t } = useTranslation();
  const [asking, setAsking] = useState(false);
  const opener = useRef<HTMLButtonElement>(null);
  const back = () => {
    setAsking(false);
    requestAnimationFrame(() => opener.current?.focus());
  };
  if (!asking)
    return (
      <button ref={opener} type="button" className={danger ? "danger" : ""} onClick={() => setAsking(true)} disabled={disabled} data-testid={testId}>
        {label}
      </button>
    );
  return (
    <span className="confirm" role="group" aria-label={question} onKeyDown={(e) => e.key === "Escape" && back()}>
      <span>{question}</span>
      <button
        type="button"
        className={danger ? "danger" : "primary"}
        onClick={() => {
          setAsking(false);
          onConfirm();
        }}
        data-testid="confirm-yes"
      >
        {t("admin.common.yes")}
      </button>
      <button type="button" onClick={back} autoFocus>
        {t("admin.common.no")}
      </button>
    </span>
  );
}

/** Copies text to the clipboard, also on plain-HTTP pages where the Clipboard API is missing. */
export function CopyButton({ text, testId = "copy" }: { text: string; testId?: string }) {
  const { t } = useTranslation();
  const [state, setState] = useState<"idle" | "ok" | "fail">("idle");
  const copy = async () => {
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
      } else {
        const ta = document.createElement("textarea");
        ta.value = text;
        ta.setAttribute("readonly", "");
        ta.style.position = "fixed";
        ta.style.opacity = "0";
        document.body.appendChild(ta);
        ta.select();
        const ok = document.execCommand("copy");
        ta.remove();
        if (!ok) throw new Error("copy");
      }
      setState("ok");
    } catch {
      setState("fail");
    }
  };
  return (
    <span className="copy">
      <button type="button" onClick={() => void copy()} data-testid={testId}>
        {t("admin.common.copy")}
      </button>
      <span role="status" className={state === "fail" ? "error" : "muted"}>
        {state === "ok" ? t("admin.common.copied") : state === "fail" ? t("admin.common.copyFailed") : ""}
      </span>
    </span>
  );
}

export function useUsers() {
  return useQuery({ queryKey: ["users"], queryFn: () => unwrap(api.GET("/api/v1/users")) });
}
export function useSettings() {
  return useQuery({ queryKey: ["settings"], queryFn: () => unwrap(api.GET("/api/v1/settings")) });
}

/** Replaces or appends an item of a cached list. */
export function upsert<T extends { id: string }>(list: T[] | undefined, item: T): T[] {
  if (!list) return [item];
  return list.some((x) => x.id === item.id) ? list.map((x) => (x.id === item.id ? item : x)) : [...list, item];
}

/** Focuses the first control of a form that has just been opened. */
export function useFocusFirst(form: { current: HTMLFormElement | null }, enabled: boolean) {
  useEffect(() => {
    if (!enabled || !form.current) return;
    form.current.scrollIntoView({ block: "nearest" });
    form.current.querySelector<HTMLElement>("input:not([disabled]),select:not([disabled]),textarea:not([disabled])")?.focus();
  }, [form, enabled]);
}

/** The ↑ ↓ Remove buttons of a row in an ordered list editor (chat actions, duplicate rules). */
export function RowOrderActions(props: {
  index: number;
  count: number;
  /** The row's name, for the buttons' accessible labels. */
  label: string;
  texts: { up: string; down: string; remove: string };
  /** Test ids are `${testId}-up`, `-down`, `-delete`. */
  testId: string;
  onMove: (delta: -1 | 1) => void;
  onRemove: () => void;
}) {
  const { index, count, label, texts, testId } = props;
  return (
    <td className="row-actions">
      <button type="button" onClick={() => props.onMove(-1)} disabled={index === 0} aria-label={`${label}: ${texts.up}`} title={texts.up} data-testid={`${testId}-up`}>
        ↑
      </button>
      <button type="button" onClick={() => props.onMove(1)} disabled={index === count - 1} aria-label={`${label}: ${texts.down}`} title={texts.down} data-testid={`${testId}-down`}>
        ↓
      </button>
      <button type="button" className="danger" onClick={props.onRemove} aria-label={`${label}: ${texts.remove}`} data-testid={`${testId}-delete`}>
        {texts.remove}
      </button>
    </td>
  );
}

// A form drawn from a JSON Schema object (plugin settings, connector settings, action input,
// user task forms): strings (`format: textarea` and `date` too), whole numbers, numbers,
// booleans and enums; write-only secrets are password inputs that keep the stored value unless
// the admin types a new one or ticks "clear".
import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from "react";
import { useTranslation } from "react-i18next";
import type { TFunction } from "i18next";
import { ApiError } from "../api/client";

/** A text that may be localized: a plain string or `{en, ru, …}`. */
export type Loc = string | Record<string, string>;

export interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  title?: Loc;
  description?: Loc;
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  /** `textarea` draws a multi-line box, `date` a date picker (both hold strings). */
  format?: string;
  writeOnly?: boolean;
}

export type JsonObject = Record<string, unknown>;
/** Errors by property name; `_` holds one that belongs to no property. */
export type SchemaErrors = Record<string, string>;
export const GENERAL_ERROR = "_";

/** A localized text in the given language (falls back to English, then to any). */
export function loc(v: unknown, lang: string): string {
  if (typeof v === "string") return v;
  if (v && typeof v === "object") {
    const m = v as Record<string, unknown>;
    const short = lang.split("-")[0];
    const pick = m[lang] ?? m[short] ?? m.en ?? Object.values(m)[0];
    return typeof pick === "string" ? pick : "";
  }
  return "";
}

/** Narrows an untyped JSON value (the generated client types free-form objects loosely). */
export function asSchema(v: unknown): JsonSchema | null {
  return v && typeof v === "object" && !Array.isArray(v) ? (v as JsonSchema) : null;
}

/** Whether a schema has any property to fill in. */
export function hasFields(schema: unknown): boolean {
  const s = asSchema(schema);
  return !!s?.properties && Object.keys(s.properties).length > 0;
}

/** A stored secret as the server shows it: `{"set": true}`. */
export function isSetSecret(v: unknown): boolean {
  return !!v && typeof v === "object" && (v as { set?: unknown }).set === true;
}

/**
 * The property a server field refers to: "/bot_token", "config/bot_token",
 * "/config/bot_token/0" and "input/subject" all name their property.
 */
export function schemaField(raw: string, keys: readonly string[]): string | null {
  const parts = raw.split("/").filter(Boolean);
  return parts.find((p) => keys.includes(p)) ?? null;
}

function kindOf(p: JsonSchema): "enum" | "boolean" | "integer" | "number" | "string" {
  if (Array.isArray(p.enum)) return "enum";
  const types = Array.isArray(p.type) ? p.type : [p.type];
  if (types.includes("boolean")) return "boolean";
  if (types.includes("integer")) return "integer";
  if (types.includes("number")) return "number";
  return "string";
}

/** What the form holds for one property. */
interface Draft {
  text: string;
  bool: boolean;
  /** A stored secret is kept unless a new value is typed or `clear` is ticked. */
  clear: boolean;
}

function initialDrafts(schema: JsonSchema, value: JsonObject): Record<string, Draft> {
  const out: Record<string, Draft> = {};
  for (const [key, p] of Object.entries(schema.properties ?? {})) {
    const cur = key in value ? value[key] : undefined;
    const v = p.writeOnly ? undefined : cur !== undefined && cur !== null ? cur : p.default;
    const k = kindOf(p);
    out[key] = {
      text: v === undefined || v === null || k === "boolean" ? "" : k === "enum" ? JSON.stringify(v) : String(v),
      bool: k === "boolean" ? v === true : false,
      clear: false,
    };
  }
  return out;
}

/** The value to submit, and the client-side problems by property. */
function collect(schema: JsonSchema, value: JsonObject, drafts: Record<string, Draft>, t: TFunction): { value: JsonObject; errors: SchemaErrors } {
  const out: JsonObject = {};
  const errors: SchemaErrors = {};
  const required = schema.required ?? [];
  for (const [key, p] of Object.entries(schema.properties ?? {})) {
    const d = drafts[key] ?? { text: "", bool: false, clear: false };
    const k = kindOf(p);
    const req = required.includes(key);
    if (p.writeOnly) {
      if (d.text !== "") out[key] = k === "integer" || k === "number" ? Number(d.text) : d.text;
      else if (d.clear) {
        if (req) errors[key] = t("schema.required");
        else out[key] = null;
      } else if (req && !isSetSecret(value[key])) errors[key] = t("schema.required");
      if (d.text === "") continue;
    }
    if (k === "boolean") {
      out[key] = d.bool;
      continue;
    }
    if (k === "enum") {
      if (d.text === "") {
        if (req) errors[key] = t("schema.required");
        continue;
      }
      out[key] = JSON.parse(d.text) as unknown;
      continue;
    }
    const text = k === "string" ? d.text : d.text.trim();
    if (text === "") {
      if (req && !p.writeOnly) errors[key] = t("schema.required");
      continue;
    }
    if (k === "integer" || k === "number") {
      const n = Number(text);
      if (!Number.isFinite(n) || (k === "integer" && !Number.isInteger(n))) {
        errors[key] = k === "integer" ? t("schema.integer") : t("schema.number");
        continue;
      }
      if ((p.minimum !== undefined && n < p.minimum) || (p.maximum !== undefined && n > p.maximum)) {
        errors[key] =
          p.minimum !== undefined && p.maximum !== undefined
            ? t("schema.range", { min: p.minimum, max: p.maximum })
            : p.minimum !== undefined
              ? t("schema.min", { min: p.minimum })
              : t("schema.max", { max: p.maximum });
        continue;
      }
      out[key] = n;
      continue;
    }
    const len = [...text].length;
    if (p.maxLength !== undefined && len > p.maxLength) errors[key] = t("schema.maxLength", { max: p.maxLength });
    else if (p.minLength !== undefined && len < p.minLength) errors[key] = t("schema.minLength", { min: p.minLength });
    else if (p.pattern) {
      try {
        if (!new RegExp(p.pattern, "u").test(text)) errors[key] = t("schema.pattern");
      } catch {
        // A pattern the browser cannot read is left to the server.
      }
    }
    out[key] = text;
  }
  return { value: out, errors };
}

/** Places an error answer next to the property it names, or in `_`. */
export function schemaErrorsFrom(e: unknown, keys: readonly string[], message: (e: unknown) => string): SchemaErrors {
  if (e instanceof ApiError && e.field) {
    const f = schemaField(e.field, keys);
    if (f) {
      // The server prefixes the message with the pointer (sometimes twice); the field shows it already.
      let bare = e.message;
      while (bare.startsWith(`${e.field}: `)) bare = bare.slice(e.field.length + 2);
      return { [f]: bare === e.message ? message(e) : bare };
    }
    return { [GENERAL_ERROR]: `${message(e)} (${e.field})` };
  }
  return { [GENERAL_ERROR]: message(e) };
}

const NO_ERRORS: SchemaErrors = {};
const NO_VALUE: JsonObject = {};

export function SchemaForm({
  schema: rawSchema,
  value = NO_VALUE,
  onSubmit,
  onChange,
  errors: serverErrors = NO_ERRORS,
  busy = false,
  submitLabel,
  footer,
  children,
  testId = "schema-form",
  submitTestId = "save",
  label,
}: {
  schema: unknown;
  /** The current value; secrets may be `{"set": true}`. */
  value?: JsonObject;
  /** Called with the value to send when the form is valid. */
  onSubmit: (value: JsonObject) => void;
  onChange?: (value: JsonObject) => void;
  /** Server errors by property (see [`schemaErrorsFrom`]); `_` is shown above the buttons. */
  errors?: SchemaErrors;
  busy?: boolean;
  submitLabel?: string;
  /** Extra buttons and status beside the submit button. */
  footer?: ReactNode;
  /** Extra fields drawn before the schema's own. */
  children?: ReactNode;
  testId?: string;
  /** `data-testid` of the submit button. */
  submitTestId?: string;
  label?: string;
}) {
  const { t, i18n } = useTranslation();
  const uid = useId();
  const ref = useRef<HTMLFormElement>(null);
  const schema = asSchema(rawSchema) ?? {};
  const props = Object.entries(schema.properties ?? {});
  const [drafts, setDrafts] = useState(() => initialDrafts(schema, value));
  const [local, setLocal] = useState<SchemaErrors>({});
  // Server errors of fields edited since; a new set of server errors shows them all again.
  const [hide, setHide] = useState<{ of: SchemaErrors; keys: Record<string, true> }>({ of: serverErrors, keys: {} });
  const hidden = hide.of === serverErrors ? hide.keys : {};
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    if (attempt === 0) return;
    const bad = ref.current?.querySelector<HTMLElement>("[aria-invalid=true]") ?? ref.current?.querySelector<HTMLElement>("[role=alert]");
    bad?.focus();
  }, [attempt, serverErrors]);

  const errorOf = (key: string) => local[key] ?? (hidden[key] ? undefined : serverErrors[key]);
  const update = (key: string, patch: Partial<Draft>) => {
    const next = { ...drafts, [key]: { ...drafts[key], ...patch } };
    setDrafts(next);
    setLocal((cur) => {
      if (!(key in cur)) return cur;
      const c = { ...cur };
      delete c[key];
      return c;
    });
    setHide((cur) => ({ of: serverErrors, keys: { ...(cur.of === serverErrors ? cur.keys : {}), [key]: true, [GENERAL_ERROR]: true } }));
    onChange?.(collect(schema, value, next, t).value);
  };

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const r = collect(schema, value, drafts, t);
    setLocal(r.errors);
    setAttempt((n) => n + 1);
    if (Object.keys(r.errors).length === 0) onSubmit(r.value);
  };

  const general = hidden[GENERAL_ERROR] ? undefined : serverErrors[GENERAL_ERROR];
  return (
    <form ref={ref} className="form schema-form" onSubmit={submit} noValidate aria-label={label} data-testid={testId}>
      {children}
      {props.map(([key, p]) => {
        const d = drafts[key] ?? { text: "", bool: false, clear: false };
        const k = kindOf(p);
        const err = errorOf(key);
        const title = loc(p.title, i18n.language) || key;
        const desc = loc(p.description, i18n.language);
        const req = (schema.required ?? []).includes(key);
        const errId = `${uid}-${key}-err`;
        const hintId = `${uid}-${key}-hint`;
        const describedBy = [err ? errId : "", desc ? hintId : ""].filter(Boolean).join(" ") || undefined;
        const aria = { "aria-invalid": err ? (true as const) : undefined, "aria-describedby": describedBy, "data-testid": `schema-${key}` };
        const isSet = !!p.writeOnly && isSetSecret(value[key]);
        let control: ReactNode;
        if (k === "boolean") {
          control = (
            <label className="check">
              <input type="checkbox" checked={d.bool} onChange={(e) => update(key, { bool: e.target.checked })} {...aria} />
              {title}
            </label>
          );
        } else {
          let input: ReactNode;
          if (k === "enum") {
            input = (
              <select value={d.text} onChange={(e) => update(key, { text: e.target.value })} required={req} {...aria}>
                <option value="" disabled={req}>
                  {req ? t("schema.choose") : t("schema.none")}
                </option>
                {(p.enum ?? []).map((opt) => (
                  <option key={JSON.stringify(opt)} value={JSON.stringify(opt)}>
                    {String(opt)}
                  </option>
                ))}
              </select>
            );
          } else if (p.writeOnly) {
            input = (
              <input
                type="password"
                value={d.text}
                autoComplete="new-password"
                placeholder={isSet ? t("schema.secretSet") : t("schema.secretEmpty")}
                disabled={d.clear}
                onChange={(e) => update(key, { text: e.target.value })}
                {...aria}
              />
            );
          } else if (k === "string" && p.format === "textarea") {
            input = (
              <textarea
                value={d.text}
                rows={4}
                maxLength={p.maxLength}
                required={req}
                onChange={(e) => update(key, { text: e.target.value })}
                {...aria}
              />
            );
          } else {
            input = (
              <input
                type={k === "string" ? (p.format === "date" ? "date" : "text") : "number"}
                inputMode={k === "integer" ? "numeric" : k === "number" ? "decimal" : undefined}
                step={k === "integer" ? 1 : k === "number" ? "any" : undefined}
                min={p.minimum}
                max={p.maximum}
                maxLength={p.maxLength}
                value={d.text}
                autoComplete="off"
                required={req}
                onChange={(e) => update(key, { text: e.target.value })}
                {...aria}
              />
            );
          }
          control = (
            <label>
              <span className="lbl">
                {title}
                {req && <span aria-hidden="true"> *</span>}
              </span>
              {input}
            </label>
          );
        }
        return (
          <div key={key} className={err ? "fld invalid" : "fld"}>
            {control}
            {p.writeOnly && isSet && (
              <label className="check">
                <input type="checkbox" checked={d.clear} onChange={(e) => update(key, { clear: e.target.checked, text: "" })} data-testid={`schema-${key}-clear`} />
                {t("schema.clear")}
              </label>
            )}
            {desc && (
              <small className="hint" id={hintId}>
                {desc}
              </small>
            )}
            {err && (
              <span className="field-error" id={errId} data-testid={`error-${key}`}>
                {err}
              </span>
            )}
          </div>
        );
      })}
      {props.length === 0 && !children && <p className="muted">{t("schema.noFields")}</p>}
      {general && (
        <p className="error" role="alert" tabIndex={-1} data-testid="form-error">
          {general}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={busy} data-testid={submitTestId}>
          {busy ? t("schema.saving") : (submitLabel ?? t("schema.save"))}
        </button>
        {footer}
      </div>
    </form>
  );
}

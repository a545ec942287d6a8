// Duplicate rules (S18): the ordered rules "Find duplicates" applies — name, enabled, and the
// conditions that must all hold (a field; names may be compared fuzzily above a threshold). The
// server checks the whole list on Save; a problem names its place (`rules[1].conditions[0].fuzzy`).
import { useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import type { TFunction } from "i18next";
import { api, ApiError, unwrap, type S } from "../../api/client";
import { errorMessage, LoadState, useFlash, RowOrderActions } from "./common";

type Rule = S["DuplicateRule"];
type MatchField = S["MatchField"];
const MATCH_FIELDS: MatchField[] = ["phone", "email", "identity", "name"];
const DEFAULT_THRESHOLD = 0.85;

interface Condition {
  key: number;
  field: MatchField;
  fuzzy: boolean;
  threshold: string;
}

/** A rule being edited; `key` tells rows apart while they move. */
interface Row {
  key: number;
  id: string;
  name: string;
  enabled: boolean;
  conditions: Condition[];
}

/** A problem the server found: its rule, condition (if any) and the rest of the path. */
interface RowError {
  row: number | null;
  condition: number | null;
  field: string;
  message: string;
}

let nextKey = 1;
const toCondition = (c: S["RuleCondition"]): Condition => ({
  key: nextKey++,
  field: c.field,
  fuzzy: c.fuzzy ?? false,
  threshold: c.threshold == null ? "" : String(c.threshold),
});
const toRow = (r: Rule): Row => ({ key: nextKey++, id: r.id ?? "", name: r.name, enabled: r.enabled ?? true, conditions: r.conditions.map(toCondition) });
const toRule = (r: Row): Rule => ({
  id: r.id,
  name: r.name,
  enabled: r.enabled,
  conditions: r.conditions.map((c) => {
    const fuzzy = c.field === "name" && c.fuzzy;
    const n = Number(c.threshold.replace(",", "."));
    return { field: c.field, fuzzy, threshold: fuzzy && c.threshold.trim() !== "" && Number.isFinite(n) ? n : null };
  }),
});

/** `rules[2].conditions[0].threshold`, `rules[1].name` → rule 2 / condition 0 / `threshold`, rule 1 / `name`. */
function rowErrorFrom(e: unknown, t: TFunction): RowError {
  const message = errorMessage(e, t, true);
  const field = e instanceof ApiError ? (e.field ?? "") : "";
  const m = /^(?:rules)?\[(\d+)\](?:\.conditions\[(\d+)\])?\.?(\w*)/.exec(field);
  return m
    ? { row: Number(m[1]), condition: m[2] === undefined ? null : Number(m[2]), field: m[3] || (m[2] === undefined ? "" : "field"), message }
    : { row: null, condition: null, field: "", message: field ? `${message} (${field})` : message };
}

export function DuplicateRules() {
  const rules = useQuery({ queryKey: ["duplicate-rules"], queryFn: () => unwrap(api.GET("/api/v1/duplicate-rules")) });
  return (
    <div className="admin-screen">
      <LoadState loading={rules.isLoading} error={rules.error} />
      {rules.data && <RulesForm rules={rules.data} />}
    </div>
  );
}

function RulesForm({ rules }: { rules: Rule[] }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const saved = useFlash();
  const [rows, setRows] = useState<Row[]>(() => rules.map(toRow));
  const [error, setError] = useState<RowError | null>(null);

  const edit = (rs: Row[]) => {
    setRows(rs);
    setError(null);
    saved.hide();
  };
  const patch = (i: number, p: Partial<Row>) => edit(rows.map((r, j) => (j === i ? { ...r, ...p } : r)));
  const patchCond = (i: number, k: number, p: Partial<Condition>) => patch(i, { conditions: rows[i].conditions.map((c, j) => (j === k ? { ...c, ...p } : c)) });
  const move = (i: number, by: number) => {
    const next = [...rows];
    [next[i], next[i + by]] = [next[i + by], next[i]];
    edit(next);
  };

  const save = useMutation({
    mutationFn: () => unwrap(api.PUT("/api/v1/duplicate-rules", { body: rows.map(toRule) })),
    onMutate: () => {
      setError(null);
      saved.hide();
    },
    onSuccess: (list) => {
      qc.setQueryData(["duplicate-rules"], list);
      setRows(list.map(toRow));
      void qc.invalidateQueries({ queryKey: ["duplicates"] });
      saved.show();
    },
    onError: (e) => setError(rowErrorFrom(e, t)),
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    save.mutate();
  };

  const errorIn = (i: number) => (error && error.row === i ? error : null);
  const errorLine = (i: number, cond: number | null) => {
    const err = errorIn(i);
    if (!err || err.condition !== cond) return null;
    return (
      <span className="field-error" data-testid="duplicate-rule-error" data-field={err.field}>
        {err.message}
      </span>
    );
  };

  return (
    <form className="admin-screen duplicate-rules" onSubmit={submit} noValidate aria-label={t("admin.nav.duplicate-rules")} data-testid="duplicate-rules-form">
      <p className="muted">{t("admin.duplicateRules.intro")}</p>
      {rows.length === 0 && <p className="muted">{t("admin.duplicateRules.empty")}</p>}
      {rows.length > 0 && (
        <table className="grid" data-testid="duplicate-rules-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.duplicateRules.name")}</th>
              <th scope="col">{t("admin.duplicateRules.enabled")}</th>
              <th scope="col">{t("admin.duplicateRules.conditions")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r, i) => {
              const n = t("admin.duplicateRules.row", { n: i + 1 });
              const err = errorIn(i);
              return (
                <tr key={r.key} data-testid="duplicate-rule-row" data-rule={r.id} className={err ? "invalid" : undefined}>
                  <td>
                    <input
                      value={r.name}
                      maxLength={100}
                      onChange={(e) => patch(i, { name: e.target.value })}
                      aria-label={`${n}: ${t("admin.duplicateRules.name")}`}
                      aria-invalid={err && err.condition === null ? true : undefined}
                      data-testid="duplicate-rule-name"
                    />
                    {errorLine(i, null)}
                  </td>
                  <td>
                    <label className="check">
                      <input type="checkbox" checked={r.enabled} onChange={(e) => patch(i, { enabled: e.target.checked })} data-testid="duplicate-rule-enabled" />
                      <span className="sr-only">{`${n}: ${t("admin.duplicateRules.enabled")}`}</span>
                    </label>
                  </td>
                  <td>
                    <div className="conditions">
                      {r.conditions.map((c, k) => {
                        const cn = `${n}, ${t("admin.duplicateRules.condition", { n: k + 1 })}`;
                        const bad = err && err.condition === k ? true : undefined;
                        return (
                          <div key={c.key} className="condition" data-testid="duplicate-condition">
                            <select
                              value={c.field}
                              onChange={(e) => patchCond(i, k, { field: e.target.value as MatchField })}
                              aria-label={`${cn}: ${t("admin.duplicateRules.field")}`}
                              aria-invalid={bad && err?.field === "field" ? true : undefined}
                              data-testid="duplicate-condition-field"
                            >
                              {MATCH_FIELDS.map((f) => (
                                <option key={f} value={f}>
                                  {t(`admin.duplicateRules.fields.${f}`)}
                                </option>
                              ))}
                            </select>
                            {c.field === "name" && (
                              <label className="check">
                                <input type="checkbox" checked={c.fuzzy} onChange={(e) => patchCond(i, k, { fuzzy: e.target.checked })} data-testid="duplicate-condition-fuzzy" />
                                {t("admin.duplicateRules.fuzzy")}
                              </label>
                            )}
                            {c.field === "name" && c.fuzzy && (
                              <label className="check">
                                {t("admin.duplicateRules.threshold")}
                                <input
                                  type="number"
                                  min={0.5}
                                  max={1}
                                  step={0.01}
                                  value={c.threshold}
                                  placeholder={String(DEFAULT_THRESHOLD)}
                                  onChange={(e) => patchCond(i, k, { threshold: e.target.value })}
                                  aria-invalid={bad && err?.field === "threshold" ? true : undefined}
                                  data-testid="duplicate-condition-threshold"
                                />
                              </label>
                            )}
                            <button
                              type="button"
                              className="link"
                              onClick={() => patch(i, { conditions: r.conditions.filter((_, j) => j !== k) })}
                              aria-label={`${cn}: ${t("admin.duplicateRules.removeCondition")}`}
                              title={t("admin.duplicateRules.removeCondition")}
                              data-testid="duplicate-condition-remove"
                            >
                              ×
                            </button>
                            {errorLine(i, k)}
                          </div>
                        );
                      })}
                      <div>
                        <button
                          type="button"
                          onClick={() => patch(i, { conditions: [...r.conditions, { key: nextKey++, field: "phone", fuzzy: false, threshold: "" }] })}
                          data-testid="duplicate-condition-add"
                        >
                          {t("admin.duplicateRules.addCondition")}
                        </button>
                      </div>
                    </div>
                  </td>
                  <RowOrderActions
                    index={i}
                    count={rows.length}
                    label={n}
                    texts={{ up: t("admin.duplicateRules.up"), down: t("admin.duplicateRules.down"), remove: t("admin.duplicateRules.remove") }}
                    testId="duplicate-rule"
                    onMove={(d) => move(i, d)}
                    onRemove={() => edit(rows.filter((_, j) => j !== i))}
                  />
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <div className="toolbar">
        <button
          type="button"
          onClick={() => edit([...rows, { key: nextKey++, id: "", name: "", enabled: true, conditions: [{ key: nextKey++, field: "phone", fuzzy: false, threshold: "" }] }])}
          data-testid="duplicate-rule-add"
        >
          {t("admin.duplicateRules.add")}
        </button>
      </div>
      {error && error.row === null && (
        <p className="error" role="alert" data-testid="form-error">
          {error.message}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={save.isPending} data-testid="duplicate-rules-save">
          {save.isPending ? t("admin.common.saving") : t("admin.common.save")}
        </button>
        <span role="status" className="saved">
          {saved.on && <span data-testid="saved">✓ {t("admin.common.saved")}</span>}
        </span>
      </div>
    </form>
  );
}

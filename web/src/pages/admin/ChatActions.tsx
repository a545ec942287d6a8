// Chat settings: the entries of the chat Actions menu (S16, S17) — caption, a process or a
// plugin action, the queues whose chats show it, enabled — in menu order. The server checks
// the whole menu on Save; a problem names its entry (`entries[2].target`).
import { useMemo, useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import type { TFunction } from "i18next";
import { api, ApiError, unwrap, type S } from "../../api/client";
import { loc } from "../../components/SchemaForm";
import { errorMessage, GENERAL, LoadState, useFlash, RowOrderActions } from "./common";
import { usePlugins } from "./Plugins";
import { useQueues } from "./Queues";

type Entry = S["ChatActionSetting"];

/** An entry being edited; `key` tells rows apart while they move. */
interface Row {
  key: number;
  id: string;
  caption: string;
  kind: string;
  target: string;
  queues: string[];
  enabled: boolean;
}

/** A problem the server found, placed at its row and field. */
interface RowError {
  row: number | null;
  field: string;
  message: string;
}

/** A manifest's chat action as `GET /plugins` lists it. */
interface ManifestAction {
  id: string;
  title?: unknown;
  placement?: string[];
}

let nextKey = 1;
const toRow = (e: Entry): Row => ({
  key: nextKey++,
  id: e.id ?? "",
  caption: e.caption,
  kind: e.kind,
  target: e.target,
  queues: e.queues ?? [],
  enabled: e.enabled ?? true,
});
const toEntry = (r: Row): Entry => ({ id: r.id, caption: r.caption, kind: r.kind, target: r.target, queues: r.queues, enabled: r.enabled });

/** `entries[2].target`, `entries[0].queues[1]` → row 2 / `target`, row 0 / `queues`. */
function rowErrorFrom(e: unknown, t: TFunction): RowError {
  const message = errorMessage(e, t, true);
  const field = e instanceof ApiError ? (e.field ?? "") : "";
  const m = /^entries\[(\d+)\]\.(\w+)/.exec(field);
  return m ? { row: Number(m[1]), field: m[2], message } : { row: null, field: GENERAL, message: field ? `${message} (${field})` : message };
}

export function ChatActions() {
  const settings = useQuery({ queryKey: ["chat-action-settings"], queryFn: () => unwrap(api.GET("/api/v1/settings/chat-actions")) });
  return (
    <div className="admin-screen">
      <LoadState loading={settings.isLoading} error={settings.error} />
      {settings.data && <MenuForm entries={settings.data} />}
    </div>
  );
}

function MenuForm({ entries }: { entries: Entry[] }) {
  const { t, i18n } = useTranslation();
  const qc = useQueryClient();
  const saved = useFlash();
  const [rows, setRows] = useState<Row[]>(() => entries.map(toRow));
  const [error, setError] = useState<RowError | null>(null);
  const processes = useQuery({ queryKey: ["processes"], queryFn: () => unwrap(api.GET("/api/v1/processes")) });
  const plugins = usePlugins();
  const queues = useQueues();

  // What an entry can run: the deployed processes (by key) and the plugins' chat actions.
  const targets = useMemo(() => {
    const proc = new Map<string, string>();
    for (const d of [...(processes.data ?? [])].sort((a, b) => a.version - b.version)) proc.set(d.key, d.name ? `${d.name} (${d.key})` : d.key);
    const plug: [string, string][] = [];
    for (const p of plugins.data ?? []) {
      if (p.kind !== "action") continue;
      const actions = (Array.isArray(p.actions) ? p.actions : []) as ManifestAction[];
      for (const a of actions) {
        if (a.placement && a.placement.length > 0 && !a.placement.includes("chat")) continue;
        plug.push([`${p.id}/${a.id}`, `${loc(p.name, i18n.language) || p.id} — ${loc(a.title, i18n.language) || a.id}`]);
      }
    }
    return { process: [...proc.entries()].sort(([a], [b]) => a.localeCompare(b)), plugin: plug };
  }, [processes.data, plugins.data, i18n.language]);

  const edit = (rs: Row[]) => {
    setRows(rs);
    setError(null);
    saved.hide();
  };
  const patch = (i: number, p: Partial<Row>) => edit(rows.map((r, j) => (j === i ? { ...r, ...p } : r)));
  const move = (i: number, by: number) => {
    const next = [...rows];
    [next[i], next[i + by]] = [next[i + by], next[i]];
    edit(next);
  };

  const save = useMutation({
    mutationFn: () => unwrap(api.PUT("/api/v1/settings/chat-actions", { body: rows.map(toEntry) })),
    onMutate: () => {
      setError(null);
      saved.hide();
    },
    onSuccess: (list) => {
      qc.setQueryData(["chat-action-settings"], list);
      setRows(list.map(toRow));
      void qc.invalidateQueries({ queryKey: ["chat-actions"] });
      saved.show();
    },
    onError: (e) => setError(rowErrorFrom(e, t)),
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    save.mutate();
  };

  const errorAt = (i: number, field: string) =>
    error && error.row === i && error.field === field ? (
      <span className="field-error" data-testid="chat-action-error" data-field={field}>
        {error.message}
      </span>
    ) : null;
  const invalid = (i: number, field: string) => (error && error.row === i && error.field === field ? true : undefined);
  // An error about a field without its own control (e.g. `id`) shows under the caption.
  const elsewhere = (i: number) => (error && error.row === i && !["caption", "kind", "target", "queues"].includes(error.field) ? errorAt(i, error.field) : null);

  return (
    <form className="admin-screen" onSubmit={submit} noValidate aria-label={t("admin.nav.chat-actions")} data-testid="chat-actions-form">
      <p className="muted">{t("admin.chatActions.intro")}</p>
      {rows.length === 0 && <p className="muted">{t("admin.chatActions.empty")}</p>}
      {rows.length > 0 && (
        <table className="grid chat-actions" data-testid="chat-actions-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.chatActions.caption")}</th>
              <th scope="col">{t("admin.chatActions.kind")}</th>
              <th scope="col">{t("admin.chatActions.target")}</th>
              <th scope="col">{t("admin.chatActions.queues")}</th>
              <th scope="col">{t("admin.chatActions.enabled")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r, i) => {
              const n = t("admin.chatActions.row", { n: i + 1 });
              const options = r.kind === "process" ? targets.process : targets.plugin;
              const known = options.some(([v]) => v === r.target);
              const chosen = queues.data?.filter((q) => r.queues.includes(q.id)).map((q) => q.name) ?? [];
              return (
                <tr key={r.key} data-testid="chat-action-row" data-kind={r.kind} data-target={r.target} className={error?.row === i ? "invalid" : undefined}>
                  <td>
                    <input
                      value={r.caption}
                      maxLength={100}
                      onChange={(e) => patch(i, { caption: e.target.value })}
                      aria-label={`${n}: ${t("admin.chatActions.caption")}`}
                      aria-invalid={invalid(i, "caption")}
                      data-testid="chat-action-caption"
                    />
                    {errorAt(i, "caption")}
                    {elsewhere(i)}
                  </td>
                  <td>
                    <select
                      value={r.kind}
                      onChange={(e) => patch(i, { kind: e.target.value, target: "" })}
                      aria-label={`${n}: ${t("admin.chatActions.kind")}`}
                      aria-invalid={invalid(i, "kind")}
                      data-testid="chat-action-kind"
                    >
                      <option value="process">{t("admin.chatActions.kinds.process")}</option>
                      <option value="plugin">{t("admin.chatActions.kinds.plugin")}</option>
                    </select>
                    {errorAt(i, "kind")}
                  </td>
                  <td>
                    <select
                      value={r.target}
                      onChange={(e) => patch(i, { target: e.target.value })}
                      aria-label={`${n}: ${t("admin.chatActions.target")}`}
                      aria-invalid={invalid(i, "target")}
                      data-testid="chat-action-target"
                    >
                      <option value="" disabled>
                        {t("admin.chatActions.choose")}
                      </option>
                      {!known && r.target && <option value={r.target}>{t("admin.chatActions.notAvailable", { target: r.target })}</option>}
                      {options.map(([value, label]) => (
                        <option key={value} value={value}>
                          {label}
                        </option>
                      ))}
                    </select>
                    {errorAt(i, "target")}
                  </td>
                  <td>
                    <details className="queue-pick" data-testid="chat-action-queues">
                      <summary>{chosen.length > 0 ? chosen.join(", ") : t("admin.chatActions.allQueues")}</summary>
                      <fieldset aria-label={`${n}: ${t("admin.chatActions.queues")}`} aria-invalid={invalid(i, "queues")}>
                        {(queues.data ?? []).map((q) => (
                          <label key={q.id} className="check">
                            <input
                              type="checkbox"
                              checked={r.queues.includes(q.id)}
                              onChange={(e) => patch(i, { queues: e.target.checked ? [...r.queues, q.id] : r.queues.filter((x) => x !== q.id) })}
                              data-testid="chat-action-queue"
                            />
                            {q.name}
                          </label>
                        ))}
                      </fieldset>
                    </details>
                    {errorAt(i, "queues")}
                  </td>
                  <td>
                    <label className="check">
                      <input type="checkbox" checked={r.enabled} onChange={(e) => patch(i, { enabled: e.target.checked })} data-testid="chat-action-enabled" />
                      <span className="sr-only">{`${n}: ${t("admin.chatActions.enabled")}`}</span>
                    </label>
                  </td>
                  <RowOrderActions
                    index={i}
                    count={rows.length}
                    label={n}
                    texts={{ up: t("admin.chatActions.up"), down: t("admin.chatActions.down"), remove: t("admin.chatActions.remove") }}
                    testId="chat-action"
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
        <button type="button" onClick={() => edit([...rows, { key: nextKey++, id: "", caption: "", kind: "process", target: "", queues: [], enabled: true }])} data-testid="chat-action-add">
          {t("admin.chatActions.add")}
        </button>
      </div>
      {error && error.row === null && (
        <p className="error" role="alert" data-testid="form-error">
          {error.message}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={save.isPending} data-testid="chat-actions-save">
          {save.isPending ? t("admin.common.saving") : t("admin.common.save")}
        </button>
        <span role="status" className="saved">
          {saved.on && <span data-testid="saved">✓ {t("admin.common.saved")}</span>}
        </span>
      </div>
    </form>
  );
}

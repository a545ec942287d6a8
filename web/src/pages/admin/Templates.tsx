import { useRef, useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, unwrap, type S } from "../../api/client";
import { compact, Confirm, errorMessage, Field, FormFooter, LoadState, upsert, useChecks, useFlash, useFocusFirst, useForm } from "./common";
import { useQueues } from "./Queues";

/** Macros offered below the text (S12), with the key of their description. */
const MACROS = [
  ["{{contact.name}}", "contactName"],
  ["{{contact.first_name}}", "contactFirstName"],
  ["{{operator.name}}", "operatorName"],
  ["{{operator.first_name}}", "operatorFirstName"],
  ["{{channel.name}}", "channelName"],
  ["{{queue.name}}", "queueName"],
  ['{{date "[day].[month].[year]"}}', "date"],
  ["{{first_name contact.name}}", "firstName"],
  ['{{default contact.email "—"}}', "default"],
] as const;

export function Templates() {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const [q, setQ] = useState("");
  const templates = useQuery({
    queryKey: ["admin-templates", q],
    queryFn: () => unwrap(api.GET("/api/v1/templates", { params: { query: { q } } })),
    placeholderData: (prev) => prev,
  });
  const queues = useQueues();
  const [sel, setSel] = useState<S["Template"] | "new" | null>(null);
  const [fresh, setFresh] = useState(false);
  const [listError, setListError] = useState<string | null>(null);
  const saved = useFlash();
  const open = (s: S["Template"] | "new" | null) => {
    saved.hide();
    setFresh(true);
    setSel(s);
  };
  const queueName = (id?: string | null) => (id ? (queues.data?.find((x) => x.id === id)?.name ?? "—") : t("admin.templates.allQueues"));
  const refresh = () => {
    void qc.invalidateQueries({ queryKey: ["admin-templates"] });
    // The composer's `//` picker.
    void qc.invalidateQueries({ queryKey: ["templates"] });
  };

  const remove = useMutation({
    mutationFn: (tpl: S["Template"]) => unwrap(api.DELETE("/api/v1/templates/{id}", { params: { path: { id: tpl.id } } })),
    onMutate: () => setListError(null),
    onSuccess: (_r, tpl) => {
      if (sel !== "new" && sel?.id === tpl.id) setSel(null);
      refresh();
    },
    onError: (e, tpl) => setListError(`${tpl.name}: ${errorMessage(e, t)}`),
  });

  const selId = sel === "new" ? "new" : sel?.id;
  return (
    <div className="admin-screen">
      <div className="toolbar">
        <button type="button" onClick={() => open("new")} data-testid="add-template">
          {t("admin.templates.add")}
        </button>
        <label className="search">
          <span className="sr-only">{t("admin.templates.search")}</span>
          <input type="search" placeholder={t("admin.templates.search")} value={q} onChange={(e) => setQ(e.target.value)} data-testid="template-search" />
        </label>
      </div>
      {sel && (
        <TemplateForm
          key={selId}
          template={sel === "new" ? undefined : sel}
          queues={queues.data ?? []}
          focus={fresh}
          saved={saved.on}
          onSaved={(tpl) => {
            qc.setQueryData<S["Template"][]>(["admin-templates", q], (old) => upsert(old, tpl));
            refresh();
            setFresh(false);
            setSel(tpl);
            saved.show();
          }}
          onClose={() => open(null)}
        />
      )}
      {listError && (
        <p className="error" role="alert" data-testid="list-error">
          {listError}
        </p>
      )}
      <LoadState loading={templates.isLoading} error={templates.error} />
      {templates.data && templates.data.length === 0 && <p className="muted">{t("admin.common.empty")}</p>}
      {templates.data && templates.data.length > 0 && (
        <table className="grid" data-testid="templates-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.templates.name")}</th>
              <th scope="col">{t("admin.templates.body")}</th>
              <th scope="col">{t("admin.templates.queue")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {templates.data.map((tpl) => (
              <tr key={tpl.id} data-testid="template-row" className={tpl.id === selId ? "selected" : undefined}>
                <td>{tpl.name}</td>
                <td className="tpl-body">{tpl.body}</td>
                <td>{queueName(tpl.queue_id)}</td>
                <td className="row-actions">
                  <button type="button" onClick={() => open(tpl)} aria-label={`${t("admin.common.edit")}: ${tpl.name}`} data-testid="edit">
                    {t("admin.common.edit")}
                  </button>
                  <Confirm
                    label={t("admin.common.delete")}
                    question={t("admin.common.deleteConfirm", { name: tpl.name })}
                    onConfirm={() => remove.mutate(tpl)}
                    disabled={remove.isPending}
                    testId="delete"
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function TemplateForm({
  template,
  queues,
  focus,
  saved,
  onSaved,
  onClose,
}: {
  template?: S["Template"];
  queues: S["Queue"][];
  focus: boolean;
  saved: boolean;
  onSaved: (tpl: S["Template"]) => void;
  onClose: () => void;
}) {
  const { t } = useTranslation();
  const check = useChecks();
  const body = useRef<HTMLTextAreaElement>(null);
  const f = useForm(() => ({
    name: template?.name ?? "",
    body: template?.body ?? "",
    queue_id: template?.queue_id ?? "",
  }));
  const v = f.values;
  useFocusFirst(f.ref, focus);

  const save = useMutation({
    mutationFn: () => {
      const input: S["TemplateInput"] = { name: v.name.trim(), body: v.body, queue_id: v.queue_id || null };
      return template
        ? unwrap(api.PUT("/api/v1/templates/{id}", { params: { path: { id: template.id } }, body: input }))
        : unwrap(api.POST("/api/v1/templates", { body: input }));
    },
    onSuccess: onSaved,
    onError: f.fail,
  });

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const errs = compact({
      name: check.length(v.name, 1, 200),
      body: check.required(v.body),
    });
    f.setErrors(errs);
    if (Object.keys(errs).length === 0) save.mutate();
  };

  /** Inserts a macro at the caret of the text. */
  const insert = (macro: string) => {
    const el = body.current;
    const start = el?.selectionStart ?? v.body.length;
    const end = el?.selectionEnd ?? v.body.length;
    f.set("body", v.body.slice(0, start) + macro + v.body.slice(end));
    requestAnimationFrame(() => {
      el?.focus();
      el?.setSelectionRange(start + macro.length, start + macro.length);
    });
  };

  const title = template ? t("admin.templates.editTitle", { name: template.name }) : t("admin.templates.newTitle");
  return (
    <form ref={f.ref} className="form wide" onSubmit={submit} noValidate aria-label={title} data-testid="template-form">
      <h3>{title}</h3>
      <Field form={f} name="name" label={t("admin.templates.name")}>
        <input value={v.name} onChange={(e) => f.set("name", e.target.value)} autoComplete="off" required {...f.aria("name")} />
      </Field>
      <Field
        form={f}
        name="body"
        label={t("admin.templates.body")}
        hint={
          <span className="macros">
            <span>{t("admin.templates.macros")}</span>
            <span className="macro-list">
              {MACROS.map(([macro, key]) => (
                <span key={macro} className="macro">
                  <button type="button" className="link" onClick={() => insert(macro)}>
                    <code>{macro}</code>
                  </button>{" "}
                  — {t(`admin.templates.macro.${key}`)}
                </span>
              ))}
            </span>
          </span>
        }
      >
        <textarea ref={body} rows={6} value={v.body} onChange={(e) => f.set("body", e.target.value)} required {...f.aria("body")} />
      </Field>
      <Field form={f} name="queue_id" label={t("admin.templates.queue")}>
        <select value={v.queue_id} onChange={(e) => f.set("queue_id", e.target.value)} {...f.aria("queue_id")}>
          <option value="">{t("admin.templates.allQueues")}</option>
          {queues.map((q) => (
            <option key={q.id} value={q.id}>
              {q.name}
            </option>
          ))}
        </select>
      </Field>
      <FormFooter form={f} busy={save.isPending} saved={saved} onClose={onClose} />
    </form>
  );
}

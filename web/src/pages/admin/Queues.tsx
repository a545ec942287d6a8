import { useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, unwrap, type S } from "../../api/client";
import { compact, Confirm, errorMessage, Field, FormFooter, LoadState, optInt, upsert, useChecks, useFlash, useFocusFirst, useForm, useUsers } from "./common";

const RULES: S["RoutingRule"][] = ["all_operators", "available_operator"];

export function useQueues() {
  return useQuery({ queryKey: ["queues"], queryFn: () => unwrap(api.GET("/api/v1/queues")) });
}

export function Queues() {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const queues = useQueues();
  const [sel, setSel] = useState<string | null>(null);
  const [fresh, setFresh] = useState(false);
  const [listError, setListError] = useState<string | null>(null);
  const saved = useFlash();
  const current = sel && sel !== "new" ? queues.data?.find((q) => q.id === sel) : undefined;
  const open = (id: string) => {
    saved.hide();
    setFresh(true);
    setSel(id);
  };

  const remove = useMutation({
    mutationFn: (q: S["Queue"]) => unwrap(api.DELETE("/api/v1/queues/{id}", { params: { path: { id: q.id } } })),
    onMutate: () => setListError(null),
    onSuccess: (_r, q) => {
      if (sel === q.id) setSel(null);
      qc.setQueryData<S["Queue"][]>(["queues"], (old) => old?.filter((x) => x.id !== q.id));
      void qc.invalidateQueries({ queryKey: ["queues"] });
    },
    onError: (e, q) => setListError(`${q.name}: ${errorMessage(e, t)}`),
  });

  return (
    <div className="admin-screen">
      <div className="toolbar">
        <button type="button" onClick={() => open("new")} data-testid="add-queue">
          {t("admin.queues.add")}
        </button>
      </div>
      {(sel === "new" || current) && (
        <QueueForm
          key={sel}
          queue={current}
          focus={fresh}
          saved={saved.on}
          onSaved={(q) => {
            setFresh(false);
            setSel(q.id);
            saved.show();
          }}
          onClose={() => setSel(null)}
        />
      )}
      {listError && (
        <p className="error" role="alert" data-testid="list-error">
          {listError}
        </p>
      )}
      <LoadState loading={queues.isLoading} error={queues.error} />
      {queues.data && (
        <table className="grid" data-testid="queues-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.queues.name")}</th>
              <th scope="col">{t("admin.queues.routingRule")}</th>
              <th scope="col">{t("admin.queues.acceptTimeoutShort")}</th>
              <th scope="col">{t("admin.queues.completionTimeoutShort")}</th>
              <th scope="col">{t("admin.queues.memberCount")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {queues.data.map((q) => (
              <tr key={q.id} data-testid="queue-row" className={q.id === sel ? "selected" : undefined}>
                <td>{q.name}</td>
                <td>{t(`admin.queues.rules.${q.routing_rule}`)}</td>
                <td>{t("admin.queues.seconds", { n: q.accept_timeout_secs })}</td>
                <td>{q.completion_timeout_mins != null ? t("admin.queues.minutes", { n: q.completion_timeout_mins }) : t("admin.queues.never")}</td>
                <td>{q.members.length}</td>
                <td className="row-actions">
                  <button type="button" onClick={() => open(q.id)} aria-label={`${t("admin.common.edit")}: ${q.name}`} data-testid="edit">
                    {t("admin.common.edit")}
                  </button>
                  <Confirm
                    label={t("admin.common.delete")}
                    question={t("admin.common.deleteConfirm", { name: q.name })}
                    onConfirm={() => remove.mutate(q)}
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

function QueueForm({
  queue,
  focus,
  saved,
  onSaved,
  onClose,
}: {
  queue?: S["Queue"];
  focus: boolean;
  saved: boolean;
  onSaved: (q: S["Queue"]) => void;
  onClose: () => void;
}) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const check = useChecks();
  const users = useUsers();
  const f = useForm(() => ({
    name: queue?.name ?? "",
    routing_rule: (queue?.routing_rule ?? "all_operators") as S["RoutingRule"],
    accept_timeout_secs: String(queue?.accept_timeout_secs ?? 300),
    completion_timeout_mins: queue ? (queue.completion_timeout_mins != null ? String(queue.completion_timeout_mins) : "") : "60",
    members: queue?.members ?? ([] as string[]),
  }));
  const v = f.values;
  useFocusFirst(f.ref, focus);

  const save = useMutation({
    mutationFn: () => {
      const body: S["QueueInput"] = {
        name: v.name.trim(),
        routing_rule: v.routing_rule,
        accept_timeout_secs: Number(v.accept_timeout_secs),
        completion_timeout_mins: optInt(v.completion_timeout_mins),
        members: v.members,
      };
      return queue
        ? unwrap(api.PUT("/api/v1/queues/{id}", { params: { path: { id: queue.id } }, body }))
        : unwrap(api.POST("/api/v1/queues", { body }));
    },
    onSuccess: (q) => {
      qc.setQueryData<S["Queue"][]>(["queues"], (old) => upsert(old, q));
      void qc.invalidateQueries({ queryKey: ["queues"] });
      onSaved(q);
    },
    onError: f.fail,
  });

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const errs = compact({
      name: check.length(v.name, 1, 200),
      accept_timeout_secs: check.int(v.accept_timeout_secs, 1, 86_400),
      completion_timeout_mins: v.completion_timeout_mins.trim() ? check.int(v.completion_timeout_mins, 1, 43_200) : undefined,
    });
    f.setErrors(errs);
    if (Object.keys(errs).length === 0) save.mutate();
  };

  const toggle = (id: string, on: boolean) => f.set("members", on ? [...v.members, id] : v.members.filter((m) => m !== id));
  // Disabled users stay listed only while they are members, so they can be removed.
  const candidates = (users.data ?? []).filter((u) => !u.disabled || v.members.includes(u.id));
  const title = queue ? t("admin.queues.editTitle", { name: queue.name }) : t("admin.queues.newTitle");

  return (
    <form ref={f.ref} className="form" onSubmit={submit} noValidate aria-label={title} data-testid="queue-form">
      <h3>{title}</h3>
      <Field form={f} name="name" label={t("admin.queues.name")}>
        <input value={v.name} onChange={(e) => f.set("name", e.target.value)} autoComplete="off" required {...f.aria("name")} />
      </Field>
      <Field form={f} name="routing_rule" label={t("admin.queues.routingRule")} hint={t(`admin.queues.rulesHint.${v.routing_rule}`)}>
        <select value={v.routing_rule} onChange={(e) => f.set("routing_rule", e.target.value as S["RoutingRule"])} {...f.aria("routing_rule", true)}>
          {RULES.map((r) => (
            <option key={r} value={r}>
              {t(`admin.queues.rules.${r}`)}
            </option>
          ))}
        </select>
      </Field>
      <Field form={f} name="accept_timeout_secs" label={t("admin.queues.acceptTimeout")}>
        <input
          type="number"
          inputMode="numeric"
          min={1}
          max={86_400}
          value={v.accept_timeout_secs}
          onChange={(e) => f.set("accept_timeout_secs", e.target.value)}
          required
          {...f.aria("accept_timeout_secs")}
        />
      </Field>
      <Field form={f} name="completion_timeout_mins" label={t("admin.queues.completionTimeout")} hint={t("admin.queues.completionHint")}>
        <input
          type="number"
          inputMode="numeric"
          min={1}
          max={43_200}
          value={v.completion_timeout_mins}
          onChange={(e) => f.set("completion_timeout_mins", e.target.value)}
          {...f.aria("completion_timeout_mins", true)}
        />
      </Field>
      <fieldset className={f.errors.members ? "members invalid" : "members"} data-testid="queue-members" tabIndex={f.errors.members ? -1 : undefined} {...f.aria("members")}>
        <legend>{t("admin.queues.members")}</legend>
        <LoadState loading={users.isLoading} error={users.error} />
        {users.data && candidates.length === 0 && <p className="muted">{t("admin.queues.noUsers")}</p>}
        {candidates.map((u) => (
          <label key={u.id} className="check">
            <input type="checkbox" checked={v.members.includes(u.id)} onChange={(e) => toggle(u.id, e.target.checked)} />
            {u.display_name}
            <span className="muted">
              ({u.username}, {t(`admin.users.roles.${u.role}`)})
            </span>
          </label>
        ))}
        {f.errors.members && (
          <span className="field-error" id={f.errId("members")} data-testid="error-members">
            {f.errors.members}
          </span>
        )}
      </fieldset>
      <FormFooter form={f} busy={save.isPending} saved={saved} onClose={onClose} />
    </form>
  );
}

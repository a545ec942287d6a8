// The task list: user tasks of running processes that wait for this user (assigned to them, or
// to a group they belong to). A task's form is drawn from its JSON Schema; completing it lets
// the process continue.
import { useState } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { Link } from "react-router-dom";
import { api, errorText, unwrap, type S } from "../api/client";
import { asSchema, GENERAL_ERROR, SchemaForm, schemaErrorsFrom, type JsonObject, type SchemaErrors } from "../components/SchemaForm";
import { useOpenTasks } from "./Desk";

type Task = S["UserTask"];

export function Tasks({ me }: { me: S["User"] }) {
  const { t, i18n } = useTranslation();
  const tasks = useOpenTasks();
  const [sel, setSel] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const list = tasks.data ?? [];
  const current = list.find((x) => x.id === sel);
  const name = (task: Task) => task.name || task.element || t("tasks.untitled");
  return (
    <section className="page" aria-labelledby="tasks-h" data-testid="tasks-page">
      <h2 id="tasks-h">{t("tasks.title")}</h2>
      {tasks.isError && <p className="error" role="alert">{errorText(t, tasks.error)}</p>}
      <p role="status" className="saved">
        {done && <span data-testid="task-done">✓ {done}</span>}
      </p>
      <div className="tasks">
        <div>
          {tasks.data && list.length === 0 && <p className="muted">{t("tasks.empty")}</p>}
          <ul className="task-list" data-testid="task-list">
            {list.map((task) => (
              <li key={task.id} className={task.id === sel ? "task-item selected" : "task-item"} data-testid="task-item" data-task={task.id}>
                <button type="button" className="task-open" aria-pressed={task.id === sel} onClick={() => setSel(task.id)} data-testid="task-open">
                  <strong data-testid="task-name">{name(task)}</strong>
                  <span className="muted small">
                    {t("tasks.process")}: {task.process_key}
                  </span>
                </button>
                <div className="task-meta small">
                  {task.chat_id && (
                    <Link to={`/chats/${task.chat_id}`} data-testid="task-chat-link">
                      {t("tasks.chat")}
                    </Link>
                  )}
                  {task.case_id && <Link to={`/cases/${task.case_id}`}>{t("tasks.case")}</Link>}
                  <span className="muted">{t("tasks.created", { at: new Date(task.created_at).toLocaleString(i18n.language) })}</span>
                </div>
              </li>
            ))}
          </ul>
        </div>
        <div>
          {current ? (
            <TaskCard
              key={current.id}
              task={current}
              me={me}
              title={name(current)}
              onDone={() => {
                setSel(null);
                setDone(t("tasks.completed", { name: name(current) }));
              }}
            />
          ) : (
            list.length > 0 && <p className="muted">{t("tasks.select")}</p>
          )}
        </div>
      </div>
    </section>
  );
}

function TaskCard({ task, me, title, onDone }: { task: Task; me: S["User"]; title: string; onDone: () => void }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const [errors, setErrors] = useState<SchemaErrors>({});
  const keys = Object.keys(asSchema(task.form)?.properties ?? {});
  const store = (fn: (old: Task[]) => Task[]) => {
    qc.setQueryData<Task[]>(["tasks", "open"], (old) => (old ? fn(old) : old));
    void qc.invalidateQueries({ queryKey: ["tasks"] });
  };
  const claim = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/tasks/{id}/claim", { params: { path: { id: task.id } } })),
    onMutate: () => setErrors({}),
    onSuccess: (claimed) => store((old) => old.map((x) => (x.id === claimed.id ? claimed : x))),
    onError: (e) => setErrors({ [GENERAL_ERROR]: errorText(t, e) }),
  });
  const complete = useMutation({
    mutationFn: (variables: JsonObject) =>
      unwrap(
        api.POST("/api/v1/tasks/{id}/complete", {
          params: { path: { id: task.id } },
          body: { variables: variables as S["CompleteTaskRequest"]["variables"] },
        }),
      ),
    onMutate: () => setErrors({}),
    onSuccess: () => {
      // The task leaves the list at once; the process continues on the server.
      store((old) => old.filter((x) => x.id !== task.id));
      if (task.instance_id) void qc.invalidateQueries({ queryKey: ["process-instance", task.instance_id] });
      if (task.chat_id) void qc.invalidateQueries({ queryKey: ["chat", task.chat_id] });
      onDone();
    },
    // A 422 names the field by its JSON pointer ("/outcome"): the error shows next to it.
    onError: (e) => setErrors(schemaErrorsFrom(e, keys, (x) => errorText(t, x))),
  });
  const mine = task.assignee === me.id || task.assignee === me.username;
  return (
    <div className="task-card" data-testid="task-detail">
      <SchemaForm
        schema={task.form}
        onSubmit={(v) => complete.mutate(v)}
        errors={errors}
        busy={complete.isPending}
        submitLabel={t("tasks.complete")}
        submitTestId="task-complete"
        testId="task-form"
        label={title}
        footer={
          !task.assignee && (
            <button type="button" onClick={() => claim.mutate()} disabled={claim.isPending} data-testid="task-claim">
              {t("tasks.claim")}
            </button>
          )
        }
      >
        <h3>{title}</h3>
        <p className="muted small">
          {t("tasks.process")}: {task.process_key} ·{" "}
          {mine ? t("tasks.assignedToYou") : task.assignee ? t("tasks.assigned") : t("tasks.unassigned")}
          {task.candidate_groups && ` · ${t("tasks.groups", { groups: task.candidate_groups })}`}
        </p>
      </SchemaForm>
    </div>
  );
}

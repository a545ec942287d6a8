// Processes: deploy a BPMN file (problems name the element), every version of every process,
// open incidents with Retry, instances with filters, and an instance's page: its diagram with
// the elements where it waits, variables, history, incidents, user tasks; cancel.
import { useMemo, useRef, useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { Link, Navigate, Route, Routes, useParams } from "react-router-dom";
import { api, ApiError, apiFetch, csrfHeader, unwrap, type S } from "../../api/client";
import { BpmnDiagram } from "../../components/BpmnDiagram";
import { Confirm, errorMessage, LoadState, useUsers } from "./common";

type Definition = S["Definition"];
type Instance = S["InstanceSummary"];

export function Processes() {
  return (
    <Routes>
      <Route index element={<ProcessesHome />} />
      <Route path="instances/:id" element={<InstancePage />} />
      <Route path="definitions/:id" element={<DefinitionPage />} />
      <Route path="*" element={<Navigate to="/admin/processes" replace />} />
    </Routes>
  );
}

function useDefinitions() {
  return useQuery({ queryKey: ["processes"], queryFn: () => unwrap(api.GET("/api/v1/processes")) });
}

/** Deploys BPMN XML as it is (the typed client would send it as JSON). */
async function deploy(xml: string): Promise<Definition[]> {
  const r = await apiFetch("/api/v1/processes", {
    method: "POST",
    body: xml,
    headers: { ...csrfHeader(), "content-type": "application/xml" },
    credentials: "same-origin",
  });
  const body = (await r.json().catch(() => ({}))) as Partial<S["ErrorBody"]>;
  if (!r.ok) throw new ApiError(r.status, body.code ?? "http_error", body.message ?? r.statusText, body.field ?? undefined);
  return body as unknown as Definition[];
}

/** A user's name by id (`deployed_by`, `started_by`); other values as they are. */
function useUserName() {
  const users = useUsers();
  return (id?: string | null) => (id ? (users.data?.find((u) => u.id === id)?.display_name ?? id) : "—");
}

function useWhen() {
  const { i18n } = useTranslation();
  return (v?: string | null) => (v ? new Date(v).toLocaleString(i18n.language) : "—");
}

function StatePill({ state, testId }: { state: string; testId?: string }) {
  const { t } = useTranslation();
  const cls = state === "active" ? "pill on" : state === "terminated" ? "pill bad" : "pill off";
  return (
    <span className={cls} data-testid={testId} data-state={state}>
      {["active", "completed", "terminated"].includes(state) ? t(`admin.processes.states.${state}`) : state}
    </span>
  );
}

const short = (id: string) => id.slice(0, 8);

function ProcessesHome() {
  const defs = useDefinitions();
  const keys = useMemo(() => [...new Set((defs.data ?? []).map((d) => d.key))].sort(), [defs.data]);
  return (
    <div className="admin-screen">
      <DeployForm />
      <Definitions defs={defs.data} loading={defs.isLoading} error={defs.error} />
      <Incidents />
      <Instances keys={keys} />
    </div>
  );
}

function DeployForm() {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const fileInput = useRef<HTMLInputElement>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const run = useMutation({
    mutationFn: async (file: File) => deploy(await file.text()),
    onMutate: () => {
      setError(null);
      setDone(null);
    },
    onSuccess: (list) => {
      const names = list.map((d) => `${d.key} v${d.version}${d.created ? "" : ` (${t("admin.processes.unchanged")})`}`);
      setDone(t("admin.processes.deployed", { list: names.join(", ") }));
      void qc.invalidateQueries({ queryKey: ["processes"] });
    },
    onError: (e) => {
      // The field names the element (`bpmn:Task_1`) unless the message does.
      const field = e instanceof ApiError && e.field && !e.message.includes(e.field.replace(/^bpmn:/, "")) ? ` (${e.field})` : "";
      setError(errorMessage(e, t) + field);
    },
    onSettled: () => {
      // The same file may be chosen again after fixing it.
      if (fileInput.current) fileInput.current.value = "";
    },
  });
  return (
    <form className="form wide" onSubmit={(e) => e.preventDefault()} aria-label={t("admin.processes.deployTitle")} data-testid="process-deploy-form">
      <h3>{t("admin.processes.deployTitle")}</h3>
      <div className="fld">
        <label>
          <span className="lbl">{t("admin.processes.file")}</span>
          <input
            ref={fileInput}
            type="file"
            accept=".bpmn,.xml,application/xml,text/xml"
            disabled={run.isPending}
            onChange={(e) => {
              const f = e.target.files?.[0];
              if (f) run.mutate(f);
            }}
            data-testid="process-upload"
          />
        </label>
        <small className="hint">{t("admin.processes.fileHint")}</small>
      </div>
      {error && (
        <p className="error" role="alert" data-testid="process-deploy-error">
          {error}
        </p>
      )}
      <span role="status" className="saved">
        {run.isPending && <span className="muted">{t("admin.processes.deploying")}</span>}
        {done && <span data-testid="process-deployed">✓ {done}</span>}
      </span>
    </form>
  );
}

/** Every process with its versions, newest first. */
function Definitions({ defs, loading, error }: { defs?: Definition[]; loading: boolean; error: unknown }) {
  const { t } = useTranslation();
  const userName = useUserName();
  const when = useWhen();
  const groups = useMemo(() => {
    const m = new Map<string, Definition[]>();
    for (const d of defs ?? []) m.set(d.key, [...(m.get(d.key) ?? []), d]);
    return [...m.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, list]) => ({ key, versions: list.sort((a, b) => b.version - a.version) }));
  }, [defs]);
  return (
    <section aria-labelledby="defs-h">
      <h3 id="defs-h">{t("admin.processes.definitions")}</h3>
      <LoadState loading={loading} error={error} />
      {defs && groups.length === 0 && <p className="muted">{t("admin.processes.noDefinitions")}</p>}
      {groups.length > 0 && (
        <table className="grid" data-testid="processes-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.processes.key")}</th>
              <th scope="col">{t("admin.processes.name")}</th>
              <th scope="col">{t("admin.processes.versions")}</th>
            </tr>
          </thead>
          <tbody>
            {groups.map(({ key, versions }) => (
              <tr key={key} data-testid="process-row" data-process={key}>
                <td>
                  <code>{key}</code>
                </td>
                <td>
                  {versions[0].name ?? key}
                  <div className="muted small">{t("admin.processes.deployedBy", { by: userName(versions[0].deployed_by) })}</div>
                </td>
                <td>
                  <span className="versions">
                    {versions.map((d) => (
                      <Link
                        key={d.id}
                        to={`/admin/processes/definitions/${encodeURIComponent(d.id)}`}
                        title={t("admin.processes.versionTitle", { n: d.version, at: when(d.deployed_at), by: userName(d.deployed_by) })}
                        data-testid="process-version"
                      >
                        {t("admin.processes.version", { n: d.version })}
                      </Link>
                    ))}
                  </span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function useRetry() {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: (i: S["Incident"]) => unwrap(api.POST("/api/v1/incidents/{id}/retry", { params: { path: { id: i.id } }, body: { retries: 1 } })),
    onSuccess: (_r, i) => {
      void qc.invalidateQueries({ queryKey: ["incidents"] });
      void qc.invalidateQueries({ queryKey: ["process-instances"] });
      void qc.invalidateQueries({ queryKey: ["process-instance", i.instance_id] });
    },
  });
}

/** Open incidents of all instances. */
function Incidents() {
  const { t } = useTranslation();
  const when = useWhen();
  const list = useQuery({ queryKey: ["incidents"], queryFn: () => unwrap(api.GET("/api/v1/incidents")), refetchInterval: 10_000 });
  const retry = useRetry();
  const open = (list.data ?? []).filter((i) => !i.resolved_at);
  return (
    <section aria-labelledby="incidents-h">
      <h3 id="incidents-h">{t("admin.processes.incidents")}</h3>
      <LoadState loading={list.isLoading} error={list.error} />
      {retry.error && (
        <p className="error" role="alert" data-testid="retry-error">
          {errorMessage(retry.error, t)}
        </p>
      )}
      {list.data && open.length === 0 && <p className="muted">{t("admin.processes.noIncidents")}</p>}
      {open.length > 0 && (
        <table className="grid" data-testid="incidents-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.processes.instance")}</th>
              <th scope="col">{t("admin.processes.element")}</th>
              <th scope="col">{t("admin.processes.message")}</th>
              <th scope="col">{t("admin.processes.at")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {open.map((i) => (
              <tr key={i.id} data-testid="incident-row" data-instance={i.instance_id}>
                <td>
                  <Link to={`/admin/processes/instances/${i.instance_id}`}>
                    <code>{short(i.instance_id)}</code>
                  </Link>
                </td>
                <td>
                  <code>{i.element}</code>
                </td>
                <td className="wrap">{i.message}</td>
                <td className="nowrap">{when(i.created_at)}</td>
                <td className="row-actions">
                  <button type="button" onClick={() => retry.mutate(i)} disabled={retry.isPending} data-testid="incident-retry">
                    {t("admin.processes.retry")}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Instances({ keys }: { keys: string[] }) {
  const { t } = useTranslation();
  const when = useWhen();
  const [f, setF] = useState({ state: "", process: "", incidents: false });
  const query = useMemo(
    () => ({ limit: 100, ...(f.state ? { state: f.state } : {}), ...(f.process ? { process: f.process } : {}), ...(f.incidents ? { incidents: true } : {}) }),
    [f],
  );
  const list = useQuery({
    queryKey: ["process-instances", query],
    queryFn: () => unwrap(api.GET("/api/v1/process-instances", { params: { query } })),
    refetchInterval: 10_000,
  });
  return (
    <section aria-labelledby="instances-h">
      <h3 id="instances-h">{t("admin.processes.instances")}</h3>
      <div className="toolbar">
        <label>
          {t("admin.processes.state")}{" "}
          <select value={f.state} onChange={(e) => setF({ ...f, state: e.target.value })} data-testid="instance-filter-state">
            <option value="">{t("admin.processes.any")}</option>
            {["active", "completed", "terminated"].map((s) => (
              <option key={s} value={s}>
                {t(`admin.processes.states.${s}`)}
              </option>
            ))}
          </select>
        </label>
        <label>
          {t("admin.processes.process")}{" "}
          <select value={f.process} onChange={(e) => setF({ ...f, process: e.target.value })} data-testid="instance-filter-process">
            <option value="">{t("admin.processes.any")}</option>
            {keys.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
        </label>
        <label className="check">
          <input type="checkbox" checked={f.incidents} onChange={(e) => setF({ ...f, incidents: e.target.checked })} data-testid="instance-filter-incidents" />{" "}
          {t("admin.processes.withIncidents")}
        </label>
      </div>
      <LoadState loading={list.isLoading} error={list.error} />
      {list.data && list.data.length === 0 && <p className="muted">{t("admin.processes.noInstances")}</p>}
      {list.data && list.data.length > 0 && (
        <table className="grid" data-testid="instances-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.processes.process")}</th>
              <th scope="col">{t("admin.processes.state")}</th>
              <th scope="col">{t("admin.processes.incidents")}</th>
              <th scope="col">{t("admin.processes.started")}</th>
              <th scope="col">{t("admin.processes.ended")}</th>
              <th scope="col">{t("admin.processes.links")}</th>
            </tr>
          </thead>
          <tbody>
            {list.data.map((i) => (
              <tr key={i.id} data-testid="instance-row" data-instance={i.id} data-process={i.process_key}>
                <td>
                  <Link to={`/admin/processes/instances/${i.id}`} data-testid="instance-link">
                    {i.process_key}
                  </Link>{" "}
                  <code className="muted small">{short(i.id)}</code>
                </td>
                <td>
                  <StatePill state={i.state} />
                </td>
                <td className={i.incidents > 0 ? "error" : "muted"}>{i.incidents}</td>
                <td className="nowrap">{when(i.started_at)}</td>
                <td className="nowrap">{when(i.ended_at)}</td>
                <td>
                  <InstanceLinks i={i} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function InstanceLinks({ i }: { i: Instance }) {
  const { t } = useTranslation();
  return (
    <span className="versions">
      {i.chat_id && <Link to={`/section/chats/${i.chat_id}`}>{t("admin.processes.chat")}</Link>}
      {i.case_id && <Link to={`/cases/${i.case_id}`}>{t("admin.processes.case")}</Link>}
      {i.parent_id && <Link to={`/admin/processes/instances/${i.parent_id}`}>{t("admin.processes.parent")}</Link>}
    </span>
  );
}

function useDefinitionXml(id?: string) {
  return useQuery({
    queryKey: ["process-definition", id],
    queryFn: () => unwrap(api.GET("/api/v1/processes/definitions/{id}", { params: { path: { id: id ?? "" } } })),
    enabled: !!id,
    // A deployed version never changes.
    staleTime: Infinity,
  });
}

function InstancePage() {
  const { id = "" } = useParams();
  const { t } = useTranslation();
  const qc = useQueryClient();
  const when = useWhen();
  const userName = useUserName();
  const view = useQuery({
    queryKey: ["process-instance", id],
    queryFn: () => unwrap(api.GET("/api/v1/process-instances/{id}", { params: { path: { id } } })),
    // A running instance moves on its own (jobs, timers, messages).
    refetchInterval: (q) => (q.state.data?.instance.state === "active" ? 2000 : false),
  });
  const def = useDefinitionXml(view.data?.instance.definition_id);
  const retry = useRetry();
  const cancel = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/process-instances/{id}/cancel", { params: { path: { id } } })),
    onSuccess: () => {
      void qc.invalidateQueries({ queryKey: ["process-instance", id] });
      void qc.invalidateQueries({ queryKey: ["process-instances"] });
      void qc.invalidateQueries({ queryKey: ["incidents"] });
    },
  });
  const v = view.data;
  const openIncidents = useMemo(() => (v?.incidents ?? []).filter((i) => !i.resolved_at), [v]);
  const activeIds = useMemo(() => [...new Set((v?.active ?? []).map((a) => a.element))], [v]);
  const incidentIds = useMemo(() => [...new Set(openIncidents.map((i) => i.element))], [openIncidents]);
  if (view.isError) return <LoadState loading={false} error={view.error} />;
  if (!v) return <LoadState loading error={null} />;
  const inst = v.instance;
  const actionError = retry.error ?? cancel.error;
  return (
    <div className="admin-screen" data-testid="instance-page" data-instance={inst.id}>
      <div className="toolbar">
        <Link to="/admin/processes" data-testid="instance-back">
          ← {t("admin.processes.back")}
        </Link>
      </div>
      <div className="case-head">
        <h3>
          {inst.process_key} {t("admin.processes.version", { n: v.version })} <code className="muted small">{inst.id}</code>
        </h3>
        <StatePill state={inst.state} testId="instance-state" />
        <span className="spacer" />
        {inst.state === "active" && (
          <Confirm
            label={t("admin.processes.cancel")}
            question={t("admin.processes.cancelConfirm")}
            onConfirm={() => cancel.mutate()}
            disabled={cancel.isPending}
            testId="instance-cancel"
          />
        )}
      </div>
      {actionError && (
        <p className="error" role="alert" data-testid="instance-error">
          {errorMessage(actionError, t)}
        </p>
      )}
      <dl className="fields">
        <div>
          <dt>{t("admin.processes.started")}</dt>
          <dd>
            {when(inst.started_at)} · {userName(inst.started_by)}
          </dd>
        </div>
        <div>
          <dt>{t("admin.processes.ended")}</dt>
          <dd>{when(inst.ended_at)}</dd>
        </div>
        <div>
          <dt>{t("admin.processes.links")}</dt>
          <dd>
            <InstanceLinks i={inst} />
          </dd>
        </div>
      </dl>
      {def.data && <BpmnDiagram xml={def.data.xml} active={activeIds} incidents={incidentIds} />}
      {def.error && <LoadState loading={false} error={def.error} />}

      {v.active.length > 0 && (
        <section aria-labelledby="active-h">
          <h3 id="active-h">{t("admin.processes.active")}</h3>
          <table className="grid" data-testid="instance-active">
            <thead>
              <tr>
                <th scope="col">{t("admin.processes.element")}</th>
                <th scope="col">{t("admin.processes.waitingFor")}</th>
                <th scope="col">{t("admin.processes.due")}</th>
                <th scope="col">{t("admin.processes.detail")}</th>
              </tr>
            </thead>
            <tbody>
              {v.active.map((a) => (
                <tr key={a.token} data-element={a.element}>
                  <td>
                    <code>{a.element}</code>
                  </td>
                  <td>{a.waiting_for}</td>
                  <td className="nowrap">{when(a.due_at)}</td>
                  <td className="wrap">{a.detail ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}

      {v.incidents.length > 0 && (
        <section aria-labelledby="inst-incidents-h">
          <h3 id="inst-incidents-h">{t("admin.processes.incidents")}</h3>
          <ul className="timeline">
            {v.incidents.map((i) => (
              <li key={i.id} data-testid={i.resolved_at ? "instance-incident-resolved" : "instance-incident"} className={i.resolved_at ? "muted" : undefined}>
                <code>{i.element}</code> · {when(i.created_at)}
                <div className={i.resolved_at ? "wrap" : "error wrap"}>{i.message}</div>
                {!i.resolved_at && (
                  <button type="button" onClick={() => retry.mutate(i)} disabled={retry.isPending} data-testid="incident-retry">
                    {t("admin.processes.retry")}
                  </button>
                )}
              </li>
            ))}
          </ul>
        </section>
      )}

      {v.user_tasks.length > 0 && (
        <section aria-labelledby="utasks-h">
          <h3 id="utasks-h">{t("admin.processes.userTasks")}</h3>
          <table className="grid" data-testid="instance-tasks">
            <thead>
              <tr>
                <th scope="col">{t("admin.processes.name")}</th>
                <th scope="col">{t("admin.processes.state")}</th>
                <th scope="col">{t("admin.processes.assignee")}</th>
                <th scope="col">{t("admin.processes.started")}</th>
              </tr>
            </thead>
            <tbody>
              {v.user_tasks.map((u) => (
                <tr key={u.id}>
                  <td>
                    {u.name ?? u.element} <code className="muted small">{u.element}</code>
                  </td>
                  <td>{u.state}</td>
                  <td>{userName(u.assignee)}</td>
                  <td className="nowrap">{when(u.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}

      {v.children.length > 0 && (
        <section aria-labelledby="children-h">
          <h3 id="children-h">{t("admin.processes.children")}</h3>
          <ul>
            {v.children.map((c) => (
              <li key={c.id}>
                <Link to={`/admin/processes/instances/${c.id}`}>
                  {c.process_key} <code className="small">{short(c.id)}</code>
                </Link>{" "}
                <StatePill state={c.state} />
              </li>
            ))}
          </ul>
        </section>
      )}

      <section aria-labelledby="vars-h">
        <h3 id="vars-h">{t("admin.processes.variables")}</h3>
        <pre className="json" data-testid="instance-variables">
          {JSON.stringify(v.variables, null, 2)}
        </pre>
      </section>

      <section aria-labelledby="history-h">
        <h3 id="history-h">{t("admin.processes.history")}</h3>
        <table className="grid" data-testid="instance-history">
          <thead>
            <tr>
              <th scope="col">{t("admin.processes.at")}</th>
              <th scope="col">{t("admin.processes.element")}</th>
              <th scope="col">{t("admin.processes.event")}</th>
              <th scope="col">{t("admin.processes.detail")}</th>
            </tr>
          </thead>
          <tbody>
            {v.history.map((h) => (
              <tr key={h.seq} data-event={h.event}>
                <td className="nowrap">{when(h.at)}</td>
                <td>{h.element ? <code>{h.element}</code> : "—"}</td>
                <td>{h.event}</td>
                <td className="wrap">{h.detail ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}

/** One deployed version's diagram. */
function DefinitionPage() {
  const { id = "" } = useParams();
  const { t } = useTranslation();
  const when = useWhen();
  const userName = useUserName();
  const def = useDefinitionXml(id);
  const d = def.data?.definition;
  return (
    <div className="admin-screen" data-testid="definition-page">
      <div className="toolbar">
        <Link to="/admin/processes">← {t("admin.processes.back")}</Link>
      </div>
      <LoadState loading={def.isLoading} error={def.error} />
      {d && def.data && (
        <>
          <h3>
            {d.name ?? d.key} <code className="muted small">{d.id}</code>
          </h3>
          <p className="muted">{t("admin.processes.versionTitle", { n: d.version, at: when(d.deployed_at), by: userName(d.deployed_by) })}</p>
          <BpmnDiagram xml={def.data.xml} />
        </>
      )}
    </div>
  );
}

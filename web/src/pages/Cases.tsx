// Cases: the list (search, status filter) and a case's page (fields, description, linked
// chats, editing, "Start chat" with the case's contact, S22).
import { useMemo, useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, ApiError, errorText, unwrap, type S } from "../api/client";
import "./section.css";

const STATUSES: S["CaseStatus"][] = ["new", "in_progress", "resolved", "closed"];
const PRIORITIES: S["CasePriority"][] = ["low", "normal", "high"];
const PAGE = 25;

function useChannels() {
  return useQuery({ queryKey: ["channels"], queryFn: () => unwrap(api.GET("/api/v1/channels")) });
}

export function CaseList() {
  const { t, i18n } = useTranslation();
  const [draft, setDraft] = useState({ q: "", status: "" });
  const [filter, setFilter] = useState(draft);
  const [offset, setOffset] = useState(0);
  const query = useMemo(() => {
    const q: { q?: string; status?: S["CaseStatus"]; limit: number; offset: number } = { limit: PAGE, offset };
    if (filter.q.trim()) q.q = filter.q.trim();
    if (filter.status) q.status = filter.status as S["CaseStatus"];
    return q;
  }, [filter, offset]);
  const list = useQuery({ queryKey: ["cases", query], queryFn: () => unwrap(api.GET("/api/v1/cases", { params: { query } })) });
  const total = list.data?.total ?? 0;
  return (
    <section className="page" aria-labelledby="cases-h" data-testid="cases-page">
      <h2 id="cases-h">{t("cases.title")}</h2>
      <form
        className="toolbar"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setOffset(0);
          setFilter(draft);
        }}
      >
        <label className="search">
          <span className="sr-only">{t("cases.search")}</span>
          <input type="search" value={draft.q} placeholder={t("cases.search")} onChange={(e) => setDraft({ ...draft, q: e.target.value })} data-testid="case-search" />
        </label>
        <label>
          {t("cases.status")}{" "}
          <select
            value={draft.status}
            onChange={(e) => {
              // The status applies at once; the search text with Enter or Apply.
              const next = { ...draft, status: e.target.value };
              setDraft(next);
              setOffset(0);
              setFilter(next);
            }}
            data-testid="case-filter-status"
          >
            <option value="">{t("cases.any")}</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {t(`cases.statuses.${s}`)}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" data-testid="case-apply">{t("cases.apply")}</button>
      </form>
      {list.isError && <p className="error" role="alert">{errorText(t, list.error)}</p>}
      {list.data && list.data.cases.length === 0 && <p className="muted">{t("cases.empty")}</p>}
      {list.data && list.data.cases.length > 0 && (
        <table className="grid" data-testid="cases-table">
          <thead>
            <tr>
              <th scope="col">{t("cases.col.number")}</th>
              <th scope="col">{t("cases.col.subject")}</th>
              <th scope="col">{t("cases.col.status")}</th>
              <th scope="col">{t("cases.col.priority")}</th>
              <th scope="col">{t("cases.col.contact")}</th>
              <th scope="col">{t("cases.col.responsible")}</th>
              <th scope="col">{t("cases.col.created")}</th>
            </tr>
          </thead>
          <tbody>
            {list.data.cases.map((c) => (
              <tr key={c.id} data-testid="case-row" data-case={c.id}>
                <td className="nowrap">
                  <Link to={`/cases/${c.id}`}>#{c.number}</Link>
                </td>
                <td>
                  <Link to={`/cases/${c.id}`}>{c.subject}</Link>
                </td>
                <td>
                  <span className={`pill case-status ${c.status}`}>{t(`cases.statuses.${c.status}`)}</span>
                </td>
                <td>{t(`cases.priorities.${c.priority}`)}</td>
                <td>{c.contact_id ? <Link to={`/contacts/${c.contact_id}`}>{c.contact_name ?? c.contact_id.slice(0, 8)}</Link> : t("cases.nobody")}</td>
                <td>{c.responsible_name ?? t("cases.nobody")}</td>
                <td className="nowrap">{new Date(c.created_at).toLocaleString(i18n.language)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div className="toolbar">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
          {t("cases.prev")}
        </button>
        <span className="muted">{t("cases.page", { from: total === 0 ? 0 : offset + 1, to: Math.min(offset + PAGE, total), total })}</span>
        <button type="button" disabled={offset + PAGE >= total} onClick={() => setOffset(offset + PAGE)}>
          {t("cases.next")}
        </button>
      </div>
    </section>
  );
}

export function CasePage({ me }: { me: S["User"] }) {
  const { id = "" } = useParams();
  const { t, i18n } = useTranslation();
  const view = useQuery({ queryKey: ["case", id], queryFn: () => unwrap(api.GET("/api/v1/cases/{id}", { params: { path: { id } } })) });
  const channels = useChannels();
  if (view.isError) return <p className="error" role="alert">{errorText(t, view.error)}</p>;
  const c = view.data?.case;
  if (!c) return <p className="muted">…</p>;
  const chats = view.data?.chats ?? [];
  const channelName = (cid?: string | null) => (cid ? (channels.data?.find((x) => x.id === cid)?.name ?? cid.slice(0, 8)) : t("cases.nobody"));
  const when = (v?: string | null) => (v ? new Date(v).toLocaleString(i18n.language) : t("cases.nobody"));
  const chatLink = (chat: string) => (me.role !== "operator" ? `/section/chats/${chat}` : `/chats/${chat}`);
  return (
    <section className="page case-page" aria-labelledby="case-h" data-testid="case-page">
      <div className="case-head">
        <h2 id="case-h">
          <span className="muted" data-testid="case-number">
            {t("cases.number", { number: c.number })}
          </span>{" "}
          <span data-testid="case-subject">{c.subject}</span>
        </h2>
        <Link to="/cases" className="small">
          {t("cases.title")}
        </Link>
      </div>
      <dl className="fields">
        <div>
          <dt>{t("cases.fields.status")}</dt>
          <dd data-testid="case-status" data-status={c.status}>
            <span className={`pill case-status ${c.status}`}>{t(`cases.statuses.${c.status}`)}</span>
          </dd>
        </div>
        <div>
          <dt>{t("cases.fields.priority")}</dt>
          <dd data-testid="case-priority" data-priority={c.priority}>
            {t(`cases.priorities.${c.priority}`)}
          </dd>
        </div>
        <div>
          <dt>{t("cases.fields.contact")}</dt>
          <dd>
            {c.contact_id ? (
              <Link to={`/contacts/${c.contact_id}`} data-testid="case-contact">
                {c.contact_name ?? c.contact_id.slice(0, 8)}
              </Link>
            ) : (
              <span data-testid="case-contact">{t("cases.nobody")}</span>
            )}
          </dd>
        </div>
        <div>
          <dt>{t("cases.fields.channel")}</dt>
          <dd data-testid="case-channel">{channelName(c.channel_id)}</dd>
        </div>
        <div>
          <dt>{t("cases.fields.responsible")}</dt>
          <dd data-testid="case-responsible">{c.responsible_name ?? t("cases.nobody")}</dd>
        </div>
        <div>
          <dt>{t("cases.fields.created")}</dt>
          <dd data-testid="case-created">{when(c.created_at)}</dd>
        </div>
        <div>
          <dt>{t("cases.fields.updated")}</dt>
          <dd>{when(c.updated_at)}</dd>
        </div>
        {c.closed_at && (
          <div>
            <dt>{t("cases.fields.closed")}</dt>
            <dd>{when(c.closed_at)}</dd>
          </div>
        )}
      </dl>
      <h3>{t("cases.description")}</h3>
      <div className="case-description" data-testid="case-description">
        {c.description || <span className="muted">{t("cases.noDescription")}</span>}
      </div>
      <h3>{t("cases.chats")}</h3>
      {chats.length === 0 && <p className="muted">{t("cases.noChats")}</p>}
      <ul className="timeline" data-testid="case-chats">
        {chats.map((ch) => (
          <li key={ch.id}>
            <Link to={chatLink(ch.id)} data-testid="case-chat-link">
              {new Date(ch.started_at).toLocaleString(i18n.language)}
            </Link>{" "}
            · {channelName(ch.channel_id)} · {{ new: t("chat.newChat"), in_progress: t("chat.inProgress"), completed: t("chat.completed") }[ch.status]}
            {ch.preview && <div className="muted">{ch.preview}</div>}
          </li>
        ))}
      </ul>
      {c.contact_id ? <StartChat key={c.contact_id} record={c} contactId={c.contact_id} channelName={channelName} /> : <p className="muted">{t("cases.noContact")}</p>}
      <CaseForm key={c.id} record={c} />
    </section>
  );
}

/** Subject, description, status and priority; a server error shows next to its field. */
function CaseForm({ record }: { record: S["Case"] }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const [f, setF] = useState({ subject: record.subject, description: record.description, status: record.status, priority: record.priority });
  const [err, setErr] = useState<ApiError | null>(null);
  const [saved, setSaved] = useState(false);
  const save = useMutation({
    mutationFn: () => unwrap(api.PATCH("/api/v1/cases/{id}", { params: { path: { id: record.id } }, body: f })),
    onMutate: () => {
      setErr(null);
      setSaved(false);
    },
    onSuccess: (c) => {
      // The form shows what the server stored (it trims the subject).
      setF({ subject: c.subject, description: c.description, status: c.status, priority: c.priority });
      qc.setQueryData<S["CaseView"]>(["case", record.id], (old) => (old ? { ...old, case: c } : old));
      void qc.invalidateQueries({ queryKey: ["case", record.id] });
      void qc.invalidateQueries({ queryKey: ["cases"] });
      setSaved(true);
    },
    onError: (e: Error) => setErr(e instanceof ApiError ? e : new ApiError(0, "error", e.message)),
  });
  const fieldError = (k: keyof typeof f) =>
    err?.field === k && (
      <span className="field-error" data-testid={`error-${k}`}>
        {err.message.startsWith(`${k}: `) ? err.message.slice(k.length + 2) : err.message}
      </span>
    );
  const submit = (e: FormEvent) => {
    e.preventDefault();
    save.mutate();
  };
  return (
    <form className="form wide" onSubmit={submit} noValidate aria-label={t("cases.edit")} data-testid="case-form">
      <h3>{t("cases.edit")}</h3>
      <div className={err?.field === "subject" ? "fld invalid" : "fld"}>
        <label>
          <span className="lbl">{t("cases.subject")}</span>
          <input value={f.subject} onChange={(e) => setF({ ...f, subject: e.target.value })} aria-invalid={err?.field === "subject" || undefined} data-testid="case-edit-subject" />
        </label>
        {fieldError("subject")}
      </div>
      <div className={err?.field === "description" ? "fld invalid" : "fld"}>
        <label>
          <span className="lbl">{t("cases.description")}</span>
          <textarea
            rows={6}
            value={f.description}
            onChange={(e) => setF({ ...f, description: e.target.value })}
            aria-invalid={err?.field === "description" || undefined}
            data-testid="case-edit-description"
          />
        </label>
        {fieldError("description")}
      </div>
      <div className="toolbar">
        <label>
          {t("cases.fields.status")}{" "}
          <select value={f.status} onChange={(e) => setF({ ...f, status: e.target.value as S["CaseStatus"] })} data-testid="case-edit-status">
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {t(`cases.statuses.${s}`)}
              </option>
            ))}
          </select>
        </label>
        <label>
          {t("cases.fields.priority")}{" "}
          <select value={f.priority} onChange={(e) => setF({ ...f, priority: e.target.value as S["CasePriority"] })} data-testid="case-edit-priority">
            {PRIORITIES.map((p) => (
              <option key={p} value={p}>
                {t(`cases.priorities.${p}`)}
              </option>
            ))}
          </select>
        </label>
      </div>
      {fieldError("status")}
      {fieldError("priority")}
      {err && !["subject", "description", "status", "priority"].includes(err.field ?? "") && (
        <p className="error" role="alert" data-testid="form-error">
          {errorText(t, err)}
          {err.field ? ` (${err.field})` : ""}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={save.isPending} data-testid="case-save">
          {save.isPending ? t("cases.saving") : t("cases.save")}
        </button>
        <span role="status" className="saved">
          {saved && <span data-testid="case-saved">✓ {t("cases.saved")}</span>}
        </span>
      </div>
    </form>
  );
}

/** Writes to the case's contact; the new chat is linked to the case and opens. */
function StartChat({ record, contactId, channelName }: { record: S["Case"]; contactId: string; channelName: (id: string) => string }) {
  const { t } = useTranslation();
  const contact = useQuery({
    queryKey: ["contact", contactId],
    queryFn: () => unwrap(api.GET("/api/v1/contacts/{id}", { params: { path: { id: contactId } } })),
  });
  const identities = contact.data?.contact.identities ?? [];
  if (!contact.data) return null;
  if (identities.length === 0) return <p className="muted">{t("cases.noContact")}</p>;
  // The case's own channel first, so "Start chat" writes where the client wrote.
  const initial = identities.find((i) => i.channel_id === record.channel_id)?.id ?? identities[0].id;
  return <StartChatForm record={record} identities={identities} initial={initial} channelName={channelName} />;
}

function StartChatForm({
  record,
  identities,
  initial,
  channelName,
}: {
  record: S["Case"];
  identities: S["Identity"][];
  initial: string;
  channelName: (id: string) => string;
}) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const navigate = useNavigate();
  const [identity, setIdentity] = useState(initial);
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const start = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/cases/{id}/chats", { params: { path: { id: record.id } }, body: { identity_id: identity || null, text } })),
    onMutate: () => setError(null),
    onSuccess: (chat) => {
      void qc.invalidateQueries({ queryKey: ["inbox"] });
      void qc.invalidateQueries({ queryKey: ["case", record.id] });
      navigate(`/chats/${chat.id}`);
    },
    onError: (e: Error) => setError(errorText(t, e)),
  });
  return (
    <form
      className="toolbar"
      aria-label={t("cases.startChat")}
      onSubmit={(e) => {
        e.preventDefault();
        start.mutate();
      }}
    >
      {identities.length > 1 && (
        <label>
          {t("cases.via")}{" "}
          <select value={identity} onChange={(e) => setIdentity(e.target.value)} data-testid="case-start-identity">
            {identities.map((i) => (
              <option key={i.id} value={i.id}>
                {channelName(i.channel_id)}: {i.display_name ?? i.external_id}
              </option>
            ))}
          </select>
        </label>
      )}
      <label>
        {t("cases.firstMessage")} <input value={text} onChange={(e) => setText(e.target.value)} data-testid="case-start-text" />
      </label>
      <button type="submit" disabled={start.isPending} data-testid="case-start-chat">
        {t("cases.startChat")}
      </button>
      {error && (
        <span className="error" role="alert" data-testid="case-start-error">
          {error}
        </span>
      )}
    </form>
  );
}

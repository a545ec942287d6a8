import { useEffect, useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, ApiError, unwrap, type S } from "../api/client";
import { FindDuplicates } from "../components/Duplicates";
import "./section.css";

/** A contact: fields, photo, identities, timeline of chats and cases (S23, S24), "Start chat" (S22). */
export function ContactPage({ me }: { me: S["User"] }) {
  const { id = "" } = useParams();
  const { t, i18n } = useTranslation();
  const view = useQuery({ queryKey: ["contact", id], queryFn: () => unwrap(api.GET("/api/v1/contacts/{id}", { params: { path: { id } } })) });
  const channels = useQuery({ queryKey: ["channels"], queryFn: () => unwrap(api.GET("/api/v1/channels")) });
  const navigate = useNavigate();
  // The merged contact the URL named, kept across the redirect to its master (S18).
  const [mergedFrom, setMergedFrom] = useState<{ from: string; to: string } | null>(null);
  // Bumped by a merge that keeps this contact, so the form shows the surviving values.
  const [merges, setMerges] = useState(0);
  const master = view.data?.redirected_from ? view.data.contact.id : null;
  useEffect(() => {
    if (master && view.data?.redirected_from && master !== id) {
      setMergedFrom({ from: view.data.redirected_from, to: master });
      navigate(`/contacts/${master}`, { replace: true });
    }
  }, [master, id, view.data, navigate]);
  if (view.isError) return <p className="error" role="alert">{(view.error as Error).message}</p>;
  const c = view.data?.contact;
  if (!c) return <p className="muted">…</p>;
  const channelName = (cid: string) => channels.data?.find((x) => x.id === cid)?.name ?? cid.slice(0, 8);
  const staff = me.role !== "operator";
  const redirected = view.data?.redirected_from ?? (mergedFrom?.to === c.id ? mergedFrom.from : null);
  return (
    <section className="page" data-testid="contact-page" data-contact={c.id}>
      {redirected && (
        <p className="note" role="status" data-testid="merged-redirect-note">
          {t("duplicates.redirected", { name: c.name })}
        </p>
      )}
      <div className="contact-card">
        {c.photo_url && <img src={c.photo_url} alt="" />}
        <div>
          <h2>{c.name}</h2>
          <ContactForm key={`${c.id}:${merges}`} contact={c} />
          <div className="toolbar">
            <FindDuplicates contact={c} onMerged={(m) => (m.id !== c.id ? navigate(`/contacts/${m.id}`) : setMerges((n) => n + 1))} />
          </div>
        </div>
      </div>
      <h3>{t("section.contact.identities")}</h3>
      <ul>
        {c.identities.map((i) => (
          <li key={i.id}>
            {channelName(i.channel_id)}: {i.display_name ?? i.external_id}
          </li>
        ))}
      </ul>
      <StartChat contact={c} channelName={channelName} />
      <h3>{t("section.contact.timeline")}</h3>
      <ul className="timeline" data-testid="timeline">
        {view.data?.timeline.map((e) =>
          e.type === "case" ? (
            <li key={`case-${e.case.id}`} className="timeline-case" data-testid="timeline-case">
              <Link to={`/cases/${e.case.id}`}>{t("cases.number", { number: e.case.number })}</Link> · {e.case.subject} ·{" "}
              <span className={`pill case-status ${e.case.status}`}>{t(`cases.statuses.${e.case.status}`)}</span>
              <div className="muted">{new Date(e.at).toLocaleString(i18n.language)}</div>
            </li>
          ) : (
            <li key={e.chat.id} data-testid="timeline-chat">
              <Link to={staff ? `/section/chats/${e.chat.id}` : `/chats/${e.chat.id}`}>{new Date(e.at).toLocaleString(i18n.language)}</Link>{" "}
              · {channelName(e.chat.channel_id)} · {{ new: t("chat.newChat"), in_progress: t("chat.inProgress"), completed: t("chat.completed") }[e.chat.status]}
              {e.chat.preview && <div className="muted">{e.chat.preview}</div>}
            </li>
          ),
        )}
      </ul>
    </section>
  );
}

function ContactForm({ contact }: { contact: S["Contact"] }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const [f, setF] = useState({ name: contact.name, email: contact.email ?? "", phone: contact.phone ?? "", photo_url: contact.photo_url ?? "" });
  const [msg, setMsg] = useState<string | null>(null);
  const [err, setErr] = useState<ApiError | null>(null);
  const save = useMutation({
    mutationFn: () => unwrap(api.PUT("/api/v1/contacts/{id}", { params: { path: { id: contact.id } }, body: f })),
    onSuccess: () => {
      setErr(null);
      setMsg(t("section.contact.saved"));
      void qc.invalidateQueries({ queryKey: ["contact", contact.id] });
    },
    onError: (e: Error) => setErr(e instanceof ApiError ? e : new ApiError(0, "error", e.message)),
  });
  const field = (k: keyof typeof f, label: string) => (
    <label>
      {label}
      <input value={f[k]} onChange={(e) => setF({ ...f, [k]: e.target.value })} />
      {err?.field === k && <span className="field-error">{err.message}</span>}
    </label>
  );
  return (
    <form
      className="form"
      onSubmit={(e) => {
        e.preventDefault();
        setMsg(null);
        save.mutate();
      }}
    >
      {field("name", t("section.contact.name"))}
      {field("email", t("section.contact.email"))}
      {field("phone", t("section.contact.phone"))}
      {err && !["name", "email", "phone"].includes(err.field ?? "") && <p className="error">{err.message}</p>}
      {msg && <p className="muted">{msg}</p>}
      <button type="submit">{t("section.contact.save")}</button>
    </form>
  );
}

function StartChat({ contact, channelName }: { contact: S["Contact"]; channelName: (id: string) => string }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const navigate = useNavigate();
  const [identity, setIdentity] = useState(contact.identities[0]?.id ?? "");
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const start = useMutation({
    mutationFn: () =>
      unwrap(api.POST("/api/v1/contacts/{id}/chats", { params: { path: { id: contact.id } }, body: { identity_id: identity || null, text } })),
    onSuccess: (chat) => {
      void qc.invalidateQueries({ queryKey: ["inbox"] });
      navigate(`/chats/${chat.id}`);
    },
    onError: (e: Error) => setError(e.message),
  });
  if (contact.identities.length === 0) return null;
  return (
    <form
      className="toolbar"
      onSubmit={(e) => {
        e.preventDefault();
        start.mutate();
      }}
    >
      {contact.identities.length > 1 && (
        <label>
          {t("section.contact.via")}{" "}
          <select value={identity} onChange={(e) => setIdentity(e.target.value)}>
            {contact.identities.map((i) => (
              <option key={i.id} value={i.id}>
                {channelName(i.channel_id)}: {i.display_name ?? i.external_id}
              </option>
            ))}
          </select>
        </label>
      )}
      <label>
        {t("section.contact.firstMessage")} <input value={text} onChange={(e) => setText(e.target.value)} />
      </label>
      <button type="submit" data-testid="start-chat">{t("section.contact.startChat")}</button>
      {error && <span className="error" role="alert">{error}</span>}
    </form>
  );
}

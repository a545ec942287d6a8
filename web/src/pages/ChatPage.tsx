import { useEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, ApiError, errorText, mayHaveHappened, newKey, unwrap, uploadFile, type S } from "../api/client";
import { FindDuplicates } from "../components/Duplicates";
import { asSchema, hasFields, SchemaForm, schemaErrorsFrom, type JsonObject, type SchemaErrors } from "../components/SchemaForm";

const PICKER = /(^|\s)\/\/([^\s]*)$/;

export function ChatPage({ me }: { me: S["User"] }) {
  const { id = "" } = useParams();
  const { t } = useTranslation();
  const qc = useQueryClient();
  const view = useQuery({
    queryKey: ["chat", id],
    queryFn: () => unwrap(api.GET("/api/v1/chats/{id}", { params: { path: { id } } })),
  });
  const chat = view.data?.chat;
  const mine = chat?.status === "in_progress" && chat.responsible_id === me.id;
  // The outcome of the last action run here (forgotten when another chat is opened).
  const [outcome, setOutcome] = useState<{ chat: string; r: ActionOutcome } | null>(null);
  const result = outcome?.chat === id ? outcome.r : null;
  const setResult = (r: ActionOutcome | null) => setOutcome(r ? { chat: id, r } : null);

  useEffect(() => {
    if (mine && chat && chat.unread_count > 0) {
      void api.POST("/api/v1/chats/{id}/read", { params: { path: { id } } }).then(() => qc.invalidateQueries({ queryKey: ["inbox"] }));
    }
  }, [mine, chat, id, qc]);

  if (view.isError) return <p className="error" role="alert">{(view.error as Error).message}</p>;
  if (!view.data || !chat) return <p className="muted">…</p>;
  return (
    <div className="chat-with-card">
      <section className="chat" aria-label={chat.contact_name}>
        <ChatHeader chat={chat} mine={mine} onResult={setResult} />
        {result && <ActionResultBar result={result} onDismiss={() => setResult(null)} />}
        <Transcript view={view.data} />
        {mine ? <Composer key={id} chatId={id} /> : chat.status === "completed" && <p className="muted finished">{t("chat.finished")}</p>}
      </section>
      <ContactCard chat={chat} />
    </div>
  );
}

function ChatHeader({ chat, mine, onResult }: { chat: S["Chat"]; mine: boolean; onResult: (r: ActionOutcome | null) => void }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const navigate = useNavigate();
  const [transferring, setTransferring] = useState(false);
  const [menu, setMenu] = useState(false);
  const finish = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/chats/{id}/finish", { params: { path: { id: chat.id } } })),
    onSuccess: () => {
      void qc.invalidateQueries();
      navigate("/");
    },
  });
  const statusLabel = { new: t("chat.newChat"), in_progress: t("chat.inProgress"), completed: t("chat.completed") }[chat.status];
  return (
    <header className="chat-head">
      <div>
        <h2 data-testid="chat-title">
          <Link to={`/contacts/${chat.contact_id}`}>{chat.contact_name}</Link>
        </h2>
        <span className="badge">{statusLabel}</span>
        {chat.case_id && <CaseLink id={chat.case_id} />}
      </div>
      <span className="spacer" />
      {mine && (
        <>
          <ActionsMenu chat={chat} open={menu} setOpen={setMenu} onResult={onResult} />
          <button type="button" onClick={() => setTransferring(true)} data-testid="transfer">
            {t("chat.transfer")}
          </button>
          <button type="button" className="danger" onClick={() => finish.mutate()} data-testid="finish">
            {t("chat.finish")}
          </button>
        </>
      )}
      {transferring && <TransferDialog chat={chat} onClose={() => setTransferring(false)} />}
    </header>
  );
}

/** The case a chat belongs to, linked from the chat header. */
function CaseLink({ id }: { id: string }) {
  const { t } = useTranslation();
  const view = useQuery({ queryKey: ["case", id], queryFn: () => unwrap(api.GET("/api/v1/cases/{id}", { params: { path: { id } } })) });
  const c = view.data?.case;
  return (
    <Link to={`/cases/${id}`} className="case-ref" data-testid="chat-case-link" title={c?.subject}>
      {c ? t("chat.caseNumber", { number: c.number }) : t("chat.case")}
    </Link>
  );
}

/** An entry of the chat's Actions menu: a plugin action or a process. */
interface ActionInfo {
  id: string;
  /** `plugin` (run with its input) or `process` (started with the chat's context). */
  kind: string;
  /** The process key, for `process` entries. */
  process?: string | null;
  plugin: string;
  action: string;
  title: string;
  confirm?: string | null;
  input_schema?: unknown;
}

/** What running an action came to, shown above the transcript. */
interface ActionOutcome {
  state: "running" | "ok" | "error";
  title: string;
  /** Notes and messages the action posted, or a summary of its output. */
  lines: string[];
  error?: string;
  /** The case a process created. */
  case?: S["Case"];
}

function ActionsMenu({ chat, open, setOpen, onResult }: { chat: S["Chat"]; open: boolean; setOpen: (v: boolean) => void; onResult: (r: ActionOutcome | null) => void }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const actions = useQuery({
    queryKey: ["chat-actions", chat.id],
    queryFn: async () => (await unwrap(api.GET("/api/v1/chats/{id}/actions", { params: { path: { id: chat.id } } }))) as unknown as ActionInfo[],
  });
  // The action being prepared: its confirmation question, then its input form.
  const [pending, setPending] = useState<{ a: ActionInfo; step: "confirm" | "input" } | null>(null);
  const [inputErrors, setInputErrors] = useState<SchemaErrors>({});
  const [busy, setBusy] = useState(false);

  const runPlugin = async (a: ActionInfo, input: JsonObject): Promise<ActionOutcome> => {
    const r = await unwrap(
      api.POST("/api/v1/chats/{id}/actions/{plugin}/{action}", {
        params: { path: { id: chat.id, plugin: a.plugin, action: a.action } },
        body: { input: input as S["RunActionRequest"]["input"] },
      }),
    );
    setPending(null);
    await qc.refetchQueries({ queryKey: ["chat", chat.id] });
    const view = qc.getQueryData<S["ChatView"]>(["chat", chat.id]);
    const posted = r.effects.flatMap((e) => (e.type === "note_posted" || e.type === "message_posted" ? [e.message_id] : []));
    let lines = posted.map((id) => view?.messages.find((m) => m.id === id)?.body ?? "").filter(Boolean);
    if (lines.length === 0) lines = outputLines(r.output);
    if (r.effects.some((e) => e.type === "contact_updated")) void qc.invalidateQueries({ queryKey: ["contact", chat.contact_id] });
    return { state: "ok", title: a.title, lines };
  };

  // The server answers once the process settles: with the case it created, or with the
  // incident that stopped it.
  const startProcess = async (a: ActionInfo): Promise<ActionOutcome> => {
    const r = await unwrap(
      api.POST("/api/v1/chats/{id}/processes/{key}", { params: { path: { id: chat.id, key: a.process ?? "" } }, body: { variables: {} } }),
    );
    setPending(null);
    void qc.invalidateQueries({ queryKey: ["chat", chat.id] });
    void qc.invalidateQueries({ queryKey: ["contact", chat.contact_id] });
    void qc.invalidateQueries({ queryKey: ["cases"] });
    void qc.invalidateQueries({ queryKey: ["tasks"] });
    if (r.incidents.length > 0) return { state: "error", title: a.title, lines: [], error: r.incidents.map((i) => i.message).join("; ") };
    const lines = r.case || r.state !== "active" ? [] : [t("chat.processStarted")];
    return { state: "ok", title: a.title, lines, case: r.case ?? undefined };
  };

  const run = async (a: ActionInfo, input: JsonObject) => {
    setBusy(true);
    onResult({ state: "running", title: a.title, lines: [] });
    try {
      onResult(a.kind === "process" ? await startProcess(a) : await runPlugin(a, input));
    } catch (e) {
      const keys = Object.keys(asSchema(a.input_schema)?.properties ?? {});
      const errs = schemaErrorsFrom(e, keys, (x) => errorText(t, x));
      if (e instanceof ApiError && e.status === 422 && keys.length > 0 && Object.keys(errs).some((k) => k !== "_")) {
        // Invalid input: the form stays open with the error next to its field.
        setInputErrors(errs);
        setPending({ a, step: "input" });
        onResult(null);
      } else {
        setPending(null);
        const field = e instanceof ApiError && e.field ? ` (${e.field})` : "";
        onResult({ state: "error", title: a.title, lines: [], error: errorText(t, e) + field });
      }
    } finally {
      setBusy(false);
    }
  };

  const choose = (a: ActionInfo) => {
    setOpen(false);
    setInputErrors({});
    if (a.confirm) setPending({ a, step: "confirm" });
    else if (hasFields(a.input_schema)) setPending({ a, step: "input" });
    else void run(a, {});
  };
  const cancel = () => setPending(null);

  return (
    <div className="menu" onKeyDown={(e) => e.key === "Escape" && setOpen(false)}>
      <button type="button" onClick={() => setOpen(!open)} aria-expanded={open} aria-haspopup="menu" data-testid="actions-menu" disabled={busy}>
        {t("chat.actions")} ▾
      </button>
      {open && (
        <ul role="menu" className="dropdown actions-dropdown" aria-label={t("chat.actions")}>
          {actions.isLoading && <li className="muted">{t("chat.actionsLoading")}</li>}
          {actions.isError && (
            <li className="error" role="alert">
              {errorText(t, actions.error)}
            </li>
          )}
          {actions.data && actions.data.length === 0 && (
            <li role="menuitem" aria-disabled="true" className="muted">
              {t("chat.noActions")}
            </li>
          )}
          {(actions.data ?? []).map((a) => (
            <li key={a.id || `${a.plugin}/${a.action}`} role="none">
              <button
                type="button"
                role="menuitem"
                className="link"
                onClick={() => choose(a)}
                data-testid={a.kind === "process" ? `action-process-${a.process ?? ""}` : `action-${a.plugin}-${a.action}`}
              >
                {a.title}
              </button>
            </li>
          ))}
        </ul>
      )}
      {pending?.step === "confirm" && (
        <div className="modal-backdrop" onKeyDown={(e) => e.key === "Escape" && cancel()}>
          <div className="modal" role="alertdialog" aria-modal="true" aria-labelledby="action-confirm-h" data-testid="action-confirm">
            <h3 id="action-confirm-h">{pending.a.title}</h3>
            <p>{pending.a.confirm}</p>
            <div className="form-actions">
              <button
                type="button"
                className="primary"
                autoFocus
                onClick={() => (hasFields(pending.a.input_schema) ? setPending({ a: pending.a, step: "input" }) : void run(pending.a, {}))}
                disabled={busy}
                data-testid="action-confirm-yes"
              >
                {t("chat.run")}
              </button>
              <button type="button" onClick={cancel} data-testid="action-cancel">
                {t("chat.cancel")}
              </button>
            </div>
          </div>
        </div>
      )}
      {pending?.step === "input" && (
        <div className="modal-backdrop" onKeyDown={(e) => e.key === "Escape" && cancel()}>
          <div className="modal" role="dialog" aria-modal="true" aria-labelledby="action-input-h" data-testid="action-dialog">
            <h3 id="action-input-h">{pending.a.title}</h3>
            <SchemaForm
              schema={pending.a.input_schema}
              onSubmit={(v) => void run(pending.a, v)}
              errors={inputErrors}
              busy={busy}
              submitLabel={t("chat.run")}
              label={pending.a.title}
              testId="action-form"
              footer={
                <button type="button" onClick={cancel} data-testid="action-cancel">
                  {t("chat.cancel")}
                </button>
              }
            />
          </div>
        </div>
      )}
    </div>
  );
}

/** Short text values of an action's output, for actions that post nothing. */
function outputLines(output: unknown): string[] {
  if (typeof output === "string") return output ? [output] : [];
  if (!output || typeof output !== "object" || Array.isArray(output)) return [];
  return Object.entries(output as Record<string, unknown>)
    .filter(([, v]) => typeof v === "string" || typeof v === "number" || typeof v === "boolean")
    .slice(0, 6)
    .map(([k, v]) => {
      const text = String(v);
      return `${k}: ${text.length > 200 ? `${text.slice(0, 200)}…` : text}`;
    });
}

function ActionResultBar({ result, onDismiss }: { result: ActionOutcome; onDismiss: () => void }) {
  const { t } = useTranslation();
  const cls = result.state === "error" ? "action-result error" : result.state === "ok" ? "action-result ok" : "action-result";
  return (
    <div className={cls} role={result.state === "error" ? "alert" : "status"} data-testid="action-result" data-state={result.state}>
      <div className="action-result-text">
        <strong>
          {result.state === "running"
            ? t("chat.actionRunning", { title: result.title })
            : result.state === "ok"
              ? t("chat.actionDone", { title: result.title })
              : t("chat.actionFailed", { title: result.title, error: result.error ?? "" })}
        </strong>
        {result.lines.map((l, i) => (
          <div key={i} className="action-note">
            {l}
          </div>
        ))}
        {result.case && (
          <div className="action-note">
            <Link to={`/cases/${result.case.id}`} data-testid="case-link">
              {t("chat.caseLink", { number: result.case.number, subject: result.case.subject })}
            </Link>
          </div>
        )}
      </div>
      {result.state !== "running" && (
        <button type="button" className="link" onClick={onDismiss} aria-label={t("chat.dismiss")} data-testid="action-result-dismiss">
          ×
        </button>
      )}
    </div>
  );
}

function Transcript({ view }: { view: S["ChatView"] }) {
  const { t } = useTranslation();
  const end = useRef<HTMLDivElement>(null);
  const count = view.messages.length;
  useEffect(() => {
    end.current?.scrollIntoView({ block: "end" });
  }, [count]);
  const firstCurrent = view.messages.findIndex((m) => m.chat_id === view.chat.id);
  const earlier = view.history.length > 0 && firstCurrent !== 0;
  return (
    <div className="transcript" data-testid="transcript" aria-live="polite">
      {earlier && <div className="divider">{t("chat.history")}</div>}
      {view.messages.map((m, i) => (
        <div key={m.id}>
          {earlier && i === firstCurrent && <div className="divider">{t("chat.newChat")}</div>}
          <MessageRow m={m} />
        </div>
      ))}
      <div ref={end} />
    </div>
  );
}

function MessageRow({ m }: { m: S["Message"] }) {
  const { t, i18n } = useTranslation();
  const cls = m.direction === "inbound" ? "msg in" : m.direction === "outbound" ? "msg out" : "msg system";
  return (
    <div className={cls} data-testid={`msg-${m.direction}`}>
      {m.direction === "outbound" && m.author_name && <div className="author">{m.author_name}</div>}
      {m.body && <div className="body">{m.direction === "system" ? systemText(t, m.body) : m.body}</div>}
      {m.attachments.map((a) =>
        a.content_type.startsWith("image/") ? (
          <a key={a.id} href={`/api/v1/files/${a.id}`} target="_blank" rel="noreferrer">
            <img src={`/api/v1/files/${a.id}`} alt={a.filename} className="thumb" loading="lazy" />
          </a>
        ) : (
          <a key={a.id} href={`/api/v1/files/${a.id}`} className="file" download={a.filename}>
            {a.filename}
          </a>
        ),
      )}
      <div className="meta">
        {new Date(m.created_at).toLocaleTimeString(i18n.language, { hour: "2-digit", minute: "2-digit" })}
        {m.delivery_status && ` · ${t(`chat.delivery.${m.delivery_status}`)}`}
      </div>
    </div>
  );
}

function Composer({ chatId }: { chatId: string }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const [text, setText] = useState("");
  const [files, setFiles] = useState<S["Attachment"][]>([]);
  const [error, setError] = useState<string | null>(null);
  const [picker, setPicker] = useState<{ q: string; index: number } | null>(null);
  const loaded = useRef(false);
  const area = useRef<HTMLTextAreaElement>(null);

  // Restore the server-side draft (S14), then save as the operator types.
  useEffect(() => {
    void unwrap(api.GET("/api/v1/chats/{id}/draft", { params: { path: { id: chatId } } })).then((d) => {
      if (!loaded.current) setText((cur) => cur || d.text);
      loaded.current = true;
    });
  }, [chatId]);
  useEffect(() => {
    if (!loaded.current) return;
    const h = setTimeout(() => {
      void api.PUT("/api/v1/chats/{id}/draft", { params: { path: { id: chatId } }, body: { text } });
    }, 400);
    return () => clearTimeout(h);
  }, [text, chatId]);

  const templates = useQuery({
    queryKey: ["templates", chatId, picker?.q ?? ""],
    queryFn: () => unwrap(api.GET("/api/v1/templates", { params: { query: { q: picker?.q ?? "", chat_id: chatId } } })),
    enabled: picker !== null,
  });
  const list = useMemo(() => templates.data ?? [], [templates.data]);

  // The Retry after a send that may have reached the server (network gone, timeout) sends it
  // under the same Idempotency-Key, so the message cannot arrive twice; an edited text or a
  // send the server refused is a new message with a new key.
  const unsent = useRef<{ body: string; key: string } | null>(null);
  const send = useMutation({
    mutationFn: (body: { text: string; files: string[] }) => {
      const json = JSON.stringify([chatId, body]);
      if (unsent.current?.body !== json) unsent.current = { body: json, key: newKey() };
      const headers = { "idempotency-key": unsent.current.key };
      // A send that hangs (network gone) fails after 10 s, so the operator gets the retry.
      return unwrap(api.POST("/api/v1/chats/{id}/messages", { params: { path: { id: chatId } }, body, headers, signal: AbortSignal.timeout(10_000) }));
    },
    onSuccess: () => {
      unsent.current = null;
      setText("");
      setFiles([]);
      setError(null);
      void qc.invalidateQueries({ queryKey: ["chat", chatId] });
      void qc.invalidateQueries({ queryKey: ["inbox"] });
    },
    // Nothing typed is lost: the text stays in the box with a retry.
    onError: (e: Error) => {
      if (!mayHaveHappened(e)) unsent.current = null;
      setError(errorText(t, e));
    },
  });

  const submit = () => {
    if (!text.trim() && files.length === 0) return;
    send.mutate({ text, files: files.map((f) => f.id) });
  };

  const choose = async (tpl: S["Template"]) => {
    const r = await unwrap(api.POST("/api/v1/chats/{id}/templates/{template}/render", { params: { path: { id: chatId, template: tpl.id } } }));
    setText((cur) => (PICKER.test(cur) ? cur.replace(PICKER, (_m, pre: string) => `${pre}${r.text}`) : cur + r.text));
    setPicker(null);
    area.current?.focus();
  };

  const onChange = (v: string) => {
    setText(v);
    const m = PICKER.exec(v);
    setPicker(m ? { q: m[2], index: 0 } : null);
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (picker) {
      if (e.key === "Escape") {
        e.preventDefault();
        setPicker(null);
        return;
      }
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const n = list.length || 1;
        setPicker({ ...picker, index: (picker.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n });
        return;
      }
      if (e.key === "Enter" && !e.shiftKey) {
        // While the picker is open Enter picks a template; it never sends the `//query`.
        e.preventDefault();
        if (list.length > 0) void choose(list[Math.min(picker.index, list.length - 1)]);
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      submit();
    }
  };

  const attach = async (f: File | undefined) => {
    if (!f) return;
    try {
      const a = await uploadFile(f);
      setFiles((cur) => [...cur, a]);
      setError(null);
    } catch (e) {
      setError(errorText(t, e));
    }
  };

  return (
    <div className="composer">
      {picker && (
        <ul className="picker" role="listbox" data-testid="template-picker" aria-label={t("chat.templates")}>
          {list.length === 0 && <li className="muted">{t("chat.noTemplates")}</li>}
          {list.map((tpl, i) => (
            <li
              key={tpl.id}
              role="option"
              aria-selected={i === picker.index}
              className={i === picker.index ? "sel" : ""}
              onMouseDown={(e) => {
                e.preventDefault();
                void choose(tpl);
              }}
            >
              <strong>{tpl.name}</strong> <span className="muted">{tpl.body}</span>
            </li>
          ))}
        </ul>
      )}
      {files.length > 0 && (
        <div className="pending" data-testid="pending-files">
          {files.map((f) => (
            <span key={f.id} className="chip">
              {f.filename}
              <button type="button" aria-label="remove" onClick={() => setFiles((c) => c.filter((x) => x.id !== f.id))}>
                ×
              </button>
            </span>
          ))}
        </div>
      )}
      {error && (
        <p className="error" role="alert" data-testid="send-error">
          {t("chat.notSent", { error })} <button type="button" onClick={submit}>{t("chat.retry")}</button>
        </p>
      )}
      <div className="compose-row">
        <label className="attach" title={t("chat.attach")}>
          <svg width="18" height="18" viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round" aria-hidden="true">
            <path d="M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48" />
          </svg>
          <span className="sr-only">{t("chat.attach")}</span>
          <input type="file" hidden data-testid="attach" onChange={(e) => void attach(e.target.files?.[0])} />
        </label>
        <button type="button" onClick={() => setPicker(picker ? null : { q: "", index: 0 })} data-testid="templates-button">
          {t("chat.templates")}
        </button>
        <textarea
          ref={area}
          data-testid="reply"
          aria-label={t("chat.placeholder")}
          placeholder={t("chat.placeholder")}
          value={text}
          onChange={(e) => onChange(e.target.value)}
          onKeyDown={onKey}
          rows={3}
        />
        <button type="button" className="primary" onClick={submit} disabled={send.isPending} data-testid="send">
          {t("chat.send")}
        </button>
      </div>
    </div>
  );
}

function TransferDialog({ chat, onClose }: { chat: S["Chat"]; onClose: () => void }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const navigate = useNavigate();
  const [q, setQ] = useState("");
  const [error, setError] = useState<string | null>(null);
  const queues = useQuery({ queryKey: ["queues"], queryFn: () => unwrap(api.GET("/api/v1/queues")) });
  const ops = useQuery({ queryKey: ["transfer-targets", q], queryFn: () => unwrap(api.GET("/api/v1/transfer-targets", { params: { query: { q } } })) });
  const go = async (target: S["TransferTarget"]) => {
    try {
      await unwrap(api.POST("/api/v1/chats/{id}/transfer", { params: { path: { id: chat.id } }, body: target }));
      void qc.invalidateQueries();
      onClose();
      navigate("/");
    } catch (e) {
      setError(errorText(t, e));
    }
  };
  return (
    <div className="modal-backdrop" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <div className="modal" role="dialog" aria-modal="true" aria-labelledby="transfer-h" data-testid="transfer-dialog">
        <h3 id="transfer-h">{t("transfer.title")}</h3>
        <input autoFocus placeholder={t("transfer.search")} aria-label={t("transfer.search")} value={q} onChange={(e) => setQ(e.target.value)} />
        {error && <p className="error" role="alert">{error}</p>}
        <h4>{t("transfer.operators")}</h4>
        <ul className="targets">
          {(ops.data ?? [])
            .filter((o) => o.id !== chat.responsible_id)
            .map((o) => (
              <li key={o.id}>
                <button type="button" onClick={() => void go({ operator: o.id })} data-testid="transfer-operator">
                  {o.display_name}
                </button>
                <span className={`avail ${o.availability}`}>{t(`status.${o.availability}`)}</span>
                <span className="muted">
                  {o.load}/{o.limit}
                </span>
              </li>
            ))}
        </ul>
        <h4>{t("transfer.queues")}</h4>
        <ul className="targets">
          {(queues.data ?? [])
            .filter((x) => x.name.toLowerCase().includes(q.toLowerCase()))
            .map((x) => (
              <li key={x.id}>
                <button type="button" onClick={() => void go({ queue: x.id })}>
                  {x.name}
                </button>
              </li>
            ))}
        </ul>
        <button type="button" onClick={onClose}>{t("transfer.cancel")}</button>
      </div>
    </div>
  );
}

/** The contact beside the chat: photo, identities, link to the contact page, earlier chats. */
function ContactCard({ chat }: { chat: S["Chat"] }) {
  const { t, i18n } = useTranslation();
  const view = useQuery({
    queryKey: ["contact", chat.contact_id],
    queryFn: () => unwrap(api.GET("/api/v1/contacts/{id}", { params: { path: { id: chat.contact_id } } })),
  });
  const c = view.data?.contact;
  if (!c) return <aside className="contact-aside" />;
  const earlier = (view.data?.timeline ?? []).flatMap((e) => (e.type === "chat" && e.chat.id !== chat.id ? [{ at: e.at, chat: e.chat }] : []));
  return (
    <aside className="contact-aside" aria-label={t("card.title")} data-testid="contact-card">
      {c.photo_url && <img src={c.photo_url} alt="" className="avatar" />}
      <h3 data-testid="contact-card-name">
        <Link to={`/contacts/${c.id}`}>{c.name}</Link>
      </h3>
      {c.email && <div className="muted">{c.email}</div>}
      {c.phone && <div className="muted">{c.phone}</div>}
      <div className="toolbar">
        <FindDuplicates contact={c} />
      </div>
      <h4>{t("card.identities")}</h4>
      <ul>
        {c.identities.map((i) => (
          <li key={i.id}>{i.display_name ?? i.external_id}</li>
        ))}
      </ul>
      <h4>{t("card.earlier")}</h4>
      {earlier.length === 0 && <p className="muted">{t("card.none")}</p>}
      <ul data-testid="earlier-chats">
        {earlier.map((e) => (
          <li key={e.chat.id}>
            {new Date(e.at).toLocaleDateString(i18n.language)} · {e.chat.preview ?? "—"}
          </li>
        ))}
      </ul>
    </aside>
  );
}

/** System lines are stored in English by the server; show them in the operator's language. */
function systemText(t: ReturnType<typeof useTranslation>["t"], body: string): string {
  let m = /^Transferred to queue (.+) by (.+)$/.exec(body);
  if (m) return t("sys.toQueue", { queue: m[1], by: m[2] });
  m = /^Transferred to (.+) by (.+)$/.exec(body);
  if (m) return t("sys.toOperator", { to: m[1], by: m[2] });
  if (body === "Chat finished") return t("sys.finished");
  if (body.startsWith("Chat finished automatically")) return t("sys.autoFinished");
  return body;
}

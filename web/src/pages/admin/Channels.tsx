import { useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, unwrap, type S } from "../../api/client";
import { compact, Confirm, CopyButton, errorMessage, Field, FormFooter, LoadState, upsert, useChecks, useFlash, useFocusFirst, useForm } from "./common";
import { useQueues } from "./Queues";
import { ConnectorChannelForm, ConnectorSettings, type ConnectorChannel } from "./Connectors";

/** Kinds an admin can create; plugin channels come from installing a connector. */
const KINDS = ["widget", "api"] as const;
type Settings = Record<string, unknown>;

/** The `<script>` tag that puts a widget channel on a website. */
export function widgetSnippet(publicKey: string) {
  return `<script src="${location.origin}/widget.js" data-key="${publicKey}" async></script>`;
}

export function Channels() {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const channels = useQuery({ queryKey: ["channels"], queryFn: () => unwrap(api.GET("/api/v1/channels")) });
  const queues = useQueues();
  const [sel, setSel] = useState<string | null>(null);
  const [fresh, setFresh] = useState(false);
  const [token, setToken] = useState<{ id: string; value: string } | null>(null);
  // The connector panel: a new connector channel, or the settings of one (with the outcome of its creation).
  const [connector, setConnector] = useState<{ id: string | null; created?: ConnectorChannel } | null>(null);
  const saved = useFlash();
  const current = sel && sel !== "new" ? channels.data?.find((c) => c.id === sel) : undefined;
  const connectorChannel = connector?.id ? channels.data?.find((c) => c.id === connector.id) : undefined;
  const open = (id: string | null) => {
    saved.hide();
    setFresh(true);
    setToken(null);
    setConnector(null);
    setSel(id);
  };
  const openConnector = (id: string | null, created?: ConnectorChannel) => {
    saved.hide();
    setToken(null);
    setSel(null);
    setConnector({ id, created });
  };
  const queueName = (id: string) => queues.data?.find((q) => q.id === id)?.name ?? "—";

  return (
    <div className="admin-screen">
      <div className="toolbar">
        <button type="button" onClick={() => open("new")} data-testid="add-channel">
          {t("admin.channels.add")}
        </button>
        <button type="button" onClick={() => openConnector(null)} data-testid="add-connector-channel">
          {t("admin.channels.addConnector")}
        </button>
      </div>
      {connector && connector.id === null && (
        <ConnectorChannelForm
          queues={queues.data ?? []}
          onCreated={(r) => {
            qc.setQueryData<S["Channel"][]>(["channels"], (old) => upsert(old, r.channel));
            void qc.invalidateQueries({ queryKey: ["channels"] });
            openConnector(r.channel.id, r);
          }}
          onClose={() => setConnector(null)}
        />
      )}
      {connector && connectorChannel && (
        <ConnectorSettings key={connectorChannel.id} channel={connectorChannel} created={connector.created} onClose={() => setConnector(null)} />
      )}
      {(sel === "new" || current) && (
        <ChannelForm
          key={sel}
          channel={current}
          queues={queues.data ?? []}
          token={token && token.id === current?.id ? token.value : null}
          focus={fresh}
          saved={saved.on}
          onSaved={(c, apiToken) => {
            setFresh(false);
            setSel(c.id);
            if (apiToken) setToken({ id: c.id, value: apiToken });
            saved.show();
          }}
          onToken={(value) => current && setToken({ id: current.id, value })}
          onClose={() => open(null)}
        />
      )}
      <LoadState loading={channels.isLoading} error={channels.error} />
      {channels.data && (
        <table className="grid" data-testid="channels-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.channels.name")}</th>
              <th scope="col">{t("admin.channels.kind")}</th>
              <th scope="col">{t("admin.channels.queue")}</th>
              <th scope="col">{t("admin.channels.active")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {channels.data.map((c) => (
              <tr key={c.id} data-testid="channel-row" className={c.id === sel || c.id === connector?.id ? "selected" : undefined}>
                <td>{c.name}</td>
                <td>{t(`admin.channels.kinds.${c.kind}`)}</td>
                <td>{queueName(c.queue_id)}</td>
                <td>{c.active ? t("admin.common.yes") : t("admin.common.no")}</td>
                <td className="row-actions">
                  {c.kind === "plugin" && (
                    <button
                      type="button"
                      onClick={() => openConnector(c.id)}
                      aria-label={`${t("admin.channels.connectorSettings")}: ${c.name}`}
                      data-testid="connector-settings"
                    >
                      {t("admin.channels.connectorSettings")}
                    </button>
                  )}
                  <button type="button" onClick={() => open(c.id)} aria-label={`${t("admin.common.edit")}: ${c.name}`} data-testid="edit">
                    {t("admin.common.edit")}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function ChannelForm({
  channel,
  queues,
  token,
  focus,
  saved,
  onSaved,
  onToken,
  onClose,
}: {
  channel?: S["Channel"];
  queues: S["Queue"][];
  token: string | null;
  focus: boolean;
  saved: boolean;
  onSaved: (c: S["Channel"], apiToken?: string | null) => void;
  onToken: (token: string) => void;
  onClose: () => void;
}) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const check = useChecks();
  const settings = (channel?.settings ?? {}) as Settings;
  const f = useForm(() => ({
    kind: (channel?.kind ?? "widget") as S["ChannelKind"],
    name: channel?.name ?? "",
    queue_id: channel?.queue_id ?? (queues.length === 1 ? queues[0].id : ""),
    active: channel?.active ?? true,
    title: typeof settings.title === "string" ? settings.title : "",
  }));
  const v = f.values;
  useFocusFirst(f.ref, focus);
  const [tokenError, setTokenError] = useState<string | null>(null);

  const save = useMutation({
    mutationFn: async () => {
      const next: Settings = { ...settings };
      if (v.kind === "widget") {
        if (v.title.trim()) next.title = v.title.trim();
        else delete next.title;
      }
      const body: S["ChannelInput"] = {
        kind: v.kind,
        name: v.name.trim(),
        queue_id: v.queue_id,
        active: v.active,
        // The schema types free-form objects as `Record<string, never>`.
        settings: next as S["ChannelInput"]["settings"],
      };
      if (channel) {
        const c = await unwrap(api.PUT("/api/v1/channels/{id}", { params: { path: { id: channel.id } }, body }));
        return { channel: c, api_token: null } as S["CreatedChannel"];
      }
      return unwrap(api.POST("/api/v1/channels", { body }));
    },
    onSuccess: (r) => {
      qc.setQueryData<S["Channel"][]>(["channels"], (old) => upsert(old, r.channel));
      void qc.invalidateQueries({ queryKey: ["channels"] });
      onSaved(r.channel, r.api_token);
    },
    onError: f.fail,
  });

  const rotate = useMutation({
    mutationFn: (id: string) => unwrap(api.POST("/api/v1/channels/{id}/token", { params: { path: { id } } })),
    onMutate: () => setTokenError(null),
    onSuccess: (r) => onToken(r.api_token),
    onError: (e) => setTokenError(errorMessage(e, t)),
  });

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const errs = compact({
      name: check.length(v.name, 1, 200),
      queue_id: check.required(v.queue_id),
      title: v.kind === "widget" && v.title.trim().length > 200 ? t("admin.common.length", { min: 0, max: 200 }) : undefined,
    });
    f.setErrors(errs);
    if (Object.keys(errs).length === 0) save.mutate();
  };

  const title = channel ? t("admin.channels.editTitle", { name: channel.name }) : t("admin.channels.newTitle");
  return (
    <form ref={f.ref} className="form" onSubmit={submit} noValidate aria-label={title} data-testid="channel-form">
      <h3>{title}</h3>
      {token && (
        <div className="token-box" role="alert" data-testid="api-token-box">
          <strong>{t("admin.channels.token")}</strong>
          <p className="warn">⚠ {t("admin.channels.tokenOnce")}</p>
          <div className="token-row">
            <code data-testid="api-token">{token}</code>
            <CopyButton text={token} testId="copy-token" />
          </div>
        </div>
      )}
      <Field form={f} name="kind" label={t("admin.channels.kind")}>
        <select value={v.kind} onChange={(e) => f.set("kind", e.target.value as S["ChannelKind"])} disabled={!!channel} {...f.aria("kind")}>
          {(channel && !KINDS.some((k) => k === channel.kind) ? [channel.kind] : KINDS).map((k) => (
            <option key={k} value={k}>
              {t(`admin.channels.kinds.${k}`)}
            </option>
          ))}
        </select>
      </Field>
      <Field form={f} name="name" label={t("admin.channels.name")}>
        <input value={v.name} onChange={(e) => f.set("name", e.target.value)} autoComplete="off" required {...f.aria("name")} />
      </Field>
      <Field form={f} name="queue_id" label={t("admin.channels.queue")} hint={queues.length === 0 ? t("admin.channels.noQueues") : undefined}>
        <select value={v.queue_id} onChange={(e) => f.set("queue_id", e.target.value)} required {...f.aria("queue_id", queues.length === 0)}>
          <option value="" disabled>
            {t("admin.channels.chooseQueue")}
          </option>
          {queues.map((q) => (
            <option key={q.id} value={q.id}>
              {q.name}
            </option>
          ))}
        </select>
      </Field>
      {v.kind === "widget" && (
        <Field form={f} name="title" label={t("admin.channels.title")} hint={t("admin.channels.titleHint")}>
          <input value={v.title} onChange={(e) => f.set("title", e.target.value)} autoComplete="off" {...f.aria("title", true)} />
        </Field>
      )}
      <div className="fld">
        <label className="check">
          <input type="checkbox" checked={v.active} onChange={(e) => f.set("active", e.target.checked)} />
          {t("admin.channels.activeLabel")}
        </label>
      </div>
      {channel?.kind === "widget" && channel.public_key && (
        <div className="fld">
          <label>
            <span className="lbl">{t("admin.channels.snippet")}</span>
            <textarea className="snippet" readOnly rows={3} value={widgetSnippet(channel.public_key)} onFocus={(e) => e.target.select()} data-testid="widget-snippet" />
          </label>
          <small className="hint">{t("admin.channels.snippetHint")}</small>
          <CopyButton text={widgetSnippet(channel.public_key)} testId="copy-snippet" />
        </div>
      )}
      {channel?.kind === "api" && (
        <div className="fld">
          <small className="hint">{t("admin.channels.tokenHint")}</small>
          <div>
            <Confirm
              label={t("admin.channels.newToken")}
              question={t("admin.channels.newTokenConfirm")}
              onConfirm={() => rotate.mutate(channel.id)}
              disabled={rotate.isPending}
              testId="new-token"
            />
          </div>
          {tokenError && (
            <p className="error" role="alert">
              {tokenError}
            </p>
          )}
        </div>
      )}
      <FormFooter form={f} busy={save.isPending} saved={saved} onClose={onClose} />
    </form>
  );
}

// Channels served by connector plugins: creating one (type, name, queue and the connector's own
// settings) and changing its settings later; both show the outcome of the plugin's `setup`
// and the webhook URL the provider must call.
import { useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, apiJson, unwrap, type S } from "../../api/client";
import { asSchema, loc, SchemaForm, schemaErrorsFrom, type JsonObject, type JsonSchema, type Loc, type SchemaErrors } from "../../components/SchemaForm";
import { CopyButton, errorMessage, LoadState, useFlash } from "./common";
import { usePlugins } from "./Plugins";

export interface ConnectorType {
  plugin: string;
  name: Loc;
  connector: { channel_type?: string; delivery?: string; features?: string[] };
  config_schema: JsonSchema;
}

export interface ConnectorChannel {
  channel: S["Channel"];
  setup_error?: string | null;
  webhook_path: string;
  config: JsonObject;
}

export function useConnectorTypes() {
  return useQuery({
    queryKey: ["connector-types"],
    queryFn: async () => (await unwrap(api.GET("/api/v1/connector-types"))) as unknown as ConnectorType[],
  });
}

const webhookUrl = (path: string) => (/^https?:\/\//.test(path) ? path : `${location.origin}${path}`);

/** The outcome of `setup` and the webhook URL of a connector channel. */
function Outcome({ r }: { r: ConnectorChannel }) {
  const { t } = useTranslation();
  return (
    <>
      {r.setup_error && (
        <p className="error" role="alert" data-testid="setup-error">
          {t("admin.channels.setupError", { error: r.setup_error })}
        </p>
      )}
      {r.webhook_path && (
        <div className="fld">
          <label>
            <span className="lbl">{t("admin.channels.webhook")}</span>
            <input readOnly value={webhookUrl(r.webhook_path)} onFocus={(e) => e.target.select()} data-testid="webhook-url" />
          </label>
          <CopyButton text={webhookUrl(r.webhook_path)} testId="copy-webhook" />
        </div>
      )}
    </>
  );
}

export function ConnectorChannelForm({ queues, onCreated, onClose }: { queues: S["Queue"][]; onCreated: (r: ConnectorChannel) => void; onClose: () => void }) {
  const { t, i18n } = useTranslation();
  const types = useConnectorTypes();
  const [plugin, setPlugin] = useState("");
  const [name, setName] = useState("");
  const [queue, setQueue] = useState(queues.length === 1 ? queues[0].id : "");
  const [errors, setErrors] = useState<SchemaErrors>({});
  const type = types.data?.find((x) => x.plugin === plugin);
  const schema = asSchema(type?.config_schema) ?? {};
  const keys = ["plugin", "name", "queue_id", ...Object.keys(schema.properties ?? {})];
  const create = useMutation({
    mutationFn: (config: JsonObject) =>
      apiJson<ConnectorChannel>("POST", "/api/v1/connector-channels", { plugin, name: name.trim(), queue_id: queue, config }),
    onMutate: () => setErrors({}),
    onSuccess: onCreated,
    onError: (e) => setErrors(schemaErrorsFrom(e, keys, (x) => errorMessage(x, t))),
  });
  const submit = (config: JsonObject) => {
    const errs: SchemaErrors = {};
    if (!plugin) errs.plugin = t("admin.common.required");
    if (!name.trim()) errs.name = t("admin.common.required");
    else if ([...name.trim()].length > 200) errs.name = t("admin.common.length", { min: 1, max: 200 });
    if (!queue) errs.queue_id = t("admin.common.required");
    if (Object.keys(errs).length > 0) return setErrors(errs);
    create.mutate(config);
  };
  const fieldError = (k: string) =>
    errors[k] && (
      <span className="field-error" data-testid={`error-${k}`}>
        {errors[k]}
      </span>
    );
  const title = t("admin.channels.connectorTitle");
  const none = types.data && types.data.length === 0;
  return (
    <SchemaForm
      key={plugin}
      schema={schema}
      onSubmit={submit}
      errors={errors}
      busy={create.isPending}
      submitLabel={t("admin.channels.create")}
      label={title}
      testId="connector-form"
      footer={
        <button type="button" onClick={onClose} data-testid="close">
          {t("admin.common.close")}
        </button>
      }
    >
      <h3>{title}</h3>
      <LoadState loading={types.isLoading} error={types.error} />
      {none && <p className="warn">{t("admin.channels.noConnectors")}</p>}
      <div className={errors.plugin ? "fld invalid" : "fld"}>
        <label>
          <span className="lbl">{t("admin.channels.connectorType")}</span>
          <select value={plugin} onChange={(e) => setPlugin(e.target.value)} aria-invalid={errors.plugin ? true : undefined} data-testid="connector-type">
            <option value="" disabled>
              {t("admin.channels.chooseType")}
            </option>
            {(types.data ?? []).map((x) => (
              <option key={x.plugin} value={x.plugin}>
                {loc(x.name, i18n.language) || x.plugin}
              </option>
            ))}
          </select>
        </label>
        {fieldError("plugin")}
      </div>
      <div className={errors.name ? "fld invalid" : "fld"}>
        <label>
          <span className="lbl">{t("admin.channels.name")}</span>
          <input value={name} onChange={(e) => setName(e.target.value)} autoComplete="off" aria-invalid={errors.name ? true : undefined} data-testid="connector-name" />
        </label>
        {fieldError("name")}
      </div>
      <div className={errors.queue_id ? "fld invalid" : "fld"}>
        <label>
          <span className="lbl">{t("admin.channels.queue")}</span>
          <select value={queue} onChange={(e) => setQueue(e.target.value)} aria-invalid={errors.queue_id ? true : undefined} data-testid="connector-queue">
            <option value="" disabled>
              {t("admin.channels.chooseQueue")}
            </option>
            {queues.map((q) => (
              <option key={q.id} value={q.id}>
                {q.name}
              </option>
            ))}
          </select>
        </label>
        {queues.length === 0 && <small className="hint">{t("admin.channels.noQueues")}</small>}
        {fieldError("queue_id")}
      </div>
    </SchemaForm>
  );
}

export function ConnectorSettings({ channel, created, onClose }: { channel: S["Channel"]; created?: ConnectorChannel; onClose: () => void }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const saved = useFlash();
  const types = useConnectorTypes();
  const plugins = usePlugins();
  const [errors, setErrors] = useState<SchemaErrors>({});
  const [version, setVersion] = useState(0);
  const pluginId = typeof channel.settings.plugin === "string" ? channel.settings.plugin : "";
  const schema =
    asSchema(types.data?.find((x) => x.plugin === pluginId)?.config_schema) ?? asSchema(plugins.data?.find((p) => p.id === pluginId)?.config_schema) ?? {};
  const keys = Object.keys(schema.properties ?? {});
  const key = ["connector-channel", channel.id];
  const view = useQuery({
    queryKey: key,
    queryFn: () => apiJson<ConnectorChannel>("GET", `/api/v1/connector-channels/${encodeURIComponent(channel.id)}`),
    initialData: created,
  });
  const save = useMutation({
    mutationFn: (config: JsonObject) => apiJson<ConnectorChannel>("PUT", `/api/v1/connector-channels/${encodeURIComponent(channel.id)}`, { config }),
    onMutate: () => {
      setErrors({});
      saved.hide();
    },
    onSuccess: (r) => {
      qc.setQueryData(key, r);
      setVersion((n) => n + 1);
      saved.show();
    },
    onError: (e) => setErrors(schemaErrorsFrom(e, keys, (x) => errorMessage(x, t))),
  });
  const title = t("admin.channels.connectorSettingsTitle", { name: channel.name });
  const loadingSchema = types.isLoading || plugins.isLoading;
  return (
    <div data-testid="connector-settings-panel">
      {view.data && !loadingSchema ? (
        <SchemaForm
          key={version}
          schema={schema}
          value={view.data.config ?? {}}
          onSubmit={(v) => save.mutate(v)}
          errors={errors}
          busy={save.isPending}
          label={title}
          testId="connector-settings-form"
          footer={
            <>
              <button type="button" onClick={onClose} data-testid="close">
                {t("admin.common.close")}
              </button>
              <span role="status" className="saved">
                {saved.on && <span data-testid="saved">✓ {t("admin.common.saved")}</span>}
              </span>
            </>
          }
        >
          <h3>{title}</h3>
          {created && version === 0 && (
            <p className="ok" role="status" data-testid="connector-created">
              ✓ {t("admin.channels.created", { name: channel.name })}
            </p>
          )}
          {/* The outcome of the last `setup`: from this save, from the creation, else as stored. */}
          <Outcome r={save.data ?? created ?? view.data} />
        </SchemaForm>
      ) : (
        <div className="form">
          <h3>{title}</h3>
          <LoadState loading={!view.error} error={view.error} />
          <div className="form-actions">
            <button type="button" onClick={onClose} data-testid="close">
              {t("admin.common.close")}
            </button>
          </div>
        </div>
      )}
    </div>
  );
}

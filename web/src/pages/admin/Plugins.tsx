// Plugins: install (package or server directory, optionally as an upgrade), enable with the
// capabilities the admin grants, disable, settings drawn from the plugin's config schema,
// uninstall; call statistics per plugin.
import { useRef, useState, type FormEvent } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, ApiError, apiFetch, apiJson, csrfHeader, unwrap, type S } from "../../api/client";
import { asSchema, hasFields, loc, SchemaForm, schemaErrorsFrom, type JsonObject, type SchemaErrors } from "../../components/SchemaForm";
import { Confirm, errorMessage, LoadState, upsert, useFlash } from "./common";

type Plugin = S["PluginInfo"];

/** What a manifest asks for (`capabilities`). */
interface Caps {
  http?: { allowed_hosts?: string[]; allow_private?: boolean };
  kv?: boolean;
  records?: { read?: string[]; write?: string[] };
}

const caps = (p: Plugin) => (p.capabilities ?? {}) as Caps;
const asObject = (v: unknown): JsonObject => (v && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : {});

export function usePlugins() {
  return useQuery({ queryKey: ["plugins"], queryFn: () => apiJson<Plugin[]>("GET", "/api/v1/plugins") });
}

/** Installs a package (raw tar bytes) or a server directory. */
async function install(source: { file: File } | { path: string }, upgrade: boolean): Promise<Plugin> {
  if ("path" in source) {
    return unwrap(api.POST("/api/v1/plugins", { params: { query: upgrade ? { upgrade: true } : {} }, body: { path: source.path } }));
  }
  const r = await apiFetch(`/api/v1/plugins${upgrade ? "?upgrade=true" : ""}`, {
    method: "POST",
    body: await source.file.arrayBuffer(),
    headers: { ...csrfHeader(), "content-type": "application/x-tar" },
    credentials: "same-origin",
  });
  const body = (await r.json().catch(() => ({}))) as Partial<S["ErrorBody"]>;
  if (!r.ok) throw new ApiError(r.status, body.code ?? "http_error", body.message ?? r.statusText, body.field ?? undefined);
  return body as unknown as Plugin;
}

export function Plugins() {
  const { t, i18n } = useTranslation();
  const qc = useQueryClient();
  const plugins = usePlugins();
  const [settingsOf, setSettingsOf] = useState<string | null>(null);
  const [enabling, setEnabling] = useState<string | null>(null);
  const [rowError, setRowError] = useState<{ id: string; message: string } | null>(null);
  const name = (p: Plugin) => loc(p.name, i18n.language) || p.id;
  const store = (p: Plugin) => {
    qc.setQueryData<Plugin[]>(["plugins"], (old) => upsert(old, p));
    void qc.invalidateQueries({ queryKey: ["plugins"] });
    void qc.invalidateQueries({ queryKey: ["connector-types"] });
  };

  const disable = useMutation({
    mutationFn: (id: string) => unwrap(api.POST("/api/v1/plugins/{id}/disable", { params: { path: { id } } })),
    onMutate: () => setRowError(null),
    onSuccess: store,
    onError: (e, id) => setRowError({ id, message: errorMessage(e, t) }),
  });
  const remove = useMutation({
    mutationFn: (id: string) => unwrap(api.DELETE("/api/v1/plugins/{id}", { params: { path: { id } } })),
    onMutate: () => setRowError(null),
    onSuccess: (_r, id) => {
      qc.setQueryData<Plugin[]>(["plugins"], (old) => old?.filter((p) => p.id !== id));
      if (settingsOf === id) setSettingsOf(null);
      void qc.invalidateQueries({ queryKey: ["plugins"] });
      void qc.invalidateQueries({ queryKey: ["connector-types"] });
    },
    onError: (e, id) => setRowError({ id, message: errorMessage(e, t) }),
  });

  const current = plugins.data?.find((p) => p.id === settingsOf);
  const toEnable = plugins.data?.find((p) => p.id === enabling);
  return (
    <div className="admin-screen">
      <InstallForm onInstalled={store} />
      {current && <PluginSettings key={current.id} plugin={current} onSaved={store} onClose={() => setSettingsOf(null)} />}
      {toEnable && (
        <EnableDialog
          plugin={toEnable}
          onDone={(p) => {
            store(p);
            setEnabling(null);
          }}
          onClose={() => setEnabling(null)}
        />
      )}
      <LoadState loading={plugins.isLoading} error={plugins.error} />
      {plugins.data && plugins.data.length === 0 && <p className="muted">{t("admin.plugins.empty")}</p>}
      {plugins.data && plugins.data.length > 0 && (
        <table className="grid" data-testid="plugins-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.plugins.name")}</th>
              <th scope="col">{t("admin.plugins.version")}</th>
              <th scope="col">{t("admin.plugins.kind")}</th>
              <th scope="col">{t("admin.plugins.status")}</th>
              <th scope="col">{t("admin.plugins.stats")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {plugins.data.map((p) => {
              const desc = loc(p.description, i18n.language);
              return (
                <tr key={p.id} data-testid="plugin-row" data-plugin={p.id} data-enabled={p.enabled} className={p.id === settingsOf ? "selected" : undefined}>
                  <td>
                    <strong>{name(p)}</strong> <code className="muted">{p.id}</code>
                    {desc && <div className="muted small">{desc}</div>}
                    {p.granted.hosts && p.granted.hosts.length > 0 && p.enabled && (
                      <div className="muted small">{t("admin.plugins.grantedHosts", { list: p.granted.hosts.join(", ") })}</div>
                    )}
                  </td>
                  <td>{p.version}</td>
                  <td>{["action", "macro", "connector"].includes(p.kind) ? t(`admin.plugins.kinds.${p.kind}`) : p.kind}</td>
                  <td>
                    <span className={p.enabled ? "pill on" : "pill off"} data-testid="plugin-status">
                      {p.enabled ? t("admin.plugins.enabled") : t("admin.plugins.disabled")}
                    </span>
                    {!p.configured && (
                      <div className="warn small" data-testid="plugin-unconfigured">
                        {t("admin.plugins.notConfigured")}
                      </div>
                    )}
                    {p.error && (
                      <div className="error small" data-testid="plugin-error">
                        {t("admin.plugins.error")}: {p.error}
                      </div>
                    )}
                  </td>
                  <td className="nowrap" data-testid="plugin-stats">
                    {t("admin.plugins.statsValue", { calls: p.stats.calls, errors: p.stats.errors, p50: p.stats.p50_us, p99: p.stats.p99_us })}
                  </td>
                  <td className="row-actions">
                    {p.enabled ? (
                      <button type="button" onClick={() => disable.mutate(p.id)} disabled={disable.isPending} data-testid="disable">
                        {t("admin.plugins.disable")}
                      </button>
                    ) : (
                      <button type="button" className="primary" onClick={() => setEnabling(p.id)} data-testid="enable">
                        {t("admin.plugins.enable")}
                      </button>
                    )}
                    <button type="button" onClick={() => setSettingsOf(p.id)} aria-label={`${t("admin.plugins.settings")}: ${name(p)}`} data-testid="settings">
                      {t("admin.plugins.settings")}
                    </button>
                    <Confirm
                      label={t("admin.plugins.uninstall")}
                      question={t("admin.plugins.uninstallConfirm", { name: name(p) })}
                      onConfirm={() => remove.mutate(p.id)}
                      disabled={remove.isPending}
                      testId="uninstall"
                    />
                    {rowError && rowError.id === p.id && (
                      <p className="error" role="alert" data-testid="row-error">
                        {rowError.message}
                      </p>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}

function InstallForm({ onInstalled }: { onInstalled: (p: Plugin) => void }) {
  const { t, i18n } = useTranslation();
  const fileInput = useRef<HTMLInputElement>(null);
  const [file, setFile] = useState<File | null>(null);
  const [path, setPath] = useState("");
  const [upgrade, setUpgrade] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const run = useMutation({
    mutationFn: (source: { file: File } | { path: string }) => install(source, upgrade),
    onMutate: () => {
      setError(null);
      setDone(null);
    },
    onSuccess: (p) => {
      onInstalled(p);
      const args = { name: loc(p.name, i18n.language) || p.id, version: p.version };
      setDone(p.enabled ? t("admin.plugins.installed", args) : t("admin.plugins.installedDisabled", args));
      setFile(null);
      setPath("");
      if (fileInput.current) fileInput.current.value = "";
    },
    onError: (e) => setError(errorMessage(e, t)),
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (file && path.trim()) return setError(t("admin.plugins.installBoth"));
    if (file) return run.mutate({ file });
    if (path.trim()) return run.mutate({ path: path.trim() });
    setError(t("admin.plugins.installNeeds"));
  };
  return (
    <form className="form wide" onSubmit={submit} noValidate aria-label={t("admin.plugins.installTitle")} data-testid="install-form">
      <h3>{t("admin.plugins.installTitle")}</h3>
      <div className="fld">
        <label>
          <span className="lbl">{t("admin.plugins.package")}</span>
          <input ref={fileInput} type="file" accept=".tar,application/x-tar" onChange={(e) => setFile(e.target.files?.[0] ?? null)} data-testid="install-file" />
        </label>
      </div>
      <div className="fld">
        <label>
          <span className="lbl">{t("admin.plugins.path")}</span>
          <input value={path} onChange={(e) => setPath(e.target.value)} autoComplete="off" data-testid="install-path" />
        </label>
        <small className="hint">{t("admin.plugins.pathHint")}</small>
      </div>
      <div className="fld">
        <label className="check">
          <input type="checkbox" checked={upgrade} onChange={(e) => setUpgrade(e.target.checked)} data-testid="install-upgrade" />
          {t("admin.plugins.upgrade")}
        </label>
      </div>
      {error && (
        <p className="error" role="alert" data-testid="install-error">
          {error}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={run.isPending} data-testid="install">
          {run.isPending ? t("admin.plugins.installing") : t("admin.plugins.install")}
        </button>
        <span role="status" className="saved">
          {done && <span data-testid="installed">✓ {done}</span>}
        </span>
      </div>
    </form>
  );
}

/** Lists what the manifest asks for; the admin ticks the hosts (and private addresses) to grant. */
function EnableDialog({ plugin, onDone, onClose }: { plugin: Plugin; onDone: (p: Plugin) => void; onClose: () => void }) {
  const { t, i18n } = useTranslation();
  const c = caps(plugin);
  const hosts = c.http?.allowed_hosts ?? [];
  const [granted, setGranted] = useState<string[]>(() => (plugin.granted.hosts && plugin.granted.hosts.length > 0 ? plugin.granted.hosts.filter((h) => hosts.includes(h)) : hosts));
  const [priv, setPriv] = useState(!!plugin.granted.private);
  const [error, setError] = useState<string | null>(null);
  const limits = Object.entries(asObject(plugin.limits)).map(([k, v]) => `${k} ${String(v)}`);
  const enable = useMutation({
    mutationFn: () =>
      unwrap(
        api.POST("/api/v1/plugins/{id}/enable", {
          params: { path: { id: plugin.id } },
          body: c.http ? { grant: { hosts: granted, private: !!c.http.allow_private && priv } } : {},
        }),
      ),
    onMutate: () => setError(null),
    onSuccess: onDone,
    onError: (e) => setError(errorMessage(e, t)),
  });
  const title = t("admin.plugins.enableTitle", { name: loc(plugin.name, i18n.language) || plugin.id });
  const nothing = !c.http && !c.kv && !c.records?.read?.length && !c.records?.write?.length;
  return (
    <div className="modal-backdrop" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <div className="modal" role="dialog" aria-modal="true" aria-labelledby="enable-h" data-testid="enable-dialog">
        <h3 id="enable-h">{title}</h3>
        {nothing ? <p>{t("admin.plugins.noCapabilities")}</p> : <p>{t("admin.plugins.enableIntro")}</p>}
        {c.http && hosts.length > 0 && (
          <fieldset className="grants">
            <legend>{t("admin.plugins.hosts")}</legend>
            {hosts.map((h) => (
              <label key={h} className="check">
                <input
                  type="checkbox"
                  checked={granted.includes(h)}
                  onChange={(e) => setGranted((cur) => (e.target.checked ? [...cur, h] : cur.filter((x) => x !== h)))}
                  data-testid="grant-host"
                />
                <code>{h}</code>
              </label>
            ))}
          </fieldset>
        )}
        {c.http?.allow_private && (
          <label className="check">
            <input type="checkbox" checked={priv} onChange={(e) => setPriv(e.target.checked)} data-testid="grant-private" />
            {t("admin.plugins.private")}
          </label>
        )}
        {c.kv && <p className="cap">• {t("admin.plugins.kv")}</p>}
        {!!c.records?.read?.length && <p className="cap">• {t("admin.plugins.recordsRead", { list: c.records.read.join(", ") })}</p>}
        {!!c.records?.write?.length && <p className="cap">• {t("admin.plugins.recordsWrite", { list: c.records.write.join(", ") })}</p>}
        {limits.length > 0 && <p className="muted small">{t("admin.plugins.limits", { list: limits.join(", ") })}</p>}
        {error && (
          <p className="error" role="alert" data-testid="enable-error">
            {error}
          </p>
        )}
        <div className="form-actions">
          <button type="button" className="primary" onClick={() => enable.mutate()} disabled={enable.isPending} autoFocus data-testid="confirm-enable">
            {t("admin.plugins.enable")}
          </button>
          <button type="button" onClick={onClose}>
            {t("admin.plugins.cancel")}
          </button>
        </div>
      </div>
    </div>
  );
}

function PluginSettings({ plugin, onSaved, onClose }: { plugin: Plugin; onSaved: (p: Plugin) => void; onClose: () => void }) {
  const { t, i18n } = useTranslation();
  const saved = useFlash();
  const [errors, setErrors] = useState<SchemaErrors>({});
  // The form starts over from what the server stored after each save.
  const [version, setVersion] = useState(0);
  const schema = asSchema(plugin.config_schema);
  const keys = Object.keys(schema?.properties ?? {});
  const save = useMutation({
    mutationFn: (config: JsonObject) =>
      unwrap(api.PUT("/api/v1/plugins/{id}/config", { params: { path: { id: plugin.id } }, body: { config: config as S["ConfigRequest"]["config"] } })),
    onMutate: () => {
      setErrors({});
      saved.hide();
    },
    onSuccess: (p) => {
      onSaved(p);
      setVersion((n) => n + 1);
      saved.show();
    },
    onError: (e) => setErrors(schemaErrorsFrom(e, keys, (x) => errorMessage(x, t))),
  });
  const title = t("admin.plugins.settingsTitle", { name: loc(plugin.name, i18n.language) || plugin.id });
  const close = (
    <>
      <button type="button" onClick={onClose} data-testid="close">
        {t("admin.common.close")}
      </button>
      <span role="status" className="saved">
        {saved.on && <span data-testid="saved">✓ {t("admin.common.saved")}</span>}
      </span>
    </>
  );
  if (!hasFields(schema)) {
    return (
      <div className="form" data-testid="plugin-settings">
        <h3>{title}</h3>
        <p className="muted">{t("admin.plugins.noSettings")}</p>
        <div className="form-actions">{close}</div>
      </div>
    );
  }
  return (
    <div data-testid="plugin-settings">
      <SchemaForm
        key={version}
        schema={schema}
        value={asObject(plugin.config)}
        onSubmit={(v) => save.mutate(v)}
        errors={errors}
        busy={save.isPending}
        label={title}
        footer={close}
        testId="plugin-settings-form"
      >
        <h3>{title}</h3>
      </SchemaForm>
    </div>
  );
}

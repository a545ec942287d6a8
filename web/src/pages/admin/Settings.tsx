import { type FormEvent } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, unwrap, type S } from "../../api/client";
import { compact, Field, FormFooter, LoadState, useChecks, useFlash, useForm, useSettings } from "./common";

/** System settings (S6): the number of simultaneous chats. */
export function Settings() {
  const settings = useSettings();
  return (
    <div className="admin-screen">
      <LoadState loading={settings.isLoading} error={settings.error} />
      {settings.data && <SettingsForm settings={settings.data} />}
    </div>
  );
}

function SettingsForm({ settings }: { settings: S["Settings"] }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const check = useChecks();
  const saved = useFlash();
  const f = useForm(() => ({ simultaneous_chats: String(settings.simultaneous_chats) }));
  const v = f.values;

  const save = useMutation({
    mutationFn: () => unwrap(api.PUT("/api/v1/settings", { body: { simultaneous_chats: Number(v.simultaneous_chats) } })),
    onSuccess: (s) => {
      qc.setQueryData(["settings"], s);
      void qc.invalidateQueries({ queryKey: ["settings"] });
      // Operators' limits shown on the desk follow the setting.
      void qc.invalidateQueries({ queryKey: ["inbox"] });
      saved.show();
    },
    onError: f.fail,
  });

  const submit = (e: FormEvent) => {
    e.preventDefault();
    saved.hide();
    const errs = compact({ simultaneous_chats: check.int(v.simultaneous_chats, 1, 100) });
    f.setErrors(errs);
    if (Object.keys(errs).length === 0) save.mutate();
  };

  return (
    <form ref={f.ref} className="form" onSubmit={submit} noValidate aria-label={t("admin.nav.settings")} data-testid="settings-form">
      <Field form={f} name="simultaneous_chats" label={t("admin.settings.simultaneousChats")} hint={t("admin.settings.simultaneousChatsHint")}>
        <input
          type="number"
          inputMode="numeric"
          min={1}
          max={100}
          value={v.simultaneous_chats}
          onChange={(e) => f.set("simultaneous_chats", e.target.value)}
          required
          {...f.aria("simultaneous_chats", true)}
        />
      </Field>
      <FormFooter form={f} busy={save.isPending} saved={saved.on} />
    </form>
  );
}

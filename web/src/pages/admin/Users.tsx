import { useState, type FormEvent } from "react";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, unwrap, type S } from "../../api/client";
import { compact, Field, FormFooter, LoadState, optInt, upsert, useChecks, useFlash, useFocusFirst, useForm, useSettings, useUsers } from "./common";

const ROLES: S["Role"][] = ["operator", "supervisor", "admin"];
const LOCALES = [
  ["en", "English"],
  ["ru", "Русский"],
] as const;

export function Users({ me }: { me: S["User"] }) {
  const { t } = useTranslation();
  const users = useUsers();
  const settings = useSettings();
  const [sel, setSel] = useState<string | null>(null);
  const [fresh, setFresh] = useState(false);
  const saved = useFlash();
  const current = sel && sel !== "new" ? users.data?.find((u) => u.id === sel) : undefined;
  const open = (id: string) => {
    saved.hide();
    setFresh(true);
    setSel(id);
  };
  const defaultLimit = settings.data?.simultaneous_chats ?? 5;

  return (
    <div className="admin-screen">
      <div className="toolbar">
        <button type="button" onClick={() => open("new")} data-testid="add-user">
          {t("admin.users.add")}
        </button>
      </div>
      {(sel === "new" || current) && (
        <UserForm
          key={sel}
          user={current}
          me={me}
          defaultLimit={defaultLimit}
          focus={fresh}
          saved={saved.on}
          onSaved={(u) => {
            setFresh(false);
            setSel(u.id);
            saved.show();
          }}
          onClose={() => setSel(null)}
        />
      )}
      <LoadState loading={users.isLoading} error={users.error} />
      {users.data && (
        <table className="grid" data-testid="users-table">
          <thead>
            <tr>
              <th scope="col">{t("admin.users.username")}</th>
              <th scope="col">{t("admin.users.displayName")}</th>
              <th scope="col">{t("admin.users.role")}</th>
              <th scope="col">{t("admin.users.status")}</th>
              <th scope="col">{t("admin.users.chatLimit")}</th>
              <th scope="col">{t("admin.users.disabled")}</th>
              <th scope="col">
                <span className="sr-only">{t("admin.common.actions")}</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {users.data.map((u) => (
              <tr key={u.id} data-testid="user-row" className={u.id === sel ? "selected" : undefined}>
                <td>{u.username}</td>
                <td>{u.display_name}</td>
                <td>{t(`admin.users.roles.${u.role}`)}</td>
                <td>{t(`status.${u.status}`)}</td>
                <td>{u.chat_limit ?? <span className="muted">{t("admin.users.chatLimitDefault", { n: defaultLimit })}</span>}</td>
                <td>{u.disabled ? t("admin.common.yes") : t("admin.common.no")}</td>
                <td className="row-actions">
                  <button type="button" onClick={() => open(u.id)} aria-label={`${t("admin.common.edit")}: ${u.username}`} data-testid="edit">
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

function UserForm({
  user,
  me,
  defaultLimit,
  focus,
  saved,
  onSaved,
  onClose,
}: {
  user?: S["User"];
  me: S["User"];
  defaultLimit: number;
  focus: boolean;
  saved: boolean;
  onSaved: (u: S["User"]) => void;
  onClose: () => void;
}) {
  const { t, i18n } = useTranslation();
  const qc = useQueryClient();
  const check = useChecks();
  const self = user?.id === me.id;
  const f = useForm(() => ({
    username: user?.username ?? "",
    display_name: user?.display_name ?? "",
    password: "",
    current_password: "",
    role: (user?.role ?? "operator") as S["Role"],
    email: user?.email ?? "",
    locale: user?.locale ?? (i18n.language === "ru" ? "ru" : "en"),
    chat_limit: user?.chat_limit != null ? String(user.chat_limit) : "",
    disabled: user?.disabled ?? false,
  }));
  const v = f.values;
  useFocusFirst(f.ref, focus);

  const save = useMutation({
    mutationFn: () => {
      const email = v.email.trim() || null;
      const chat_limit = optInt(v.chat_limit);
      if (!user) {
        return unwrap(
          api.POST("/api/v1/users", {
            body: { username: v.username.trim(), display_name: v.display_name.trim(), password: v.password, role: v.role, email, locale: v.locale, chat_limit },
          }),
        );
      }
      const body: S["UserPatchInput"] = { display_name: v.display_name.trim(), email, locale: v.locale, chat_limit };
      if (!self) {
        body.role = v.role;
        body.disabled = v.disabled;
      }
      if (v.password) body.password = v.password;
      if (v.password && self) body.current_password = v.current_password;
      return unwrap(api.PATCH("/api/v1/users/{id}", { params: { path: { id: user.id } }, body }));
    },
    onSuccess: (u) => {
      qc.setQueryData<S["User"][]>(["users"], (old) => upsert(old, u));
      void qc.invalidateQueries({ queryKey: ["users"] });
      if (u.id === me.id) {
        void qc.invalidateQueries({ queryKey: ["me"] });
        void qc.invalidateQueries({ queryKey: ["inbox"] });
      }
      f.set("password", "");
      f.set("current_password", "");
      onSaved(u);
    },
    onError: f.fail,
  });

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const errs = compact({
      username: user
        ? undefined
        : (check.length(v.username, 2, 64) ?? (/^[A-Za-z0-9._@-]+$/.test(v.username.trim()) ? undefined : t("admin.users.usernameRule"))),
      display_name: check.length(v.display_name, 1, 200),
      password: !user && !v.password ? check.required(v.password) : v.password && [...v.password].length < 8 ? t("admin.users.passwordRule") : undefined,
      current_password: self && v.password && !v.current_password ? check.required(v.current_password) : undefined,
      email: v.email.trim() && !v.email.includes("@") ? t("admin.users.emailInvalid") : undefined,
      chat_limit: v.chat_limit.trim() ? check.int(v.chat_limit, 1, 100) : undefined,
    });
    f.setErrors(errs);
    if (Object.keys(errs).length === 0) save.mutate();
  };

  const title = user ? t("admin.users.editTitle", { name: user.username }) : t("admin.users.newTitle");
  return (
    <form ref={f.ref} className="form" onSubmit={submit} noValidate aria-label={title} data-testid="user-form">
      <h3>{title}</h3>
      {!user && (
        <Field form={f} name="username" label={t("admin.users.username")} hint={t("admin.users.usernameRule")}>
          <input value={v.username} onChange={(e) => f.set("username", e.target.value)} autoComplete="off" required {...f.aria("username", true)} />
        </Field>
      )}
      <Field form={f} name="display_name" label={t("admin.users.displayName")}>
        <input value={v.display_name} onChange={(e) => f.set("display_name", e.target.value)} autoComplete="off" required {...f.aria("display_name")} />
      </Field>
      <Field
        form={f}
        name="password"
        label={user ? t("admin.users.newPassword") : t("admin.users.password")}
        hint={user ? t("admin.users.newPasswordHint") : t("admin.users.passwordRule")}
      >
        <input
          type="password"
          value={v.password}
          onChange={(e) => f.set("password", e.target.value)}
          autoComplete="new-password"
          required={!user}
          {...f.aria("password", true)}
        />
      </Field>
      {self && v.password && (
        <Field form={f} name="current_password" label={t("admin.users.currentPassword")} hint={t("admin.users.currentPasswordHint")}>
          <input
            type="password"
            value={v.current_password}
            onChange={(e) => f.set("current_password", e.target.value)}
            autoComplete="current-password"
            required
            {...f.aria("current_password", true)}
          />
        </Field>
      )}
      <Field form={f} name="role" label={t("admin.users.role")} hint={self ? t("admin.users.selfHint") : undefined}>
        <select value={v.role} onChange={(e) => f.set("role", e.target.value as S["Role"])} disabled={self} {...f.aria("role", self)}>
          {ROLES.map((r) => (
            <option key={r} value={r}>
              {t(`admin.users.roles.${r}`)}
            </option>
          ))}
        </select>
      </Field>
      <Field form={f} name="email" label={t("admin.users.email")}>
        <input type="email" value={v.email} onChange={(e) => f.set("email", e.target.value)} autoComplete="off" {...f.aria("email")} />
      </Field>
      <Field form={f} name="locale" label={t("admin.users.locale")}>
        <select value={v.locale} onChange={(e) => f.set("locale", e.target.value)} {...f.aria("locale")}>
          {LOCALES.map(([code, name]) => (
            <option key={code} value={code} lang={code}>
              {name}
            </option>
          ))}
        </select>
      </Field>
      <Field form={f} name="chat_limit" label={t("admin.users.chatLimit")} hint={t("admin.users.chatLimitHint", { n: defaultLimit })}>
        <input
          type="number"
          inputMode="numeric"
          min={1}
          max={100}
          value={v.chat_limit}
          onChange={(e) => f.set("chat_limit", e.target.value)}
          {...f.aria("chat_limit", true)}
        />
      </Field>
      {user && (
        <div className={f.errors.disabled ? "fld invalid" : "fld"}>
          <label className="check">
            <input type="checkbox" checked={v.disabled} onChange={(e) => f.set("disabled", e.target.checked)} disabled={self} {...f.aria("disabled")} />
            {t("admin.users.disabledLabel")}
          </label>
          {f.errors.disabled && (
            <span className="field-error" id={f.errId("disabled")}>
              {f.errors.disabled}
            </span>
          )}
        </div>
      )}
      <FormFooter form={f} busy={save.isPending} saved={saved} onClose={onClose} />
    </form>
  );
}

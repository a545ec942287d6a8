import { useState, type FormEvent } from "react";
import { useTranslation } from "react-i18next";
import { api, setCsrf, type S } from "../api/client";

export function Login({ onLoggedIn }: { onLoggedIn: (me: S["Me"]) => void }) {
  const { t } = useTranslation();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const r = await api.POST("/api/v1/auth/login", { body: { username, password } });
    setBusy(false);
    if (r.data) {
      setCsrf(r.data.csrf_token);
      onLoggedIn(r.data);
    } else {
      setError(r.response.status === 429 ? t("login.throttled") : t("login.failed"));
    }
  }

  return (
    <main className="login">
      <form onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">{t("appName")}</h1>
        <h2>{t("login.title")}</h2>
        <label>
          {t("login.username")}
          <input name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} autoFocus required />
        </label>
        <label>
          {t("login.password")}
          <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required />
        </label>
        {error && <p className="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>{t("login.submit")}</button>
      </form>
    </main>
  );
}

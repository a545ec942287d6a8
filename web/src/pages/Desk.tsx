import { lazy, Suspense, useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { NavLink, Route, Routes, useNavigate } from "react-router-dom";
import { api, errorText, unwrap, type S } from "../api/client";
import { useEvents } from "../events";
import { ChatPage } from "./ChatPage";
// Pages outside the communication panel load on demand (charts and admin forms are large).
const Admin = lazy(() => import("./Admin").then((m) => ({ default: m.Admin })));
const Section = lazy(() => import("./Section").then((m) => ({ default: m.Section })));
const ContactPage = lazy(() => import("./ContactPage").then((m) => ({ default: m.ContactPage })));
const CaseList = lazy(() => import("./Cases").then((m) => ({ default: m.CaseList })));
const CasePage = lazy(() => import("./Cases").then((m) => ({ default: m.CasePage })));
const Tasks = lazy(() => import("./Tasks").then((m) => ({ default: m.Tasks })));

export function useInbox() {
  return useQuery({ queryKey: ["inbox"], queryFn: () => unwrap(api.GET("/api/v1/me/inbox")) });
}

/** The caller's open user tasks; polled, since no event announces a new task. */
export function useOpenTasks() {
  return useQuery({
    queryKey: ["tasks", "open"],
    queryFn: () => unwrap(api.GET("/api/v1/tasks", { params: { query: { state: "open" } } })),
    refetchInterval: 5000,
  });
}

export function Desk({ me }: { me: S["User"] }) {
  const { t, i18n } = useTranslation();
  const qc = useQueryClient();
  const [muted, setMuted] = useState(() => localStorage.getItem("ferrydesk:muted") === "1");
  useEvents(muted);
  const inbox = useInbox();
  const tasks = useOpenTasks();
  const openTasks = tasks.data?.length ?? 0;
  const status = inbox.data?.status ?? me.status;

  const setStatus = useMutation({
    mutationFn: (s: S["OperatorStatus"]) => unwrap(api.PUT("/api/v1/me/status", { body: { status: s } })),
    onSuccess: () => qc.invalidateQueries({ queryKey: ["inbox"] }),
  });
  const logout = async () => {
    await api.POST("/api/v1/auth/logout");
    qc.setQueryData(["me"], null);
  };
  const setLang = (lng: string) => {
    localStorage.setItem("ferrydesk:lang", lng);
    void i18n.changeLanguage(lng);
    void api.PATCH("/api/v1/users/{id}", { params: { path: { id: me.id } }, body: { locale: lng } });
  };
  const toggleMute = () => {
    localStorage.setItem("ferrydesk:muted", muted ? "0" : "1");
    if (muted && "Notification" in window && Notification.permission === "default") void Notification.requestPermission();
    setMuted(!muted);
  };

  return (
    <div className="desk">
      <header className="topbar">
        <strong className="brand">{t("appName")}</strong>
        <nav className="topnav" aria-label="main">
          <NavLink to="/" end>{t("nav.desk")}</NavLink>
          <NavLink to="/tasks" data-testid="nav-tasks">
            {t("nav.tasks")}
            {openTasks > 0 && (
              <span className="counter nav-counter" data-testid="tasks-count" aria-label={t("nav.openTasks", { n: openTasks })}>
                {openTasks}
              </span>
            )}
          </NavLink>
          <NavLink to="/cases" data-testid="nav-cases">{t("nav.cases")}</NavLink>
          {me.role !== "operator" && <NavLink to="/section/chats" data-testid="nav-section">{t("nav.section")}</NavLink>}
          {me.role === "admin" && <NavLink to="/admin" data-testid="nav-admin">{t("nav.admin")}</NavLink>}
        </nav>
        <div className="status-switch" role="group" aria-label={t("status.label")}>
          {(["active", "inactive"] as const).map((s) => (
            <button
              key={s}
              type="button"
              data-testid={`status-${s}`}
              aria-pressed={status === s}
              className={status === s ? `on ${s}` : ""}
              onClick={() => setStatus.mutate(s)}
            >
              {t(`status.${s}`)}
            </button>
          ))}
        </div>
        {inbox.data && (
          <span className="load" data-testid="load">
            {t("lists.load", { load: inbox.data.load, limit: inbox.data.limit })}
          </span>
        )}
        <span className="spacer" />
        <button type="button" className="link" onClick={toggleMute} data-testid="mute">
          {muted ? t("menu.unmute") : t("menu.mute")}
        </button>
        <label className="lang">
          <span className="sr-only">{t("menu.language")}</span>
          <select value={i18n.language} onChange={(e) => setLang(e.target.value)} data-testid="language">
            <option value="en">English</option>
            <option value="ru">Русский</option>
          </select>
        </label>
        <span className="who">{me.display_name}</span>
        <button type="button" className="link" onClick={logout} data-testid="logout">
          {t("menu.logout")}
        </button>
      </header>
      <Suspense fallback={<p className="muted">…</p>}>
      <Routes>
        <Route path="/admin/*" element={<main className="page-main"><Admin me={me} /></main>} />
        <Route path="/section/*" element={<main className="page-main"><Section /></main>} />
        <Route path="/contacts/:id" element={<main className="page-main"><ContactPage me={me} /></main>} />
        <Route path="/cases" element={<main className="page-main"><CaseList /></main>} />
        <Route path="/cases/:id" element={<main className="page-main"><CasePage me={me} /></main>} />
        <Route path="/tasks" element={<main className="page-main"><Tasks me={me} /></main>} />
        <Route
          path="*"
          element={
            <div className="columns">
              <ChatsPanel inbox={inbox.data} />
              <main className="main">
                <Routes>
                  <Route path="/chats/:id" element={<ChatPage me={me} />} />
                  <Route path="*" element={<p className="empty">{t("chat.select")}</p>} />
                </Routes>
              </main>
            </div>
          }
        />
      </Routes>
      </Suspense>
    </div>
  );
}

function ChatsPanel({ inbox }: { inbox?: S["Inbox"] }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const navigate = useNavigate();
  const [error, setError] = useState<string | null>(null);
  const accept = useMutation({
    mutationFn: (id: string) => unwrap(api.POST("/api/v1/chats/{id}/accept", { params: { path: { id } } })),
    onSuccess: (chat) => {
      setError(null);
      void qc.invalidateQueries({ queryKey: ["inbox"] });
      navigate(`/chats/${chat.id}`);
    },
    onError: (e: Error) => {
      setError(errorText(t, e));
      void qc.invalidateQueries({ queryKey: ["inbox"] });
    },
  });
  const finish = useMutation({
    mutationFn: (id: string) => unwrap(api.POST("/api/v1/chats/{id}/finish", { params: { path: { id } } })),
    onSuccess: () => qc.invalidateQueries(),
  });
  const newChats = inbox?.new_chats ?? [];
  const active = inbox?.active_chats ?? [];

  return (
    <nav className="panel" aria-label={t("tabs.chats")}>
      <h2 className="tab">
        {t("tabs.chats")}
        {newChats.length > 0 && (
          <span className="counter" data-testid="new-counter" aria-label={`${newChats.length} ${t("lists.new")}`}>
            {newChats.length}
          </span>
        )}
      </h2>
      {error && <p className="error" role="alert">{error}</p>}
      <section aria-labelledby="new-h">
        <h3 id="new-h">{t("lists.new")}</h3>
        {newChats.length === 0 && <p className="muted">{t("lists.noNew")}</p>}
        <ul className="chat-list" data-testid="new-list">
          {newChats.map((c) => (
            <li key={c.id} className="chat-item new">
              <div className="who">{c.contact_name}</div>
              <div className="preview">{c.preview}</div>
              <button type="button" data-testid="accept" onClick={() => accept.mutate(c.id)} disabled={accept.isPending}>
                {t("chat.accept")}
              </button>
            </li>
          ))}
        </ul>
      </section>
      <section aria-labelledby="active-h">
        <h3 id="active-h">{t("lists.active")}</h3>
        {active.length === 0 && <p className="muted">{t("lists.noActive")}</p>}
        <ul className="chat-list" data-testid="active-list">
          {active.map((c) => (
            <li key={c.id} className="chat-item">
              <NavLink to={`/chats/${c.id}`} className="open">
                <span className="who">{c.contact_name}</span>
                {c.unread_count > 0 && <span className="unread" data-testid="unread">{c.unread_count}</span>}
                <span className="preview">{c.preview}</span>
              </NavLink>
              <button type="button" className="finish-hover" title={t("chat.finish")} aria-label={t("chat.finish")} onClick={() => finish.mutate(c.id)}>
                ✕
              </button>
            </li>
          ))}
        </ul>
      </section>
    </nav>
  );
}

import { useTranslation } from "react-i18next";
import { Navigate, NavLink, Route, Routes } from "react-router-dom";
import type { S } from "../api/client";
import { Users } from "./admin/Users";
import { Queues } from "./admin/Queues";
import { Channels } from "./admin/Channels";
import { Templates } from "./admin/Templates";
import { Settings } from "./admin/Settings";
import { Plugins } from "./admin/Plugins";
import { Processes } from "./admin/Processes";
import { ChatActions } from "./admin/ChatActions";
import { DuplicateRules } from "./admin/DuplicateRules";

const TABS = ["users", "queues", "channels", "templates", "plugins", "processes", "chat-actions", "duplicate-rules", "settings"] as const;
/** Tabs whose test id is not `admin-nav-<tab>`. */
const TAB_TESTID: Partial<Record<(typeof TABS)[number], string>> = { processes: "admin-processes", "chat-actions": "admin-chat-actions", "duplicate-rules": "admin-duplicate-rules" };

/**
 * Administration screens (admins only): users, queues, channels, message templates, plugins,
 * processes, the chat Actions menu, duplicate rules, settings.
 */
export function Admin({ me }: { me: S["User"] }) {
  const { t } = useTranslation();
  if (me.role !== "admin") {
    return (
      <section className="page">
        <h2>{t("admin.title")}</h2>
        <p className="error" role="alert">{t("admin.adminsOnly")}</p>
      </section>
    );
  }
  return (
    <section className="page admin" aria-labelledby="admin-h">
      <h2 id="admin-h">{t("admin.title")}</h2>
      <nav className="subnav" aria-label={t("admin.title")}>
        {TABS.map((tab) => (
          <NavLink key={tab} to={`/admin/${tab}`} data-testid={TAB_TESTID[tab] ?? `admin-nav-${tab}`}>
            {t(`admin.nav.${tab}`)}
          </NavLink>
        ))}
      </nav>
      <Routes>
        <Route index element={<Navigate to="/admin/users" replace />} />
        <Route path="users" element={<Users me={me} />} />
        <Route path="queues" element={<Queues />} />
        <Route path="channels" element={<Channels />} />
        <Route path="templates" element={<Templates />} />
        <Route path="plugins" element={<Plugins />} />
        <Route path="processes/*" element={<Processes />} />
        <Route path="chat-actions" element={<ChatActions />} />
        <Route path="duplicate-rules" element={<DuplicateRules />} />
        <Route path="settings" element={<Settings />} />
        <Route path="*" element={<Navigate to="/admin/users" replace />} />
      </Routes>
    </section>
  );
}

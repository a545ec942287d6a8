import { useMemo, useState } from "react";
import { useQuery } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { Link, NavLink, Route, Routes, useParams } from "react-router-dom";
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { api, unwrap, type S } from "../api/client";
import { DuplicateReview } from "./DuplicateReview";
import "./section.css";

/** Names of channels, queues and users by id, for tables. */
function useNames() {
  const channels = useQuery({ queryKey: ["channels"], queryFn: () => unwrap(api.GET("/api/v1/channels")) });
  const queues = useQuery({ queryKey: ["queues"], queryFn: () => unwrap(api.GET("/api/v1/queues")) });
  const users = useQuery({ queryKey: ["users"], queryFn: () => unwrap(api.GET("/api/v1/users")) });
  return useMemo(() => {
    const m = new Map<string, string>();
    channels.data?.forEach((c) => m.set(c.id, c.name));
    queues.data?.forEach((q) => m.set(q.id, q.name));
    users.data?.forEach((u) => m.set(u.id, u.display_name));
    return {
      name: (id?: string | null) => (id ? (m.get(id) ?? id.slice(0, 8)) : "—"),
      channels: channels.data ?? [],
      queues: queues.data ?? [],
      users: users.data ?? [],
    };
  }, [channels.data, queues.data, users.data]);
}

export function Section() {
  const { t } = useTranslation();
  return (
    <section className="page">
      <h2>{t("section.title")}</h2>
      <nav className="subnav">
        <NavLink to="/section/chats" end>{t("section.list")}</NavLink>
        <NavLink to="/section/totals" data-testid="nav-totals">{t("section.totals")}</NavLink>
        <NavLink to="/section/duplicates" data-testid="nav-duplicates">{t("section.duplicates")}</NavLink>
      </nav>
      <Routes>
        <Route path="chats/:id" element={<ChatRecord />} />
        <Route path="totals" element={<Totals />} />
        <Route path="duplicates" element={<DuplicateReview />} />
        <Route path="*" element={<ChatList />} />
      </Routes>
    </section>
  );
}

const PAGE = 25;

function ChatList() {
  const { t, i18n } = useTranslation();
  const names = useNames();
  const [draft, setDraft] = useState({ status: "", channel_id: "", queue_id: "", operator_id: "", from: "", to: "" });
  const [filter, setFilter] = useState(draft);
  const [offset, setOffset] = useState(0);
  const query = useMemo(() => {
    const q: Record<string, string | number> = { limit: PAGE, offset };
    for (const [k, v] of Object.entries(filter)) {
      if (!v) continue;
      q[k] = k === "from" || k === "to" ? new Date(v).toISOString() : v;
    }
    return q;
  }, [filter, offset]);
  const list = useQuery({
    queryKey: ["section-chats", query],
    queryFn: () => unwrap(api.GET("/api/v1/chats", { params: { query } })),
  });
  const csv = new URLSearchParams(Object.entries(query).filter(([k]) => k !== "limit" && k !== "offset").map(([k, v]) => [k, String(v)]));
  const total = list.data?.total ?? 0;
  const set = (k: keyof typeof draft) => (e: { target: { value: string } }) => setDraft({ ...draft, [k]: e.target.value });
  return (
    <>
      <form
        className="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          setOffset(0);
          setFilter(draft);
        }}
      >
        <label>
          {t("section.filters.status")}{" "}
          <select value={draft.status} onChange={set("status")} data-testid="filter-status">
            <option value="">{t("section.filters.any")}</option>
            <option value="new">{t("chat.newChat")}</option>
            <option value="in_progress">{t("chat.inProgress")}</option>
            <option value="completed">{t("chat.completed")}</option>
          </select>
        </label>
        <label>
          {t("section.filters.channel")}{" "}
          <select value={draft.channel_id} onChange={set("channel_id")}>
            <option value="">{t("section.filters.any")}</option>
            {names.channels.map((c) => <option key={c.id} value={c.id}>{c.name}</option>)}
          </select>
        </label>
        <label>
          {t("section.filters.queue")}{" "}
          <select value={draft.queue_id} onChange={set("queue_id")}>
            <option value="">{t("section.filters.any")}</option>
            {names.queues.map((q) => <option key={q.id} value={q.id}>{q.name}</option>)}
          </select>
        </label>
        <label>
          {t("section.filters.operator")}{" "}
          <select value={draft.operator_id} onChange={set("operator_id")}>
            <option value="">{t("section.filters.any")}</option>
            {names.users.map((u) => <option key={u.id} value={u.id}>{u.display_name}</option>)}
          </select>
        </label>
        <label>
          {t("section.filters.from")} <input type="date" value={draft.from} onChange={set("from")} />
        </label>
        <label>
          {t("section.filters.to")} <input type="date" value={draft.to} onChange={set("to")} />
        </label>
        <button type="submit" data-testid="apply-filters">{t("section.filters.apply")}</button>
        <a className="button-link" href={`/api/v1/chats/export.csv?${csv}`} download data-testid="export-csv">
          {t("section.exportCsv")}
        </a>
      </form>
      {list.isError && <p className="error" role="alert">{(list.error as Error).message}</p>}
      <table className="grid" data-testid="chats-table">
        <thead>
          <tr>
            <th>{t("section.col.contact")}</th>
            <th>{t("section.col.status")}</th>
            <th>{t("section.col.channel")}</th>
            <th>{t("section.col.queue")}</th>
            <th>{t("section.col.operator")}</th>
            <th>{t("section.col.started")}</th>
            <th>{t("section.col.duration")}</th>
            <th>{t("section.col.closeReason")}</th>
          </tr>
        </thead>
        <tbody>
          {(list.data?.items ?? []).map((c) => (
            <tr key={c.id}>
              <td>
                <Link to={`/section/chats/${c.id}`}>{c.contact_name}</Link>
              </td>
              <td>{statusLabel(t, c.status)}</td>
              <td>{names.name(c.channel_id)}</td>
              <td>{names.name(c.queue_id)}</td>
              <td>{names.name(c.responsible_id)}</td>
              <td>{new Date(c.started_at).toLocaleString(i18n.language)}</td>
              <td>{c.duration_secs != null ? formatSecs(c.duration_secs) : "—"}</td>
              <td>{c.close_reason ? t(`section.reason.${c.close_reason}`) : "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="toolbar">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>{t("section.prev")}</button>
        <span className="muted">{t("section.page", { from: total === 0 ? 0 : offset + 1, to: Math.min(offset + PAGE, total), total })}</span>
        <button type="button" disabled={offset + PAGE >= total} onClick={() => setOffset(offset + PAGE)}>{t("section.next")}</button>
      </div>
    </>
  );
}

type T = ReturnType<typeof useTranslation>["t"];

function statusLabel(t: T, s: S["ChatStatus"]) {
  return { new: t("chat.newChat"), in_progress: t("chat.inProgress"), completed: t("chat.completed") }[s];
}

function formatSecs(s: number) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}` : `${m}:${String(sec).padStart(2, "0")}`;
}

function ChatRecord() {
  const { id = "" } = useParams();
  const { t, i18n } = useTranslation();
  const names = useNames();
  const view = useQuery({ queryKey: ["chat", id], queryFn: () => unwrap(api.GET("/api/v1/chats/{id}", { params: { path: { id } } })) });
  const routing = useQuery({ queryKey: ["routing", id], queryFn: () => unwrap(api.GET("/api/v1/chats/{id}/routing", { params: { path: { id } } })) });
  if (view.isError) return <p className="error" role="alert">{(view.error as Error).message}</p>;
  const c = view.data?.chat;
  if (!c) return <p className="muted">…</p>;
  const when = (v?: string | null) => (v ? new Date(v).toLocaleString(i18n.language) : "—");
  const rows: [string, React.ReactNode][] = [
    [t("section.col.contact"), <Link to={`/contacts/${c.contact_id}`} key="c">{c.contact_name}</Link>],
    [t("section.col.status"), statusLabel(t, c.status)],
    [t("section.col.channel"), names.name(c.channel_id)],
    [t("section.col.queue"), names.name(c.queue_id)],
    [t("section.col.operator"), names.name(c.responsible_id)],
    [t("section.record.directed"), names.name(c.directed_to)],
    [t("section.record.parent"), c.parent_id ? <Link to={`/section/chats/${c.parent_id}`} key="p">{c.parent_id.slice(0, 8)}</Link> : "—"],
    [t("section.col.started"), when(c.started_at)],
    [t("section.record.accepted"), when(c.accepted_at)],
    [t("section.record.firstReply"), when(c.first_reply_at)],
    [t("section.record.ended"), when(c.ended_at)],
    [t("section.col.duration"), c.duration_secs != null ? formatSecs(c.duration_secs) : "—"],
    [t("section.record.lastDirection"), c.last_message_direction ? t(`section.direction.${c.last_message_direction}`) : "—"],
    [t("section.record.unread"), String(c.unread_count)],
    [t("section.record.missed"), String(c.missed_count)],
    [t("section.col.closeReason"), c.close_reason ? t(`section.reason.${c.close_reason}`) : "—"],
  ];
  return (
    <div className="record" data-testid="chat-record">
      <h3>{t("section.record.fields")}: {c.contact_name}</h3>
      <dl className="fields">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
      <h3>{t("section.record.routing")}</h3>
      <ol className="routing" data-testid="routing">
        {(routing.data ?? []).map((d) => (
          <li key={d.id}>
            <strong>{d.action}</strong> <span className="muted">{when(d.at)}</span> — {d.reason}
            {d.candidates.length > 0 && (
              <ul>
                {d.candidates.map((cand) => (
                  <li key={cand.user_id} className={cand.eligible ? "" : "muted"}>
                    {names.name(cand.user_id)}: {cand.load}/{cand.limit} {cand.excluded_because ? `(${cand.excluded_because})` : ""}
                  </li>
                ))}
              </ul>
            )}
          </li>
        ))}
      </ol>
      <h3>{t("section.record.transcript")}</h3>
      <div className="record-transcript">
        {view.data?.messages.map((m) => (
          <div key={m.id} className={`msg ${m.direction === "inbound" ? "in" : m.direction === "outbound" ? "out" : "system"}`}>
            {m.author_name && <div className="author">{m.author_name}</div>}
            <div className="body">{m.body}</div>
            {m.attachments.map((a) => (
              <a key={a.id} href={`/api/v1/files/${a.id}`} className="file">{a.filename}</a>
            ))}
            <div className="meta">{when(m.created_at)}</div>
          </div>
        ))}
      </div>
    </div>
  );
}

function Totals() {
  const { t } = useTranslation();
  const names = useNames();
  const [groupBy, setGroupBy] = useState<"none" | "channel" | "queue" | "operator" | "day">("day");
  const [range, setRange] = useState(() => {
    const to = new Date(Date.now() + 86_400_000);
    const from = new Date(Date.now() - 30 * 86_400_000);
    return { from: from.toISOString().slice(0, 10), to: to.toISOString().slice(0, 10) };
  });
  const report = useQuery({
    queryKey: ["totals", groupBy, range],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/analytics/totals", {
          params: { query: { from: new Date(range.from).toISOString(), to: new Date(range.to).toISOString(), group_by: groupBy } },
        }),
      ),
  });
  const label = (k: string) => (groupBy === "day" || groupBy === "none" ? k : names.name(k));
  const data = (report.data?.groups ?? []).map((g) => ({ ...g, label: label(g.key) }));
  const o = report.data?.overall;
  const num = (v?: number | null) => (v == null ? "—" : v.toFixed(1));
  return (
    <div data-testid="totals">
      <div className="toolbar">
        <label>
          {t("section.filters.from")} <input type="date" value={range.from} onChange={(e) => setRange({ ...range, from: e.target.value })} />
        </label>
        <label>
          {t("section.filters.to")} <input type="date" value={range.to} onChange={(e) => setRange({ ...range, to: e.target.value })} />
        </label>
        <label>
          {t("section.metrics.groupBy")}{" "}
          <select value={groupBy} onChange={(e) => setGroupBy(e.target.value as typeof groupBy)} data-testid="group-by">
            <option value="day">{t("section.metrics.day")}</option>
            <option value="channel">{t("section.col.channel")}</option>
            <option value="queue">{t("section.col.queue")}</option>
            <option value="operator">{t("section.col.operator")}</option>
            <option value="none">{t("section.metrics.none")}</option>
          </select>
        </label>
      </div>
      {report.isError && <p className="error" role="alert">{(report.error as Error).message}</p>}
      {o && (
        <div className="kpis" data-testid="kpis">
          <Kpi label={t("section.metrics.chats")} value={String(o.chats)} />
          <Kpi label={t("section.metrics.completed")} value={String(o.completed)} />
          <Kpi label={t("section.metrics.waitAvg")} value={num(o.wait_avg_secs)} />
          <Kpi label={t("section.metrics.firstResponseAvg")} value={num(o.first_response_avg_secs)} />
          <Kpi label={t("section.metrics.handlingAvg")} value={num(o.handling_avg_secs)} />
          <Kpi label={t("section.metrics.autoFinished")} value={String(o.auto_finished)} />
          <Kpi label={t("section.metrics.missed")} value={String(o.missed)} />
        </div>
      )}
      {data.length > 0 && (
        <div className="chart">
          <ResponsiveContainer width="100%" height={280}>
            <BarChart data={data}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="label" />
              <YAxis allowDecimals={false} />
              <Tooltip />
              <Legend />
              <Bar isAnimationActive={false} dataKey="completed" name={t("section.metrics.completed")} stackId="s" fill="#1a7f37" />
              <Bar isAnimationActive={false} dataKey="in_progress" name={t("chat.inProgress")} stackId="s" fill="#1f6feb" />
              <Bar isAnimationActive={false} dataKey="new" name={t("chat.newChat")} stackId="s" fill="#9a6700" />
            </BarChart>
          </ResponsiveContainer>
        </div>
      )}
    </div>
  );
}

function Kpi({ label, value }: { label: string; value: string }) {
  return (
    <div className="kpi">
      <div className="kpi-value">{value}</div>
      <div className="kpi-label">{label}</div>
    </div>
  );
}

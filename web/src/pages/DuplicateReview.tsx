// Duplicates review (chats section, supervisors and admins): the bulk duplicate search over all
// contacts — start it, watch it run, its figures — and the groups it found, by status, each with
// its members, the rule and the reasons per pair, "Merge…" per pair and "Not duplicates".
import { useId, useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { Link } from "react-router-dom";
import { api, ApiError, errorText, unwrap, type S } from "../api/client";
import { MergeDialog } from "../components/Duplicates";

type Scan = S["DuplicateScan"];
type Group = S["DuplicateGroup"];
type Member = S["GroupMember"];
type Status = "open" | "dismissed" | "resolved" | "all";

/** `DuplicateScan.stats` as the server writes it (the schema only says "an object"). */
interface ScanStats {
  load_ms?: number;
  match_ms?: number;
  write_ms?: number;
  oversized_blocks?: number;
  rules?: { rule: string; rule_id?: string; pairs: number }[];
}

const PAGE = 20;
const STATUSES: Status[] = ["open", "dismissed", "resolved", "all"];
const SCAN_KEY = ["duplicate-scan"];
const GROUPS_KEY = ["duplicate-groups"];

export function DuplicateReview() {
  const { t } = useTranslation();
  return (
    <div className="dup-review" data-testid="duplicate-review">
      <h3 className="sr-only">{t("section.dup.title")}</h3>
      <ScanPanel />
      <Groups />
    </div>
  );
}

/** The newest scan (`null`: there never was one); polled every second while it runs. */
function useLatestScan() {
  const qc = useQueryClient();
  return useQuery({
    queryKey: SCAN_KEY,
    queryFn: async (): Promise<Scan | null> => {
      const before = qc.getQueryData<Scan | null>(SCAN_KEY);
      let now: Scan;
      try {
        now = await unwrap(api.GET("/api/v1/duplicate-scans/{id}", { params: { path: { id: "latest" } } }));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return null;
        throw e;
      }
      // A scan that has just finished (watched running, or newer than the one shown) replaces the groups.
      const changed = before !== undefined && (before === null || before.id !== now.id || before.state !== now.state);
      if (changed && now.state !== "running") void qc.invalidateQueries({ queryKey: GROUPS_KEY });
      return now;
    },
    refetchInterval: (q) => (q.state.data?.state === "running" ? 1000 : false),
  });
}

function ScanPanel() {
  const { t, i18n } = useTranslation();
  const qc = useQueryClient();
  const headingId = useId();
  const scan = useLatestScan();
  const start = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/duplicate-scans")),
    onSuccess: (s) => qc.setQueryData(SCAN_KEY, s),
    // A 409: someone else's scan runs — show it.
    onError: () => void qc.invalidateQueries({ queryKey: SCAN_KEY }),
  });
  const s = scan.data;
  const running = s?.state === "running";
  const when = (v?: string | null) => (v ? new Date(v).toLocaleString(i18n.language) : "—");
  const stats = (s?.stats ?? {}) as unknown as ScanStats;
  const stateLabel = (state: string) => (["running", "done", "failed"].includes(state) ? t(`section.dup.state.${state}`) : state);
  return (
    <section className="dup-scan" aria-labelledby={headingId} aria-busy={running || undefined} data-testid="duplicate-scan" data-state={s?.state ?? "none"} data-scan={s?.id}>
      <h4 id={headingId}>{t("section.dup.scanTitle")}</h4>
      {scan.isLoading && <p className="muted">{t("section.dup.loading")}</p>}
      {scan.isError && (
        <p className="error" role="alert">
          {errorText(t, scan.error)}
        </p>
      )}
      {s === null && (
        <p className="muted" data-testid="duplicate-scan-none">
          {t("section.dup.scanNone")}
        </p>
      )}
      {s && (
        <>
          <dl className="fields">
            <div>
              <dt>{t("section.dup.stateLabel")}</dt>
              <dd>
                <span className={`pill dup-state ${s.state}`} data-testid="duplicate-scan-state">
                  {stateLabel(s.state)}
                </span>
              </dd>
            </div>
            <div>
              <dt>{t("section.dup.contacts")}</dt>
              <dd data-testid="duplicate-scan-contacts">{s.contacts}</dd>
            </div>
            <div>
              <dt>{t("section.dup.compared")}</dt>
              <dd>{s.compared}</dd>
            </div>
            <div>
              <dt>{t("section.dup.groups")}</dt>
              <dd data-testid="duplicate-scan-groups">{running ? "—" : s.groups}</dd>
            </div>
            <div>
              <dt>{t("section.dup.duration")}</dt>
              <dd data-testid="duplicate-scan-duration">{s.duration_ms != null ? t("section.dup.seconds", { s: (s.duration_ms / 1000).toFixed(1) }) : "—"}</dd>
            </div>
            <div>
              <dt>{t("section.dup.started")}</dt>
              <dd>{when(s.started_at)}</dd>
            </div>
            <div>
              <dt>{t("section.dup.finished")}</dt>
              <dd data-testid="duplicate-scan-finished">{when(s.finished_at)}</dd>
            </div>
          </dl>
          {s.state === "failed" && (
            <p className="error" data-testid="duplicate-scan-failure">
              {t("section.dup.failure")}: {s.error ?? "—"}
            </p>
          )}
          {s.state === "done" && (stats.load_ms != null || (stats.rules ?? []).length > 0) && (
            <details className="dup-stats">
              <summary>{t("section.dup.details")}</summary>
              {stats.load_ms != null && (
                <p className="muted">{t("section.dup.phases", { load: stats.load_ms, match: stats.match_ms ?? "—", write: stats.write_ms ?? "—" })}</p>
              )}
              {(stats.oversized_blocks ?? 0) > 0 && <p className="muted">{t("section.dup.oversized", { n: stats.oversized_blocks })}</p>}
              {(stats.rules ?? []).length > 0 && (
                <ul className="muted">
                  {(stats.rules ?? []).map((r) => (
                    <li key={r.rule_id ?? r.rule}>{t("section.dup.rulePairs", { rule: r.rule, n: r.pairs })}</li>
                  ))}
                </ul>
              )}
            </details>
          )}
        </>
      )}
      <div className="form-actions">
        <button
          type="button"
          className="primary"
          disabled={running || start.isPending || scan.isLoading}
          onClick={() => start.mutate()}
          aria-label={t("section.dup.scanStartLabel")}
          data-testid="duplicate-scan-start"
        >
          {t("section.dup.scanStart")}
        </button>
        <span role="status" className="muted">
          {running && t("section.dup.scanRunningNow")}
        </span>
      </div>
      {start.isError && (
        <p className="error" role="alert" data-testid="duplicate-scan-error">
          {errorText(t, start.error)}
        </p>
      )}
    </section>
  );
}

function Groups() {
  const { t } = useTranslation();
  const headingId = useId();
  const selectId = useId();
  const [status, setStatus] = useState<Status>("open");
  const [offset, setOffset] = useState(0);
  const list = useQuery({
    queryKey: [...GROUPS_KEY, status, offset],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/duplicate-groups", {
          params: { query: { status: status === "all" ? undefined : status, limit: PAGE, offset } },
        }),
      ),
  });
  const total = list.data?.total ?? 0;
  const items = list.data?.items ?? [];
  return (
    <section className="dup-groups-panel" aria-labelledby={headingId}>
      <h4 id={headingId}>{t("section.dup.groupsTitle")}</h4>
      <div className="toolbar">
        <label htmlFor={selectId}>{t("section.dup.status")}</label>
        <select
          id={selectId}
          value={status}
          onChange={(e) => {
            setStatus(e.target.value as Status);
            setOffset(0);
          }}
          data-testid="group-status"
        >
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {t(`section.dup.statuses.${s}`)}
            </option>
          ))}
        </select>
        <span className="muted" data-testid="groups-total" data-total={list.data ? total : undefined}>
          {list.data ? t("section.dup.total", { total }) : ""}
        </span>
      </div>
      {list.isLoading && <p className="muted">{t("section.dup.loading")}</p>}
      {list.isError && (
        <p className="error" role="alert">
          {errorText(t, list.error)}
        </p>
      )}
      {list.data && items.length === 0 && (
        <p className="muted" data-testid="groups-empty">
          {t("section.dup.empty")}
        </p>
      )}
      {items.length > 0 && (
        <ul className="duplicates dup-groups">
          {items.map((g) => (
            <GroupItem key={g.id} group={g} />
          ))}
        </ul>
      )}
      <div className="toolbar">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))} data-testid="groups-prev">
          {t("section.prev")}
        </button>
        <span className="muted">{t("section.page", { from: total === 0 ? 0 : Math.min(offset + 1, total), to: Math.min(offset + PAGE, total), total })}</span>
        <button type="button" disabled={offset + PAGE >= total} onClick={() => setOffset(offset + PAGE)} data-testid="groups-next">
          {t("section.next")}
        </button>
      </div>
    </section>
  );
}

function GroupItem({ group }: { group: Group }) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const headingId = useId();
  const [merging, setMerging] = useState<{ a: S["Contact"]; b: S["Contact"] } | null>(null);
  const byId = new Map<string, Member>(group.members.map((m) => [m.contact.id, m]));
  const nameOf = (id: string) => byId.get(id)?.contact.name ?? id.slice(0, 8);
  const names = group.members.map((m) => m.contact.name).join(", ");
  const open = group.status === "open";
  const dismiss = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/duplicate-groups/{id}/dismiss", { params: { path: { id: group.id } } })),
    onSettled: () => void qc.invalidateQueries({ queryKey: GROUPS_KEY }),
  });
  const statusLabel = ["open", "dismissed", "resolved"].includes(group.status) ? t(`section.dup.statusOf.${group.status}`) : group.status;
  return (
    <li data-testid="duplicate-group" data-group={group.id} data-status={group.status} aria-labelledby={headingId}>
      <div className="duplicate-head">
        <h5 id={headingId} className="dup-group-title">
          {names}
        </h5>
        <span className="pill" title={t("section.dup.rule")} data-testid="group-rule">
          {group.rule}
        </span>
        <span className={`pill dup-status ${group.status}`} data-testid="group-status-label">
          {statusLabel}
        </span>
      </div>
      <ul className="dup-members" aria-label={t("section.dup.members")}>
        {group.members.map((m) => {
          const c = m.contact;
          const merged = !!m.merged_into;
          return (
            <li key={c.id} className={merged ? "merged" : undefined} data-testid="group-member" data-contact={c.id} data-merged={merged || undefined}>
              <span className="dup-member-info">
                <Link to={`/contacts/${c.id}`}>{c.name}</Link> <span className="muted">{[c.phone, c.email].filter(Boolean).join(" · ") || "—"}</span>
              </span>
              {merged && m.merged_into && (
                <span className="muted">
                  {" "}
                  ({t("section.dup.merged")} → <Link to={`/contacts/${m.merged_into}`}>{nameOf(m.merged_into)}</Link>)
                </span>
              )}
            </li>
          );
        })}
      </ul>
      <ul className="dup-links" aria-label={t("section.dup.reasons")}>
        {group.links.map((l) => {
          const a = byId.get(l.a);
          const b = byId.get(l.b);
          const pair = `${nameOf(l.a)} — ${nameOf(l.b)}`;
          const canMerge = open && a && b && !a.merged_into && !b.merged_into;
          return (
            <li key={`${l.a}:${l.b}`} className="dup-link">
              <ul className="reasons" data-testid="group-reasons" data-a={l.a} data-b={l.b}>
                {l.reasons.map((r, i) => (
                  <li key={i}>
                    {pair}: {r}
                  </li>
                ))}
              </ul>
              {canMerge && (
                <button
                  type="button"
                  onClick={() => setMerging({ a: a.contact, b: b.contact })}
                  aria-label={t("section.dup.mergeLabel", { a: a.contact.name, b: b.contact.name })}
                  data-testid="link-merge"
                  data-a={l.a}
                  data-b={l.b}
                >
                  {t("section.dup.merge")}
                </button>
              )}
            </li>
          );
        })}
      </ul>
      {open && (
        <div className="form-actions">
          <button
            type="button"
            disabled={dismiss.isPending}
            onClick={() => dismiss.mutate()}
            aria-label={t("section.dup.dismissLabel", { names })}
            data-testid="group-dismiss"
          >
            {dismiss.isPending ? t("section.dup.dismissing") : t("section.dup.dismiss")}
          </button>
        </div>
      )}
      {dismiss.isError && (
        <p className="error" role="alert" data-testid="group-error">
          {errorText(t, dismiss.error)}
        </p>
      )}
      {merging && (
        <MergeDialog
          current={merging.a}
          other={merging.b}
          onClose={() => setMerging(null)}
          onMerged={() => {
            setMerging(null);
            void qc.invalidateQueries({ queryKey: GROUPS_KEY });
          }}
        />
      )}
    </li>
  );
}

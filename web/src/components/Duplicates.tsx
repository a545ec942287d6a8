// Duplicate contacts (S18): "Find duplicates" lists the contacts the enabled rules match, with the
// rule and the reasons; "Merge…" picks the master record and, field by field, which value survives.
import { useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { api, ApiError, errorText, unwrap, type S } from "../api/client";

const FIELDS = ["name", "email", "phone", "photo_url"] as const;
type MergeField = (typeof FIELDS)[number];
type Side = "master" | "merged";

/**
 * The "Find duplicates" button and its panel. `onMerged` learns the merge's master and merged
 * contact once the merge is done (queries of contacts and chats are already invalidated).
 */
export function FindDuplicates({ contact, onMerged }: { contact: S["Contact"]; onMerged?: (master: S["Contact"], mergedId: string) => void }) {
  const { t } = useTranslation();
  const [open, setOpen] = useState(false);
  return (
    <>
      <button type="button" onClick={() => setOpen(true)} data-testid="find-duplicates">
        {t("duplicates.find")}
      </button>
      {open && (
        <DuplicatesPanel
          contact={contact}
          onClose={() => setOpen(false)}
          onMerged={(master, mergedId) => {
            setOpen(false);
            onMerged?.(master, mergedId);
          }}
        />
      )}
    </>
  );
}

function DuplicatesPanel({ contact, onClose, onMerged }: { contact: S["Contact"]; onClose: () => void; onMerged: (master: S["Contact"], mergedId: string) => void }) {
  const { t } = useTranslation();
  const found = useQuery({
    queryKey: ["duplicates", contact.id],
    queryFn: () => unwrap(api.GET("/api/v1/contacts/{id}/duplicates", { params: { path: { id: contact.id } } })),
    staleTime: 0,
  });
  const channels = useQuery({ queryKey: ["channels"], queryFn: () => unwrap(api.GET("/api/v1/channels")) });
  const channelName = (cid: string) => channels.data?.find((x) => x.id === cid)?.name ?? cid.slice(0, 8);
  const [merging, setMerging] = useState<S["Contact"] | null>(null);
  if (merging) return <MergeDialog current={contact} other={merging} onClose={() => setMerging(null)} onMerged={onMerged} />;
  return (
    <div className="modal-backdrop" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <div className="modal wide" role="dialog" aria-modal="true" aria-labelledby="duplicates-h" data-testid="duplicates-panel">
        <h3 id="duplicates-h">{t("duplicates.title", { name: contact.name })}</h3>
        {found.isLoading && <p className="muted">{t("duplicates.loading")}</p>}
        {found.isError && (
          <p className="error" role="alert">
            {errorText(t, found.error)}
          </p>
        )}
        {found.data && found.data.length === 0 && (
          <p className="muted" data-testid="duplicates-none">
            {t("duplicates.none")}
          </p>
        )}
        {found.data && found.data.length > 0 && (
          <ul className="duplicates">
            {found.data.map((d) => {
              const channelsOf = [...new Set(d.contact.identities.map((i) => channelName(i.channel_id)))];
              return (
                <li key={d.contact.id} data-testid="duplicate-row" data-contact={d.contact.id}>
                  <div className="duplicate-head">
                    <strong data-testid="duplicate-name">{d.contact.name}</strong>
                    <span className="pill" data-testid="duplicate-rule">
                      {d.rule}
                    </span>
                    <span className="spacer" />
                    <button type="button" onClick={() => setMerging(d.contact)} data-testid="duplicate-merge">
                      {t("duplicates.merge")}
                    </button>
                  </div>
                  <div className="muted">
                    {[d.contact.phone, d.contact.email].filter(Boolean).join(" · ") || "—"}
                    {channelsOf.length > 0 && ` · ${t("duplicates.channels", { list: channelsOf.join(", ") })}`}
                  </div>
                  <ul className="reasons" data-testid="duplicate-reasons">
                    {d.reasons.map((r) => (
                      <li key={r}>{r}</li>
                    ))}
                  </ul>
                </li>
              );
            })}
          </ul>
        )}
        <div className="form-actions">
          <button type="button" autoFocus onClick={onClose} data-testid="duplicates-close">
            {t("duplicates.close")}
          </button>
        </div>
      </div>
    </div>
  );
}

/**
 * Merging `other` into `current` (or the other way round): the master record and, field by field,
 * which value survives. `onMerged` learns the master and the merged contact's id.
 */
export function MergeDialog({
  current,
  other,
  onClose,
  onMerged,
}: {
  current: S["Contact"];
  other: S["Contact"];
  onClose: () => void;
  onMerged: (master: S["Contact"], mergedId: string) => void;
}) {
  const { t } = useTranslation();
  const qc = useQueryClient();
  const [masterIsCurrent, setMasterIsCurrent] = useState(true);
  const [fields, setFields] = useState<Record<MergeField, Side>>({ name: "master", email: "master", phone: "master", photo_url: "master" });
  const [error, setError] = useState<ApiError | Error | null>(null);
  const master = masterIsCurrent ? current : other;
  const merged = masterIsCurrent ? other : current;
  const merge = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/contacts/merge", { body: { master_id: master.id, merged_id: merged.id, fields } })),
    onMutate: () => setError(null),
    onSuccess: (r) => {
      void qc.invalidateQueries({ queryKey: ["contact"] });
      void qc.invalidateQueries({ queryKey: ["chat"] });
      void qc.invalidateQueries({ queryKey: ["duplicates"] });
      void qc.invalidateQueries({ queryKey: ["inbox"] });
      onMerged(r.contact, merged.id);
    },
    onError: (e: Error) => setError(e),
  });
  const value = (c: S["Contact"], f: MergeField) => (f === "name" ? c.name : (c[f] ?? "")) || "—";
  const fieldLabel = (f: MergeField) => t(`duplicates.fields.${f}`);
  const errorLine = error && (
    <p className="error" role="alert" data-testid="merge-error">
      {errorText(t, error)}
      {error instanceof ApiError && error.field ? ` (${error.field})` : ""}
    </p>
  );
  return (
    <div className="modal-backdrop" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <form
        className="modal wide"
        role="dialog"
        aria-modal="true"
        aria-labelledby="merge-h"
        data-testid="merge-dialog"
        onSubmit={(e) => {
          e.preventDefault();
          merge.mutate();
        }}
      >
        <h3 id="merge-h">{t("duplicates.mergeTitle")}</h3>
        <fieldset className="merge-master">
          <legend>{t("duplicates.master")}</legend>
          <label className="check">
            <input type="radio" name="merge-master" checked={masterIsCurrent} onChange={() => setMasterIsCurrent(true)} data-testid="merge-master-current" />
            {current.name} <span className="muted">({t("duplicates.current")})</span>
          </label>
          <label className="check">
            <input type="radio" name="merge-master" checked={!masterIsCurrent} onChange={() => setMasterIsCurrent(false)} data-testid="merge-master-other" />
            {other.name}
          </label>
          <p className="muted">{t("duplicates.masterHint", { name: merged.name })}</p>
        </fieldset>
        <table className="grid merge-fields">
          <thead>
            <tr>
              <th scope="col">{t("duplicates.field")}</th>
              <th scope="col">{t("duplicates.masterValue", { name: master.name })}</th>
              <th scope="col">{t("duplicates.mergedValue", { name: merged.name })}</th>
            </tr>
          </thead>
          <tbody>
            {FIELDS.map((f) => (
              <tr key={f} data-testid={`merge-field-${f}`}>
                <th scope="row">{fieldLabel(f)}</th>
                {(["master", "merged"] as const).map((side) => (
                  <td key={side}>
                    <label className="check">
                      <input
                        type="radio"
                        name={`merge-field-${f}`}
                        checked={fields[f] === side}
                        onChange={() => setFields({ ...fields, [f]: side })}
                        aria-label={`${fieldLabel(f)}: ${value(side === "master" ? master : merged, f)}`}
                        data-testid={`merge-field-${f}-${side}`}
                      />
                      <span className="merge-value">{value(side === "master" ? master : merged, f)}</span>
                    </label>
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
        {errorLine}
        <div className="form-actions">
          <button type="submit" className="primary" disabled={merge.isPending} data-testid="merge-confirm">
            {merge.isPending ? t("duplicates.merging") : t("duplicates.confirm")}
          </button>
          <button type="button" onClick={onClose} data-testid="merge-cancel">
            {t("duplicates.cancel")}
          </button>
        </div>
      </form>
    </div>
  );
}

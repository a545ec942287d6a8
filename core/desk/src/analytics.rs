//! The Totals view of the chats section (S25) and CSV export.

use std::collections::BTreeMap;

use ferrydesk_domain::*;
use ferrydesk_store::chats::{self as chat_store, ChatFacts, ChatFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Desk, Error, Principal, Result};

/// How totals are grouped.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    None,
    Channel,
    Queue,
    Operator,
    Day,
}

/// Figures of one group. Times are seconds.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Totals {
    pub key: String,
    pub chats: i64,
    pub new: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub auto_finished: i64,
    /// Accept timeouts (missed directed offers).
    pub missed: i64,
    pub wait_avg_secs: Option<f64>,
    pub wait_p90_secs: Option<f64>,
    pub first_response_avg_secs: Option<f64>,
    pub first_response_p90_secs: Option<f64>,
    pub handling_avg_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TotalsReport {
    pub from: Ts,
    pub to: Ts,
    pub group_by: String,
    pub overall: Totals,
    pub groups: Vec<Totals>,
}

fn stats(mut v: Vec<f64>) -> (Option<f64>, Option<f64>) {
    if v.is_empty() {
        return (None, None);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let avg = v.iter().sum::<f64>() / v.len() as f64;
    let idx = ((v.len() as f64) * 0.9).ceil() as usize;
    (Some(avg), Some(v[idx.saturating_sub(1).min(v.len() - 1)]))
}

fn totals(key: String, rows: &[&ChatFacts]) -> Totals {
    let secs = |a: i64, b: i64| (b - a).max(0) as f64 / 1000.0;
    let (wait_avg, wait_p90) = stats(
        rows.iter()
            .filter_map(|r| r.accepted_at.map(|a| secs(r.queued_at, a)))
            .collect(),
    );
    let (fr_avg, fr_p90) = stats(
        rows.iter()
            .filter_map(|r| {
                Some(secs(
                    r.accepted_at.unwrap_or(r.started_at),
                    r.first_reply_at?,
                ))
            })
            .collect(),
    );
    let (h_avg, _) = stats(
        rows.iter()
            .filter_map(|r| Some(secs(r.accepted_at?, r.ended_at?)))
            .collect(),
    );
    Totals {
        key,
        chats: rows.len() as i64,
        new: rows.iter().filter(|r| r.status == "new").count() as i64,
        in_progress: rows.iter().filter(|r| r.status == "in_progress").count() as i64,
        completed: rows.iter().filter(|r| r.status == "completed").count() as i64,
        auto_finished: rows
            .iter()
            .filter(|r| r.close_reason.as_deref() == Some("auto_finish"))
            .count() as i64,
        missed: rows.iter().map(|r| r.missed_count).sum(),
        wait_avg_secs: wait_avg,
        wait_p90_secs: wait_p90,
        first_response_avg_secs: fr_avg,
        first_response_p90_secs: fr_p90,
        handling_avg_secs: h_avg,
    }
}

impl Desk {
    /// Totals of chats started in `[from, to)` (supervisors and admins).
    pub async fn totals(
        &self,
        p: &Principal,
        from: Ts,
        to: Ts,
        group_by: GroupBy,
    ) -> Result<TotalsReport> {
        p.require(Role::Supervisor)?;
        if to <= from {
            return Err(Error::invalid("to", "must be after from"));
        }
        let mut conn = self.store().read().await?;
        let facts = chat_store::facts(&mut conn, from, to).await?;
        let mut groups: BTreeMap<String, Vec<&ChatFacts>> = BTreeMap::new();
        for f in &facts {
            let key = match group_by {
                GroupBy::None => continue,
                GroupBy::Channel => f.channel_id.clone(),
                GroupBy::Queue => f.queue_id.clone(),
                GroupBy::Operator => f.responsible_id.clone().unwrap_or_default(),
                GroupBy::Day => Ts(f.started_at).to_rfc3339()[..10].to_owned(),
            };
            groups.entry(key).or_default().push(f);
        }
        let all: Vec<&ChatFacts> = facts.iter().collect();
        Ok(TotalsReport {
            from,
            to,
            group_by: format!("{group_by:?}").to_lowercase(),
            overall: totals("all".into(), &all),
            groups: groups.into_iter().map(|(k, v)| totals(k, &v)).collect(),
        })
    }

    /// Chats matching the filter as CSV (supervisors and admins).
    pub async fn export_csv(&self, p: &Principal, mut filter: ChatFilter) -> Result<String> {
        p.require(Role::Supervisor)?;
        filter.limit = 100_000;
        filter.offset = 0;
        let mut conn = self.store().read().await?;
        let (chats, _) = chat_store::list_chats(&mut conn, &filter, Ts::now()).await?;
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| Error::Internal(e.to_string());
        w.write_record([
            "id",
            "status",
            "contact",
            "channel_id",
            "queue_id",
            "responsible_id",
            "parent_id",
            "started_at",
            "accepted_at",
            "first_reply_at",
            "ended_at",
            "duration_secs",
            "close_reason",
            "unread_count",
            "missed_count",
        ])
        .map_err(err)?;
        let t = |v: Option<Ts>| v.map(|t| t.to_rfc3339()).unwrap_or_default();
        for c in chats {
            w.write_record([
                c.id.0,
                c.status.to_string(),
                c.contact_name,
                c.channel_id.0,
                c.queue_id.0,
                c.responsible_id.map(|u| u.0).unwrap_or_default(),
                c.parent_id.map(|u| u.0).unwrap_or_default(),
                c.started_at.to_rfc3339(),
                t(c.accepted_at),
                t(c.first_reply_at),
                t(c.ended_at),
                c.duration_secs.map(|d| d.to_string()).unwrap_or_default(),
                c.close_reason.map(|r| r.to_string()).unwrap_or_default(),
                c.unread_count.to_string(),
                c.missed_count.to_string(),
            ])
            .map_err(err)?;
        }
        String::from_utf8(w.into_inner().map_err(|e| Error::Internal(e.to_string()))?)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

//! Bulk duplicate search (S18): a background scan over every live contact that applies the
//! enabled rules and leaves groups of likely duplicates for review.
//!
//! The scan reads every contact's keys once, then works in memory:
//!
//! - each rule draws its candidate pairs from *blocks* of contacts that share the key of its
//!   most selective condition — the same identity, phone, email or name key, or for fuzzy
//!   names the same pair of 3-letter token prefixes (single-token names: the same prefix);
//! - a pair is checked against all of the rule's conditions and kept under the first rule
//!   (in the admin's order) that it matches; pairs a reviewer dismissed are skipped;
//! - pairs join into groups (connected components).
//!
//! A rule with a single exact condition matches every pair of its block, so the block is
//! linked as a chain (around dismissed pairs) without pairwise work; other blocks are compared
//! pairwise. Blocks of more than [`MAX_PAIRWISE_BLOCK`] contacts are counted in the scan's
//! figures instead (a placeholder phone, an office email, a very common name: keys so common
//! that a group of them would be noise).
//!
//! The groups replace those of the previous scan in one transaction. One scan runs at a time
//! across all nodes (a unique index on the running state); a node that stops mid-scan leaves
//! a heartbeat that goes stale, and the next start marks that scan failed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ferrydesk_domain::*;
use ferrydesk_store::{contacts, duplicates as store};
use serde::Serialize;
use utoipa::ToSchema;

use crate::duplicates::{DuplicateRule, MatchField, Subject, evaluate};
use crate::{Desk, Error, Principal, Result};

/// Blocks larger than this are not compared pairwise (see the module documentation).
pub const MAX_PAIRWISE_BLOCK: usize = 400;
/// Groups up to this size are dismissed pair by pair; larger ones by their links.
const DISMISS_ALL_PAIRS: usize = 50;
/// Contacts read per query.
const PAGE: i64 = 20_000;
/// A running scan's heartbeat interval, and the age after which it counts as stopped.
const HEARTBEAT: Duration = Duration::from_secs(10);
const STALE: Duration = Duration::from_secs(120);

/// A scan: running, done or failed, with its figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicateScan {
    pub id: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub started_by: Option<UserId>,
    pub started_at: Ts,
    pub finished_at: Option<Ts>,
    /// Live contacts read (so far, while running).
    pub contacts: i64,
    /// Pairs checked against a rule.
    pub compared: i64,
    pub groups: i64,
    pub duration_ms: Option<i64>,
    /// Phase timings (`load_ms`, `match_ms`, `write_ms`), pairs per rule, and blocks too large
    /// to compare pairwise (`oversized`: rule, key, size).
    #[schema(value_type = Object)]
    pub stats: serde_json::Value,
    pub error: Option<String>,
}

fn scan_of(r: store::ScanRow) -> DuplicateScan {
    // A running scan whose heartbeat stopped (its node died) is shown as what it is: failed.
    // The next start takes its slot over (`store::insert_scan`).
    let stale = r.state == "running" && r.heartbeat_at < Ts::now().0 - STALE.as_millis() as i64;
    let (state, error) = if stale {
        (
            "failed".to_owned(),
            Some("the node running the scan stopped".to_owned()),
        )
    } else {
        (r.state, r.error)
    };
    DuplicateScan {
        id: r.id,
        state,
        started_by: r.started_by.map(UserId),
        started_at: Ts(r.started_at),
        finished_at: r.finished_at.map(Ts),
        contacts: r.contacts,
        compared: r.compared,
        groups: r.groups_found,
        duration_ms: r.duration_ms,
        stats: serde_json::from_str(&r.stats).unwrap_or_default(),
        error,
    }
}

/// Two contacts of a group and why they match.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct GroupLink {
    pub a: ContactId,
    pub b: ContactId,
    pub rule_id: String,
    pub rule: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupMember {
    pub contact: Contact,
    /// Set once the contact was merged into another one.
    pub merged_into: Option<ContactId>,
}

/// Likely duplicates of one another, for review.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicateGroup {
    pub id: String,
    pub scan_id: String,
    /// The first rule (in the admin's order) among the group's links.
    pub rule_id: String,
    pub rule: String,
    /// `open`; `dismissed` (reviewed: not duplicates); `resolved` (merged down to one contact).
    pub status: String,
    pub members: Vec<GroupMember>,
    pub links: Vec<GroupLink>,
    pub reviewed_by: Option<UserId>,
    pub reviewed_at: Option<Ts>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicateGroupPage {
    /// The scan the groups come from (the newest finished one).
    pub scan: Option<DuplicateScan>,
    pub total: i64,
    pub items: Vec<DuplicateGroup>,
}

// ---- matching, in memory --------------------------------------------------------------------

/// A matched pair (indices into the subjects, `a < b`) under a rule (its index).
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub a: u32,
    pub b: u32,
    pub rule: usize,
    pub reasons: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Matched {
    pub links: Vec<Link>,
    pub compared: u64,
    pub per_rule: Vec<u64>,
    /// `(rule, block key, size)` of blocks too large to compare pairwise.
    pub oversized: Vec<(usize, String, usize)>,
}

/// Identities shared by several contacts: `(external id, member indices)` per channel kind +
/// external id.
pub(crate) type SharedIdentities = Vec<(String, Vec<u32>)>;

fn prefix(t: &str) -> &str {
    match t.char_indices().nth(3) {
        Some((i, _)) => &t[..i],
        None => t,
    }
}

/// The fuzzy-name blocking keys of a name: pairs of its tokens' prefixes (of its first four
/// tokens), or the one prefix of a single-token name.
fn name_blocks(tokens: &[String]) -> Vec<String> {
    let t = &tokens[..tokens.len().min(4)];
    match t.len() {
        0 => Vec::new(),
        1 => vec![prefix(&t[0]).to_owned()],
        _ => {
            let mut keys = Vec::new();
            for i in 0..t.len() {
                for j in i + 1..t.len() {
                    keys.push(format!("{}|{}", prefix(&t[i]), prefix(&t[j])));
                }
            }
            keys.sort();
            keys.dedup();
            keys
        }
    }
}

/// The representative of `x` in a small union-find.
fn root(part: &mut [usize], mut x: usize) -> usize {
    while part[x] != x {
        part[x] = part[part[x]];
        x = part[x];
    }
    x
}

/// Applies the rules (in order) to every subject; see the module documentation.
pub(crate) fn match_all(
    subjects: &[Subject],
    shared: &SharedIdentities,
    rules: &[DuplicateRule],
    dismissed: &HashSet<(u32, u32)>,
) -> Matched {
    let mut out = Matched {
        per_rule: vec![0; rules.len()],
        ..Default::default()
    };
    // Per contact, the shared identities it has (indices into `shared`).
    let mut idents: HashMap<u32, Vec<u32>> = HashMap::new();
    for (g, (_, members)) in shared.iter().enumerate() {
        for m in members {
            idents.entry(*m).or_default().push(g as u32);
        }
    }
    let shared_of = |a: u32, b: u32| -> Option<&str> {
        let (ia, ib) = (idents.get(&a)?, idents.get(&b)?);
        ia.iter()
            .find(|g| ib.contains(g))
            .map(|g| shared[*g as usize].0.as_str())
    };
    let mut linked: HashSet<(u32, u32)> = HashSet::new();
    for (ri, rule) in rules.iter().enumerate() {
        let fields: Vec<MatchField> = rule.conditions.iter().map(|c| c.field).collect();
        let fuzzy_only = rule
            .conditions
            .iter()
            .all(|c| c.field == MatchField::Name && c.fuzzy);
        // The most selective condition draws the blocks.
        let blocks: Vec<(String, Vec<u32>)> = if fields.contains(&MatchField::Identity) {
            shared.clone()
        } else {
            let mut by: HashMap<String, Vec<u32>> = HashMap::new();
            for (i, s) in subjects.iter().enumerate() {
                let keys: Vec<String> = if fields.contains(&MatchField::Phone) {
                    s.key.phone_key.iter().cloned().collect()
                } else if fields.contains(&MatchField::Email) {
                    s.key.email_key.iter().cloned().collect()
                } else if !fuzzy_only {
                    // An exact name condition.
                    s.key
                        .name_key
                        .iter()
                        .filter(|k| !k.trim().is_empty())
                        .cloned()
                        .collect()
                } else {
                    name_blocks(&s.tokens)
                };
                for k in keys {
                    by.entry(k).or_default().push(i as u32);
                }
            }
            let mut v: Vec<(String, Vec<u32>)> =
                by.into_iter().filter(|(_, m)| m.len() > 1).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        // Pairs already checked under this rule: a pair can meet in several blocks only when a
        // contact has several shared identities or a name of three or more tokens.
        let by_identity = fields.contains(&MatchField::Identity);
        let repeats = |x: u32, y: u32| {
            by_identity
                || (fuzzy_only
                    && (subjects[x as usize].tokens.len() > 2
                        || subjects[y as usize].tokens.len() > 2))
        };
        let mut seen: HashSet<(u32, u32)> = HashSet::new();
        // Checks one pair under this rule; true when the two are linked (now or by an earlier
        // rule).
        let mut try_pair = |x: u32, y: u32, out: &mut Matched| -> bool {
            let pair = (x.min(y), x.max(y));
            if linked.contains(&pair) {
                return true;
            }
            if dismissed.contains(&pair) || (repeats(x, y) && !seen.insert(pair)) {
                return false;
            }
            out.compared += 1;
            let share = shared_of(pair.0, pair.1);
            let a = &subjects[pair.0 as usize];
            let b = &subjects[pair.1 as usize];
            let Some(reasons) = evaluate(rule, a, b, share) else {
                return false;
            };
            linked.insert(pair);
            out.per_rule[ri] += 1;
            out.links.push(Link {
                a: pair.0,
                b: pair.1,
                rule: ri,
                reasons,
            });
            true
        };
        // One exact condition: every pair of a block matches, so linking each member to one
        // member of every earlier part of the block it is not yet joined to connects the
        // block with few links (a chain when nothing was dismissed).
        let chain = rule.conditions.len() == 1 && !rule.conditions[0].fuzzy;
        for (key, members) in blocks {
            if members.len() > MAX_PAIRWISE_BLOCK {
                out.oversized.push((ri, key, members.len()));
            } else if chain {
                let mut part: Vec<usize> = (0..members.len()).collect();
                for pos in 1..members.len() {
                    for earlier in 0..pos {
                        let (pe, pp) = (root(&mut part, earlier), root(&mut part, pos));
                        if pe != pp && try_pair(members[earlier], members[pos], &mut out) {
                            part[pe.max(pp)] = pe.min(pp);
                        }
                    }
                }
            } else {
                for (pos, &x) in members.iter().enumerate() {
                    for &y in &members[pos + 1..] {
                        try_pair(x, y, &mut out);
                    }
                }
            }
        }
    }
    out
}

/// Connected components of the links: `(members, links)` with at least two members, ordered
/// by their strongest rule, then by size (largest first).
pub(crate) fn groups_of(n: usize, links: Vec<Link>) -> Vec<(Vec<u32>, Vec<Link>)> {
    let mut parent: Vec<usize> = (0..n).collect();
    for l in &links {
        let (ra, rb) = (
            root(&mut parent, l.a as usize),
            root(&mut parent, l.b as usize),
        );
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut by_root: HashMap<usize, (Vec<u32>, Vec<Link>)> = HashMap::new();
    let mut placed = vec![false; n];
    for l in links {
        let r = root(&mut parent, l.a as usize);
        let g = by_root.entry(r).or_default();
        for m in [l.a, l.b] {
            if !std::mem::replace(&mut placed[m as usize], true) {
                g.0.push(m);
            }
        }
        g.1.push(l);
    }
    let mut groups: Vec<(Vec<u32>, Vec<Link>)> = by_root.into_values().collect();
    for g in &mut groups {
        g.0.sort_unstable();
    }
    groups.sort_by_key(|(members, links)| {
        (
            links.iter().map(|l| l.rule).min().unwrap_or(usize::MAX),
            std::cmp::Reverse(members.len()),
            members[0],
        )
    });
    groups
}

impl Desk {
    /// Starts a bulk scan in the background (supervisors and admins). Refused (409) while
    /// another scan runs on any node.
    pub async fn start_duplicate_scan(&self, p: &Principal) -> Result<DuplicateScan> {
        p.require(Role::Supervisor)?;
        let scan = self.begin_scan(Some(p.id())).await?;
        self.spawn_scan(scan.id.clone());
        Ok(scan)
    }

    /// Runs a begun scan in the background, recording a failure (or a panic) on the scan.
    fn spawn_scan(&self, id: String) {
        let desk = self.clone();
        tokio::spawn(async move {
            // The scan in its own task, so that a panic is recorded as a failure too.
            let run = {
                let (desk, id) = (desk.clone(), id.clone());
                tokio::spawn(async move { desk.run_duplicate_scan(&id).await })
            };
            let failure = match run.await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("the scan stopped unexpectedly: {e}"),
            };
            tracing::warn!(scan = %id, error = %failure, "duplicate scan failed");
            for _ in 0..3 {
                let recorded = async {
                    let mut tx = desk.store().begin().await?;
                    store::fail_scan(&mut tx, &id, &failure, Ts::now()).await?;
                    tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                    Ok::<_, Error>(())
                }
                .await;
                if recorded.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Takes the single running slot for a new scan.
    pub async fn begin_scan(&self, by: Option<&UserId>) -> Result<DuplicateScan> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let row =
            store::insert_scan(&mut tx, &id, by, now, Ts(now.0 - STALE.as_millis() as i64)).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        row.map(scan_of).ok_or_else(|| {
            Error::conflict(
                "scan_running",
                "a duplicate search is already running; wait for it to finish",
            )
        })
    }

    /// Runs a scan begun by [`Desk::begin_scan`] to the end: reads, matches, stores the groups.
    pub async fn run_duplicate_scan(&self, id: &str) -> Result<DuplicateScan> {
        let started = Instant::now();
        let rules: Vec<DuplicateRule> = self
            .load_duplicate_rules()
            .await?
            .into_iter()
            .filter(|r| r.enabled)
            .collect();
        // Keep the heartbeat while the scan runs; dropping the guard (return, error, panic,
        // cancellation) stops it, so a dead scan's heartbeat goes stale.
        struct Beat(tokio::task::JoinHandle<()>);
        impl Drop for Beat {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _beat = Beat({
            let desk = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    if let Ok(mut tx) = desk.store().begin().await {
                        let _ = store::heartbeat_scan(&mut tx, &id, Ts::now()).await;
                        let _ = tx.commit().await;
                    }
                }
            })
        });
        self.scan_with(id, &rules, started).await
    }

    async fn scan_with(
        &self,
        id: &str,
        rules: &[DuplicateRule],
        started: Instant,
    ) -> Result<DuplicateScan> {
        let mut conn = self.store().read().await?;
        let mut subjects: Vec<Subject> = Vec::new();
        let mut after = String::new();
        loop {
            let page = store::keys_page(&mut conn, &after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            let full = page.len() as i64 == PAGE;
            subjects.extend(page.into_iter().map(Subject::new));
            if !full {
                break;
            }
        }
        let index: HashMap<&str, u32> = subjects
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.id.as_str(), i as u32))
            .collect();
        let mut shared: SharedIdentities = Vec::new();
        if rules
            .iter()
            .any(|r| r.conditions.iter().any(|c| c.field == MatchField::Identity))
        {
            let mut by: HashMap<(String, String), Vec<u32>> = HashMap::new();
            let mut after = String::new();
            loop {
                let page = store::shared_identity_page(&mut conn, &after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.0.clone();
                let full = page.len() as i64 == PAGE;
                for (_, kind, ext, contact) in page {
                    if let Some(&i) = index.get(contact.as_str()) {
                        let m = by.entry((kind, ext)).or_default();
                        if !m.contains(&i) {
                            m.push(i);
                        }
                    }
                }
                if !full {
                    break;
                }
            }
            shared = by
                .into_iter()
                .filter(|(_, m)| m.len() > 1)
                .map(|((_, ext), m)| (ext, m))
                .collect();
            shared.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let dismissed: HashSet<(u32, u32)> = store::dismissed_pairs(&mut conn)
            .await?
            .into_iter()
            .filter_map(|(a, b)| {
                let (x, y) = (*index.get(a.as_str())?, *index.get(b.as_str())?);
                Some((x.min(y), x.max(y)))
            })
            .collect();
        drop(index);
        drop(conn);
        let load_ms = started.elapsed().as_millis() as i64;

        // The matching is CPU work: off the async workers.
        let t = Instant::now();
        let rules_owned = rules.to_vec();
        let (subjects, matched, groups) = tokio::task::spawn_blocking(move || {
            let mut matched = match_all(&subjects, &shared, &rules_owned, &dismissed);
            let links = std::mem::take(&mut matched.links);
            let groups = groups_of(subjects.len(), links);
            (subjects, matched, groups)
        })
        .await
        .map_err(|e| Error::Internal(format!("duplicate matching panicked: {e}")))?;
        let match_ms = t.elapsed().as_millis() as i64;

        let t = Instant::now();
        let id_of = |i: u32| ContactId(subjects[i as usize].key.id.clone());
        let new_groups: Vec<store::NewGroup> = groups
            .into_iter()
            .map(|(members, links)| {
                let best = links.iter().map(|l| l.rule).min().unwrap_or(0);
                let links: Vec<GroupLink> = links
                    .into_iter()
                    .map(|l| GroupLink {
                        a: id_of(l.a),
                        b: id_of(l.b),
                        rule_id: rules[l.rule].id.clone(),
                        rule: rules[l.rule].name.clone(),
                        reasons: l.reasons,
                    })
                    .collect();
                store::NewGroup {
                    id: uuid::Uuid::now_v7().to_string(),
                    rule_id: rules[best].id.clone(),
                    rule: rules[best].name.clone(),
                    members: members.iter().map(|m| id_of(*m).0).collect(),
                    links: serde_json::to_string(&links).unwrap_or_else(|_| "[]".into()),
                }
            })
            .collect();
        let per_rule: Vec<serde_json::Value> = rules
            .iter()
            .zip(&matched.per_rule)
            .map(|(r, n)| serde_json::json!({"rule_id": r.id, "rule": r.name, "pairs": n}))
            .collect();
        let oversized: Vec<serde_json::Value> = matched
            .oversized
            .iter()
            .take(50)
            .map(|(r, key, size)| {
                serde_json::json!({"rule": rules[*r].name, "key": key, "size": size})
            })
            .collect();
        let mut stats = serde_json::json!({
            "load_ms": load_ms,
            "match_ms": match_ms,
            "rules": per_rule,
            "oversized_blocks": matched.oversized.len(),
            "oversized": oversized,
        });
        let mut tx = self.store().begin().await?;
        let fin = store::ScanFinish {
            contacts: subjects.len() as i64,
            compared: matched.compared as i64,
            duration_ms: started.elapsed().as_millis() as i64,
            stats: stats.to_string(),
        };
        if !store::finish_scan(&mut tx, id, &new_groups, &fin, Ts::now()).await? {
            return Err(Error::conflict(
                "scan_stopped",
                "the scan was marked stopped while it ran",
            ));
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        // The figures with the write itself.
        stats["write_ms"] = serde_json::json!(t.elapsed().as_millis() as i64);
        let mut tx = self.store().begin().await?;
        store::set_scan_figures(
            &mut tx,
            id,
            started.elapsed().as_millis() as i64,
            &stats.to_string(),
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.duplicate_scan_by_id(id).await
    }

    async fn duplicate_scan_by_id(&self, id: &str) -> Result<DuplicateScan> {
        let mut conn = self.store().read().await?;
        store::get_scan(&mut conn, id)
            .await?
            .map(scan_of)
            .ok_or(Error::not_found("duplicate scan"))
    }

    /// A scan by id, or the newest one for `latest`.
    pub async fn duplicate_scan(&self, p: &Principal, id: &str) -> Result<DuplicateScan> {
        p.require(Role::Supervisor)?;
        if id == "latest" {
            let mut conn = self.store().read().await?;
            return store::latest_scan(&mut conn)
                .await?
                .map(scan_of)
                .ok_or(Error::not_found("duplicate scan"));
        }
        self.duplicate_scan_by_id(id).await
    }

    /// The groups of the newest finished scan, in review order.
    pub async fn duplicate_groups(
        &self,
        p: &Principal,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<DuplicateGroupPage> {
        p.require(Role::Supervisor)?;
        if let Some(s) = status
            && !matches!(s, "open" | "dismissed" | "resolved")
        {
            return Err(Error::invalid(
                "status",
                "is one of open, dismissed, resolved",
            ));
        }
        let mut conn = self.store().read().await?;
        let Some(scan_id) = store::latest_done_scan(&mut conn).await? else {
            return Ok(DuplicateGroupPage {
                scan: None,
                total: 0,
                items: Vec::new(),
            });
        };
        let scan = store::get_scan(&mut conn, &scan_id).await?.map(scan_of);
        let (rows, total) = store::list_groups(
            &mut conn,
            &scan_id,
            status,
            limit.clamp(1, 200),
            offset.max(0),
        )
        .await?;
        let items = self.group_views(&mut conn, rows).await?;
        Ok(DuplicateGroupPage { scan, total, items })
    }

    async fn group_views(
        &self,
        conn: &mut ferrydesk_store::Conn,
        rows: Vec<store::GroupRow>,
    ) -> Result<Vec<DuplicateGroup>> {
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let mut members: HashMap<String, Vec<GroupMember>> = HashMap::new();
        for (g, c, merged) in store::group_members(conn, &ids).await? {
            if let Some(contact) = contacts::get_contact(conn, &ContactId(c)).await? {
                members.entry(g).or_default().push(GroupMember {
                    contact,
                    merged_into: merged.map(ContactId),
                });
            }
        }
        Ok(rows
            .into_iter()
            .map(|r| DuplicateGroup {
                members: members.remove(&r.id).unwrap_or_default(),
                links: serde_json::from_str(&r.links).unwrap_or_default(),
                id: r.id,
                scan_id: r.scan_id,
                rule_id: r.rule_id,
                rule: r.rule,
                status: r.status,
                reviewed_by: r.reviewed_by.map(UserId),
                reviewed_at: r.reviewed_at.map(Ts),
            })
            .collect())
    }

    /// Marks a group "not duplicates": every pair of its live members is remembered, so later
    /// scans keep them apart (supervisors and admins).
    pub async fn dismiss_duplicate_group(&self, p: &Principal, id: &str) -> Result<DuplicateGroup> {
        p.require(Role::Supervisor)?;
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let Some(group) = store::get_group(&mut tx, id).await? else {
            return Err(Error::not_found("duplicate group"));
        };
        if !store::review_group(&mut tx, id, "dismissed", p.id(), now).await? {
            return Err(Error::conflict(
                "not_open",
                "the group was already reviewed or resolved",
            ));
        }
        let live: Vec<String> = store::group_members(&mut tx, &[id])
            .await?
            .into_iter()
            .filter(|(_, _, merged)| merged.is_none())
            .map(|(_, c, _)| c)
            .collect();
        // Every pair of a small group; in a large one (a chain of similar names), the pairs
        // the scan linked — all pairs would grow with the square of its size.
        let mut pairs = Vec::new();
        if live.len() <= DISMISS_ALL_PAIRS {
            for (i, a) in live.iter().enumerate() {
                for b in &live[i + 1..] {
                    pairs.push((a.min(b).clone(), a.max(b).clone()));
                }
            }
        } else {
            let links: Vec<GroupLink> = serde_json::from_str(&group.links).unwrap_or_default();
            for l in links {
                if live.contains(&l.a.0) && live.contains(&l.b.0) {
                    pairs.push((l.a.0.clone().min(l.b.0.clone()), l.a.0.max(l.b.0)));
                }
            }
        }
        store::insert_dismissals(&mut tx, &pairs, p.id(), now).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        let mut conn = self.store().read().await?;
        let row = store::get_group(&mut conn, id)
            .await?
            .ok_or(Error::not_found("duplicate group"))?;
        self.group_views(&mut conn, vec![row])
            .await?
            .pop()
            .ok_or(Error::not_found("duplicate group"))
    }
}

/// Starts a scan whenever the newest one started `every` ago or more (or none ever ran), on
/// whichever node gets there first; checks every tenth of the interval, at most every minute.
pub(crate) async fn schedule(
    desk: Desk,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let check = (every / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(check) => {}
            _ = shutdown.changed() => return,
        }
        let due = async {
            let mut conn = desk.store().read().await?;
            let latest = store::latest_scan(&mut conn).await?;
            let now = Ts::now().0;
            Ok::<_, Error>(latest.is_none_or(|s| {
                if s.state == "running" {
                    // Its node stopped: the start below takes the slot over.
                    s.heartbeat_at < now - STALE.as_millis() as i64
                } else {
                    now - s.started_at >= every.as_millis() as i64
                }
            }))
        }
        .await;
        match due {
            Ok(true) => match desk.begin_scan(None).await {
                Ok(scan) => {
                    tracing::info!(scan = %scan.id, "scheduled duplicate scan started");
                    desk.spawn_scan(scan.id);
                }
                // Another node started one first.
                Err(Error::Conflict { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "starting a scheduled duplicate scan"),
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "checking for a scheduled duplicate scan"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duplicates::RuleCondition;

    fn subject(id: &str, name: &str, phone: Option<&str>) -> Subject {
        Subject::new(store::KeyRow {
            id: id.into(),
            name: name.into(),
            phone_key: phone.map(str::to_owned),
            email_key: None,
            name_key: ferrydesk_domain::matching::name_key(name),
        })
    }

    fn rule(id: &str, field: MatchField, fuzzy: bool) -> DuplicateRule {
        DuplicateRule {
            id: id.into(),
            name: id.into(),
            enabled: true,
            conditions: vec![RuleCondition {
                field,
                fuzzy,
                threshold: None,
            }],
        }
    }

    #[test]
    fn blocks_find_phone_chains_and_fuzzy_names() {
        let s = vec![
            subject("a", "Anna", Some("+79120000001")),
            subject("b", "Anna K", Some("+79120000001")),
            subject("c", "Someone", Some("+79120000001")),
            subject("d", "Иванов Иван", None),
            subject("e", "Ivan Ivanov", None),
            subject("f", "Ivan Petrov", None),
            subject("g", "Ivan Ivanoff", None),
        ];
        let rules = vec![
            rule("phone", MatchField::Phone, false),
            rule("name", MatchField::Name, true),
        ];
        let m = match_all(&s, &Vec::new(), &rules, &HashSet::new());
        let groups = groups_of(s.len(), m.links);
        let members: Vec<Vec<u32>> = groups.iter().map(|g| g.0.clone()).collect();
        assert_eq!(members, vec![vec![0, 1, 2], vec![3, 4, 6]]);
        // The phone block is a chain (2 links for 3 contacts), not every pair.
        assert_eq!(groups[0].1.len(), 2);
        assert!(groups[0].1.iter().all(|l| l.rule == 0));
        assert!(
            groups[1].1[0].reasons[0].contains("alike"),
            "{:?}",
            groups[1].1
        );
    }

    #[test]
    fn dismissed_pairs_stay_apart() {
        let s = vec![
            subject("a", "X", Some("+79120000001")),
            subject("b", "Y", Some("+79120000001")),
        ];
        let rules = vec![rule("phone", MatchField::Phone, false)];
        let dismissed: HashSet<(u32, u32)> = [(0, 1)].into_iter().collect();
        let m = match_all(&s, &Vec::new(), &rules, &dismissed);
        assert!(m.links.is_empty());
    }

    #[test]
    fn a_dismissed_pair_does_not_drop_others_from_a_chain() {
        let s: Vec<Subject> = ["a", "b", "c"]
            .iter()
            .map(|id| subject(id, id, Some("+79120000001")))
            .collect();
        let rules = vec![rule("phone", MatchField::Phone, false)];
        let dismissed: HashSet<(u32, u32)> = [(0, 1)].into_iter().collect();
        let m = match_all(&s, &Vec::new(), &rules, &dismissed);
        let pairs: Vec<(u32, u32)> = m.links.iter().map(|l| (l.a, l.b)).collect();
        assert_eq!(pairs, vec![(0, 2), (1, 2)]);
        // Nothing dismissed: a chain, one link per member after the first.
        let m = match_all(&s, &Vec::new(), &rules, &HashSet::new());
        assert_eq!(m.links.len(), 2);
        assert_eq!(m.compared, 2);
    }

    #[test]
    fn names_meeting_in_several_blocks_are_compared_once() {
        let s = vec![
            subject("a", "Anna Maria Petrova", None),
            subject("b", "Zoya Sidorova", None),
            subject("c", "Anna Maria Petrovna", None),
        ];
        let rules = vec![rule("name", MatchField::Name, true)];
        let m = match_all(&s, &Vec::new(), &rules, &HashSet::new());
        // a and c share all three blocks (ann|mar, ann|pet, mar|pet): one comparison.
        assert_eq!(m.compared, 1, "{:?}", m.links);
        assert_eq!(m.links.len(), 1);
    }

    #[test]
    fn shared_identities_link_contacts() {
        let s = vec![
            subject("a", "X", None),
            subject("b", "Y", None),
            subject("c", "Z", None),
        ];
        let rules = vec![rule("ident", MatchField::Identity, false)];
        let shared = vec![("tg-42".to_owned(), vec![0, 2])];
        let m = match_all(&s, &shared, &rules, &HashSet::new());
        assert_eq!(m.links.len(), 1);
        assert_eq!((m.links[0].a, m.links[0].b), (0, 2));
        assert_eq!(
            m.links[0].reasons,
            vec!["both write from the account tg-42"]
        );
    }

    #[test]
    fn oversized_fuzzy_blocks_are_counted_not_compared() {
        let s: Vec<Subject> = (0..MAX_PAIRWISE_BLOCK + 1)
            .map(|i| subject(&format!("{i:05}"), &format!("Ivan Ivanov{i}"), None))
            .collect();
        let rules = vec![rule("name", MatchField::Name, true)];
        let m = match_all(&s, &Vec::new(), &rules, &HashSet::new());
        assert_eq!(m.compared, 0);
        assert_eq!(m.oversized.len(), 1);
        assert_eq!(m.oversized[0].2, MAX_PAIRWISE_BLOCK + 1);
    }
}

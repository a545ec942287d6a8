//! Duplicate contacts (S18): rules an admin orders and enables, the search for one contact's
//! duplicates (the chat's and the contact page's button), and merging a contact into a master
//! record in one transaction, leaving a redirect behind.

use std::collections::BTreeMap;

use ferrydesk_domain::matching;
use ferrydesk_domain::*;
use ferrydesk_store::{contacts, duplicates as store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Desk, Error, Event, EventBody, Principal, Result};

/// What a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchField {
    /// Phone numbers in E.164.
    Phone,
    /// Email addresses, case-folded.
    Email,
    /// The same external id on channels of the same kind (e.g. one Telegram account on two bots).
    Identity,
    /// Names as sorted Latin tokens (Cyrillic transliterated).
    Name,
}

/// One condition of a rule; all of a rule's conditions must hold.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCondition {
    pub field: MatchField,
    /// Names only: similar rather than equal.
    #[serde(default)]
    pub fuzzy: bool,
    /// Fuzzy names: the least similarity, 0.5–1.0 (default 0.85).
    #[serde(default)]
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateRule {
    /// Generated when empty.
    #[serde(default)]
    pub id: String,
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub conditions: Vec<RuleCondition>,
}

fn yes() -> bool {
    true
}

/// A likely duplicate and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DuplicateMatch {
    pub contact: Contact,
    pub rule_id: String,
    pub rule: String,
    /// One line per condition, e.g. `phone +79123456789 on both`.
    pub reasons: Vec<String>,
}

/// Which contact's value each field keeps: `master` (default) or `merged`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeInput {
    pub master_id: ContactId,
    pub merged_id: ContactId,
    /// `name`, `email`, `phone`, `photo_url` → `master` or `merged`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MergeResult {
    pub merge_id: String,
    pub contact: Contact,
}

fn default_rules(now: i64) -> Vec<store::RuleRow> {
    let rule = |pos: i64, name: &str, enabled: bool, cond: serde_json::Value| store::RuleRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.into(),
        position: pos,
        enabled: enabled as i64,
        conditions: cond.to_string(),
        created_at: now,
        updated_at: now,
    };
    vec![
        rule(
            1,
            "Same phone",
            true,
            serde_json::json!([{"field": "phone"}]),
        ),
        rule(
            2,
            "Same email",
            true,
            serde_json::json!([{"field": "email"}]),
        ),
        rule(
            3,
            "Same messenger account",
            true,
            serde_json::json!([{"field": "identity"}]),
        ),
        // Off by default: common names would flood the results.
        rule(
            4,
            "Similar name",
            false,
            serde_json::json!([{"field": "name", "fuzzy": true, "threshold": 0.85}]),
        ),
    ]
}

fn rule_of(r: store::RuleRow) -> Result<DuplicateRule> {
    Ok(DuplicateRule {
        id: r.id,
        name: r.name,
        enabled: r.enabled != 0,
        conditions: serde_json::from_str(&r.conditions)
            .map_err(|e| Error::Internal(format!("stored duplicate rule is corrupt: {e}")))?,
    })
}

/// A contact as rules compare it: its keys and its name's tokens.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    pub key: store::KeyRow,
    pub tokens: Vec<String>,
}

impl Subject {
    pub fn new(key: store::KeyRow) -> Subject {
        // `name_key` is the name's tokens joined by spaces (blank for names without letters).
        let tokens = key
            .name_key
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        Subject { key, tokens }
    }
}

/// Why `a` and `b` match a rule (a line per condition), or `None`. `shared` is an external id
/// both write from (on channels of one kind), if any.
pub(crate) fn evaluate(
    rule: &DuplicateRule,
    a: &Subject,
    b: &Subject,
    shared: Option<&str>,
) -> Option<Vec<String>> {
    let mut reasons = Vec::new();
    for c in &rule.conditions {
        match c.field {
            MatchField::Phone => match (&a.key.phone_key, &b.key.phone_key) {
                (Some(x), Some(y)) if x == y => reasons.push(format!("phone {x} on both")),
                _ => return None,
            },
            MatchField::Email => match (&a.key.email_key, &b.key.email_key) {
                (Some(x), Some(y)) if x == y => reasons.push(format!("email {x} on both")),
                _ => return None,
            },
            MatchField::Identity => match shared {
                Some(x) => reasons.push(format!("both write from the account {x}")),
                None => return None,
            },
            MatchField::Name if c.fuzzy => {
                let sim = matching::name_similarity(&a.tokens, &b.tokens);
                if sim >= c.threshold.unwrap_or(DEFAULT_THRESHOLD) {
                    reasons.push(format!(
                        "names «{}» and «{}» are {:.0}% alike",
                        a.key.name,
                        b.key.name,
                        sim * 100.0
                    ));
                } else {
                    return None;
                }
            }
            MatchField::Name => match (&a.key.name_key, &b.key.name_key) {
                (Some(x), Some(y)) if x == y && !x.trim().is_empty() => {
                    reasons.push(format!("the same name «{}»", b.key.name))
                }
                _ => return None,
            },
        }
    }
    (!reasons.is_empty()).then_some(reasons)
}

/// The similarity a fuzzy name condition asks for when the rule does not say.
pub(crate) const DEFAULT_THRESHOLD: f64 = 0.85;

impl Desk {
    /// The rules, seeding the defaults on first use.
    pub async fn duplicate_rules(&self, _p: &Principal) -> Result<Vec<DuplicateRule>> {
        self.load_duplicate_rules().await
    }

    pub(crate) async fn load_duplicate_rules(&self) -> Result<Vec<DuplicateRule>> {
        let mut tx = self.store().begin().await?;
        if store::count_rules(&mut tx).await? == 0 {
            store::replace_rules(&mut tx, &default_rules(Ts::now().0)).await?;
        }
        let rules = store::list_rules(&mut tx).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        rules.into_iter().map(rule_of).collect()
    }

    /// Replaces the rules (admins); problems name `rules[i].field`.
    pub async fn set_duplicate_rules(
        &self,
        p: &Principal,
        rules: Vec<DuplicateRule>,
    ) -> Result<Vec<DuplicateRule>> {
        p.require(Role::Admin)?;
        let now = Ts::now().0;
        let mut rows = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let name = r.name.trim();
            if name.is_empty() || r.name.chars().count() > 100 {
                return Err(Error::invalid(
                    format!("rules[{i}].name"),
                    "is 1 to 100 characters",
                ));
            }
            if r.conditions.is_empty() {
                return Err(Error::invalid(
                    format!("rules[{i}].conditions"),
                    "needs at least one condition",
                ));
            }
            for (j, c) in r.conditions.iter().enumerate() {
                if c.fuzzy && c.field != MatchField::Name {
                    return Err(Error::invalid(
                        format!("rules[{i}].conditions[{j}].fuzzy"),
                        "only names match fuzzily",
                    ));
                }
                if let Some(t) = c.threshold
                    && !(0.5..=1.0).contains(&t)
                {
                    return Err(Error::invalid(
                        format!("rules[{i}].conditions[{j}].threshold"),
                        "is between 0.5 and 1.0",
                    ));
                }
            }
            rows.push(store::RuleRow {
                id: if r.id.is_empty() {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    r.id.clone()
                },
                name: name.to_owned(),
                position: i as i64 + 1,
                enabled: r.enabled as i64,
                conditions: serde_json::to_string(&r.conditions)
                    .map_err(|e| Error::Internal(e.to_string()))?,
                created_at: now,
                updated_at: now,
            });
        }
        let mut tx = self.store().begin().await?;
        store::replace_rules(&mut tx, &rows).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.duplicate_rules(p).await
    }

    /// The current record of a contact: itself, or the master it was merged into.
    pub async fn resolve_contact(&self, id: &ContactId) -> Result<ContactId> {
        let mut conn = self.store().read().await?;
        let mut id = id.clone();
        for _ in 0..16 {
            match store::merged_into(&mut conn, &id).await? {
                Some(next) => id = next,
                None => return Ok(id),
            }
        }
        Err(Error::Internal("a loop of contact merges".into()))
    }

    /// The likely duplicates of a contact by the enabled rules, in rule order; each candidate
    /// is reported under the first rule it matches.
    pub async fn find_duplicates(
        &self,
        p: &Principal,
        id: &ContactId,
    ) -> Result<Vec<DuplicateMatch>> {
        let rules: Vec<DuplicateRule> = self
            .duplicate_rules(p)
            .await?
            .into_iter()
            .filter(|r| r.enabled)
            .collect();
        let id = self.resolve_contact(id).await?;
        let mut conn = self.store().read().await?;
        let mut ids = store::candidates(&mut conn, &id, 500).await?;
        ids.push(id.to_string());
        let keys = store::keys_of(&mut conn, &ids).await?;
        let Some(me) = keys
            .iter()
            .find(|k| k.id == id.as_str())
            .cloned()
            .map(Subject::new)
        else {
            return Err(Error::not_found("contact"));
        };
        let needs_identity = rules
            .iter()
            .any(|r| r.conditions.iter().any(|c| c.field == MatchField::Identity));
        let mut twins: std::collections::HashMap<String, String> = Default::default();
        if needs_identity {
            for (other, ext) in store::identity_twins(&mut conn, &me.key.id).await? {
                twins.entry(other).or_insert(ext);
            }
        }
        let mut out = Vec::new();
        for k in keys.into_iter().filter(|k| k.id != me.key.id) {
            let shared = twins.get(&k.id).map(String::as_str);
            let other = Subject::new(k);
            if let Some((rule, reasons)) = rules
                .iter()
                .find_map(|r| evaluate(r, &me, &other, shared).map(|why| (r, why)))
                && let Some(contact) =
                    contacts::get_contact(&mut conn, &ContactId(other.key.id.clone())).await?
            {
                out.push(DuplicateMatch {
                    contact,
                    rule_id: rule.id.clone(),
                    rule: rule.name.clone(),
                    reasons,
                });
            }
        }
        Ok(out)
    }

    /// Merges `merged_id` into `master_id` in one transaction: the chosen field values go to
    /// the master; identities, chats, cases and process instances move to it; the merged
    /// contact redirects to it; the merge is recorded. Open chats keep their operator.
    pub async fn merge_contacts(&self, p: &Principal, input: MergeInput) -> Result<MergeResult> {
        if input.master_id == input.merged_id {
            return Err(Error::invalid("merged_id", "is the master itself"));
        }
        for (f, v) in &input.fields {
            if !matches!(f.as_str(), "name" | "email" | "phone" | "photo_url") {
                return Err(Error::invalid(
                    format!("fields.{f}"),
                    "is not a contact field (name, email, phone, photo_url)",
                ));
            }
            if !matches!(v.as_str(), "master" | "merged") {
                return Err(Error::invalid(
                    format!("fields.{f}"),
                    "is `master` or `merged`",
                ));
            }
        }
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        // Two merges of one contact at once: the second waits here, then sees the first.
        store::lock_for_merge(
            &mut tx,
            self.store().backend(),
            &input.master_id,
            &input.merged_id,
        )
        .await?;
        let mut master = contacts::get_contact(&mut tx, &input.master_id)
            .await?
            .ok_or_else(|| Error::invalid("master_id", "no such contact"))?;
        let merged = contacts::get_contact(&mut tx, &input.merged_id)
            .await?
            .ok_or_else(|| Error::invalid("merged_id", "no such contact"))?;
        for (field, c) in [("master_id", &master), ("merged_id", &merged)] {
            if store::merged_into(&mut tx, &c.id).await?.is_some() {
                return Err(Error::conflict(
                    "already_merged",
                    format!("{field}: the contact was merged into another one"),
                ));
            }
        }
        let clashes = store::open_chat_clashes(&mut tx, &master.id, &merged.id).await?;
        if !clashes.is_empty() {
            return Err(Error::conflict(
                "open_chats",
                format!(
                    "both contacts have a chat in progress on channel {}: finish one first",
                    clashes.join(", ")
                ),
            ));
        }
        let before = serde_json::json!({"master": master, "merged": merged});
        let pick = |f: &str| input.fields.get(f).map(String::as_str) == Some("merged");
        if pick("name") {
            master.name = merged.name.clone();
        }
        if pick("email") {
            master.email = merged.email.clone();
        }
        if pick("phone") {
            master.phone = merged.phone.clone();
        }
        if pick("photo_url") {
            master.photo_url = merged.photo_url.clone();
        }
        // An empty master field takes the merged contact's value.
        master.email = master.email.or(merged.email.clone());
        master.phone = master.phone.or(merged.phone.clone());
        master.photo_url = master.photo_url.or(merged.photo_url.clone());
        contacts::update_contact(&mut tx, &master, now).await?;
        store::move_to_master(&mut tx, &master.id, &merged.id).await?;
        store::resolve_groups_of(&mut tx, &merged.id, Some(p.id()), now).await?;
        let merge_id = store::insert_merge(
            &mut tx,
            &master.id,
            &merged.id,
            Some(p.id()),
            &serde_json::json!({"fields": input.fields, "before": before}),
            now,
        )
        .await?;
        // The operators of moved chats in progress see the new contact on them.
        let (chats, _) = ferrydesk_store::chats::list_chats(
            &mut tx,
            &ferrydesk_store::chats::ChatFilter {
                contact: Some(master.id.clone()),
                status: Some(ChatStatus::InProgress),
                limit: 100,
                ..Default::default()
            },
            now,
        )
        .await?;
        let events = chats
            .into_iter()
            .filter_map(|c| {
                c.responsible_id
                    .clone()
                    .map(|r| Event::to_user(&r, EventBody::ChatUpdated { chat: c }))
            })
            .collect();
        let contact = contacts::get_contact(&mut tx, &master.id)
            .await?
            .ok_or(Error::not_found("contact"))?;
        crate::failpoint::hit("merge.before_commit").await;
        self.commit(tx, events).await?;
        Ok(MergeResult { merge_id, contact })
    }
}

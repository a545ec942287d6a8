//! Administration: users, queues, channels, settings, contacts.

use ferrydesk_domain::*;
use ferrydesk_store::{chats as chat_store, contacts, directory, settings};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::new_secret;
use crate::{Desk, Error, Principal, Result, setting};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserInput {
    pub username: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub display_name: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub chat_limit: Option<i64>,
}

/// Fields to change; absent fields stay as they are. `chat_limit: null` clears the override.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatchInput {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    pub role: Option<Role>,
    pub locale: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub chat_limit: Option<Option<i64>>,
    pub disabled: Option<bool>,
    /// A new password. Changing one's own needs `current_password`; a change ends the user's
    /// other sessions and revokes their API tokens (an admin reset ends all sessions).
    pub password: Option<String>,
    /// The caller's current password, required with `password` when changing one's own.
    pub current_password: Option<String>,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueInput {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    #[serde(default = "default_rule")]
    pub routing_rule: RoutingRule,
    /// Seconds; default 300.
    #[serde(default = "default_accept")]
    #[schema(minimum = 1, maximum = 86400)]
    pub accept_timeout_secs: i64,
    /// Minutes; default 60; `null` = never.
    #[serde(default = "default_completion")]
    #[schema(minimum = 1, maximum = 43200)]
    pub completion_timeout_mins: Option<i64>,
    #[serde(default)]
    pub members: Vec<UserId>,
}
fn default_rule() -> RoutingRule {
    RoutingRule::AllOperators
}
fn default_accept() -> i64 {
    setting::ACCEPT_TIMEOUT_SECS_DEFAULT
}
fn default_completion() -> Option<i64> {
    Some(setting::COMPLETION_TIMEOUT_MINS_DEFAULT)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    pub kind: ChannelKind,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    pub queue_id: QueueId,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    #[schema(value_type = std::collections::HashMap<String, serde_json::Value>)]
    pub settings: serde_json::Value,
}
fn yes() -> bool {
    true
}

/// A channel as created, with its one-time API token (API channels).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedChannel {
    pub channel: Channel,
    /// Shown once; only its hash is stored.
    pub api_token: Option<String>,
}

/// System settings (S6).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// "Number of simultaneous chats", default 5.
    #[schema(minimum = 1, maximum = 100)]
    pub simultaneous_chats: i64,
}

/// A contact with its chats (the timeline, S24).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactView {
    pub contact: Contact,
    pub timeline: Vec<TimelineEntry>,
    /// Set when the requested contact was merged into this one (old links keep working).
    pub redirected_from: Option<ContactId>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineEntry {
    Chat { at: Ts, chat: Chat },
    Case { at: Ts, case: Case },
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    #[serde(default)]
    pub photo_url: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

fn check_len(field: &str, v: &str, min: usize, max: usize) -> Result<()> {
    // Trimmed for the minimum, as stored for the maximum: what the schema says (`minLength`,
    // `maxLength`, a non-space character).
    let n = v.trim().chars().count();
    if n < min || v.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    Ok(())
}

fn check_limit(v: Option<i64>) -> Result<()> {
    if let Some(l) = v
        && !(1..=100).contains(&l)
    {
        return Err(Error::invalid("chat_limit", "must be between 1 and 100"));
    }
    Ok(())
}

impl Desk {
    pub async fn create_user(&self, p: Option<&Principal>, u: NewUserInput) -> Result<User> {
        if let Some(p) = p {
            p.require(Role::Admin)?;
        }
        check_len("username", &u.username, 2, 64)?;
        if !u
            .username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        {
            return Err(Error::invalid(
                "username",
                "letters, digits and . _ - @ only",
            ));
        }
        check_len("display_name", &u.display_name, 1, 200)?;
        check_limit(u.chat_limit)?;
        let hash = {
            let desk = self.clone();
            let pw = u.password.clone();
            tokio::task::spawn_blocking(move || desk.hash_password(&pw))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
        };
        let id = UserId::generate();
        let mut tx = self.store().begin().await?;
        let res = directory::insert_user(
            &mut tx,
            directory::NewUser {
                id: &id,
                username: u.username.trim(),
                display_name: u.display_name.trim(),
                email: u.email.as_deref(),
                role: u.role,
                password_hash: &hash,
                locale: u.locale.as_deref().unwrap_or("en"),
                chat_limit: u.chat_limit,
                now: Ts::now(),
            },
        )
        .await;
        match res {
            Err(e) if e.is_unique_violation() => {
                return Err(Error::Conflict {
                    code: "username_taken",
                    message: "the username is taken".into(),
                });
            }
            r => r?,
        }
        let user = directory::get_user(&mut tx, &id)
            .await?
            .ok_or(Error::not_found("user"))?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(user)
    }

    pub async fn list_users(&self, p: &Principal) -> Result<Vec<User>> {
        p.require(Role::Supervisor)?;
        let mut conn = self.store().read().await?;
        Ok(directory::list_users(&mut conn).await?)
    }

    pub async fn get_user(&self, p: &Principal, id: &UserId) -> Result<User> {
        if id != p.id() {
            p.require(Role::Supervisor)?;
        }
        let mut conn = self.store().read().await?;
        directory::get_user(&mut conn, id)
            .await?
            .ok_or(Error::not_found("user"))
    }

    /// Admins change anything; users change their own name, locale and password (with their
    /// current password, checked and throttled like a login from `client`). A password change
    /// or a disable ends the user's sessions (all but the caller's current one when changing
    /// one's own password), a password change also revokes their API tokens; open sockets
    /// close within seconds.
    pub async fn update_user(
        &self,
        p: &Principal,
        id: &UserId,
        patch: UserPatchInput,
        client: &str,
    ) -> Result<User> {
        let own_only =
            patch.role.is_none() && patch.chat_limit.is_none() && patch.disabled.is_none();
        if id != p.id() || !own_only {
            p.require(Role::Admin)?;
        }
        let own_password = patch.password.is_some() && id == p.id();
        if patch.current_password.is_some() && !own_password {
            return Err(Error::invalid(
                "current_password",
                "is only used together with a new password for yourself",
            ));
        }
        if let Some(pw) = &patch.password {
            crate::auth::check_password_strength(pw)?;
        }
        if own_password {
            self.check_current_password(p, patch.current_password.as_deref(), client)
                .await?;
        }
        if let Some(n) = &patch.display_name {
            check_len("display_name", n, 1, 200)?;
        }
        if let Some(l) = &patch.locale
            && !matches!(l.as_str(), "en" | "ru")
        {
            return Err(Error::invalid("locale", "must be en or ru"));
        }
        check_limit(patch.chat_limit.flatten())?;
        let hash = match &patch.password {
            Some(pw) => {
                let desk = self.clone();
                let pw = pw.clone();
                Some(
                    tokio::task::spawn_blocking(move || desk.hash_password(&pw))
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??,
                )
            }
            None => None,
        };
        let mut tx = self.store().begin().await?;
        let changed = directory::update_user(
            &mut tx,
            id,
            directory::UserPatch {
                display_name: patch.display_name.as_deref().map(str::trim),
                email: patch.email.as_ref().map(|e| e.as_deref()),
                role: patch.role,
                locale: patch.locale.as_deref(),
                chat_limit: patch.chat_limit,
                disabled: patch.disabled,
                password_hash: hash.as_deref(),
            },
        )
        .await?;
        if !changed {
            return Err(Error::not_found("user"));
        }
        let mut events = Vec::new();
        if patch.disabled == Some(true) || hash.is_some() {
            let keep = match &p.via {
                crate::auth::Via::Session { token_hash, .. } if own_password => {
                    Some(token_hash.as_str())
                }
                _ => None,
            };
            ferrydesk_store::security::delete_user_sessions(&mut tx, id, keep).await?;
            // A disabled user's tokens are refused while disabled; a new password revokes them.
            if hash.is_some() {
                ferrydesk_store::security::revoke_user_tokens(&mut tx, id, Ts::now()).await?;
            }
            events.push(Self::credentials_changed(id));
        }
        if patch.disabled == Some(true) || hash.is_some() && !own_password {
            self.set_status_in(
                &mut tx,
                id,
                OperatorStatus::Inactive,
                StatusReason::Admin,
                Some(p.id()),
                &mut events,
            )
            .await?;
        }
        let user = directory::get_user(&mut tx, id)
            .await?
            .ok_or(Error::not_found("user"))?;
        self.commit(tx, events).await?;
        Ok(user)
    }

    fn validate_queue(q: &QueueInput) -> Result<()> {
        check_len("name", &q.name, 1, 200)?;
        if !(1..=86_400).contains(&q.accept_timeout_secs) {
            return Err(Error::invalid(
                "accept_timeout_secs",
                "must be between 1 and 86400",
            ));
        }
        if let Some(m) = q.completion_timeout_mins
            && !(1..=43_200).contains(&m)
        {
            return Err(Error::invalid(
                "completion_timeout_mins",
                "must be between 1 and 43200, or null for never",
            ));
        }
        Ok(())
    }

    pub async fn save_queue(
        &self,
        p: &Principal,
        id: Option<&QueueId>,
        input: QueueInput,
    ) -> Result<Queue> {
        p.require(Role::Admin)?;
        Self::validate_queue(&input)?;
        let mut tx = self.store().begin().await?;
        for (i, m) in input.members.iter().enumerate() {
            directory::get_user(&mut tx, m)
                .await?
                .ok_or_else(|| Error::invalid(format!("members/{i}"), "no such user"))?;
        }
        let mut q = Queue {
            id: id.cloned().unwrap_or_else(QueueId::generate),
            name: input.name.trim().to_owned(),
            routing_rule: input.routing_rule,
            accept_timeout_secs: input.accept_timeout_secs,
            completion_timeout_mins: input.completion_timeout_mins,
            members: input.members,
            created_at: Ts::now(),
        };
        q.members.sort();
        q.members.dedup();
        // Members who were in the queue were offered its waiting chats already.
        let before: Vec<UserId> = match id {
            Some(id) => directory::get_queue(&mut tx, id)
                .await?
                .map(|old| old.members)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let res = match id {
            Some(_) => directory::update_queue(&mut tx, &q)
                .await
                .map(|found| found.then_some(())),
            None => directory::insert_queue(&mut tx, &q).await.map(Some),
        };
        match res {
            Err(e) if e.is_unique_violation() => {
                return Err(Error::Conflict {
                    code: "name_taken",
                    message: "a queue with this name exists".into(),
                });
            }
            Ok(None) => return Err(Error::not_found("queue")),
            r => r?,
        };
        // New members may take waiting chats right away.
        let mut events = Vec::new();
        for m in q.members.iter().filter(|m| !before.contains(m)) {
            self.drain_for(&mut tx, m, crate::routing::Drain::BecameActive, &mut events)
                .await?;
        }
        let q = directory::get_queue(&mut tx, &q.id)
            .await?
            .ok_or(Error::not_found("queue"))?;
        self.commit(tx, events).await?;
        Ok(q)
    }

    pub async fn list_queues(&self, _p: &Principal) -> Result<Vec<Queue>> {
        let mut conn = self.store().read().await?;
        Ok(directory::list_queues(&mut conn).await?)
    }

    pub async fn delete_queue(&self, p: &Principal, id: &QueueId) -> Result<()> {
        p.require(Role::Admin)?;
        let mut tx = self.store().begin().await?;
        let in_use: i64 = {
            let (_, n) = chat_store::list_chats(
                &mut tx,
                &chat_store::ChatFilter {
                    queue: Some(id.clone()),
                    limit: 1,
                    ..Default::default()
                },
                Ts::now(),
            )
            .await?;
            n
        };
        let channels = directory::list_channels(&mut tx)
            .await?
            .into_iter()
            .filter(|c| &c.queue_id == id)
            .count();
        if in_use > 0 || channels > 0 {
            return Err(Error::conflict(
                "queue_in_use",
                "the queue has chats or channels; move them first",
            ));
        }
        if !directory::delete_queue(&mut tx, id).await? {
            return Err(Error::not_found("queue"));
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    pub async fn create_channel(
        &self,
        p: &Principal,
        input: ChannelInput,
    ) -> Result<CreatedChannel> {
        p.require(Role::Admin)?;
        check_len("name", &input.name, 1, 200)?;
        if !input.settings.is_object() && !input.settings.is_null() {
            return Err(Error::invalid("settings", "must be an object"));
        }
        let settings = if input.settings.is_null() {
            serde_json::json!({})
        } else {
            input.settings.clone()
        };
        let id = ChannelId::generate();
        let (public_key, token, token_hash) = match input.kind {
            ChannelKind::Widget => (Some(new_secret("fdw_").0[..24].to_owned()), None, None),
            ChannelKind::Api => {
                let (t, h) = new_secret("fdc_");
                (None, Some(t), Some(h))
            }
            ChannelKind::Plugin => {
                return Err(Error::invalid(
                    "kind",
                    "plugin channels are created by installing a connector plugin",
                ));
            }
        };
        let mut tx = self.store().begin().await?;
        directory::get_queue(&mut tx, &input.queue_id)
            .await?
            .ok_or_else(|| Error::invalid("queue_id", "no such queue"))?;
        directory::insert_channel(
            &mut tx,
            directory::NewChannel {
                id: &id,
                kind: input.kind,
                name: input.name.trim(),
                queue_id: &input.queue_id,
                settings: &settings,
                public_key: public_key.as_deref(),
                token_hash: token_hash.as_deref(),
                now: Ts::now(),
            },
        )
        .await?;
        if !input.active {
            directory::update_channel(
                &mut tx,
                &id,
                input.name.trim(),
                &input.queue_id,
                false,
                &settings,
            )
            .await?;
        }
        let channel = directory::get_channel(&mut tx, &id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(CreatedChannel {
            channel,
            api_token: token,
        })
    }

    pub async fn update_channel(
        &self,
        p: &Principal,
        id: &ChannelId,
        input: ChannelInput,
    ) -> Result<Channel> {
        p.require(Role::Admin)?;
        check_len("name", &input.name, 1, 200)?;
        let settings = if input.settings.is_null() {
            serde_json::json!({})
        } else {
            input.settings.clone()
        };
        if !settings.is_object() {
            return Err(Error::invalid("settings", "must be an object"));
        }
        let mut tx = self.store().begin().await?;
        let cur = directory::get_channel(&mut tx, id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        if cur.kind != input.kind {
            return Err(Error::invalid(
                "kind",
                "the kind of a channel cannot change",
            ));
        }
        directory::get_queue(&mut tx, &input.queue_id)
            .await?
            .ok_or_else(|| Error::invalid("queue_id", "no such queue"))?;
        directory::update_channel(
            &mut tx,
            id,
            input.name.trim(),
            &input.queue_id,
            input.active,
            &settings,
        )
        .await?;
        let channel = directory::get_channel(&mut tx, id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.inner.channel_auth.clear();
        Ok(channel)
    }

    /// Issues a new API token for an API channel; the old one stops working.
    pub async fn rotate_channel_token(&self, p: &Principal, id: &ChannelId) -> Result<String> {
        p.require(Role::Admin)?;
        let (t, h) = new_secret("fdc_");
        let mut tx = self.store().begin().await?;
        let ch = directory::get_channel(&mut tx, id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        if ch.kind != ChannelKind::Api {
            return Err(Error::invalid("kind", "only API channels have tokens"));
        }
        directory::set_channel_token(&mut tx, id, &h).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.inner.channel_auth.clear();
        Ok(t)
    }

    pub async fn list_channels(&self, _p: &Principal) -> Result<Vec<Channel>> {
        let mut conn = self.store().read().await?;
        Ok(directory::list_channels(&mut conn).await?)
    }

    pub async fn get_channel(&self, _p: &Principal, id: &ChannelId) -> Result<Channel> {
        let mut conn = self.store().read().await?;
        directory::get_channel(&mut conn, id)
            .await?
            .ok_or(Error::not_found("channel"))
    }

    pub async fn settings(&self, _p: &Principal) -> Result<Settings> {
        let mut conn = self.store().read().await?;
        Ok(Settings {
            simultaneous_chats: self.default_chat_limit(&mut conn).await?,
        })
    }

    pub async fn update_settings(&self, p: &Principal, s: Settings) -> Result<Settings> {
        p.require(Role::Admin)?;
        if !(1..=100).contains(&s.simultaneous_chats) {
            return Err(Error::invalid(
                "simultaneous_chats",
                "must be between 1 and 100",
            ));
        }
        let mut tx = self.store().begin().await?;
        settings::set(
            &mut tx,
            setting::SIMULTANEOUS_CHATS,
            &serde_json::json!(s.simultaneous_chats),
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(s)
    }

    pub async fn search_contacts(
        &self,
        _p: &Principal,
        q: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Contact>> {
        let mut conn = self.store().read().await?;
        Ok(contacts::search_contacts(&mut conn, q, limit.clamp(1, 200), offset.max(0)).await?)
    }

    /// A contact with the timeline of their chats (S24).
    pub async fn contact_view(&self, p: &Principal, id: &ContactId) -> Result<ContactView> {
        let requested = id.clone();
        let id = &self.resolve_contact(id).await?;
        let redirected_from = (id != &requested).then_some(requested);
        let mut conn = self.store().read().await?;
        let contact = contacts::get_contact(&mut conn, id)
            .await?
            .ok_or(Error::not_found("contact"))?;
        let (chats, _) = chat_store::list_chats(
            &mut conn,
            &chat_store::ChatFilter {
                contact: Some(id.clone()),
                limit: 500,
                ..Default::default()
            },
            Ts::now(),
        )
        .await?;
        let mut timeline = Vec::with_capacity(chats.len());
        for mut c in chats {
            // The visibility rule (S10): others' unfinished chats show without their content,
            // nor the case made from them (hidden by the case rule too).
            if !p.role().sees_all_chats() && self.readable_chat(&mut conn, p, &c.id).await.is_err()
            {
                c.preview = None;
                c.case_id = None;
            }
            timeline.push(TimelineEntry::Chat {
                at: c.started_at,
                chat: c,
            });
        }
        let (cases, _) = ferrydesk_store::cases::list_cases(
            &mut conn,
            &ferrydesk_store::cases::CaseFilter {
                contact: Some(id.clone()),
                // The case visibility rule (see `cases.rs`): cases made from others'
                // unfinished chats are left out.
                visible_to: (!p.role().sees_all_chats()).then(|| p.id().clone()),
                limit: 500,
                ..Default::default()
            },
        )
        .await?;
        timeline.extend(cases.into_iter().map(|c| TimelineEntry::Case {
            at: c.created_at,
            case: c,
        }));
        // Newest first, chats and cases interleaved.
        timeline.sort_by_key(|e| {
            std::cmp::Reverse(match e {
                TimelineEntry::Chat { at, .. } | TimelineEntry::Case { at, .. } => *at,
            })
        });
        Ok(ContactView {
            contact,
            timeline,
            redirected_from,
        })
    }

    pub async fn update_contact(
        &self,
        _p: &Principal,
        id: &ContactId,
        input: ContactInput,
    ) -> Result<Contact> {
        check_len("name", &input.name, 1, 200)?;
        if let Some(e) = &input.email
            && !e.is_empty()
            && !e.contains('@')
        {
            return Err(Error::invalid("email", "is not an email address"));
        }
        let mut tx = self.store().begin().await?;
        let mut c = contacts::get_contact(&mut tx, id)
            .await?
            .ok_or(Error::not_found("contact"))?;
        c.name = input.name.trim().to_owned();
        c.photo_url = input.photo_url.filter(|s| !s.is_empty());
        c.email = input.email.filter(|s| !s.is_empty());
        c.phone = input.phone.filter(|s| !s.is_empty());
        contacts::update_contact(&mut tx, &c, Ts::now()).await?;
        let c = contacts::get_contact(&mut tx, id)
            .await?
            .ok_or(Error::not_found("contact"))?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(c)
    }
}

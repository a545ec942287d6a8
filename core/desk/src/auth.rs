//! Authentication (argon2id passwords, server-side sessions, hashed API tokens, login
//! throttling) and the principal every service call is made as.
//!
//! Ending a credential (token revoked, password changed or reset, user disabled, logout)
//! publishes [`crate::EventBody::CredentialsChanged`] to the user: open sockets re-check their
//! own credential when it arrives, on every node (PostgreSQL `NOTIFY`).

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ferrydesk_domain::*;
use ferrydesk_store::{directory, security};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{Desk, Error, Result};

/// How the caller authenticated.
#[derive(Debug, Clone)]
pub enum Via {
    /// Browser session; writes must carry the CSRF token.
    Session { token_hash: String, csrf: String },
    /// `Authorization: Bearer` API token; no CSRF needed.
    Token,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub via: Via,
}

impl Principal {
    pub fn id(&self) -> &UserId {
        &self.user.id
    }
    pub fn role(&self) -> Role {
        self.user.role
    }
    /// Requires at least `role` (operator < supervisor < admin).
    pub fn require(&self, role: Role) -> Result<()> {
        let rank = |r: Role| match r {
            Role::Operator => 0,
            Role::Supervisor => 1,
            Role::Admin => 2,
        };
        if rank(self.user.role) >= rank(role) {
            Ok(())
        } else {
            Err(Error::forbidden(format!("this requires the {role} role")))
        }
    }
}

/// A new random secret with a prefix, and its SHA-256 (what is stored).
pub fn new_secret(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{prefix}{}", hex::encode(bytes));
    let hash = hash_secret(&token);
    (token, hash)
}

pub fn hash_secret(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Result of a successful login.
pub struct LoginOk {
    pub session_token: String,
    pub csrf_token: String,
    pub user: User,
    pub expires_at: Ts,
}

/// Login throttling. Every attempt is counted before the password is checked, under up to
/// three keys: the (username, client address) pair, the client address alone (an IPv6 address
/// counts by its /64), and — unless the address is one the user signed in from within
/// `known_for` — the username across all addresses. Each key allows `free` attempts; after that
/// each further attempt must wait `base · 2^(n − free)` after the previous one, capped at `max`
/// (429 with `Retry-After`). A successful login clears its (username, address) key, gives its
/// attempt back to the other keys and remembers the address for the user; a key with no
/// attempt for `forget_after` starts from zero. So guesses spread over many addresses slow
/// down together, while the real user signing in from an address they used before is never
/// held up by a stranger's failures (OWASP's "device cookie" idea, keyed by address).
#[derive(Debug, Clone, Copy)]
pub struct LoginPolicy {
    /// Per (username, client address): 5 free, then 1 s, 2 s, … up to 15 min.
    pub per_user: security::AttemptPolicy,
    /// Per client address (all usernames): 20 free, then 1 s, 2 s, … up to 15 min.
    pub per_address: security::AttemptPolicy,
    /// Per username from addresses it has not signed in from: 20 free, then 1 s, 2 s, … up
    /// to 15 min.
    pub per_account: security::AttemptPolicy,
    /// How long an address the user signed in from stays exempt from `per_account`: 30 days.
    pub known_for: Duration,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        let day = 24 * 3600 * 1000;
        LoginPolicy {
            per_user: security::AttemptPolicy {
                free: 5,
                base_delay_ms: 1000,
                max_delay_ms: 15 * 60 * 1000,
                forget_after_ms: day,
            },
            per_address: security::AttemptPolicy {
                free: 20,
                base_delay_ms: 1000,
                max_delay_ms: 15 * 60 * 1000,
                forget_after_ms: day,
            },
            per_account: security::AttemptPolicy {
                free: 20,
                base_delay_ms: 1000,
                max_delay_ms: 15 * 60 * 1000,
                forget_after_ms: day,
            },
            known_for: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The throttle keys of a login attempt.
struct LoginKeys {
    user: String,
    address: String,
    account: String,
    /// Present while the address is one the user signed in from (see [`LoginPolicy`]).
    known: String,
}

impl LoginKeys {
    fn new(username: &str, client: &str) -> LoginKeys {
        let name: String = username.trim().to_lowercase().chars().take(200).collect();
        LoginKeys {
            user: format!("login:{client}:{name}"),
            address: format!("login-addr:{client}"),
            account: format!("login-user:{name}"),
            known: format!("login-known:{client}:{name}"),
        }
    }

    /// The keys an attempt counted under, to give back or clear.
    fn counted(&self, account: bool) -> impl Iterator<Item = &str> {
        [&self.address, &self.account]
            .into_iter()
            .filter(move |k| account || **k != self.account)
            .map(String::as_str)
    }
}

/// How long a password check waits for a hash slot before it is refused.
pub const HASH_WAIT: Duration = Duration::from_secs(5);

/// The node's password-hash slots: as many as cores (at least 2).
fn hash_slots() -> std::sync::Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            std::sync::Arc::new(tokio::sync::Semaphore::new(cores.max(2)))
        })
        .clone()
}

fn retry_after(at: Ts, now: Ts) -> Duration {
    let ms = (at.0 - now.0).max(1);
    Duration::from_secs(((ms + 999) / 1000) as u64)
}

impl Desk {
    fn argon2(&self) -> Argon2<'static> {
        let params = Params::new(self.options().argon2_memory_kib, 2, 1, None).unwrap_or_default();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    pub fn hash_password(&self, password: &str) -> Result<String> {
        check_password_strength(password)?;
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Runs a password hash on a blocking thread once one of the node's hash slots is free.
    /// Each argon2 run takes `argon2_memory_kib` of memory and a core for tens of milliseconds,
    /// so at most [`hash_slots`] run at once, whatever the number of clients; a caller that gets
    /// no slot within [`HASH_WAIT`] is refused (429, retry in 1 s).
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce(Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T> {
        let busy = || Error::RateLimited {
            retry_after: Duration::from_secs(1),
        };
        let slot = tokio::time::timeout(HASH_WAIT, hash_slots().acquire_owned())
            .await
            .map_err(|_| {
                metrics::counter!("ferrydesk_login_busy_total").increment(1);
                busy()
            })?
            .map_err(|_| busy())?;
        let a = self.argon2();
        // The slot goes with the hash, not with the request: a client that hangs up frees it
        // only when the hash it started has finished.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f(a)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Checks `password` against a stored hash (in a hash slot).
    async fn verify_password(&self, hash: String, password: &str) -> Result<bool> {
        let pw = password.to_owned();
        self.hashing(move |a| {
            PasswordHash::new(&hash)
                .map(|h| a.verify_password(pw.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
    }

    /// Checks a password attempt counted under `keys`; a refusal for want of a hash slot
    /// gives the attempt back (it was never checked).
    async fn check_attempt(
        &self,
        keys: &LoginKeys,
        account: bool,
        hash: Option<String>,
        password: &str,
    ) -> Result<bool> {
        let r = match hash {
            Some(h) => self.verify_password(h, password).await,
            None => {
                // Spend comparable time so that response timing does not reveal unknown users.
                let pw = password.to_owned();
                let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
                self.hashing(move |a| {
                    let _ = a.hash_password(pw.as_bytes(), &salt);
                    false
                })
                .await
            }
        };
        if let Err(Error::RateLimited { .. }) = &r {
            let mut tx = self.store().begin().await?;
            security::refund_attempt(&mut tx, &keys.user).await?;
            for k in keys.counted(account) {
                security::refund_attempt(&mut tx, k).await?;
            }
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        }
        r
    }

    /// After a correct password: clears the (username, address) key, gives the attempt back
    /// to the others and remembers the address for the user.
    async fn attempt_succeeded(
        &self,
        tx: &mut ferrydesk_store::Tx,
        keys: &LoginKeys,
        account: bool,
        now: Ts,
    ) -> Result<()> {
        security::clear_attempts(tx, &keys.user).await?;
        for k in keys.counted(account) {
            security::refund_attempt(tx, k).await?;
        }
        let until = Ts(now.0 + self.options().login.known_for.as_millis() as i64);
        security::remember(tx, &keys.known, now, until).await?;
        Ok(())
    }

    /// Counts a password attempt under its keys before it is checked (see [`LoginPolicy`]);
    /// refused attempts change nothing. `Ok(true)` when it counted under the username's key
    /// too (the address is not one the user signed in from).
    async fn take_login_attempt(&self, keys: &LoginKeys) -> Result<bool> {
        let now = Ts::now();
        let policy = self.options().login;
        let mut tx = self.store().begin().await?;
        let account = !security::remembered(&mut tx, &keys.known, now).await?;
        let mut refused =
            match security::take_attempt(&mut tx, &keys.user, now, &policy.per_user).await? {
                Err(at) => Some(at),
                Ok(_) => security::take_attempt(&mut tx, &keys.address, now, &policy.per_address)
                    .await?
                    .err(),
            };
        if refused.is_none() && account {
            refused = security::take_attempt(&mut tx, &keys.account, now, &policy.per_account)
                .await?
                .err();
        }
        if let Some(at) = refused {
            drop(tx);
            metrics::counter!("ferrydesk_login_throttled_total").increment(1);
            return Err(Error::RateLimited {
                retry_after: retry_after(at, now),
            });
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(account)
    }

    /// Logs a user in from `client` (the client's address key). Attempts are throttled per
    /// username and address and per address ([`LoginPolicy`]); the answer does not tell whether
    /// the username exists.
    pub async fn login(&self, username: &str, password: &str, client: &str) -> Result<LoginOk> {
        let keys = LoginKeys::new(username, client);
        let account = self.take_login_attempt(&keys).await?;
        let mut conn = self.store().read().await?;
        let found = directory::get_user_for_login(&mut conn, username).await?;
        drop(conn);
        let hash = match &found {
            Some((user, hash)) if !user.disabled => Some(hash.clone()),
            _ => None,
        };
        let verified = self.check_attempt(&keys, account, hash, password).await?;
        let Some((user, _)) = found.filter(|_| verified) else {
            metrics::counter!("ferrydesk_login_failures_total").increment(1);
            return Err(Error::Unauthenticated);
        };
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        self.attempt_succeeded(&mut tx, &keys, account, now).await?;
        let (session_token, token_hash) = new_secret("fds_");
        let (csrf_token, _) = new_secret("");
        let expires_at = Ts(now.0 + self.options().session_ttl.as_millis() as i64);
        security::insert_session(&mut tx, &token_hash, &user.id, &csrf_token, now, expires_at)
            .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(LoginOk {
            session_token,
            csrf_token,
            user,
            expires_at,
        })
    }

    /// Checks the caller's current password before they change it, throttled like a login
    /// from `client`. A missing or wrong password is an error on `current_password`.
    pub(crate) async fn check_current_password(
        &self,
        p: &Principal,
        current: Option<&str>,
        client: &str,
    ) -> Result<()> {
        let Some(current) = current.filter(|c| !c.is_empty()) else {
            return Err(Error::invalid(
                "current_password",
                "is required to change your own password",
            ));
        };
        let keys = LoginKeys::new(&p.user.username, client);
        let account = self.take_login_attempt(&keys).await?;
        let mut conn = self.store().read().await?;
        let found = directory::get_user_for_login(&mut conn, &p.user.username).await?;
        drop(conn);
        let hash = found.and_then(|(u, hash)| (u.id == p.user.id).then_some(hash));
        let ok = self.check_attempt(&keys, account, hash, current).await?;
        if !ok {
            return Err(Error::invalid("current_password", "is not correct"));
        }
        let mut tx = self.store().begin().await?;
        self.attempt_succeeded(&mut tx, &keys, account, Ts::now())
            .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    /// Resolves a session cookie; slides its expiry when more than a minute old.
    pub async fn authenticate_session(&self, token: &str) -> Result<Principal> {
        let now = Ts::now();
        let hash = hash_secret(token);
        let mut conn = self.store().read().await?;
        let (user, csrf, expires) = security::session_user(&mut conn, &hash, now)
            .await?
            .ok_or(Error::Unauthenticated)?;
        drop(conn);
        let ttl = self.options().session_ttl.as_millis() as i64;
        if expires.0 - now.0 < ttl - 60_000 {
            let mut tx = self.store().begin().await?;
            security::touch_session(&mut tx, &hash, now, Ts(now.0 + ttl)).await?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        }
        Ok(Principal {
            user,
            via: crate::auth::Via::Session {
                token_hash: hash,
                csrf,
            },
        })
    }

    /// Resolves an API token.
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal> {
        let mut conn = self.store().read().await?;
        let user = security::api_token_user(&mut conn, &hash_secret(token))
            .await?
            .ok_or(Error::Unauthenticated)?;
        Ok(Principal {
            user,
            via: Via::Token,
        })
    }

    /// Whether the credential behind an open socket still holds: the session (`Via::Session`)
    /// or the API token with hash `token_hash` (`Via::Token`) is live and its user enabled.
    /// A database error counts as still valid (the next check decides).
    pub async fn credential_valid(&self, p: &Principal, token_hash: Option<&str>) -> bool {
        let Ok(mut conn) = self.store().read().await else {
            return true;
        };
        let r = match (&p.via, token_hash) {
            (Via::Session { token_hash, .. }, _) => {
                security::session_user(&mut conn, token_hash, Ts::now())
                    .await
                    .map(|u| u.is_some())
            }
            (Via::Token, Some(h)) => security::api_token_user(&mut conn, h)
                .await
                .map(|u| u.is_some()),
            (Via::Token, None) => Ok(true),
        };
        r.unwrap_or(true)
    }

    /// The event that makes the user's open sockets re-check their credentials.
    pub(crate) fn credentials_changed(user: &UserId) -> crate::Event {
        crate::Event::to_user(
            user,
            crate::EventBody::CredentialsChanged {
                user_id: user.clone(),
            },
        )
    }

    /// Ends the session; an operator with no other session becomes Inactive (S3).
    pub async fn logout(&self, p: &Principal) -> Result<()> {
        let Via::Session { token_hash, .. } = &p.via else {
            return Ok(());
        };
        let mut tx = self.store().begin().await?;
        let mut events = vec![Self::credentials_changed(p.id())];
        if let Some(user) = security::delete_session(&mut tx, token_hash).await?
            && security::live_sessions(&mut tx, &user, Ts::now()).await? == 0
        {
            self.set_status_in(
                &mut tx,
                &user,
                OperatorStatus::Inactive,
                StatusReason::Logout,
                Some(&user),
                &mut events,
            )
            .await?;
        }
        self.commit(tx, events).await
    }

    /// Creates an API token for `user` (admins for anyone, others for themselves).
    pub async fn create_api_token(
        &self,
        p: &Principal,
        user: &UserId,
        name: &str,
    ) -> Result<(TokenId, String)> {
        if user != p.id() {
            p.require(Role::Admin)?;
        }
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("name", "must be 1 to 100 characters"));
        }
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::invalid("name", "must be 1 to 100 characters"));
        }
        let (token, hash) = new_secret("fdt_");
        let id = TokenId::generate();
        let mut tx = self.store().begin().await?;
        directory::get_user(&mut tx, user)
            .await?
            .ok_or(Error::not_found("user"))?;
        security::insert_api_token(&mut tx, &id, user, name, &hash, Ts::now()).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok((id, token))
    }

    pub async fn list_api_tokens(
        &self,
        p: &Principal,
        user: &UserId,
    ) -> Result<Vec<(TokenId, String, Ts, bool)>> {
        if user != p.id() {
            p.require(Role::Admin)?;
        }
        let mut conn = self.store().read().await?;
        Ok(security::list_api_tokens(&mut conn, user).await?)
    }

    pub async fn revoke_api_token(&self, p: &Principal, user: &UserId, id: &TokenId) -> Result<()> {
        if user != p.id() {
            p.require(Role::Admin)?;
        }
        let mut tx = self.store().begin().await?;
        if !security::revoke_api_token(&mut tx, user, id, Ts::now()).await? {
            return Err(Error::not_found("token"));
        }
        self.commit(tx, vec![Self::credentials_changed(user)]).await
    }
}

/// Forgets old throttle rows and deletes idle visitor sessions, once a minute.
pub(crate) async fn prune(desk: Desk, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let o = desk.options();
        let forget = o
            .login
            .per_user
            .forget_after_ms
            .max(o.login.per_address.forget_after_ms)
            .max(2 * 60 * 1000);
        let now = Ts::now();
        let r = async {
            let mut tx = desk.store().begin().await?;
            security::prune_throttle(&mut tx, Ts(now.0 - forget), now).await?;
            security::expire_visitor_sessions(
                &mut tx,
                Ts(now.0 - o.visitor_session_ttl.as_millis() as i64),
                10_000,
            )
            .await?;
            let unused = o
                .visitor_session_ttl
                .min(crate::widget::UNUSED_VISITOR_SESSION_TTL);
            security::expire_unused_visitor_sessions(
                &mut tx,
                Ts(now.0 - unused.as_millis() as i64),
                10_000,
            )
            .await?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "pruning throttles and visitor sessions");
        }
    }
}

pub(crate) fn check_password_strength(pw: &str) -> Result<()> {
    if pw.chars().count() < 8 {
        return Err(Error::invalid("password", "must be at least 8 characters"));
    }
    if pw.len() > 1024 {
        return Err(Error::invalid("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

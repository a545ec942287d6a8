//! Authentication (argon2id passwords, server-side sessions, hashed API tokens, login
//! throttling) and the principal every service call is made as.

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

    /// Logs a user in. Too many failures for the username lock it out for the window; the
    /// answer does not tell whether the username exists.
    pub async fn login(&self, username: &str, password: &str) -> Result<LoginOk> {
        let now = Ts::now();
        let window = self.options().login_window;
        let key = format!("user:{}", username.to_lowercase());
        let mut conn = self.store().read().await?;
        let (failures, last) =
            security::login_failures(&mut conn, &key, Ts(now.0 - window.as_millis() as i64))
                .await?;
        if failures >= self.options().login_max_failures {
            let until = last.unwrap_or(now).0 + window.as_millis() as i64;
            return Err(Error::RateLimited {
                retry_after: Duration::from_millis((until - now.0).max(1000) as u64),
            });
        }
        let found = directory::get_user_for_login(&mut conn, username).await?;
        drop(conn);
        let verified = match &found {
            Some((user, hash)) if !user.disabled => {
                let hash = hash.clone();
                let pw = password.to_owned();
                let a = self.argon2();
                tokio::task::spawn_blocking(move || {
                    PasswordHash::new(&hash)
                        .map(|h| a.verify_password(pw.as_bytes(), &h).is_ok())
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false)
            }
            _ => {
                // Spend comparable time so that response timing does not reveal unknown users.
                let pw = password.to_owned();
                let desk = self.clone();
                let _ = tokio::task::spawn_blocking(move || desk.hash_password(&pw)).await;
                false
            }
        };
        let mut tx = self.store().begin().await?;
        let Some((user, _)) = found.filter(|_| verified) else {
            security::record_login_failure(&mut tx, &key, now).await?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
            metrics::counter!("ferrydesk_login_failures_total").increment(1);
            return Err(Error::Unauthenticated);
        };
        security::clear_login_failures(&mut tx, &key, Ts(now.0 - 24 * 3600 * 1000)).await?;
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

    /// Ends the session; an operator with no other session becomes Inactive (S3).
    pub async fn logout(&self, p: &Principal) -> Result<()> {
        let Via::Session { token_hash, .. } = &p.via else {
            return Ok(());
        };
        let mut tx = self.store().begin().await?;
        let mut events = Vec::new();
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
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
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
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }
}

fn check_password_strength(pw: &str) -> Result<()> {
    if pw.chars().count() < 8 {
        return Err(Error::invalid("password", "must be at least 8 characters"));
    }
    if pw.len() > 1024 {
        return Err(Error::invalid("password", "must be at most 1024 bytes"));
    }
    Ok(())
}

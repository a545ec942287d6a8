//! Contacts and their channel identities.

use ferrydesk_domain::matching;
use ferrydesk_domain::*;
use sqlx::AssertSqlSafe;

use crate::rows::{self, CONTACT_COLS, IDENTITY_COLS};
use crate::{Conn, Result};

pub struct NewContact<'a> {
    pub id: &'a ContactId,
    pub name: &'a str,
    pub photo_url: Option<&'a str>,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub now: Ts,
}

pub async fn insert_contact(conn: &mut Conn, c: NewContact<'_>) -> Result<()> {
    insert_contacts(conn, std::slice::from_ref(&c)).await
}

/// The country code for phone numbers written without one (Russia; see
/// [`matching::phone_e164`]).
pub const DEFAULT_PHONE_COUNTRY: &str = "7";

/// A contact's normalised keys for duplicate search.
pub struct Keys {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// 3-letter prefixes of the name's tokens (the blocking keys of fuzzy name matching).
    pub prefixes: Vec<String>,
}

impl Keys {
    pub fn of(name: &str, email: Option<&str>, phone: Option<&str>) -> Keys {
        let tokens = matching::name_tokens(name);
        let mut prefixes: Vec<String> = tokens
            .iter()
            .filter(|t| t.chars().count() >= 2)
            .map(|t| t.chars().take(3).collect())
            .collect();
        prefixes.sort();
        prefixes.dedup();
        Keys {
            phone: phone.and_then(|p| matching::phone_e164(p, DEFAULT_PHONE_COUNTRY)),
            email: email.and_then(matching::email_key),
            name: (!tokens.is_empty()).then(|| tokens.join(" ")),
            prefixes,
        }
    }
}

async fn set_name_tokens(conn: &mut Conn, id: &ContactId, prefixes: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM contact_name_tokens WHERE contact_id = $1")
        .bind(id.as_str())
        .execute(&mut *conn)
        .await?;
    for p in prefixes {
        sqlx::query(
            "INSERT INTO contact_name_tokens (prefix, contact_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(p)
        .bind(id.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Computes the keys of contacts that have none yet (rows from before duplicate search);
/// returns how many it did. Call until it returns 0.
pub async fn backfill_keys(conn: &mut Conn, limit: i64) -> Result<usize> {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT id, name, email, phone FROM contacts WHERE name_key IS NULL AND name <> '' \
         AND merged_into IS NULL LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    for (id, name, email, phone) in &rows {
        let k = Keys::of(name, email.as_deref(), phone.as_deref());
        sqlx::query(
            "UPDATE contacts SET phone_key = $2, email_key = $3, name_key = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(&k.phone)
        .bind(&k.email)
        .bind(k.name.as_deref().unwrap_or(" "))
        .execute(&mut *conn)
        .await?;
        set_name_tokens(conn, &ContactId(id.clone()), &k.prefixes).await?;
    }
    Ok(rows.len())
}

pub async fn update_contact(conn: &mut Conn, c: &Contact, now: Ts) -> Result<bool> {
    let k = Keys::of(&c.name, c.email.as_deref(), c.phone.as_deref());
    let r = sqlx::query(
        "UPDATE contacts SET name = $2, photo_url = $3, email = $4, phone = $5, updated_at = $6, \
         phone_key = $7, email_key = $8, name_key = $9 WHERE id = $1",
    )
    .bind(c.id.as_str())
    .bind(&c.name)
    .bind(c.photo_url.as_deref())
    .bind(c.email.as_deref())
    .bind(c.phone.as_deref())
    .bind(now.0)
    .bind(&k.phone)
    .bind(&k.email)
    .bind(&k.name)
    .execute(&mut *conn)
    .await?;
    set_name_tokens(conn, &c.id, &k.prefixes).await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get_contact(conn: &mut Conn, id: &ContactId) -> Result<Option<Contact>> {
    let sql = format!("SELECT {CONTACT_COLS} FROM contacts WHERE id = $1");
    let Some(r) = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut c = rows::contact(&r)?;
    c.identities = identities_of(conn, &c.id).await?;
    Ok(Some(c))
}

pub async fn identities_of(conn: &mut Conn, contact: &ContactId) -> Result<Vec<Identity>> {
    let sql = format!(
        "SELECT {IDENTITY_COLS} FROM contact_identities WHERE contact_id = $1 ORDER BY created_at"
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(contact.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::identity)
        .collect()
}

pub async fn get_identity(conn: &mut Conn, id: &IdentityId) -> Result<Option<Identity>> {
    let sql = format!("SELECT {IDENTITY_COLS} FROM contact_identities WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| rows::identity(&r))
        .transpose()
}

/// Contacts whose name, email or phone contains `q`, newest first.
pub async fn search_contacts(
    conn: &mut Conn,
    q: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<Contact>> {
    let pattern = format!("%{}%", q.to_lowercase());
    let sql = format!(
        "SELECT {CONTACT_COLS} FROM contacts WHERE merged_into IS NULL AND (LOWER(name) LIKE $1 \
         OR LOWER(COALESCE(email, '')) LIKE $1 OR COALESCE(phone, '') LIKE $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::contact)
        .collect()
}

pub async fn identity_by_external(
    conn: &mut Conn,
    channel: &ChannelId,
    external_id: &str,
) -> Result<Option<Identity>> {
    let sql = format!(
        "SELECT {IDENTITY_COLS} FROM contact_identities WHERE channel_id = $1 AND external_id = $2"
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(channel.as_str())
        .bind(external_id)
        .fetch_optional(conn)
        .await?
        .map(|r| rows::identity(&r))
        .transpose()
}

/// Inserts an identity unless one exists for `(channel, external_id)`; returns whether it did.
pub async fn insert_identity(conn: &mut Conn, i: &Identity) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO contact_identities (id, contact_id, channel_id, external_id, display_name, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel_id, external_id) DO NOTHING",
    )
    .bind(i.id.as_str())
    .bind(i.contact_id.as_str())
    .bind(i.channel_id.as_str())
    .bind(&i.external_id)
    .bind(i.display_name.as_deref())
    .bind(i.created_at.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn delete_contact(conn: &mut Conn, id: &ContactId) -> Result<()> {
    sqlx::query("DELETE FROM contact_name_tokens WHERE contact_id = $1")
        .bind(id.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM contacts WHERE id = $1")
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts contacts (many at once for imports and benchmarks), keys and name tokens included.
pub async fn insert_contacts(conn: &mut Conn, cs: &[NewContact<'_>]) -> Result<()> {
    use crate::processes::{BIND_PARAMS, placeholders};
    let keyed: Vec<(&NewContact<'_>, Keys)> = cs
        .iter()
        .map(|c| (c, Keys::of(c.name, c.email, c.phone)))
        .collect();
    for chunk in keyed.chunks(BIND_PARAMS / 10) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO contacts (id, name, photo_url, email, phone, created_at, updated_at, \
             phone_key, email_key, name_key) VALUES {}",
            placeholders(chunk.len(), 10, 0)
        )));
        for (c, k) in chunk {
            q = q
                .bind(c.id.as_str())
                .bind(c.name)
                .bind(c.photo_url)
                .bind(c.email)
                .bind(c.phone)
                .bind(c.now.0)
                .bind(c.now.0)
                .bind(k.phone.clone())
                .bind(k.email.clone())
                .bind(k.name.clone());
        }
        q.execute(&mut *conn).await?;
    }
    let tokens: Vec<(&str, &str)> = keyed
        .iter()
        .flat_map(|(c, k)| k.prefixes.iter().map(|p| (p.as_str(), c.id.as_str())))
        .collect();
    for chunk in tokens.chunks(BIND_PARAMS / 2) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO contact_name_tokens (prefix, contact_id) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(chunk.len(), 2, 0)
        )));
        for (p, id) in chunk {
            q = q.bind(*p).bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

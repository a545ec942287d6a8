//! Contacts and their channel identities.

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
    sqlx::query(
        "INSERT INTO contacts (id, name, photo_url, email, phone, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(c.id.as_str())
    .bind(c.name)
    .bind(c.photo_url)
    .bind(c.email)
    .bind(c.phone)
    .bind(c.now.0)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_contact(conn: &mut Conn, c: &Contact, now: Ts) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE contacts SET name = $2, photo_url = $3, email = $4, phone = $5, updated_at = $6 WHERE id = $1",
    )
    .bind(c.id.as_str())
    .bind(&c.name)
    .bind(c.photo_url.as_deref())
    .bind(c.email.as_deref())
    .bind(c.phone.as_deref())
    .bind(now.0)
    .execute(conn)
    .await?;
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
    sqlx::query("DELETE FROM contacts WHERE id = $1")
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

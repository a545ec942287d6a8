//! Message templates (S12–S13): CRUD, the `//` picker search and rendering with handlebars.
//!
//! Macros are handlebars variables and helpers. Built-in helpers live here; plugins register
//! more through [`Renderer::register_helper`].

use std::sync::{Arc, RwLock};

use ferrydesk_domain::*;
use ferrydesk_store::{contacts, directory};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{Desk, Error, Principal, Result};

/// Largest template text.
pub const MAX_TEMPLATE_BYTES: usize = 20_000;

/// The handlebars registry shared by every render; cheap to clone.
#[derive(Clone)]
pub struct Renderer {
    hb: Arc<RwLock<Handlebars<'static>>>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    pub fn new() -> Renderer {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        // Messages are plain text, not HTML.
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("date", Box::new(DateHelper));
        hb.register_helper("upper", Box::new(CaseHelper(true)));
        hb.register_helper("lower", Box::new(CaseHelper(false)));
        hb.register_helper("default", Box::new(DefaultHelper));
        hb.register_helper("first_name", Box::new(FirstNameHelper));
        Renderer {
            hb: Arc::new(RwLock::new(hb)),
        }
    }

    /// Adds a helper (e.g. a plugin macro). A later registration under the same name wins.
    pub fn register_helper(&self, name: &str, helper: Box<dyn HelperDef + Send + Sync + 'static>) {
        if let Ok(mut hb) = self.hb.write() {
            hb.register_helper(name, helper);
        }
    }

    /// Checks that a template compiles; the error names line and column.
    pub fn check(&self, body: &str) -> Result<()> {
        handlebars::Template::compile(body)
            .map(|_| ())
            .map_err(|e| Error::invalid("body", e.to_string()))
    }

    pub fn render(&self, body: &str, ctx: &serde_json::Value) -> Result<String> {
        let hb = self
            .hb
            .read()
            .map_err(|_| Error::Internal("template registry poisoned".into()))?;
        hb.render_template(body, ctx)
            .map_err(|e| Error::invalid("body", e.to_string()))
    }
}

/// `{{date}}` → today's date; `{{date "[hour]:[minute]"}}` with a `time` format description.
struct DateHelper;
impl HelperDef for DateHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let fmt = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .unwrap_or("[year]-[month]-[day]");
        let offset_min = ctx
            .data()
            .pointer("/now/utc_offset_minutes")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let fd = time::format_description::parse_borrowed::<2>(fmt)
            .map_err(|e| RenderErrorReason::Other(format!("date format: {e}")))?;
        let offset = time::UtcOffset::from_whole_seconds((offset_min * 60) as i32)
            .unwrap_or(time::UtcOffset::UTC);
        let s = time::OffsetDateTime::now_utc()
            .to_offset(offset)
            .format(&fd)
            .map_err(|e| RenderErrorReason::Other(e.to_string()))?;
        out.write(&s)?;
        Ok(())
    }
}

struct CaseHelper(bool);
impl HelperDef for CaseHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let v = h
            .param(0)
            .map(|p| {
                p.value()
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| p.value().to_string())
            })
            .unwrap_or_default();
        out.write(&if self.0 {
            v.to_uppercase()
        } else {
            v.to_lowercase()
        })?;
        Ok(())
    }
}

/// `{{default contact.email "—"}}`: the first non-empty parameter.
struct DefaultHelper;
impl HelperDef for DefaultHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        for p in h.params() {
            match p.value() {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) if s.is_empty() => continue,
                serde_json::Value::String(s) => return Ok(out.write(s)?),
                v => return Ok(out.write(&v.to_string())?),
            }
        }
        Ok(())
    }
}

/// `{{first_name contact.name}}`: the first word of a name.
struct FirstNameHelper;
impl HelperDef for FirstNameHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let v = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .unwrap_or_default();
        out.write(v.split_whitespace().next().unwrap_or_default())?;
        Ok(())
    }
}

/// Template fields as an admin writes them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub name: String,
    pub body: String,
    #[serde(default)]
    pub queue_id: Option<QueueId>,
}

/// A template rendered for a chat.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rendered {
    pub template_id: TemplateId,
    pub text: String,
}

impl Desk {
    fn validate_template(&self, t: &TemplateInput) -> Result<()> {
        if t.name.trim().is_empty() || t.name.chars().count() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        if t.body.trim().is_empty() || t.body.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::invalid(
                "body",
                format!("must be 1 to {MAX_TEMPLATE_BYTES} bytes"),
            ));
        }
        self.templates().check(&t.body)
    }

    pub async fn save_template(
        &self,
        p: &Principal,
        id: Option<&TemplateId>,
        t: TemplateInput,
    ) -> Result<Template> {
        p.require(Role::Admin)?;
        self.validate_template(&t)?;
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        if let Some(q) = &t.queue_id {
            directory::get_queue(&mut tx, q)
                .await?
                .ok_or_else(|| Error::invalid("queue_id", "no such queue"))?;
        }
        let created_at = match id {
            Some(id) => {
                directory::get_template(&mut tx, id)
                    .await?
                    .ok_or(Error::not_found("template"))?
                    .created_at
            }
            None => now,
        };
        let tpl = Template {
            id: id.cloned().unwrap_or_else(TemplateId::generate),
            name: t.name.trim().to_owned(),
            body: t.body,
            queue_id: t.queue_id,
            created_at,
            updated_at: now,
        };
        directory::upsert_template(&mut tx, &tpl).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(tpl)
    }

    pub async fn delete_template(&self, p: &Principal, id: &TemplateId) -> Result<()> {
        p.require(Role::Admin)?;
        let mut tx = self.store().begin().await?;
        if !directory::delete_template(&mut tx, id).await? {
            return Err(Error::not_found("template"));
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    /// Templates matching `q` by name or text. Operators see global templates and those of
    /// their queues (plus the chat's queue when given); admins and supervisors see all.
    pub async fn search_templates(
        &self,
        p: &Principal,
        q: &str,
        chat: Option<&ChatId>,
    ) -> Result<Vec<Template>> {
        let mut conn = self.store().read().await?;
        if p.role().sees_all_chats() && chat.is_none() {
            return Ok(directory::search_templates(&mut conn, q, None, 100).await?);
        }
        let mut queues = directory::queues_of_user(&mut conn, p.id()).await?;
        if let Some(c) = chat {
            let chat = self.readable_chat(&mut conn, p, c).await?;
            queues.push(chat.queue_id);
        }
        Ok(directory::search_templates(&mut conn, q, Some(&queues), 100).await?)
    }

    /// Renders a template with the chat's values (S12).
    pub async fn render_template(
        &self,
        p: &Principal,
        chat: &ChatId,
        id: &TemplateId,
    ) -> Result<Rendered> {
        let mut conn = self.store().read().await?;
        let chat = self.readable_chat(&mut conn, p, chat).await?;
        let tpl = directory::get_template(&mut conn, id)
            .await?
            .ok_or(Error::not_found("template"))?;
        let ctx = self.render_context(&mut conn, p, &chat).await?;
        drop(conn);
        let text = self.templates().render(&tpl.body, &ctx)?;
        Ok(Rendered {
            template_id: tpl.id,
            text,
        })
    }

    /// The values macros can use: `contact`, `operator`, `chat`, `channel`, `queue`, `now`.
    pub async fn render_context(
        &self,
        conn: &mut ferrydesk_store::Conn,
        p: &Principal,
        chat: &Chat,
    ) -> Result<serde_json::Value> {
        let contact = contacts::get_contact(conn, &chat.contact_id)
            .await?
            .ok_or(Error::not_found("contact"))?;
        let channel = directory::get_channel(conn, &chat.channel_id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        let queue = directory::get_queue(conn, &chat.queue_id)
            .await?
            .ok_or(Error::not_found("queue"))?;
        let first = |s: &str| s.split_whitespace().next().unwrap_or_default().to_owned();
        Ok(json!({
            "contact": { "id": contact.id, "name": contact.name, "first_name": first(&contact.name),
                         "email": contact.email, "phone": contact.phone },
            "operator": { "id": p.user.id, "name": p.user.display_name, "first_name": first(&p.user.display_name),
                          "username": p.user.username, "email": p.user.email, "locale": p.user.locale },
            "chat": { "id": chat.id, "started_at": chat.started_at, "status": chat.status },
            "channel": { "id": channel.id, "name": channel.name, "kind": channel.kind },
            "queue": { "id": queue.id, "name": queue.name },
            "now": { "iso": Ts::now(), "utc_offset_minutes": 0 },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> serde_json::Value {
        json!({
            "contact": { "name": "Иван Петров", "email": null },
            "operator": { "name": "Anna Smith", "first_name": "Anna" },
            "channel": { "name": "Website" },
            "now": { "utc_offset_minutes": 0 },
        })
    }

    #[test]
    fn macros_are_substituted_without_html_escaping() {
        let r = Renderer::new();
        let text = r.render("Hello, {{first_name contact.name}}! I am {{operator.first_name}} <{{channel.name}}> & co.", &ctx());
        assert_eq!(
            text.ok().as_deref(),
            Some("Hello, Иван! I am Anna <Website> & co.")
        );
        let text = r.render(
            "{{default contact.email \"no email\"}} {{upper channel.name}}",
            &ctx(),
        );
        assert_eq!(text.ok().as_deref(), Some("no email WEBSITE"));
    }

    #[test]
    fn unknown_variables_and_bad_syntax_are_errors_that_say_where() {
        let r = Renderer::new();
        let e = r
            .render("Hi {{contact.nmae}}", &ctx())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("body: ") && e.contains("contact.nmae"), "{e}");
        let e = r
            .check("line one\nHi {{#if}}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(":2:"), "names line 2: {e}");
    }

    #[test]
    fn date_helper_formats_now() {
        let r = Renderer::new();
        let text = r.render("{{date \"[year]\"}}", &ctx()).unwrap_or_default();
        assert_eq!(text.len(), 4);
        assert!(text.starts_with("20"));
    }

    #[test]
    fn plugins_can_add_helpers() {
        struct Shout;
        impl HelperDef for Shout {
            fn call<'reg: 'rc, 'rc>(
                &self,
                _: &Helper<'rc>,
                _: &'reg Handlebars<'reg>,
                _: &'rc Context,
                _: &mut RenderContext<'reg, 'rc>,
                out: &mut dyn Output,
            ) -> HelperResult {
                out.write("HEY")?;
                Ok(())
            }
        }
        let r = Renderer::new();
        assert!(r.render("{{shout}}", &ctx()).is_err());
        r.register_helper("shout", Box::new(Shout));
        assert_eq!(r.render("{{shout}}!", &ctx()).ok().as_deref(), Some("HEY!"));
    }
}

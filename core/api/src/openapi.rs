//! The OpenAPI 3 document served at `/api/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferrydesk API", description = "Omnichannel chat desk. Errors are `{code, message, field?}`."),
    paths(
        crate::auth::login, crate::auth::logout, crate::auth::me, crate::auth::set_my_status, crate::auth::set_status,
        crate::auth::status_history, crate::auth::list_tokens, crate::auth::create_token, crate::auth::revoke_token,
        crate::chats::inbox, crate::chats::list, crate::chats::export, crate::chats::view, crate::chats::accept,
        crate::chats::reply, crate::chats::transfer, crate::chats::finish, crate::chats::read, crate::chats::get_draft,
        crate::chats::put_draft, crate::chats::routing, crate::chats::render, crate::chats::transfer_targets,
        crate::chats::start_chat, crate::chats::totals,
        crate::directory::list_users, crate::directory::create_user, crate::directory::get_user, crate::directory::update_user,
        crate::directory::list_queues, crate::directory::create_queue, crate::directory::update_queue, crate::directory::delete_queue,
        crate::directory::list_channels, crate::directory::create_channel, crate::directory::get_channel,
        crate::directory::update_channel, crate::directory::rotate_token, crate::directory::get_settings,
        crate::directory::put_settings, crate::directory::search_templates, crate::directory::create_template,
        crate::directory::update_template, crate::directory::delete_template, crate::directory::search_contacts,
        crate::directory::get_contact, crate::directory::update_contact,
        crate::directory::find_duplicates, crate::directory::merge_contacts, crate::directory::duplicate_rules,
        crate::directory::put_duplicate_rules, crate::directory::start_duplicate_scan,
        crate::directory::get_duplicate_scan, crate::directory::list_duplicate_groups,
        crate::directory::dismiss_duplicate_group,
        crate::files::upload, crate::files::download,
        crate::channel::inbound, crate::channel::outbound, crate::channel::ack,
        crate::channel::upload, crate::channel::download,
        crate::ws::upgrade,
        crate::widget::session, crate::widget::transcript, crate::widget::send, crate::widget::upload,
        crate::widget::download, crate::widget::ws,
        crate::plugins::list, crate::plugins::get_one, crate::plugins::install, crate::plugins::enable,
        crate::plugins::disable, crate::plugins::configure, crate::plugins::uninstall, crate::plugins::connector_types,
        crate::processes::chat_actions, crate::plugins::run_action, crate::plugins::create_channel,
        crate::plugins::channel_config, crate::plugins::configure_channel, crate::plugins::webhook, crate::plugins::photo,
        crate::processes::definitions, crate::processes::deploy, crate::processes::definition, crate::processes::start,
        crate::processes::instances, crate::processes::instance, crate::processes::cancel, crate::processes::incidents,
        crate::processes::retry, crate::processes::publish, crate::processes::tasks, crate::processes::task,
        crate::processes::claim, crate::processes::complete, crate::processes::get_menu, crate::processes::put_menu,
        crate::processes::start_from_chat, crate::processes::list_cases, crate::processes::create_case,
        crate::processes::get_case, crate::processes::update_case, crate::processes::start_chat_from_case,
        crate::processes::case_history,
    ),
    components(schemas(ferrydesk_desk::EventBody)),
    modifiers(&Security, &Reliability),
    tags((name = "chats", description = "Operator chats (S1–S21)"), (name = "admin", description = "Administration"), (name = "plugins", description = "Plugins: administration, chat actions, connector channels"), (name = "processes", description = "Processes (BPMN): deploy, instances, incidents, messages, tasks, chat actions"), (name = "cases", description = "Cases"))
)]
pub struct ApiDoc;

struct Security;
impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "channel_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        c.add_security_scheme(
            "api_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// What every operation shares: `503 storage_unavailable` while the database cannot serve it,
/// and on every write the `Idempotency-Key` header with its two answers.
struct Reliability;
impl utoipa::Modify for Reliability {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Ref, Required, ResponseBuilder, content::Content};
        let error = |text: &str| {
            ResponseBuilder::new()
                .description(text)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build()
        };
        for (path, item) in api.paths.paths.iter_mut() {
            let writes = [
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ];
            for op in writes.into_iter().flatten() {
                if path.starts_with("/api/v1/") || path.starts_with("/widget/v1/") {
                    op.parameters.get_or_insert_with(Vec::new).push(
                        ParameterBuilder::new()
                            .name("Idempotency-Key")
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some(
                                "Makes a retry safe: the same key, caller and request within 24 h get the first answer again (`Idempotent-Replayed: true`) and change nothing. 1–255 visible ASCII characters. Ignored without a credential.",
                            ))
                            .schema(Some(
                                ObjectBuilder::new()
                                    .schema_type(utoipa::openapi::schema::Type::String)
                                    .min_length(Some(1))
                                    .max_length(Some(255))
                                    .pattern(Some("^[!-~]+$")),
                            ))
                            .build(),
                    );
                    let r = &mut op.responses.responses;
                    r.entry("409".into()).or_insert_with(|| {
                        error("Conflict; `idempotency_key_in_flight` (with `Retry-After`) while the first request with this Idempotency-Key runs").into()
                    });
                    r.entry("422".into()).or_insert_with(|| {
                        error("Invalid input; `idempotency_key_reused` when the Idempotency-Key was used for a different request").into()
                    });
                }
            }
        }
        for (path, item) in api.paths.paths.iter_mut() {
            let all = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ];
            for op in all.into_iter().flatten() {
                let r = &mut op.responses.responses;
                r.entry("503".into()).or_insert_with(|| {
                    error("`storage_unavailable`: the database cannot be reached, its disk is full or it is read-only; retry after `Retry-After` seconds").into()
                });
                // What every operation under the API can answer: a missing or ended
                // credential, a role that may not, input that fails a check (query, body,
                // header: `field` names it), and for a path with an id, an id that does not
                // exist or that the caller may not see.
                if path.starts_with("/api/v1/") || path.starts_with("/widget/v1/") {
                    r.entry("401".into())
                        .or_insert_with(|| error("`unauthenticated`: no valid credential").into());
                    r.entry("403".into()).or_insert_with(|| {
                        error("`forbidden`: the caller's role may not do this").into()
                    });
                    r.entry("422".into()).or_insert_with(|| {
                        error("`invalid`: a parameter or the body fails a check; `field` names it (a JSON pointer, a query parameter or a header)").into()
                    });
                    if path.contains('{') {
                        r.entry("404".into()).or_insert_with(|| {
                            error("`not_found`: no such resource, or one the caller may not see")
                                .into()
                        });
                    }
                }
            }
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The web app's typed client is generated from `web/openapi.json`; it must match the API.
    #[test]
    fn web_openapi_json_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/openapi.json");
        let now = ApiDoc::openapi().to_pretty_json().expect("serialisable") + "\n";
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(path, &now).expect("writing web/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == now,
            "web/openapi.json is stale: run `BLESS=1 cargo test -p ferrydesk-api web_openapi` then `npm --prefix web run gen`"
        );
    }
}

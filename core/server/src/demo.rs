//! Demo data: a queue, two operators, a supervisor, an admin, templates, a widget channel and
//! an API channel. Idempotent: an existing admin means the demo was seeded before.

use ferrydesk_desk::admin::{ChannelInput, NewUserInput, QueueInput};
use ferrydesk_desk::auth::{Principal, Via};
use ferrydesk_desk::templates::TemplateInput;
use ferrydesk_desk::{Desk, Result};
use ferrydesk_domain::*;

pub const PASSWORD: &str = "ferrydesk-demo";

pub async fn seed(desk: &Desk) -> Result<Vec<(&'static str, &'static str, &'static str)>> {
    let logins = vec![
        ("admin", "admin", PASSWORD),
        ("supervisor", "sofia", PASSWORD),
        ("operator", "anna", PASSWORD),
        ("operator", "boris", PASSWORD),
    ];
    let mut conn = desk.store().read().await?;
    let existing = ferrydesk_store::directory::get_user_for_login(&mut conn, "admin").await?;
    drop(conn);
    if existing.is_some() {
        return Ok(logins);
    }
    let mk = |username: &str, name: &str, role: Role, locale: &str| NewUserInput {
        username: username.into(),
        display_name: name.into(),
        password: PASSWORD.into(),
        role,
        email: Some(format!("{username}@demo.ferrydesk.local")),
        locale: Some(locale.into()),
        chat_limit: None,
    };
    let admin = desk
        .create_user(None, mk("admin", "Alex Admin", Role::Admin, "en"))
        .await?;
    desk.create_user(
        None,
        mk("sofia", "Sofia Supervisor", Role::Supervisor, "en"),
    )
    .await?;
    let anna = desk
        .create_user(None, mk("anna", "Anna Ivanova", Role::Operator, "ru"))
        .await?;
    let boris = desk
        .create_user(None, mk("boris", "Boris Petrov", Role::Operator, "en"))
        .await?;
    let p = Principal {
        user: admin,
        via: Via::Token,
    };
    let queue = desk
        .save_queue(
            &p,
            None,
            QueueInput {
                name: "Support".into(),
                routing_rule: RoutingRule::AllOperators,
                accept_timeout_secs: 300,
                completion_timeout_mins: Some(60),
                members: vec![anna.id.clone(), boris.id.clone()],
            },
        )
        .await?;
    desk.create_channel(
        &p,
        ChannelInput {
            kind: ChannelKind::Widget,
            name: "Website".into(),
            queue_id: queue.id.clone(),
            active: true,
            settings: serde_json::json!({ "title": "Acme support" }),
        },
    )
    .await?;
    desk.create_channel(
        &p,
        ChannelInput {
            kind: ChannelKind::Api,
            name: "Integration API".into(),
            queue_id: queue.id.clone(),
            active: true,
            settings: serde_json::json!({}),
        },
    )
    .await?;
    for (name, body) in [
        (
            "Greeting",
            "Hello, {{contact.first_name}}! My name is {{operator.first_name}}. How can I help you?",
        ),
        (
            "Приветствие",
            "Здравствуйте, {{contact.first_name}}! Меня зовут {{operator.first_name}}. Чем могу помочь?",
        ),
        (
            "Goodbye",
            "Thank you for contacting {{channel.name}}, {{contact.first_name}}. Have a nice day!",
        ),
        (
            "Opening hours",
            "We answer chats on weekdays from 9:00 to 18:00. Today is {{date \"[day].[month].[year]\"}}.",
        ),
    ] {
        desk.save_template(
            &p,
            None,
            TemplateInput {
                name: name.into(),
                body: body.into(),
                queue_id: None,
            },
        )
        .await?;
    }
    Ok(logins)
}

//! Records as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::*;

/// A person who logs in: operator, supervisor or admin.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub locale: String,
    pub status: OperatorStatus,
    /// Per-operator override of the "simultaneous chats" setting.
    pub chat_limit: Option<i64>,
    /// Chats in progress where this user is responsible.
    pub active_chats: i64,
    pub last_chat_at: Option<Ts>,
    pub disabled: bool,
    pub created_at: Ts,
}

/// One change of an operator's status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    pub user_id: UserId,
    pub status: OperatorStatus,
    pub reason: StatusReason,
    /// Who made the change; empty when the system did.
    pub actor_id: Option<UserId>,
    pub at: Ts,
}

/// A queue of chats with its members and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Queue {
    pub id: QueueId,
    pub name: String,
    pub routing_rule: RoutingRule,
    /// Seconds a directed chat waits for acceptance before it goes to the next operator.
    pub accept_timeout_secs: i64,
    /// Minutes after the operator's last unanswered message before the chat is finished
    /// automatically; empty means never (S20).
    pub completion_timeout_mins: Option<i64>,
    pub members: Vec<UserId>,
    pub created_at: Ts,
}

/// A channel through which clients write.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Channel {
    pub id: ChannelId,
    pub kind: ChannelKind,
    pub name: String,
    pub queue_id: QueueId,
    pub active: bool,
    /// Channel-specific settings (widget title and colour, …).
    #[schema(value_type = std::collections::HashMap<String, serde_json::Value>)]
    pub settings: serde_json::Value,
    /// Public key used by the widget's `<script>` tag (widget channels only).
    pub public_key: Option<String>,
    pub created_at: Ts,
}

/// A client.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Contact {
    pub id: ContactId,
    pub name: String,
    pub photo_url: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub identities: Vec<Identity>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// How a contact is known to one channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    pub id: IdentityId,
    pub contact_id: ContactId,
    pub channel_id: ChannelId,
    pub external_id: String,
    pub display_name: Option<String>,
    pub created_at: Ts,
}

/// A chat record (S26).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Chat {
    pub id: ChatId,
    pub status: ChatStatus,
    pub contact_id: ContactId,
    pub contact_name: String,
    pub channel_id: ChannelId,
    pub queue_id: QueueId,
    pub responsible_id: Option<UserId>,
    pub directed_to: Option<UserId>,
    pub parent_id: Option<ChatId>,
    pub started_at: Ts,
    pub accepted_at: Option<Ts>,
    pub first_reply_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    /// Seconds from acceptance to end (or to now while in progress).
    pub duration_secs: Option<i64>,
    pub last_message_at: Option<Ts>,
    pub last_message_direction: Option<Direction>,
    pub preview: Option<String>,
    pub unread_count: i64,
    pub close_reason: Option<CloseReason>,
    pub accept_deadline: Option<Ts>,
    pub autofinish_at: Option<Ts>,
    pub missed_count: i64,
    /// `true` when an operator started the chat (S22).
    pub operator_initiated: bool,
    /// The case this chat belongs to (created from it, or started from the case page).
    pub case_id: Option<CaseId>,
}

/// A file attached to a message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    pub id: FileId,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

/// A message in a chat's transcript.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub chat_id: ChatId,
    pub direction: Direction,
    pub author_id: Option<UserId>,
    pub author_name: Option<String>,
    pub body: String,
    pub external_id: Option<String>,
    pub delivery_status: Option<DeliveryStatus>,
    pub attachments: Vec<Attachment>,
    pub created_at: Ts,
}

/// A message template (S12, S13).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub id: TemplateId,
    pub name: String,
    /// Handlebars text, e.g. `Hello {{contact.name}}, I am {{operator.name}}.`
    pub body: String,
    /// Empty for a global template.
    pub queue_id: Option<QueueId>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// Why a routing step went the way it did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoutingDecision {
    pub id: DecisionId,
    pub chat_id: ChatId,
    pub at: Ts,
    pub action: RoutingAction,
    pub rule: Option<RoutingRule>,
    pub queue_id: Option<QueueId>,
    pub chosen: Option<UserId>,
    pub candidates: Vec<Candidate>,
    pub reason: String,
}

/// One operator considered by a routing decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    pub user_id: UserId,
    pub status: OperatorStatus,
    pub load: i64,
    pub limit: i64,
    pub last_chat_at: Option<Ts>,
    pub eligible: bool,
    /// Why the operator was not eligible, if not.
    pub excluded_because: Option<String>,
}

/// A case: a client's request tracked beyond a chat (often created from one).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Case {
    pub id: CaseId,
    /// Sequential, human-facing number.
    pub number: i64,
    pub subject: String,
    pub description: String,
    pub status: CaseStatus,
    pub priority: CasePriority,
    pub contact_id: Option<ContactId>,
    pub contact_name: Option<String>,
    /// The channel the case came from.
    pub channel_id: Option<ChannelId>,
    /// The chat the case was created from.
    pub chat_id: Option<ChatId>,
    pub responsible_id: Option<UserId>,
    pub responsible_name: Option<String>,
    pub created_by: Option<UserId>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub closed_at: Option<Ts>,
}

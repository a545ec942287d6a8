//! Domain types of Ferrydesk: identifiers, enums and the records the API exposes.
//!
//! This crate has no I/O. Everything here is plain data with serde and OpenAPI schemas, shared by
//! the store, the desk services and the HTTP layer.

mod ids;
pub mod matching;
mod records;
mod time_ms;

pub use ids::*;
pub use records::*;
pub use time_ms::Ts;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(UnknownVariant { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A stored string that does not name a variant of the enum it should.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
}

string_enum!(
    /// Where a case stands.
    CaseStatus { New = "new", InProgress = "in_progress", Resolved = "resolved", Closed = "closed" }
);

string_enum!(
    /// How urgent a case is.
    CasePriority { Low = "low", Normal = "normal", High = "high" }
);

string_enum!(
    /// What a user may do. Operators handle chats; supervisors also see every chat and the
    /// analytics; admins also configure the system.
    Role { Operator = "operator", Supervisor = "supervisor", Admin = "admin" }
);

impl Role {
    /// Supervisors and admins may read any chat (S10 applies to operators).
    pub fn sees_all_chats(self) -> bool {
        matches!(self, Role::Supervisor | Role::Admin)
    }
}

string_enum!(
    /// Readiness of an operator (S2): only Active operators receive new chats.
    OperatorStatus { Active = "active", Inactive = "inactive" }
);

string_enum!(
    /// Why an operator's status changed.
    StatusReason {
        Manual = "manual",
        Logout = "logout",
        SessionExpired = "session_expired",
        MissedAccept = "missed_accept",
        Admin = "admin",
    }
);

string_enum!(
    /// Chat lifecycle: new → in progress → completed.
    ChatStatus { New = "new", InProgress = "in_progress", Completed = "completed" }
);

string_enum!(
    /// How a queue distributes new chats (S8).
    RoutingRule {
        /// Every Active member with free capacity sees the chat; the first to accept wins.
        AllOperators = "all_operators",
        /// The chat is directed to the member with the fewest chats in progress.
        AvailableOperator = "available_operator",
    }
);

string_enum!(
    /// Direction of a message relative to the desk.
    Direction {
        /// From the client.
        Inbound = "inbound",
        /// From an operator to the client.
        Outbound = "outbound",
        /// Written by the system (transfer, finish, …); visible in the transcript.
        System = "system",
    }
);

string_enum!(
    /// Delivery state of an outbound message.
    DeliveryStatus { Queued = "queued", Sent = "sent", Delivered = "delivered", Failed = "failed" }
);

string_enum!(
    /// Why a chat was completed.
    CloseReason {
        /// The operator pressed "Finish chat".
        Operator = "operator",
        /// The queue's completion timeout elapsed after the operator's last message (S20).
        AutoFinish = "auto_finish",
        /// An administrator or supervisor finished it.
        Supervisor = "supervisor",
    }
);

string_enum!(
    /// Kind of channel.
    ChannelKind {
        /// The website widget (`/widget.js`).
        Widget = "widget",
        /// Authenticated HTTP endpoint for integrations.
        Api = "api",
        /// A channel served by a connector plugin.
        Plugin = "plugin",
    }
);

string_enum!(
    /// Status of a transfer target as shown in the transfer dialog (S15).
    Availability { Active = "active", Inactive = "inactive", ChatsExceeded = "chats_exceeded" }
);

string_enum!(
    /// What a routing decision did.
    RoutingAction {
        /// Offered to every eligible member (rule "to all operators").
        Offered = "offered",
        /// Directed to one operator (rule "to an available operator").
        Directed = "directed",
        /// Nobody eligible; the chat waits in the queue.
        Waiting = "waiting",
        /// The directed operator did not accept in time.
        AcceptTimeout = "accept_timeout",
        /// Transferred by an operator.
        Transferred = "transferred",
        /// Accepted by an operator.
        Accepted = "accepted",
    }
);

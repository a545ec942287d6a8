//! Events pushed to operators and widget visitors.
//!
//! Events are computed inside the transaction that causes them, with their audience resolved
//! from the committed state (so a transfer takes effect for open sockets at once), and published
//! after commit. On PostgreSQL they also travel through `NOTIFY` so that sockets connected to
//! other nodes receive them.

use ferrydesk_domain::*;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// Who receives an event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "ids", rename_all = "snake_case")]
pub enum Audience {
    Users(Vec<UserId>),
    Visitor(IdentityId),
    /// Every socket of this node (used for `resync`).
    All,
}

impl Audience {
    pub fn includes_user(&self, u: &UserId) -> bool {
        match self {
            Audience::Users(us) => us.contains(u),
            Audience::Visitor(_) => false,
            Audience::All => true,
        }
    }
    pub fn includes_visitor(&self, i: &IdentityId) -> bool {
        match self {
            Audience::Visitor(v) => v == i,
            Audience::Users(_) => false,
            Audience::All => true,
        }
    }
}

/// What happened. Serialised as `{"type": "...", ...}` on the WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A new chat the receiver may accept (S4, S5).
    ChatOffered { chat: Chat },
    /// A chat the receiver saw is no longer theirs to see (taken by someone else, transferred
    /// away, redirected).
    ChatWithdrawn { chat_id: ChatId, reason: String },
    /// The receiver is now responsible for the chat.
    ChatAssigned { chat: Chat },
    /// A chat the receiver handles changed (preview, unread count, …).
    ChatUpdated { chat: Chat },
    /// The chat was completed.
    ChatFinished {
        chat_id: ChatId,
        reason: CloseReason,
    },
    /// A message in a chat the receiver may read.
    MessageCreated { message: Message },
    /// A message changed (its delivery status).
    MessageUpdated { message: Message },
    /// The receiver's operator status changed.
    StatusChanged {
        user_id: UserId,
        status: OperatorStatus,
        reason: StatusReason,
    },
    /// The user's sessions or API tokens changed (a token revoked, the password changed or
    /// reset, the user disabled, a logout): each of the user's sockets checks its own
    /// credential at once and closes when it has ended. Sockets do not forward it.
    CredentialsChanged { user_id: UserId },
    /// Events may have been missed (the socket lagged, or this node lost its connection to the
    /// other nodes' events for a moment): reload lists and open chats.
    Resync,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub to: Audience,
    pub body: EventBody,
}

impl Event {
    pub fn to_users(users: Vec<UserId>, body: EventBody) -> Event {
        Event {
            to: Audience::Users(users),
            body,
        }
    }
    pub fn to_user(user: &UserId, body: EventBody) -> Event {
        Event {
            to: Audience::Users(vec![user.clone()]),
            body,
        }
    }
}

/// Envelope carried over PostgreSQL `NOTIFY`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub node: String,
    pub event: Event,
}

/// In-process fan-out of events to sockets.
#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<std::sync::Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        let (tx, _) = broadcast::channel(16_384);
        Bus { tx }
    }
    pub fn subscribe(&self) -> broadcast::Receiver<std::sync::Arc<Event>> {
        self.tx.subscribe()
    }
    pub fn publish(&self, e: Event) {
        metrics::counter!("ferrydesk_events_published_total").increment(1);
        let _ = self.tx.send(std::sync::Arc::new(e));
    }
}

pub(crate) const NOTIFY_CHANNEL: &str = "ferrydesk_events";
/// PostgreSQL's NOTIFY payload limit is 8000 bytes.
pub(crate) const NOTIFY_MAX: usize = 7900;

/// Serialises an event for `NOTIFY` in payloads under the size limit: a large audience is split
/// over several notifications, and a long message body is shortened (receivers can fetch the
/// whole message by id).
pub(crate) fn encode_envelopes(node: &str, e: &Event) -> Vec<String> {
    let s = encode_envelope(node, e);
    match &e.to {
        Audience::Users(users) if s.len() > NOTIFY_MAX && users.len() > 1 => {
            let (a, b) = users.split_at(users.len() / 2);
            let part = |us: &[UserId]| Event {
                to: Audience::Users(us.to_vec()),
                body: e.body.clone(),
            };
            let mut out = encode_envelopes(node, &part(a));
            out.extend(encode_envelopes(node, &part(b)));
            out
        }
        _ => vec![s],
    }
}

/// Events of other nodes as a listener receives them: a batch (`{"node", "events"}`, what a
/// transaction sends) or one envelope (what nodes before batching sent).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Notified {
    Batch { node: String, events: Vec<Event> },
    One(Box<Envelope>),
}

impl Notified {
    pub(crate) fn into_parts(self) -> (String, Vec<Event>) {
        match self {
            Notified::Batch { node, events } => (node, events),
            Notified::One(e) => {
                let e = *e;
                (e.node, vec![e.event])
            }
        }
    }
}

/// The `NOTIFY` payloads for one transaction's events: as few as fit under [`NOTIFY_MAX`]
/// (one for a typical transaction), each `{"node", "events": [...]}`, in the events' order.
/// An event too large for a payload of its own is split as [`encode_envelopes`] does.
pub(crate) fn encode_batches(node: &str, events: &[Event]) -> Vec<String> {
    let node_json = serde_json::to_string(node).unwrap_or_default();
    let head = format!("{{\"node\":{node_json},\"events\":[");
    let mut out = Vec::new();
    let mut cur = String::new();
    for e in events {
        for env in encode_envelopes(node, e) {
            // The event part of a single envelope, already cut to fit.
            let Ok(one) = serde_json::from_str::<Envelope>(&env) else {
                continue;
            };
            let ev = serde_json::to_string(&one.event).unwrap_or_default();
            if !cur.is_empty() && head.len() + cur.len() + 1 + ev.len() + 2 > NOTIFY_MAX {
                out.push(format!("{head}{cur}]}}"));
                cur.clear();
            }
            if !cur.is_empty() {
                cur.push(',');
            }
            cur.push_str(&ev);
        }
    }
    if !cur.is_empty() {
        out.push(format!("{head}{cur}]}}"));
    }
    out
}

fn encode_envelope(node: &str, e: &Event) -> String {
    let env = Envelope {
        node: node.to_owned(),
        event: e.clone(),
    };
    let s = serde_json::to_string(&env).unwrap_or_default();
    if s.len() <= NOTIFY_MAX {
        return s;
    }
    let mut env = env;
    if let EventBody::MessageCreated { message } = &mut env.event.body {
        let cut: String = message.body.chars().take(1000).collect();
        message.body = format!("{cut}…");
    }
    serde_json::to_string(&env).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(users: usize) -> Event {
        Event {
            to: Audience::Users((0..users).map(|_| UserId::generate()).collect()),
            body: EventBody::CredentialsChanged {
                user_id: UserId::generate(),
            },
        }
    }

    fn decode(payloads: &[String]) -> Vec<(String, Vec<Event>)> {
        payloads
            .iter()
            .map(|p| {
                serde_json::from_str::<Notified>(p)
                    .map(Notified::into_parts)
                    .expect("decodes")
            })
            .collect()
    }

    fn users(e: &Event) -> Vec<UserId> {
        match &e.to {
            Audience::Users(u) => u.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_transactions_events_go_in_one_notification_in_order() {
        let events: Vec<Event> = (0..20).map(|_| event(1)).collect();
        let payloads = encode_batches("node-a", &events);
        assert_eq!(payloads.len(), 1);
        let got = decode(&payloads);
        assert_eq!(got[0].0, "node-a");
        let sent: Vec<_> = events.iter().map(users).collect();
        let back: Vec<_> = got[0].1.iter().map(users).collect();
        assert_eq!(back, sent);
    }

    #[test]
    fn large_batches_split_under_the_payload_limit_and_lose_nobody() {
        // 400 events, one of them with an audience too large for one payload.
        let mut events: Vec<Event> = (0..400).map(|_| event(1)).collect();
        events.insert(7, event(600));
        let payloads = encode_batches("n", &events);
        assert!(payloads.len() > 1);
        assert!(
            payloads.iter().all(|p| p.len() <= NOTIFY_MAX),
            "a payload is too long"
        );
        let mut sent: Vec<UserId> = events.iter().flat_map(users).collect();
        let mut back: Vec<UserId> = decode(&payloads)
            .into_iter()
            .flat_map(|(_, es)| es)
            .flat_map(|e| users(&e))
            .collect();
        sent.sort_by(|a, b| a.0.cmp(&b.0));
        back.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, sent);
    }

    #[test]
    fn single_envelopes_of_older_nodes_still_decode() {
        let e = event(2);
        let old = encode_envelope("old", &e);
        let got = decode(&[old]);
        assert_eq!(got[0].0, "old");
        assert_eq!(users(&got[0].1[0]), users(&e));
    }
}

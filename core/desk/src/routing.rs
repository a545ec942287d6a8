//! Routing of new chats to operators (S6–S9) and operator status changes, which free or
//! withdraw capacity.
//!
//! All functions run inside the caller's write transaction and push the events they cause.

use ferrydesk_domain::*;
use ferrydesk_store::{Conn, chats as chat_store, directory};

use crate::{Desk, Event, EventBody, Result, limit_of};

/// Why waiting chats are drained for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Became Active, or joined a queue: nothing waiting was offered to them yet.
    BecameActive,
    /// One of their chats ended or moved away.
    SlotFreed,
}

/// Chats drained per queue and call, so one status change cannot hold the writer for long.
const DRAIN_LIMIT: i64 = 100;

impl Desk {
    /// Routes a new, undirected chat according to its queue's rule and records why.
    pub(crate) async fn route(
        &self,
        conn: &mut Conn,
        chat_id: &ChatId,
        events: &mut Vec<Event>,
    ) -> Result<Option<UserId>> {
        let now = Ts::now();
        let Some(chat) = chat_store::get_chat(conn, chat_id, now).await? else {
            return Ok(None);
        };
        if chat.status != ChatStatus::New || chat.directed_to.is_some() {
            return Ok(None);
        }
        let Some(queue) = directory::get_queue(conn, &chat.queue_id).await? else {
            return Ok(None);
        };
        let default_limit = self.default_chat_limit(conn).await?;
        let members = directory::queue_members_with_load(conn, &queue.id).await?;
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|u| candidate(u, default_limit))
            .collect();
        let eligible: Vec<&User> = members
            .iter()
            .zip(&candidates)
            .filter(|(_, c)| c.eligible)
            .map(|(u, _)| u)
            .collect();

        let mut decision = RoutingDecision {
            id: DecisionId::generate(),
            chat_id: chat.id.clone(),
            at: now,
            action: RoutingAction::Waiting,
            rule: Some(queue.routing_rule),
            queue_id: Some(queue.id.clone()),
            chosen: None,
            candidates: candidates.clone(),
            reason: String::new(),
        };
        let mut chosen = None;
        match queue.routing_rule {
            RoutingRule::AllOperators if !eligible.is_empty() => {
                decision.action = RoutingAction::Offered;
                decision.reason = format!(
                    "offered to {} eligible operator(s); the first to accept wins",
                    eligible.len()
                );
                let ids = eligible.iter().map(|u| u.id.clone()).collect();
                events.push(Event::to_users(
                    ids,
                    EventBody::ChatOffered { chat: chat.clone() },
                ));
            }
            RoutingRule::AvailableOperator if !eligible.is_empty() => {
                // Fewest chats in progress; tie → longest since the last chat (never first).
                let best = eligible
                    .iter()
                    .min_by_key(|u| {
                        (
                            u.active_chats,
                            u.last_chat_at.map(|t| t.0).unwrap_or(i64::MIN),
                            u.id.0.clone(),
                        )
                    })
                    .map(|u| (*u).clone());
                if let Some(best) = best {
                    let deadline = now.plus_secs(queue.accept_timeout_secs);
                    if chat_store::direct(conn, &chat.id, &best.id, deadline).await? {
                        decision.action = RoutingAction::Directed;
                        decision.reason = format!(
                            "directed to {} with {} chat(s) in progress, the fewest among {} eligible; accept by {}",
                            best.username,
                            best.active_chats,
                            eligible.len(),
                            deadline.to_rfc3339()
                        );
                        decision.chosen = Some(best.id.clone());
                        let mut chat = chat.clone();
                        chat.directed_to = Some(best.id.clone());
                        chat.accept_deadline = Some(deadline);
                        events.push(Event::to_user(&best.id, EventBody::ChatOffered { chat }));
                        chosen = Some(best.id);
                    }
                }
            }
            _ => {
                decision.reason = if members.is_empty() {
                    "the queue has no members; the chat waits".into()
                } else {
                    "no Active member with free capacity; the chat waits and is offered when one frees up".into()
                };
            }
        }
        metrics::counter!("ferrydesk_routing_decisions_total", "action" => decision.action.as_str()).increment(1);
        chat_store::insert_decision(conn, &decision).await?;
        Ok(chosen)
    }

    /// Offers waiting chats to `user`, whose capacity or status just changed: directs waiting
    /// chats of "available operator" queues (oldest first) and offers those of "all
    /// operators" queues — the latter only when `user` was not offered them already, i.e.
    /// `why` is [`Drain::BecameActive`], or a freed slot that takes the user off their limit.
    /// (Re-offering every waiting chat on every finished chat sent 25,000 offers for 300 chats.)
    pub(crate) async fn drain_for(
        &self,
        conn: &mut Conn,
        user: &UserId,
        why: Drain,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let Some(u) = directory::get_user(conn, user).await? else {
            return Ok(());
        };
        let default_limit = self.default_chat_limit(conn).await?;
        let limit = limit_of(&u, default_limit);
        if u.status != OperatorStatus::Active || u.active_chats >= limit {
            return Ok(());
        }
        // After a freed slot, the user was offered the waiting chats already unless they were
        // at their limit just before it.
        let offer_all = match why {
            Drain::BecameActive => true,
            Drain::SlotFreed => u.active_chats + 1 >= limit,
        };
        for qid in directory::queues_of_user(conn, user).await? {
            let Some(q) = directory::get_queue(conn, &qid).await? else {
                continue;
            };
            let waiting = chat_store::waiting_in_queue(conn, &qid, DRAIN_LIMIT).await?;
            match q.routing_rule {
                RoutingRule::AvailableOperator => {
                    for chat in waiting {
                        // Stop once nobody is eligible any more: the rest keep waiting.
                        if self.route(conn, &chat, events).await?.is_none() {
                            break;
                        }
                    }
                }
                RoutingRule::AllOperators if offer_all => {
                    let now = Ts::now();
                    for chat in waiting {
                        if let Some(c) = chat_store::get_chat(conn, &chat, now).await? {
                            events.push(Event::to_user(user, EventBody::ChatOffered { chat: c }));
                        }
                    }
                }
                RoutingRule::AllOperators => {}
            }
        }
        Ok(())
    }

    /// Takes back the chats directed to `user` (who became Inactive) and routes them again.
    async fn withdraw_directed(
        &self,
        conn: &mut Conn,
        user: &UserId,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let now = Ts::now();
        let directed: Vec<ChatId> = chat_store::new_chats_for(conn, user, now)
            .await?
            .into_iter()
            .filter(|c| c.directed_to.as_ref() == Some(user))
            .map(|c| c.id)
            .collect();
        for chat in directed {
            // Force the deadline so the conditional update applies now.
            if chat_store::expire_direction(conn, &chat, user, Ts(i64::MAX)).await? {
                events.push(Event::to_user(
                    user,
                    EventBody::ChatWithdrawn {
                        chat_id: chat.clone(),
                        reason: "inactive".into(),
                    },
                ));
                self.route(conn, &chat, events).await?;
            }
        }
        Ok(())
    }

    /// Changes an operator's status inside a transaction, with history, withdrawal or drain.
    pub(crate) async fn set_status_in(
        &self,
        conn: &mut Conn,
        user: &UserId,
        status: OperatorStatus,
        reason: StatusReason,
        actor: Option<&UserId>,
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        if !directory::set_status(conn, user, status, reason, actor, Ts::now()).await? {
            return Ok(false);
        }
        events.push(Event::to_user(
            user,
            EventBody::StatusChanged {
                user_id: user.clone(),
                status,
                reason,
            },
        ));
        match status {
            OperatorStatus::Inactive => self.withdraw_directed(conn, user, events).await?,
            OperatorStatus::Active => {
                self.drain_for(conn, user, Drain::BecameActive, events)
                    .await?
            }
        }
        Ok(true)
    }

    /// A directed chat was not accepted in time: the operator becomes Inactive and the chat goes
    /// to the next one (S7).
    pub(crate) async fn fire_accept_timeout(&self, chat: &ChatId, user: &UserId) -> Result<()> {
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let mut events = Vec::new();
        if !chat_store::expire_direction(&mut tx, chat, user, now).await? {
            return Ok(());
        }
        events.push(Event::to_user(
            user,
            EventBody::ChatWithdrawn {
                chat_id: chat.clone(),
                reason: "accept_timeout".into(),
            },
        ));
        chat_store::insert_decision(
            &mut tx,
            &RoutingDecision {
                id: DecisionId::generate(),
                chat_id: chat.clone(),
                at: now,
                action: RoutingAction::AcceptTimeout,
                rule: None,
                queue_id: None,
                chosen: None,
                candidates: Vec::new(),
                reason: format!("{user} did not accept in time and was set Inactive"),
            },
        )
        .await?;
        self.set_status_in(
            &mut tx,
            user,
            OperatorStatus::Inactive,
            StatusReason::MissedAccept,
            None,
            &mut events,
        )
        .await?;
        self.route(&mut tx, chat, &mut events).await?;
        metrics::counter!("ferrydesk_missed_accepts_total").increment(1);
        self.commit(tx, events).await
    }
}

fn candidate(u: &User, default_limit: i64) -> Candidate {
    let limit = limit_of(u, default_limit);
    let excluded_because = if u.disabled {
        Some("disabled".to_owned())
    } else if u.status != OperatorStatus::Active {
        Some("inactive".to_owned())
    } else if u.active_chats >= limit {
        Some(format!("chats exceeded ({}/{limit})", u.active_chats))
    } else {
        None
    };
    Candidate {
        user_id: u.id.clone(),
        status: u.status,
        load: u.active_chats,
        limit,
        last_chat_at: u.last_chat_at,
        eligible: excluded_because.is_none(),
        excluded_because,
    }
}

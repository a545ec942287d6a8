//! Durable timers. A timer is a column of the row it concerns (`chats.accept_deadline`,
//! `chats.autofinish_at`, `sessions.expires_at`), so it survives restarts and any node may fire
//! it: firing is a conditional update that only one node wins.

use ferrydesk_domain::*;
use ferrydesk_store::{chats as chat_store, security};
use tokio::sync::watch;

use crate::bus::{NOTIFY_CHANNEL, Notified};
use crate::{Desk, Result};

const BATCH: i64 = 100;

pub(crate) async fn run(desk: Desk, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(desk.options().timer_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = fire_due(&desk).await {
            tracing::warn!(error = %e, "timer pass failed");
        }
    }
}

/// Fires every timer that is due now.
pub(crate) async fn fire_due(desk: &Desk) -> Result<()> {
    let now = Ts::now();
    let (timeouts, finishes) = {
        let mut conn = desk.store().read().await?;
        (
            chat_store::due_accept_timeouts(&mut conn, now, BATCH).await?,
            chat_store::due_autofinish(&mut conn, now, BATCH).await?,
        )
    };
    for (chat, user) in timeouts {
        desk.fire_accept_timeout(&chat, &user).await?;
    }
    for id in finishes {
        let mut tx = desk.store().begin().await?;
        let Some(chat) = chat_store::get_chat(&mut tx, &id, Ts::now()).await? else {
            continue;
        };
        desk.finish_in(tx, &chat, CloseReason::AutoFinish, None, true)
            .await?;
    }
    let mut tx = desk.store().begin().await?;
    let orphaned = security::expire_sessions(&mut tx, now).await?;
    let mut events = Vec::new();
    for u in orphaned {
        desk.set_status_in(
            &mut tx,
            &u,
            OperatorStatus::Inactive,
            StatusReason::SessionExpired,
            None,
            &mut events,
        )
        .await?;
    }
    desk.commit(tx, events).await
}

/// Relays events committed by other nodes (PostgreSQL `LISTEN`) to this node's sockets.
pub(crate) async fn spawn_listener(desk: Desk, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect(desk.store().url())
        .await
        .map_err(ferrydesk_store::Error::from)?;
    listener
        .listen(NOTIFY_CHANNEL)
        .await
        .map_err(ferrydesk_store::Error::from)?;
    debug_assert_eq!(NOTIFY_CHANNEL, "ferrydesk_events");
    tokio::spawn(async move {
        loop {
            // `try_recv` (unlike `recv`) tells when the connection was lost: `Ok(None)`.
            let n = tokio::select! {
                n = listener.try_recv() => n,
                _ = shutdown.changed() => return,
            };
            let why = match n {
                Ok(Some(n)) => {
                    match serde_json::from_str::<Notified>(n.payload()).map(Notified::into_parts) {
                        Ok((node, events)) if node != desk.node_id() => {
                            for e in events {
                                desk.bus().publish(e);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "undecodable event notification"),
                    }
                    continue;
                }
                Ok(None) => "connection closed".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(reason = %why, "lost the connection to other nodes' events: reconnecting, then every socket here resyncs");
            // Listen again first (a statement on the listener reconnects it and re-issues
            // LISTEN; LISTEN again is a no-op that keeps `pg_stat_activity` showing what the
            // connection is for), then tell the sockets: a client that reloads on `resync` then misses
            // nothing that was sent while the connection was down.
            let mut wait = std::time::Duration::from_millis(100);
            loop {
                let again = tokio::select! {
                    r = sqlx::query("LISTEN ferrydesk_events").execute(&mut listener) => r,
                    _ = shutdown.changed() => return,
                };
                match again {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "reconnecting the event listener");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(std::time::Duration::from_secs(2));
                    }
                }
            }
            tracing::info!("listening to other nodes' events again: sockets resync");
            desk.bus().publish(crate::Event {
                to: crate::Audience::All,
                body: crate::EventBody::Resync,
            });
        }
    });
    Ok(())
}

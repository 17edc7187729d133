//! Following one transfer until it reaches a final state: long polls on the daemon's event
//! stream, `TransferProgress` moves the bar, `TransferUpdated` changes the state. Whenever the
//! stream cannot be trusted to be complete (a reconnect, a `resync`, another daemon instance, a
//! quiet poll) the transfer itself is read again, so the display is right after a daemon restart.

use std::time::Duration;

use firma_ipc::event::{Event, EventBatch};
use firma_ipc::service::{MAX_EVENTS_BATCH, MAX_EVENTS_WAIT_MS};
use firma_ipc::transfer::{TransferDirection, TransferInfo, TransferState};
use firma_ipc::{ErrorCode, IpcError};

use crate::commands::progress::Progress;
use crate::commands::reconnect::Reconnecting;
use crate::commands::transfer;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

/// How long one poll waits when nothing happens; short, so that a quiet transfer is re-read
/// (and its state shown) every few seconds even if an event was lost.
const POLL_WAIT_MS: u32 = 3_000;
const _: () = assert!(
    POLL_WAIT_MS <= MAX_EVENTS_WAIT_MS,
    "the daemon would cut the poll short"
);

/// Where following is in the daemon's event numbering.
struct Cursor {
    after: u64,
    instance: Option<u64>,
    generation: u32,
}

/// Follow transfer `id` from event `after` until it is final; returns its last state.
pub async fn follow(
    rc: &mut Reconnecting,
    out: Output,
    id: &str,
    after: u64,
    progress: &Progress,
) -> Result<TransferInfo, CliError> {
    let mut info = fetch(rc, id).await?;
    let mut shown = None;
    show(out, progress, &info, &mut shown);
    let mut cursor = Cursor {
        after,
        instance: None,
        generation: rc.generation(),
    };
    let deadline = Duration::from_millis(u64::from(POLL_WAIT_MS)) + rc.session().timeout();
    while !info.state.is_final() {
        let from = cursor.after;
        let batch = rc
            .call_within(deadline, |c, ctx| async move {
                c.events(ctx, from, MAX_EVENTS_BATCH, POLL_WAIT_MS).await
            })
            .await?;
        if apply(&mut cursor, &batch, rc.generation(), id, &mut info) {
            info = fetch(rc, id).await?;
        }
        show(out, progress, &info, &mut shown);
    }
    Ok(info)
}

/// Apply one batch to `info`; true when the transfer must be read again from the daemon.
fn apply(cursor: &mut Cursor, batch: &EventBatch, generation: u32, id: &str, info: &mut TransferInfo) -> bool {
    let restarted = cursor.instance.is_some_and(|known| known != batch.instance) || cursor.generation != generation;
    cursor.instance = Some(batch.instance);
    cursor.generation = generation;
    if restarted || batch.resync {
        // Events from before the gap are unknown: continue from the newest and re-read the transfer.
        cursor.after = batch.head;
        return true;
    }
    if let Some(last) = batch.events.last() {
        cursor.after = last.seq;
    }
    let mut reread = batch.events.is_empty();
    for envelope in &batch.events {
        match &envelope.event {
            Event::TransferProgress {
                id: of,
                bytes_done,
                bytes_total,
                ..
            } if of == id => {
                info.bytes_done = *bytes_done;
                info.bytes_total = *bytes_total;
            }
            Event::TransferUpdated { id: of, state, .. } if of == id => {
                info.state = *state;
                // A final state comes with details (error, receipt) that only the transfer has.
                reread |= state.is_final();
            }
            _ => {}
        }
    }
    reread
}

async fn fetch(rc: &mut Reconnecting, id: &str) -> Result<TransferInfo, CliError> {
    let id = id.to_owned();
    rc.call(|c, ctx| {
        let id = id.clone();
        async move { c.transfer(ctx, id).await }
    })
    .await
}

/// Move the bar, and say so when the state, or why it waits, changed.
fn show(out: Output, progress: &Progress, info: &TransferInfo, shown: &mut Option<String>) {
    progress.set(info.bytes_done, info.bytes_total);
    let described = describe_state(info);
    if shown.as_deref() == Some(described.as_str()) {
        return;
    }
    progress.message(format::transfer_state(info.state));
    if !out.is_json() {
        progress.notice(out, &format!("transfer {}: {described}", info.id));
    }
    *shown = Some(described);
}

/// The state as a phrase for a person, e.g. "pending (waiting for the recipient to accept)".
pub fn describe_state(info: &TransferInfo) -> String {
    let state = format::transfer_state(info.state);
    let why = match info.state {
        // While pending the daemon says why it waits: offered and held by the recipient for a
        // decision, or the last attempt's failure. Nothing yet: it has not reached the recipient.
        TransferState::Pending if info.direction == TransferDirection::Outgoing => Some(
            info.error
                .clone()
                .unwrap_or_else(|| "waiting in the outbox until the recipient is reachable".to_owned()),
        ),
        TransferState::Pending => Some(format!(
            "waiting for you to accept it: firmactl accept {id} (or firmactl reject {id})",
            id = info.id
        )),
        TransferState::Sent => Some("all bytes sent, waiting for the recipient's receipt".to_owned()),
        TransferState::Delivered => match &info.receipt {
            Some(r) if r.verified => Some("receipt signed by the recipient and verified".to_owned()),
            Some(_) => Some("receipt received but its signature did NOT verify".to_owned()),
            // Upstream's v1 answers `success` and signs nothing.
            None if info.protocol.ends_with("/1.0.0") => {
                Some("acknowledged by the recipient; legacy v1 gives no signed receipt".to_owned())
            }
            None => None,
        },
        TransferState::Failed | TransferState::Rejected | TransferState::Cancelled => info.error.clone(),
        _ => None,
    };
    match why {
        Some(why) => format!("{state} ({})", transfer::display_text(&why, 200)),
        None => state.to_owned(),
    }
}

/// A transfer that ended badly, as the command's failure.
pub fn failure(info: &TransferInfo) -> Option<CliError> {
    let code = match info.state {
        TransferState::Failed => ErrorCode::Unavailable,
        TransferState::Rejected => ErrorCode::Denied,
        TransferState::Cancelled => ErrorCode::Unavailable,
        _ => return None,
    };
    Some(CliError::Daemon(IpcError::new(
        code,
        format!("transfer {} {}", info.id, describe_state(info)),
    )))
}

#[cfg(test)]
mod tests {
    use firma_ipc::event::EventEnvelope;

    use super::*;
    use crate::commands::transfer::tests::transfer;

    fn batch(events: Vec<Event>, first_seq: u64, head: u64, resync: bool, instance: u64) -> EventBatch {
        EventBatch {
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, event)| EventEnvelope {
                    seq: first_seq + i as u64,
                    at_ms: 1,
                    event,
                })
                .collect(),
            head,
            resync,
            instance,
        }
    }

    fn progress(id: &str, done: u64) -> Event {
        Event::TransferProgress {
            id: id.into(),
            bytes_done: done,
            bytes_total: 2048,
            rate_bps: 100,
        }
    }

    fn updated(id: &str, state: TransferState) -> Event {
        Event::TransferUpdated {
            id: id.into(),
            direction: TransferDirection::Outgoing,
            state,
            peer_id: "P".into(),
        }
    }

    #[test]
    fn events_of_this_transfer_move_it_and_others_are_ignored() {
        let mut info = transfer("T", TransferState::Pending);
        let mut c = Cursor {
            after: 10,
            instance: None,
            generation: 0,
        };
        let b = batch(
            vec![
                updated("T", TransferState::Sending),
                progress("other", 9),
                progress("T", 1500),
            ],
            11,
            13,
            false,
            7,
        );
        assert!(!apply(&mut c, &b, 0, "T", &mut info), "nothing to re-read");
        assert_eq!(
            (info.state, info.bytes_done, c.after),
            (TransferState::Sending, 1500, 13)
        );
        // A final state is re-read for its error or receipt.
        let b = batch(vec![updated("T", TransferState::Delivered)], 14, 14, false, 7);
        assert!(apply(&mut c, &b, 0, "T", &mut info));
        assert_eq!(info.state, TransferState::Delivered);
    }

    #[test]
    fn gaps_in_the_stream_lead_to_a_fresh_read() {
        let mut info = transfer("T", TransferState::Sending);
        let mut c = Cursor {
            after: 10,
            instance: Some(7),
            generation: 0,
        };
        // A quiet poll: the state is read again, in case an event was missed.
        assert!(apply(&mut c, &batch(vec![], 0, 10, false, 7), 0, "T", &mut info));
        // The daemon restarted (another instance): continue from its head.
        assert!(apply(
            &mut c,
            &batch(vec![progress("T", 5)], 1, 3, false, 8),
            0,
            "T",
            &mut info
        ));
        assert_eq!(c.after, 3);
        assert_eq!(info.bytes_done, 1024, "events across the gap are not trusted");
        // A reconnect (new generation) and a resync flag do the same.
        assert!(apply(&mut c, &batch(vec![], 0, 3, false, 8), 1, "T", &mut info));
        assert!(apply(&mut c, &batch(vec![], 0, 9, true, 8), 1, "T", &mut info));
        assert_eq!(c.after, 9);
    }

    #[test]
    fn pending_and_delivered_say_what_they_wait_for() {
        let mut out = transfer("T", TransferState::Pending);
        out.direction = TransferDirection::Outgoing;
        assert_eq!(
            describe_state(&out),
            "pending (waiting in the outbox until the recipient is reachable)"
        );
        out.error = Some("offered; waiting for the recipient to accept it".into());
        assert_eq!(
            describe_state(&out),
            "pending (offered; waiting for the recipient to accept it)"
        );
        let held = transfer("T", TransferState::Pending);
        assert!(
            describe_state(&held).contains("firmactl accept T"),
            "{}",
            describe_state(&held)
        );
        let mut v1 = transfer("T", TransferState::Delivered);
        v1.direction = TransferDirection::Outgoing;
        v1.protocol = "/firma-sign/transfer/1.0.0".into();
        let text = describe_state(&v1);
        assert!(
            text.starts_with("delivered (") && !text.contains("(delivered)"),
            "{text}"
        );
        v1.protocol = "/firma-sign/transfer/2.0.0".into();
        assert_eq!(describe_state(&v1), "delivered");
    }

    #[test]
    fn failures_become_coded_errors_naming_the_transfer() {
        let mut info = transfer("T", TransferState::Failed);
        info.error = Some("rejected by the recipient: wrong contract".into());
        let e = failure(&info).unwrap();
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(
            e.to_string()
                .contains("transfer T failed (rejected by the recipient: wrong contract)"),
            "{e}"
        );
        info.state = TransferState::Delivered;
        assert!(failure(&info).is_none());
    }
}

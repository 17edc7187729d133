//! `firmactl watch`: follow the daemon's events with long polls, across daemon restarts.
//!
//! One loop owns the connection. A poll that fails because the connection died (or the daemon
//! stopped answering) leads to a reconnect with backoff; the first batch after it tells, through
//! `resync` or a changed `instance`, whether the daemon restarted, and [`Cursor`] turns that into
//! one resync notice and a jump to the daemon's new head. Ctrl-C ends the loop with exit 0.

use std::time::{Duration, Instant};

use clap::Args;
use firma_ipc::ErrorCode;
use firma_ipc::client::Backoff;
use firma_ipc::event::{Event, EventBatch, EventEnvelope};
use firma_ipc::service::{MAX_EVENTS_BATCH, MAX_EVENTS_WAIT_MS};
use firma_ipc::transfer::TransferDirection;
use serde::Serialize;

use crate::connect::Session;
use crate::exit::CliError;
use crate::format;
use crate::output::Output;

/// How long the daemon holds a poll open when nothing happens. Short enough that a stuck daemon
/// is noticed within a minute, long enough that an idle watch costs almost nothing.
const POLL_WAIT_MS: u32 = 25_000;
const _: () = assert!(
    POLL_WAIT_MS <= MAX_EVENTS_WAIT_MS,
    "the daemon would cut the poll short"
);
/// An empty answer sooner than this means the daemon did not hold the poll; waiting out the rest
/// keeps a misbehaving daemon from turning the watch into a busy loop.
const MIN_EMPTY_POLL: Duration = Duration::from_millis(250);
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(200);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Start after this event number; 0 replays everything the daemon still keeps.
    /// Without it, watching starts with the next event.
    #[arg(long, value_name = "N")]
    pub since: Option<u64>,
    /// Only events about this peer.
    #[arg(long, value_name = "ID", value_parser = crate::commands::peer_id_arg)]
    pub peer: Option<String>,
}

pub async fn run(session: Session, out: Output, args: WatchArgs) -> Result<(), CliError> {
    let interrupted = async {
        // Without a Ctrl-C handler the default SIGINT action still ends the process.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupted => Ok(()),
        result = follow(session, out, args) => result,
    }
}

async fn follow(mut session: Session, out: Output, args: WatchArgs) -> Result<(), CliError> {
    let start = match args.since {
        Some(seq) => seq,
        None => {
            session
                .call(|c, ctx| async move { c.status(ctx).await })
                .await?
                .event_head
        }
    };
    let mut cursor = Cursor::new(start);
    let mut backoff = Backoff::new(RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY);
    // The daemon holds the poll up to POLL_WAIT_MS; the deadline adds the normal call timeout on top.
    let deadline = Duration::from_millis(u64::from(POLL_WAIT_MS)) + session.timeout();
    out.notice(&format!(
        "watching the daemon at {} after event #{start} (Ctrl-C to stop)",
        session.path().display()
    ));
    loop {
        let after = cursor.after;
        let asked = Instant::now();
        let polled = session
            .call_within(deadline, |c, ctx| async move {
                c.events(ctx, after, MAX_EVENTS_BATCH, POLL_WAIT_MS).await
            })
            .await;
        match polled {
            Ok(batch) => {
                backoff.reset();
                if batch.events.is_empty() && !batch.resync {
                    tokio::time::sleep(MIN_EMPTY_POLL.saturating_sub(asked.elapsed())).await;
                }
                let step = cursor.apply(&batch);
                if let Some(resync) = &step.resync {
                    print_resync(out, resync)?;
                }
                for envelope in step.events {
                    if args.peer.as_deref().is_none_or(|p| envelope.event.peer_id() == Some(p)) {
                        print_event(out, envelope)?;
                    }
                }
            }
            // The daemon is up but cannot serve events right now (e.g. it is shutting down): wait, ask again.
            Err(CliError::Daemon(e)) if e.code == ErrorCode::Unavailable => {
                out.notice(&format!("the daemon is unavailable ({e}), retrying…"));
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(CliError::ConnectionLost { .. } | CliError::Timeout { .. }) => {
                out.notice("daemon went away, reconnecting…");
                let path = session.path().to_owned();
                let mut last_reason = String::new();
                session = Session::open_with_retry(&path, session.timeout(), &mut backoff, |e| {
                    // Say why we are still waiting, but only when the reason changes.
                    let reason = e.to_string().lines().next().unwrap_or_default().to_owned();
                    if reason != last_reason {
                        out.notice(&format!("  still waiting: {reason}"));
                        last_reason = reason;
                    }
                })
                .await?;
                out.notice(&format!("reconnected to the daemon at {}", path.display()));
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResyncReason {
    /// A new daemon process: its numbering began again, events in between were not seen.
    DaemonRestarted,
    /// The daemon no longer keeps the events after the cursor (this client was too slow or away too long).
    FellBehind,
}

/// The `resync` marker of the JSON stream: `{"resync":true,"reason":..,"after":..,"head":..,"instance":..}`.
/// Events carry `seq`, markers carry `resync`, so a reader tells them apart by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resync {
    pub resync: bool,
    pub reason: ResyncReason,
    /// The last event number this client had seen.
    pub after: u64,
    /// Where following continues.
    pub head: u64,
    pub instance: u64,
}

/// What to print for one batch.
#[derive(Debug)]
pub struct Step<'a> {
    pub resync: Option<Resync>,
    pub events: &'a [EventEnvelope],
}

/// Where the watch is in the daemon's event numbering, and which daemon process numbered it.
#[derive(Debug)]
pub struct Cursor {
    after: u64,
    instance: Option<u64>,
}

impl Cursor {
    pub fn new(after: u64) -> Self {
        Self { after, instance: None }
    }

    /// Advance past `batch`, detecting a restart either from the daemon's `resync` flag or from a
    /// changed `instance` (a restarted daemon that has already numbered past our cursor cannot
    /// know we missed anything, so the flag alone would not catch it).
    pub fn apply<'a>(&mut self, batch: &'a EventBatch) -> Step<'a> {
        let restarted = self.instance.is_some_and(|known| known != batch.instance);
        self.instance = Some(batch.instance);
        if !restarted && !batch.resync {
            if let Some(last) = batch.events.last() {
                self.after = last.seq;
            }
            return Step {
                resync: None,
                events: &batch.events,
            };
        }
        let reason = if restarted || self.after > batch.head {
            ResyncReason::DaemonRestarted
        } else {
            ResyncReason::FellBehind
        };
        // Events the daemon sends with its resync flag are what it still has: show them. Events of
        // a restarted daemon that did not flag resync answer a cursor from the old numbering: drop them.
        let events: &[EventEnvelope] = if batch.resync { &batch.events } else { &[] };
        let resync = Resync {
            resync: true,
            reason,
            after: self.after,
            head: batch.head,
            instance: batch.instance,
        };
        self.after = events.last().map_or(batch.head, |e| e.seq);
        Step {
            resync: Some(resync),
            events,
        }
    }
}

fn print_event(out: Output, envelope: &EventEnvelope) -> Result<(), CliError> {
    if out.is_json() {
        return out.json_line(envelope);
    }
    out.line(&format!(
        "{}  #{}  {}",
        format::timestamp_millis(envelope.at_ms),
        envelope.seq,
        describe(&envelope.event)
    ))
}

fn print_resync(out: Output, r: &Resync) -> Result<(), CliError> {
    if out.is_json() {
        return out.json_line(r);
    }
    out.line(&describe_resync(r))
}

fn describe_resync(r: &Resync) -> String {
    let what = match r.reason {
        ResyncReason::DaemonRestarted => {
            format!(
                "the daemon restarted and numbers its events anew (last seen here: #{} of its previous run)",
                r.after
            )
        }
        ResyncReason::FellBehind => format!("the daemon no longer keeps the events after #{}", r.after),
    };
    format!(
        "-- resync: {what}; events were missed. Continuing after #{}; fresh state: firmactl status, firmactl peers",
        r.head
    )
}

/// One event as a sentence. Peer ids stay whole: a watch is read later and copied from.
pub fn describe(event: &Event) -> String {
    match event {
        Event::PeerDiscovered { peer_id, addrs, source } => {
            let addrs = if addrs.is_empty() {
                String::new()
            } else {
                format!(" at {}", addrs.join(", "))
            };
            format!("discovered {peer_id} via {}{addrs}", format::addr_source(*source))
        }
        Event::PeerConnected {
            peer_id,
            addr,
            direction,
        } => {
            format!("connected {peer_id} ({}, {addr})", format::direction(*direction))
        }
        Event::PeerDisconnected { peer_id, reason } => match reason {
            Some(reason) => format!("disconnected {peer_id}: {reason}"),
            None => format!("disconnected {peer_id}"),
        },
        Event::PeerIdentified {
            peer_id,
            agent,
            protocols,
        } => {
            format!("identified {peer_id} as {agent} ({} protocols)", protocols.len())
        }
        Event::PeerRtt { peer_id, rtt_us } => format!("rtt of {peer_id} is {}", format::rtt(Some(*rtt_us))),
        Event::PeerUpdated {
            peer_id,
            pinned,
            banned,
        } => {
            let pin = if *pinned { "pinned" } else { "not pinned" };
            let ban = if *banned { "banned" } else { "not banned" };
            format!("marks of {peer_id} changed: {pin}, {ban}")
        }
        Event::ListenAddrAdded { addr } => format!("listening on {addr}"),
        Event::ListenAddrRemoved { addr } => format!("no longer listening on {addr}"),
        Event::DiscoveryChanged { state } => format!("discovery changed: {}", format::discovery(state)),
        Event::TransferUpdated {
            id,
            direction,
            state,
            peer_id,
        } => format!(
            "{} transfer {id} {} {peer_id} is {}",
            format::transfer_direction(*direction),
            match direction {
                TransferDirection::Outgoing => "to",
                TransferDirection::Incoming => "from",
            },
            format::transfer_state(*state)
        ),
        Event::TransferProgress {
            id,
            bytes_done,
            bytes_total,
            rate_bps,
        } => format!(
            "transfer {id}: {} of {} ({}), {}/s",
            format::bytes(*bytes_done),
            format::bytes(*bytes_total),
            format::percent(*bytes_done, *bytes_total),
            format::bytes(*rate_bps)
        ),
    }
}

#[cfg(test)]
mod tests {
    use firma_ipc::transfer::TransferState;
    use firma_ipc::types::{Direction, DiscoveryState};

    use super::*;

    fn envelope(seq: u64) -> EventEnvelope {
        EventEnvelope {
            seq,
            at_ms: 1_000,
            event: Event::ListenAddrAdded {
                addr: format!("/ip4/127.0.0.1/tcp/{seq}"),
            },
        }
    }

    fn batch(seqs: &[u64], head: u64, resync: bool, instance: u64) -> EventBatch {
        EventBatch {
            events: seqs.iter().map(|&s| envelope(s)).collect(),
            head,
            resync,
            instance,
        }
    }

    #[test]
    fn advances_past_each_batch() {
        let mut c = Cursor::new(4);
        let b = batch(&[5, 6], 6, false, 7);
        let step = c.apply(&b);
        assert!(step.resync.is_none());
        assert_eq!(step.events.len(), 2);
        assert_eq!(c.after, 6);
        // An empty batch (the poll timed out) keeps the cursor.
        let empty = batch(&[], 6, false, 7);
        let step = c.apply(&empty);
        assert!(step.events.is_empty() && step.resync.is_none());
        assert_eq!(c.after, 6);
    }

    #[test]
    fn flagged_restart_jumps_to_head() {
        let mut c = Cursor::new(100);
        c.apply(&batch(&[], 100, false, 1));
        let b = batch(&[], 3, true, 2);
        let step = c.apply(&b);
        let r = step.resync.expect("a resync");
        assert_eq!((r.reason, r.after, r.head), (ResyncReason::DaemonRestarted, 100, 3));
        assert_eq!(c.after, 3);
    }

    #[test]
    fn restart_seen_only_by_instance_drops_the_batch() {
        let mut c = Cursor::new(2);
        c.apply(&batch(&[], 2, false, 1));
        // The new daemon already numbered past 2, so it cannot tell; the instance can.
        let b = batch(&[3, 4], 9, false, 2);
        let step = c.apply(&b);
        assert_eq!(step.resync.map(|r| r.reason), Some(ResyncReason::DaemonRestarted));
        assert!(step.events.is_empty());
        assert_eq!(c.after, 9);
    }

    #[test]
    fn falling_behind_keeps_what_the_daemon_still_has() {
        let mut c = Cursor::new(10);
        let b = batch(&[500, 501], 900, true, 1);
        let step = c.apply(&b);
        assert_eq!(step.resync.map(|r| r.reason), Some(ResyncReason::FellBehind));
        assert_eq!(step.events.len(), 2);
        assert_eq!(c.after, 501);
    }

    #[test]
    fn resync_marker_json_shape() {
        let r = Resync {
            resync: true,
            reason: ResyncReason::DaemonRestarted,
            after: 5,
            head: 1,
            instance: 9,
        };
        let v = serde_json::to_value(&r).expect("serializable");
        assert_eq!(
            v,
            serde_json::json!({"resync": true, "reason": "daemon_restarted", "after": 5, "head": 1, "instance": 9})
        );
        assert!(describe_resync(&r).contains("last seen here: #5 of its previous run"));
        assert!(describe_resync(&r).contains("Continuing after #1;"));
    }

    #[test]
    fn events_read_as_sentences() {
        let connected = Event::PeerConnected {
            peer_id: "P".into(),
            addr: "/ip4/127.0.0.1/tcp/1".into(),
            direction: Direction::Inbound,
        };
        assert_eq!(describe(&connected), "connected P (inbound, /ip4/127.0.0.1/tcp/1)");
        assert_eq!(
            describe(&Event::PeerRtt {
                peer_id: "P".into(),
                rtt_us: 2_000
            }),
            "rtt of P is 2.0 ms"
        );
        let d = Event::DiscoveryChanged {
            state: DiscoveryState {
                mdns_enabled: false,
                dht_enabled: true,
            },
        };
        assert_eq!(describe(&d), "discovery changed: mdns off, dht on");
        assert_eq!(
            describe(&Event::PeerDisconnected {
                peer_id: "P".into(),
                reason: None
            }),
            "disconnected P"
        );
        let t = Event::TransferUpdated {
            id: "T".into(),
            direction: TransferDirection::Incoming,
            state: TransferState::Receiving,
            peer_id: "P".into(),
        };
        assert_eq!(describe(&t), "incoming transfer T from P is receiving");
        let p = Event::TransferProgress {
            id: "T".into(),
            bytes_done: 512 * 1024,
            bytes_total: 2 * 1024 * 1024,
            rate_bps: 1024,
        };
        assert_eq!(describe(&p), "transfer T: 512.0 KiB of 2.0 MiB (25%), 1.0 KiB/s");
    }
}

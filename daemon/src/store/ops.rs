//! `StoreOp`, the only way anything is written, and how each op changes the tables inside the
//! one write transaction of an `apply`. Peer data is hostile: everything a peer supplies is
//! capped here (lengths, counts) before it reaches the disk.

use firma_ipc::types;
use heed::RwTxn;

use super::codec;
use super::error::{Fail, StoreError};
use super::records::{AddrRecord, AddrSource, AuditEntry, Direction, HistoryEntry, PeerRecord};
use super::tables::{self, Db, Tables};

/// Addresses kept per peer; beyond this the oldest never-successful one is dropped.
pub const MAX_ADDRS: usize = 16;
/// Protocols kept per peer (the rest of an identify list is ignored).
pub const MAX_PROTOCOLS: usize = 64;
/// Bytes of one agent string, protocol name, address or close reason. Longer agents and reasons
/// are truncated; longer protocols and addresses are dropped (a cut one would be wrong).
pub const MAX_TEXT: usize = 256;
/// Bytes of the detail of one audit record.
pub const MAX_AUDIT_DETAIL: usize = 1024;
/// Bytes of a peer id; base58 libp2p ids are about 52, and LMDB keys may not exceed 511.
pub const MAX_PEER_ID: usize = 128;
pub const MAX_CONFIG_KEY: usize = 256;
pub const MAX_CONFIG_VALUE: usize = 1 << 20;
/// Peers remembered. Discovery (mDNS, DHT, identify) stops adding new peers past this so that a
/// flood of fake ids cannot fill the disk; connections, pins and bans still create records.
pub const MAX_PEERS: u64 = 20_000;

/// Close reason written by `DaemonStopping`.
pub const REASON_DAEMON_STOPPED: &str = "daemon stopped";
/// Close reason written at open for records a crash left open.
pub const REASON_CRASHED: &str = "daemon stopped unexpectedly";

/// One change to the store. Plain data: built by the network and control tasks, applied in
/// batches by `Store::apply` (one durable commit per batch).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Upsert; addresses are merged (at most `MAX_ADDRS`, oldest never-successful dropped first).
    PeerSeen {
        peer_id: String,
        addrs: Vec<(String, types::AddrSource)>,
        at_ms: u64,
    },
    /// connect_count += 1, was_connected = true, the address' last success and last_seen set,
    /// and a history record opened. The address of an inbound connection (an ephemeral port)
    /// is not added to the peer's dialable addresses, only updated if already known.
    PeerConnected {
        peer_id: String,
        addr: String,
        direction: types::Direction,
        at_ms: u64,
    },
    /// was_connected = false, and every open history record of the peer closed. Send it when the
    /// last connection to the peer closes, not on daemon shutdown (see `DaemonStopping`).
    PeerDisconnected {
        peer_id: String,
        reason: Option<String>,
        at_ms: u64,
    },
    PeerIdentified {
        peer_id: String,
        agent: String,
        protocols: Vec<String>,
        listen_addrs: Vec<String>,
        at_ms: u64,
    },
    /// Ignored for a peer the store does not know.
    PeerRtt {
        peer_id: String,
        rtt_us: u64,
    },
    /// Creates the peer record if unknown (when pinning).
    SetPinned {
        peer_id: String,
        pinned: bool,
    },
    /// Creates the peer record if unknown (when banning), so bans persist for peers never seen.
    SetBanned {
        peer_id: String,
        banned: bool,
    },
    Audit(types::AuditRecord),
    ConfigCachePut {
        key: String,
        value: Vec<u8>,
    },
    /// A clean stop: closes every open history record with reason "daemon stopped" but keeps
    /// `was_connected`, so that the next start redials those peers.
    DaemonStopping {
        at_ms: u64,
    },
}

impl StoreOp {
    pub fn name(&self) -> &'static str {
        match self {
            StoreOp::PeerSeen { .. } => "PeerSeen",
            StoreOp::PeerConnected { .. } => "PeerConnected",
            StoreOp::PeerDisconnected { .. } => "PeerDisconnected",
            StoreOp::PeerIdentified { .. } => "PeerIdentified",
            StoreOp::PeerRtt { .. } => "PeerRtt",
            StoreOp::SetPinned { .. } => "SetPinned",
            StoreOp::SetBanned { .. } => "SetBanned",
            StoreOp::Audit(_) => "Audit",
            StoreOp::ConfigCachePut { .. } => "ConfigCachePut",
            StoreOp::DaemonStopping { .. } => "DaemonStopping",
        }
    }

    /// Refuses what cannot be stored at all (bad keys). Over-long peer-supplied text is not an
    /// error: it is capped while applying.
    pub fn validate(&self) -> Result<(), StoreError> {
        let op = self.name();
        match self {
            StoreOp::PeerSeen { peer_id, .. }
            | StoreOp::PeerConnected { peer_id, .. }
            | StoreOp::PeerDisconnected { peer_id, .. }
            | StoreOp::PeerIdentified { peer_id, .. }
            | StoreOp::PeerRtt { peer_id, .. }
            | StoreOp::SetPinned { peer_id, .. }
            | StoreOp::SetBanned { peer_id, .. } => {
                if peer_id.is_empty() || peer_id.len() > MAX_PEER_ID {
                    return Err(StoreError::Invalid {
                        op,
                        detail: format!("peer id must be 1 to {MAX_PEER_ID} bytes, got {}", peer_id.len()),
                    });
                }
            }
            StoreOp::ConfigCachePut { key, value } => {
                if key.is_empty() || key.len() > MAX_CONFIG_KEY {
                    return Err(StoreError::Invalid {
                        op,
                        detail: format!(
                            "config cache key must be 1 to {MAX_CONFIG_KEY} bytes, got {}",
                            key.len()
                        ),
                    });
                }
                if value.len() > MAX_CONFIG_VALUE {
                    return Err(StoreError::Invalid {
                        op,
                        detail: format!(
                            "config cache value for `{key}` is {} bytes, the limit is {MAX_CONFIG_VALUE}",
                            value.len()
                        ),
                    });
                }
            }
            StoreOp::Audit(_) | StoreOp::DaemonStopping { .. } => {}
        }
        Ok(())
    }
}

/// State of one `apply` transaction.
pub(super) struct Batch<'t> {
    pub tables: &'t Tables,
    pub next_history_id: u64,
    pub next_audit_id: u64,
    /// Wall clock, for records created by ops that carry no time (pin, ban).
    pub now_ms: u64,
}

impl Batch<'_> {
    pub fn begin<'t>(txn: &RwTxn, tables: &'t Tables, now_ms: u64) -> Result<Batch<'t>, Fail> {
        Ok(Batch {
            tables,
            next_history_id: next_id(
                txn,
                tables,
                tables::META_NEXT_HISTORY_ID,
                tables::HISTORY,
                tables.history,
            )?,
            next_audit_id: next_id(txn, tables, tables::META_NEXT_AUDIT_ID, tables::AUDIT, tables.audit)?,
            now_ms,
        })
    }

    /// Writes the id counters and prunes history and audit down to their retention.
    pub fn finish(self, txn: &mut RwTxn, history_retention: u64, audit_retention: u64) -> Result<(), Fail> {
        let t = self.tables;
        t.put_meta_u64(txn, tables::META_NEXT_HISTORY_ID, self.next_history_id)?;
        t.put_meta_u64(txn, tables::META_NEXT_AUDIT_ID, self.next_audit_id)?;
        for id in prune(txn, t.history, history_retention)? {
            t.history_open.delete(txn, &id.to_be_bytes())?;
        }
        prune(txn, t.audit, audit_retention)?;
        Ok(())
    }

    pub fn apply(&mut self, txn: &mut RwTxn, op: &StoreOp) -> Result<(), Fail> {
        let t = self.tables;
        match op {
            StoreOp::PeerSeen { peer_id, addrs, at_ms } => {
                let Some(mut rec) = self.peer_or_new_capped(txn, peer_id, *at_ms)? else {
                    return Ok(());
                };
                for (addr, source) in addrs.iter().take(MAX_ADDRS) {
                    merge_addr(&mut rec, addr, (*source).into(), *at_ms, false);
                }
                rec.last_seen_ms = rec.last_seen_ms.max(*at_ms);
                t.put_peer(txn, &rec)
            }
            StoreOp::PeerConnected {
                peer_id,
                addr,
                direction,
                at_ms,
            } => {
                let mut rec = t
                    .get_peer(txn, peer_id)?
                    .unwrap_or_else(|| PeerRecord::new(peer_id, *at_ms));
                rec.connect_count = rec.connect_count.saturating_add(1);
                rec.was_connected = true;
                rec.last_seen_ms = rec.last_seen_ms.max(*at_ms);
                match direction {
                    types::Direction::Outbound => merge_addr(&mut rec, addr, AddrSource::Connection, *at_ms, true),
                    types::Direction::Inbound => {
                        if let Some(a) = rec.addrs.iter_mut().find(|a| a.addr == *addr) {
                            a.last_success_ms = Some(*at_ms);
                            a.last_seen_ms = a.last_seen_ms.max(*at_ms);
                        }
                    }
                }
                rec.refresh_trust();
                t.put_peer(txn, &rec)?;
                let id = self.next_history_id;
                self.next_history_id += 1;
                let entry = HistoryEntry {
                    peer_id: peer_id.clone(),
                    addr: truncate_text(addr, MAX_TEXT),
                    direction: Direction::from(*direction),
                    opened_ms: *at_ms,
                    closed_ms: None,
                    close_reason: None,
                };
                t.put_history(txn, id, &entry)?;
                t.history_open.put(txn, &id.to_be_bytes(), &codec::encode(peer_id)?)?;
                Ok(())
            }
            StoreOp::PeerDisconnected { peer_id, reason, at_ms } => {
                if let Some(mut rec) = t.get_peer(txn, peer_id)? {
                    rec.was_connected = false;
                    rec.last_seen_ms = rec.last_seen_ms.max(*at_ms);
                    t.put_peer(txn, &rec)?;
                }
                let reason = reason.as_deref().map(|r| truncate_text(r, MAX_TEXT));
                close_open_history(txn, t, Some(peer_id), *at_ms, reason.as_deref())
            }
            StoreOp::PeerIdentified {
                peer_id,
                agent,
                protocols,
                listen_addrs,
                at_ms,
            } => {
                let Some(mut rec) = self.peer_or_new_capped(txn, peer_id, *at_ms)? else {
                    return Ok(());
                };
                rec.agent = Some(truncate_text(agent, MAX_TEXT));
                rec.protocols.clear();
                for p in protocols {
                    if rec.protocols.len() >= MAX_PROTOCOLS {
                        break;
                    }
                    if p.is_empty() || p.len() > MAX_TEXT {
                        continue;
                    }
                    let p = clean_text(p);
                    if !rec.protocols.contains(&p) {
                        rec.protocols.push(p);
                    }
                }
                for addr in listen_addrs.iter().take(MAX_ADDRS) {
                    merge_addr(&mut rec, addr, AddrSource::Identify, *at_ms, false);
                }
                rec.last_seen_ms = rec.last_seen_ms.max(*at_ms);
                t.put_peer(txn, &rec)
            }
            StoreOp::PeerRtt { peer_id, rtt_us } => match t.get_peer(txn, peer_id)? {
                Some(mut rec) => {
                    rec.last_rtt_us = Some(*rtt_us);
                    t.put_peer(txn, &rec)
                }
                None => Ok(()),
            },
            StoreOp::SetPinned { peer_id, pinned } => self.set_flag(txn, peer_id, *pinned, |r, v| r.pinned = v),
            StoreOp::SetBanned { peer_id, banned } => self.set_flag(txn, peer_id, *banned, |r, v| r.banned = v),
            StoreOp::Audit(a) => {
                let id = self.next_audit_id;
                self.next_audit_id += 1;
                let entry = AuditEntry {
                    at_ms: a.at_ms,
                    uid: a.uid,
                    pid: a.pid,
                    action: truncate_text(&a.action, MAX_TEXT),
                    detail: truncate_text(&a.detail, MAX_AUDIT_DETAIL),
                    result: truncate_text(&a.result, MAX_TEXT),
                };
                t.put_audit(txn, id, &entry)
            }
            StoreOp::ConfigCachePut { key, value } => {
                t.config_cache.put(txn, key.as_bytes(), value)?;
                Ok(())
            }
            StoreOp::DaemonStopping { at_ms } => close_open_history(txn, t, None, *at_ms, Some(REASON_DAEMON_STOPPED)),
        }
    }

    /// The peer's record, a new one, or `None` when the peer is unknown and the table is at
    /// `MAX_PEERS` (discovery only; see there).
    fn peer_or_new_capped(&self, txn: &RwTxn, peer_id: &str, at_ms: u64) -> Result<Option<PeerRecord>, Fail> {
        if let Some(rec) = self.tables.get_peer(txn, peer_id)? {
            return Ok(Some(rec));
        }
        if self.tables.peers.len(txn)? >= MAX_PEERS {
            tracing::debug!(
                peer_id,
                max = MAX_PEERS,
                "peer table full; not remembering a newly discovered peer"
            );
            return Ok(None);
        }
        Ok(Some(PeerRecord::new(peer_id, at_ms)))
    }

    /// Sets pinned or banned; creates the record only when setting the flag (clearing it on an
    /// unknown peer changes nothing).
    fn set_flag(
        &self,
        txn: &mut RwTxn,
        peer_id: &str,
        value: bool,
        set: impl FnOnce(&mut PeerRecord, bool),
    ) -> Result<(), Fail> {
        let rec = match self.tables.get_peer(txn, peer_id)? {
            Some(rec) => Some(rec),
            None if value => Some(PeerRecord::new(peer_id, self.now_ms)),
            None => None,
        };
        let Some(mut rec) = rec else { return Ok(()) };
        set(&mut rec, value);
        rec.refresh_trust();
        self.tables.put_peer(txn, &rec)
    }
}

/// The next id of an append-only table: the meta counter, or (for stores that predate the
/// counter, or if it was lost) one past the last key.
fn next_id(txn: &RwTxn, t: &Tables, meta_key: &str, table: &'static str, db: Db) -> Result<u64, Fail> {
    let after_last = match db.last(txn)? {
        Some((key, _)) => tables::key_u64(table, key)?.saturating_add(1),
        None => 0,
    };
    Ok(t.get_meta_u64(txn, meta_key)?.unwrap_or(0).max(after_last))
}

/// Deletes the oldest records past `retention`; returns their ids.
fn prune(txn: &mut RwTxn, db: Db, retention: u64) -> Result<Vec<u64>, Fail> {
    let len = db.len(txn)?;
    if len <= retention {
        return Ok(Vec::new());
    }
    let excess = usize::try_from(len - retention).unwrap_or(usize::MAX);
    let mut keys = Vec::with_capacity(excess.min(4096));
    for item in db.iter(txn)?.take(excess) {
        let (key, _) = item?;
        keys.push(key.to_vec());
    }
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        db.delete(txn, &key)?;
        if let Ok(bytes) = <[u8; 8]>::try_from(key.as_slice()) {
            ids.push(u64::from_be_bytes(bytes));
        }
    }
    Ok(ids)
}

/// Closes open history records (of one peer, or all), stamping `at_ms` and `reason`.
pub(super) fn close_open_history(
    txn: &mut RwTxn,
    t: &Tables,
    peer: Option<&str>,
    at_ms: u64,
    reason: Option<&str>,
) -> Result<(), Fail> {
    for (id, open_peer) in t.open_history(txn)? {
        if peer.is_some_and(|p| p != open_peer) {
            continue;
        }
        // A record may already be pruned while still open; then only the index entry goes.
        if let Some(mut entry) = t.get_history(txn, id)? {
            entry.closed_ms = Some(at_ms.max(entry.opened_ms));
            entry.close_reason = reason.map(str::to_owned);
            t.put_history(txn, id, &entry)?;
        }
        t.history_open.delete(txn, &id.to_be_bytes())?;
    }
    Ok(())
}

/// Adds or refreshes one address; evicts past `MAX_ADDRS`. An address an operator gave stays
/// `Manual` whatever later reports it; otherwise the latest source wins.
fn merge_addr(rec: &mut PeerRecord, addr: &str, source: AddrSource, at_ms: u64, success: bool) {
    // Multiaddrs never hold control characters; such an "address" is junk, not worth keeping.
    if addr.is_empty() || addr.len() > MAX_TEXT || addr.chars().any(char::is_control) {
        return;
    }
    let success_ms = success.then_some(at_ms);
    if let Some(a) = rec.addrs.iter_mut().find(|a| a.addr == addr) {
        a.last_seen_ms = a.last_seen_ms.max(at_ms);
        if a.source != AddrSource::Manual {
            a.source = source;
        }
        if success_ms.is_some() {
            a.last_success_ms = success_ms;
        }
        return;
    }
    rec.addrs.push(AddrRecord {
        addr: addr.to_owned(),
        source,
        last_success_ms: success_ms,
        last_seen_ms: at_ms,
    });
    while rec.addrs.len() > MAX_ADDRS {
        // Never-successful before successful; among those, the longest unseen / unsuccessful.
        let victim = rec
            .addrs
            .iter()
            .enumerate()
            .min_by_key(|(_, a)| match a.last_success_ms {
                None => (false, a.last_seen_ms),
                Some(ok) => (true, ok),
            })
            .map(|(i, _)| i);
        match victim {
            Some(i) => {
                rec.addrs.remove(i);
            }
            None => break,
        }
    }
}

/// Peer-supplied text with control characters replaced, so that it cannot steer a terminal
/// that prints it (firmactl) or break a log line.
fn clean_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// `clean_text`, cut to at most `max` bytes at a character boundary.
pub(super) fn truncate_text(s: &str, max: usize) -> String {
    // Cut before cleaning so a huge input is not copied whole, and after, because a replaced
    // control character takes three bytes instead of one.
    let mut cleaned = clean_text(cut(s, max));
    let end = cut(&cleaned, max).len();
    cleaned.truncate(end);
    cleaned
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

//! Upstream's groups on `/explorer`: a client joins a group by name (`join_group {groupId}`,
//! answered `joined_group`), leaves it (`leave_group`, answered `left_group`), and
//! `message {groupId, content}` reaches every other member connected to this firma-web as
//! `message:received`, the sender being answered `message:sent`. Groups live in this process's
//! memory while they have members; nothing goes to peers (firma-transportd has no P2P message
//! protocol, so a `message` to a `peerId` is refused with an `error` that says so).
//!
//! Bounds: groups per client, members per group, groups per server, group name and message
//! size, a per-client message rate, and a bounded inbox per client (a member that does not read
//! misses messages instead of growing memory; the sender is told how many were dropped).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::state::now_ms;

/// Groups one client may be in at once.
pub const MAX_GROUPS_PER_CLIENT: usize = 32;
/// Clients in one group.
pub const MAX_MEMBERS: usize = 256;
/// Groups with members on this server.
pub const MAX_GROUPS: usize = 4096;
/// Longest group name, in bytes.
pub const MAX_GROUP_ID: usize = 128;
/// Largest message content, in bytes.
pub const MAX_CONTENT: usize = 16 * 1024;
/// Messages one client may send in a burst; the budget refills by one per `MESSAGE_REFILL`.
pub const MESSAGE_BURST: u32 = 20;
pub const MESSAGE_REFILL: Duration = Duration::from_millis(200);
/// Messages from others waiting for one client.
const INBOX: usize = 64;

/// Every group of this server: name -> member id -> that member's inbox.
#[derive(Debug, Default)]
pub struct Groups {
    groups: Mutex<HashMap<String, HashMap<u64, mpsc::Sender<Utf8Bytes>>>>,
    next_member: AtomicU64,
    next_message: AtomicU64,
}

impl Groups {
    fn join(&self, group: &str, member: u64, inbox: &mpsc::Sender<Utf8Bytes>) -> Result<(), String> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if !groups.contains_key(group) && groups.len() >= MAX_GROUPS {
            return Err(format!("This server already has {MAX_GROUPS} groups"));
        }
        let members = groups.entry(group.to_owned()).or_default();
        if !members.contains_key(&member) && members.len() >= MAX_MEMBERS {
            return Err(format!("Group {group} is full ({MAX_MEMBERS} members)"));
        }
        members.insert(member, inbox.clone());
        Ok(())
    }

    fn leave(&self, group: &str, member: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = groups.get_mut(group) {
            members.remove(&member);
            if members.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// Queue `text` for every member of `group` but `from`: (delivered, dropped for a full inbox).
    fn deliver(&self, group: &str, from: u64, text: &Utf8Bytes) -> (usize, usize) {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let Some(members) = groups.get(group) else {
            return (0, 0);
        };
        let (mut delivered, mut dropped) = (0, 0);
        for (id, inbox) in members {
            if *id == from {
                continue;
            }
            match inbox.try_send(text.clone()) {
                Ok(()) => delivered += 1,
                Err(_) => dropped += 1,
            }
        }
        (delivered, dropped)
    }
}

/// One client's side of the groups: what it joined, its inbox and its message budget. Dropping
/// it leaves every group it is in.
pub struct Membership {
    groups: Arc<Groups>,
    id: u64,
    joined: HashSet<String>,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Messages from other members, to forward to the client.
    pub inbox: mpsc::Receiver<Utf8Bytes>,
    budget: u32,
    refilled: Instant,
}

impl Membership {
    pub fn new(groups: Arc<Groups>) -> Self {
        let id = groups.next_member.fetch_add(1, Ordering::Relaxed);
        let (tx, inbox) = mpsc::channel(INBOX);
        Self {
            groups,
            id,
            joined: HashSet::new(),
            tx,
            inbox,
            budget: MESSAGE_BURST,
            refilled: Instant::now(),
        }
    }

    /// Join `group`; joining one already joined is a no-op.
    pub fn join(&mut self, group: &str) -> Result<(), String> {
        if self.joined.contains(group) {
            return Ok(());
        }
        if self.joined.len() >= MAX_GROUPS_PER_CLIENT {
            return Err(format!("Too many groups (at most {MAX_GROUPS_PER_CLIENT} per client)"));
        }
        self.groups.join(group, self.id, &self.tx)?;
        self.joined.insert(group.to_owned());
        Ok(())
    }

    pub fn leave(&mut self, group: &str) {
        if self.joined.remove(group) {
            self.groups.leave(group, self.id);
        }
    }

    fn take_budget(&mut self) -> bool {
        let refill = self.refilled.elapsed().as_millis() / MESSAGE_REFILL.as_millis();
        if refill > 0 {
            let refill = u32::try_from(refill).unwrap_or(u32::MAX);
            self.budget = self.budget.saturating_add(refill).min(MESSAGE_BURST);
            self.refilled += MESSAGE_REFILL * refill;
        }
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        true
    }

    /// Send `content` to the other members of `group` (which this client must have joined);
    /// returns the `message:sent` answer.
    pub fn send(&mut self, group: &str, content: &str, client_id: &str) -> Result<Value, String> {
        if !self.joined.contains(group) {
            return Err(format!("Failed to send message: join group {group} first"));
        }
        if !self.take_budget() {
            return Err(format!(
                "Failed to send message: rate limited (at most {MESSAGE_BURST} at once, then {} per second)",
                1000 / MESSAGE_REFILL.as_millis()
            ));
        }
        let n = self.groups.next_message.fetch_add(1, Ordering::Relaxed);
        let message_id = format!("msg-{}-{n}", now_ms());
        let at = now_ms();
        let text = Utf8Bytes::from(
            json!({"type": "message:received", "groupId": group, "timestamp": at,
                   "message": {"messageId": message_id, "peerId": client_id, "groupId": group, "type": "text",
                               "content": content, "direction": "incoming", "transport": "websocket",
                               "timestamp": at, "status": "delivered", "encrypted": false}})
            .to_string(),
        );
        let (delivered, dropped) = self.groups.deliver(group, self.id, &text);
        let status = if delivered > 0 { "delivered" } else { "sent" };
        Ok(
            json!({"type": "message:sent", "messageId": message_id, "groupId": group, "status": status,
                  "delivered": delivered, "dropped": dropped, "timestamp": at}),
        )
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for g in self.joined.drain() {
            self.groups.leave(&g, self.id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn members_get_messages_and_bounds_hold() {
        let groups = Arc::new(Groups::default());
        let mut a = Membership::new(groups.clone());
        let mut b = Membership::new(groups.clone());
        let c = Membership::new(groups.clone());
        a.join("g").unwrap();
        b.join("g").unwrap();
        let sent = a.send("g", "hi", "client-a").unwrap();
        assert_eq!(sent["type"], "message:sent");
        assert_eq!(sent["delivered"], 1);
        let got: Value = serde_json::from_str(b.inbox.recv().await.unwrap().as_str()).unwrap();
        assert_eq!(got["message"]["content"], "hi");
        assert_eq!(got["message"]["peerId"], "client-a");
        assert!(a.inbox.try_recv().is_err(), "the sender does not get its own message");
        drop(c);
        assert!(b.send("other", "x", "b").is_err(), "not a member");

        for i in 0..MAX_GROUPS_PER_CLIENT - 1 {
            a.join(&format!("more-{i}")).unwrap();
        }
        assert!(a.join("one-too-many").is_err());
        a.leave("more-0");
        a.join("one-too-many").unwrap();

        // The burst is spent (one message went already), then refused.
        for _ in 1..MESSAGE_BURST {
            a.send("g", "x", "a").unwrap();
        }
        assert!(a.send("g", "x", "a").unwrap_err().contains("rate limited"));
        drop(a);
        drop(b);
        assert!(groups.groups.lock().unwrap().is_empty(), "empty groups are removed");
    }

    #[test]
    fn a_group_has_at_most_max_members() {
        let groups = Arc::new(Groups::default());
        let mut members: Vec<Membership> = (0..MAX_MEMBERS).map(|_| Membership::new(groups.clone())).collect();
        for m in &mut members {
            m.join("full").unwrap();
        }
        let mut late = Membership::new(groups.clone());
        assert!(late.join("full").unwrap_err().contains("full"));
    }
}

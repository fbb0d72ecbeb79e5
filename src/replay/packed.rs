//! Events packed into one string arena, to cross from one thread to another without an
//! allocation per event (an owned [`Event`] holds nine strings): a decode worker packs the
//! events of a chunk, the reading thread packs each detect worker's batch.

use crate::decode::{Category, Credential, CredentialKind, Event};
use crate::time::Nanos;
use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::Range;

/// The fixed-size part of an event; its strings are ranges of the arena.
#[derive(Clone, Debug)]
struct Fixed {
    time: Nanos,
    category: Category,
    kind: CredentialKind,
    client_ip: Option<IpAddr>,
    status: u16,
    success: bool,
    response_bytes: u64,
    request_bytes: u64,
    request_charge: f64,
    /// account, credential id, operation, user agent, database, collection, activity id,
    /// resource id.
    strs: [Range<usize>; 8],
}

/// A list of events whose strings share one buffer.
#[derive(Debug, Default)]
pub struct Packed {
    arena: String,
    events: Vec<Fixed>,
}

impl Packed {
    /// Room for `events` events of `bytes` bytes of strings in all.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Packed { arena: String::with_capacity(bytes), events: Vec::with_capacity(events) }
    }

    /// Empties the list, keeping its buffers (a chunk or batch used again).
    pub fn clear(&mut self) {
        self.arena.clear();
        self.events.clear();
    }

    /// Room for `events` more events of `bytes` more bytes of strings.
    pub fn reserve(&mut self, events: usize, bytes: usize) {
        self.arena.reserve(bytes);
        self.events.reserve(events);
    }

    /// Appends a copy of `ev`; returns its index.
    pub fn push(&mut self, ev: &Event<'_>) -> usize {
        let mut put = |s: &str| {
            let start = self.arena.len();
            self.arena.push_str(s);
            start..self.arena.len()
        };
        let strs = [
            put(&ev.account),
            put(&ev.credential.id),
            put(&ev.operation),
            put(&ev.user_agent),
            put(&ev.database),
            put(&ev.collection),
            put(&ev.activity_id),
            put(&ev.resource_id),
        ];
        self.events.push(Fixed {
            time: ev.time,
            category: ev.category,
            kind: ev.credential.kind,
            client_ip: ev.client_ip,
            status: ev.status,
            success: ev.success,
            response_bytes: ev.response_bytes,
            request_bytes: ev.request_bytes,
            request_charge: ev.request_charge,
            strs,
        });
        self.events.len() - 1
    }

    /// The account of the event at `i`.
    pub fn account(&self, i: usize) -> Option<&str> {
        self.arena.get(self.events.get(i)?.strs[0].clone())
    }

    /// The event at `i` (from [`Packed::push`]), borrowing its strings.
    pub fn get(&self, i: usize) -> Option<Event<'_>> {
        let f = self.events.get(i)?;
        let s = |k: usize| Cow::Borrowed(self.arena.get(f.strs[k].clone()).unwrap_or(""));
        Some(Event {
            time: f.time,
            category: f.category,
            account: s(0),
            credential: Credential { kind: f.kind, id: s(1) },
            client_ip: f.client_ip,
            operation: s(2),
            status: f.status,
            success: f.success,
            response_bytes: f.response_bytes,
            request_bytes: f.request_bytes,
            request_charge: f.request_charge,
            user_agent: s(3),
            database: s(4),
            collection: s(5),
            activity_id: s(6),
            resource_id: s(7),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_comes_back_equal() {
        let ev = Event {
            time: 42,
            category: Category::DataPlaneRequests,
            account: "contoso".into(),
            credential: Credential { kind: CredentialKind::Key, id: "readwrite".into() },
            client_ip: Some("203.0.113.7".parse().unwrap()),
            operation: "Query".into(),
            status: 200,
            success: true,
            response_bytes: 1 << 20,
            request_bytes: 10,
            request_charge: 2.5,
            user_agent: "ua/1".into(),
            database: "db".into(),
            collection: "".into(),
            activity_id: "a0".into(),
            resource_id: "/SUBSCRIPTIONS/X".into(),
        };
        let mut p = Packed::default();
        let mut other = ev.clone();
        other.account = "fabrikam".into();
        other.collection = "c".into();
        assert_eq!(p.push(&ev), 0);
        assert_eq!(p.push(&other), 1);
        assert_eq!(p.get(0).unwrap(), ev);
        assert_eq!(p.get(1).unwrap(), other);
        assert!(p.get(2).is_none());
    }
}

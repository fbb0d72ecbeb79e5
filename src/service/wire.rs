//! The internal topic's format (scale-out, `--role rekey` -> `--role detect`): normalized
//! events, already decoded, in batches.
//!
//! One Kafka message per (raw message, internal partition): a JSON object naming the raw
//! message it came from (`topic`, `partition`, `offset`) and carrying the events of that raw
//! message which belong to the partition, in their original order. Naming the source lets a
//! detect partition drop the copies a restarted rekey instance produces again (its raw
//! offsets were not committed yet): raw offsets only grow per raw partition, so a batch from
//! an offset below the highest one already taken is a copy.
//!
//! A batch also says whether the rekey instance was still merging a backlog when it produced
//! it (`backlog`, left out when false): a detect partition then lets event time alone release
//! its reorder queues, as replay does, instead of `service.max_hold` of processing time (a
//! pause of the upstream's alignment is not disorder). When the rekey instance catches up it
//! sends each internal partition an empty batch without the flag (a copy of its last source,
//! so it changes nothing else).
//!
//! Partitioning is by account ([`partition_for`]): every event of an account lands on one
//! partition, so the account's event-time clock, reorder queue and learning period (all per
//! account in the detector) are whole in one detect instance and its alerts are those of a
//! single process.

use crate::decode::{Category, Credential, CredentialKind, Event};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::IpAddr;

/// The `format` value of this version of the internal topic's messages.
pub const FORMAT: &str = "exfilwatch.events/1";

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not an internal-topic batch: {0}")]
    Json(#[from] serde_json::Error),
    #[error("internal-topic batch of format {0:?}; this build reads {FORMAT:?}")]
    Format(String),
}

/// The raw message a batch was decoded from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source<'a> {
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    pub partition: i32,
    pub offset: i64,
}

/// One event on the wire: the fields of [`Event`] the detector reads, and the category.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent<'a> {
    t: i64,
    #[serde(borrow)]
    cat: Cow<'a, str>,
    #[serde(borrow)]
    acct: Cow<'a, str>,
    /// Canonical credential (`aad:..`, `token:..`, `key:..`, `unknown`).
    #[serde(borrow)]
    cred: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(borrow, default)]
    op: Cow<'a, str>,
    #[serde(default)]
    st: u16,
    ok: bool,
    #[serde(default)]
    rb: u64,
    #[serde(default)]
    qb: u64,
    #[serde(default)]
    ru: f64,
    #[serde(borrow, default)]
    ua: Cow<'a, str>,
    #[serde(borrow, default)]
    db: Cow<'a, str>,
    #[serde(borrow, default)]
    coll: Cow<'a, str>,
    #[serde(borrow, default)]
    act: Cow<'a, str>,
    /// The account's resource id, on the first event of each run of one account in a batch
    /// (the detector keeps the first it sees per account); left out on the others.
    #[serde(borrow, default, skip_serializing_if = "str::is_empty")]
    res: Cow<'a, str>,
}

#[derive(Deserialize)]
struct BatchIn<'a> {
    #[serde(borrow)]
    format: Cow<'a, str>,
    #[serde(flatten, borrow)]
    source: Source<'a>,
    #[serde(default)]
    backlog: bool,
    #[serde(borrow)]
    events: Vec<WireEvent<'a>>,
}

/// A decoded batch; its events borrow from the message.
pub struct Batch<'a> {
    pub source: Source<'a>,
    /// Produced while the rekey instance was merging a backlog (see the module documentation).
    pub backlog: bool,
    events: Vec<WireEvent<'a>>,
}

/// Accumulates the events of one raw message for one internal partition, serialized as they
/// come (borrowing from the decoder's buffers: nothing is copied per field).
#[derive(Default)]
pub struct BatchBuilder {
    /// The events so far, as JSON objects separated by commas.
    events: Vec<u8>,
    len: usize,
    /// The canonical credential of the event being written.
    cred: String,
    /// The account of the previous event in this batch.
    account: String,
}

/// The head of a batch; the events follow it.
#[derive(Serialize)]
struct Head<'a> {
    format: &'static str,
    #[serde(flatten)]
    source: &'a Source<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    backlog: bool,
}

impl BatchBuilder {
    pub fn push(&mut self, ev: &Event<'_>) {
        ev.credential.write_canonical(&mut self.cred);
        if self.len > 0 {
            self.events.push(b',');
        }
        let wire = WireEvent {
            t: ev.time,
            cat: Cow::Borrowed(ev.category.as_str()),
            acct: Cow::Borrowed(&ev.account),
            cred: Cow::Borrowed(&self.cred),
            ip: ev.client_ip,
            op: Cow::Borrowed(&ev.operation),
            st: ev.status,
            ok: ev.success,
            rb: ev.response_bytes,
            qb: ev.request_bytes,
            ru: ev.request_charge,
            ua: Cow::Borrowed(&ev.user_agent),
            db: Cow::Borrowed(&ev.database),
            coll: Cow::Borrowed(&ev.collection),
            act: Cow::Borrowed(&ev.activity_id),
            res: if self.len > 0 && self.account == ev.account {
                Cow::Borrowed("")
            } else {
                Cow::Borrowed(&ev.resource_id)
            },
        };
        if self.account != ev.account {
            self.account.clear();
            self.account.push_str(&ev.account);
        }
        // Writing strings, numbers and addresses to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.events, &wire);
        self.len += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The message value; the builder is emptied. `backlog`: see the module documentation.
    pub fn finish(&mut self, source: &Source<'_>, backlog: bool) -> Vec<u8> {
        let mut out = serde_json::to_vec(&Head { format: FORMAT, source, backlog }).unwrap_or_default();
        out.pop(); // the head's closing brace
        out.extend_from_slice(b",\"events\":[");
        out.append(&mut self.events);
        out.extend_from_slice(b"]}");
        self.len = 0;
        out
    }
}

impl<'a> Batch<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Batch<'a>, WireError> {
        let b: BatchIn<'a> = serde_json::from_slice(bytes)?;
        if b.format != FORMAT {
            return Err(WireError::Format(b.format.into_owned()));
        }
        Ok(Batch { source: b.source, backlog: b.backlog, events: b.events })
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, as the decoder would have produced them.
    pub fn events(&self) -> impl Iterator<Item = Event<'_>> {
        self.events.iter().map(|w| Event {
            time: w.t,
            category: Category::from_name(&w.cat),
            account: Cow::Borrowed(&w.acct),
            credential: credential_from_canonical(&w.cred),
            client_ip: w.ip,
            operation: Cow::Borrowed(&w.op),
            status: w.st,
            success: w.ok,
            response_bytes: w.rb,
            request_bytes: w.qb,
            request_charge: w.ru,
            user_agent: Cow::Borrowed(&w.ua),
            database: Cow::Borrowed(&w.db),
            collection: Cow::Borrowed(&w.coll),
            activity_id: Cow::Borrowed(&w.act),
            resource_id: Cow::Borrowed(&w.res),
        })
    }
}

/// The inverse of [`Credential::write_canonical`].
pub fn credential_from_canonical(s: &str) -> Credential<'_> {
    let (kind, id) = if let Some(id) = s.strip_prefix("aad:") {
        (CredentialKind::Aad, id)
    } else if let Some(id) = s.strip_prefix("token:") {
        (CredentialKind::Token, id)
    } else if let Some(id) = s.strip_prefix("key:") {
        (CredentialKind::Key, id)
    } else {
        (CredentialKind::Unknown, "")
    };
    Credential { kind, id: Cow::Borrowed(id) }
}

/// The internal partition of an account: FNV-1a (64 bit) of its lowercased name, modulo the
/// partition count. Stable across builds and machines; changing the partition count moves
/// accounts (see docs/scaling.md).
pub fn partition_for(account: &str, partitions: i32) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, Decoder};

    #[test]
    fn a_batch_gives_back_the_events_it_was_built_from() {
        // Every event of two sample files (single records; envelopes of Mongo requests).
        let mut d = Decoder::new();
        let (mut originals, mut builder) = (Vec::new(), BatchBuilder::default());
        let (mut previous, mut named) = (String::new(), 0);
        for file in ["sample-logs/fabrikam/cdbdataplanerequests.jsonl", "sample-logs/northwind/mongo-envelopes.jsonl"] {
            let text = std::fs::read(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                d.decode(line, |mut ev| {
                    if let Decoded::Event(ev) = &mut ev {
                        builder.push(ev);
                        // The resource id travels on the first event of each run of an account.
                        if ev.account == previous {
                            ev.resource_id = Cow::Borrowed("");
                        } else {
                            assert!(ev.resource_id.to_ascii_lowercase().contains("/databaseaccounts/"), "{ev:?}");
                            named += 1;
                        }
                        previous = ev.account.to_string();
                        originals.push(format!("{ev:?}"));
                    }
                });
            }
        }
        assert_eq!(named, 2, "one run of each account");
        assert!(originals.len() > 100, "{}", originals.len());
        assert_eq!(builder.len(), originals.len());
        let source = Source { topic: "logs".into(), partition: 3, offset: 41 };
        let bytes = builder.finish(&source, false);
        assert!(builder.is_empty());
        assert!(!String::from_utf8_lossy(&bytes).contains("backlog"), "left out when false");
        let batch = Batch::parse(&bytes).unwrap();
        assert_eq!(batch.source, source);
        assert!(!batch.backlog);
        let back: Vec<String> = batch.events().map(|e| format!("{e:?}")).collect();
        assert_eq!(back, originals);
    }

    #[test]
    fn the_backlog_flag_round_trips_and_an_empty_batch_is_valid() {
        let source = Source { topic: "logs".into(), partition: 1, offset: 7 };
        let bytes = BatchBuilder::default().finish(&source, true);
        let batch = Batch::parse(&bytes).unwrap();
        assert!(batch.backlog);
        assert!(batch.is_empty());
        assert_eq!(batch.source, source);
    }

    #[test]
    fn other_formats_and_garbage_are_refused() {
        let e = Batch::parse(br#"{"format":"exfilwatch.events/9","topic":"t","partition":0,"offset":0,"events":[]}"#);
        assert!(matches!(e, Err(WireError::Format(f)) if f.ends_with("/9")));
        assert!(matches!(Batch::parse(b"{\"records\": []}"), Err(WireError::Json(_))));
        assert!(matches!(Batch::parse(b"not json"), Err(WireError::Json(_))));
    }

    #[test]
    fn canonical_credentials_round_trip() {
        for text in ["aad:abc", "token:p1", "key:primarymasterkey", "unknown"] {
            let mut out = String::new();
            credential_from_canonical(text).write_canonical(&mut out);
            assert_eq!(out, text);
        }
    }

    #[test]
    fn accounts_spread_over_partitions_and_case_does_not_matter() {
        assert_eq!(partition_for("Contoso", 4), partition_for("contoso", 4));
        let mut seen = [0u32; 4];
        for i in 0..1000 {
            seen[partition_for(&format!("account-{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        assert_eq!(partition_for("x", 1), 0);
    }
}

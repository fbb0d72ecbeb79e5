//! The detector's state: per account ([`AccountState`], with its reorder queue of [`Ev`]s and
//! the origins no key of it knows, [`AccountOrigin`], kept compact as a [`Tally`]), per key
//! ([`KeyState`]) and per origin of a key ([`OriginEntry`]), and the dedup marks of key-level
//! conditions ([`Mark`]). Plain data: the rules that update it are `rules.rs` and the files it
//! names; snapshots serialize it as is.

use super::few_map::FewMap;
use super::origin_map::{narrow, OriginMap};
use super::{
    evidence::{Gathered, Sample},
    Evidence, OriginKey, OriginWindow, SlidingSum, Sym, VerdictKind, VolumeHistory,
};
use crate::time::Nanos;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// An event as the detector keeps it while it waits in a reorder queue: owned and compact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct Ev {
    pub(super) time: Nanos,
    /// When the caller handed it over (processing time, caller's clock; 0 in replay).
    pub(super) arrived: i64,
    pub(super) cred: Sym,
    pub(super) ip: Option<u128>,
    pub(super) bytes: u64,
    pub(super) op: Sym,
    pub(super) ua: Sym,
    pub(super) db: Sym,
    pub(super) coll: Sym,
    pub(super) activity: u128,
}

/// Dedup state of one condition: when it last alerted, how far it escalated, and how many
/// times it re-alerted (part of the id, so a re-alert is a new alert).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct Mark {
    pub(super) at: Nanos,
    /// Levels already alerted (0: none).
    pub(super) level: u8,
    pub(super) epoch: u32,
    pub(super) since: Nanos,
}

/// A (key, origin) pair: 32 bytes, the most numerous record of the state. What few origins
/// use (the time of the last alert, itemized evidence) is kept beside the pairs, by origin, in
/// the key's [`OriginMap`] ([`OriginCold`]); snapshots write the fields flat, as they always
/// did ([`OriginEntryFields`]).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct OriginEntry {
    pub(super) first_seen: Nanos,
    pub(super) last_seen: Nanos,
    pub(super) bytes: u64,
    pub(super) requests: u32,
    pub(super) mark_level: u8,
    pub(super) mark_epoch: u16,
    /// An analyst's verdict on it (the detector's list of verdicts is the truth; see verdict.rs).
    pub(super) verdict: Option<VerdictKind>,
}

/// The rarely set part of an [`OriginEntry`], kept by its [`OriginMap`] while not default.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct OriginCold {
    pub(super) mark_at: Nanos,
    /// Present while the origin is unfamiliar (and has read its share: `origin_rules.rs`).
    pub(super) evidence: Option<Box<Evidence>>,
}

impl OriginCold {
    /// Nothing set: not kept.
    pub(super) fn is_default(&self) -> bool {
        self.mark_at == 0 && self.evidence.is_none()
    }
}

impl OriginEntry {
    pub(super) fn new(t: Nanos) -> Self {
        OriginEntry { first_seen: t, last_seen: t, bytes: 0, requests: 0, mark_level: 0, mark_epoch: 0, verdict: None }
    }

    /// An entry and its rarely set part from their fields (a snapshot's, a model's row).
    pub(super) fn from_fields(f: OriginEntryFields<Box<Evidence>>) -> (Self, OriginCold) {
        let e = OriginEntry {
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            bytes: f.bytes,
            requests: f.requests,
            mark_level: f.mark_level,
            mark_epoch: f.mark_epoch,
            verdict: f.verdict,
        };
        (e, OriginCold { mark_at: f.mark_at, evidence: f.evidence })
    }

    /// The fields of this entry and its rarely set part, as snapshots write them.
    pub(super) fn fields<'e>(&self, mark_at: Nanos, evidence: Option<&'e Evidence>) -> OriginEntryFields<&'e Evidence> {
        OriginEntryFields {
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            bytes: self.bytes,
            requests: self.requests,
            mark_level: self.mark_level,
            mark_epoch: self.mark_epoch,
            mark_at,
            evidence,
            verdict: self.verdict,
        }
    }
}

/// An [`OriginEntry`]'s fields with its [`OriginCold`]'s, flat, in the order snapshots write
/// them: `E` is `&Evidence` when written, `Box<Evidence>` when read.
#[derive(Serialize, Deserialize)]
pub(super) struct OriginEntryFields<E> {
    pub(super) first_seen: Nanos,
    pub(super) last_seen: Nanos,
    pub(super) bytes: u64,
    pub(super) requests: u32,
    pub(super) mark_level: u8,
    pub(super) mark_epoch: u16,
    pub(super) mark_at: Nanos,
    pub(super) evidence: Option<E>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) verdict: Option<VerdictKind>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct KeyState {
    pub(super) first_seen: Nanos,
    pub(super) last_seen: Nanos,
    pub(super) origins: OriginMap,
    pub(super) unfamiliar: SlidingSum,
    pub(super) volume: SlidingSum,
    pub(super) history: VolumeHistory,
    /// Evidence of the current and the previous `volume_window` (for `volume_anomaly`).
    pub(super) window_evidence: Option<Box<(i64, Gathered, Gathered)>>,
    /// Bytes per origin in the sliding `volume_window`, kept while `window_evidence` is (the
    /// origins `volume_anomaly` lists).
    #[serde(default)]
    pub(super) volume_origins: Option<Box<OriginWindow>>,
    /// Bytes per unfamiliar origin in the sliding `aggregate_window` (the origins
    /// `unfamiliar_origins_aggregate` lists); dropped by the sweep once the key is idle that long.
    #[serde(default)]
    pub(super) unfamiliar_origins: Option<Box<OriginWindow>>,
    /// Dedup marks of the key-level rules, boxed: most keys never alert.
    pub(super) aggregate_mark: Option<Box<Mark>>,
    pub(super) volume_mark: Option<Box<Mark>>,
    pub(super) aggregate_checked_minute: i64,
    /// `origin_spray`: new origins in the last hour (kept until the key is idle that long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) spray: Option<Box<SprayState>>,
    /// The user-agent families the key used (`agents.rs`), at most
    /// [`super::agents::AGENT_FAMILIES`]; absent in checkpoints written before them.
    #[serde(default, skip_serializing_if = "smallvec::SmallVec::is_empty")]
    pub(super) agents: super::agents::Agents,
}

/// A key's new origins within the last [`super::spray_rule::SPRAY_WINDOW`] (`origin_spray`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct Spray {
    /// New origins per minute.
    pub(super) window: SlidingSum,
    /// The first request of each new origin since the window was last empty (nearly every
    /// key sees a new origin now and then: compact while they are few).
    pub(super) evidence: Gathered,
    pub(super) mark: Option<Mark>,
}

/// A key's [`Spray`], held as its first new origin's request alone while that is all the
/// window holds: nearly every key meets a new origin now and then, and the window is dropped
/// an hour after the key's last read, so this is made and dropped about once per new origin.
/// `One` is one heap block where a [`Spray`] of one origin is three (its box, its minute and
/// its sample). Written and read as the [`Spray`] it stands for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "Spray", into = "Spray")]
pub(super) enum SprayState {
    /// One new origin in the window (its minute is the request's), no alert marked.
    One(Sample),
    Many(Spray),
}

impl Spray {
    /// The window of one new origin whose first request is `s`.
    pub(super) fn of_one(s: &Sample) -> Self {
        let mut sp = Spray::default();
        sp.window.add(s.time, 1, super::spray_rule::SPRAY_WINDOW);
        sp.evidence.add(s);
        sp
    }
}

impl From<Spray> for SprayState {
    fn from(sp: Spray) -> Self {
        SprayState::Many(sp)
    }
}

impl From<SprayState> for Spray {
    fn from(state: SprayState) -> Self {
        match state {
            SprayState::One(s) => Spray::of_one(&s),
            SprayState::Many(sp) => sp,
        }
    }
}

impl PartialEq for SprayState {
    /// The same window, however it is held.
    fn eq(&self, other: &Self) -> bool {
        Spray::from(self.clone()) == Spray::from(other.clone())
    }
}

impl KeyState {
    pub(super) fn new(t: Nanos) -> Self {
        KeyState {
            first_seen: t,
            last_seen: t,
            origins: OriginMap::default(),
            unfamiliar: SlidingSum::default(),
            volume: SlidingSum::default(),
            history: VolumeHistory::default(),
            window_evidence: None,
            volume_origins: None,
            unfamiliar_origins: None,
            aggregate_mark: None,
            volume_mark: None,
            aggregate_checked_minute: i64::MIN,
            spray: None,
            agents: Default::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct AccountState {
    pub(super) first_seen: Nanos,
    pub(super) last_seen: Nanos,
    /// Newest event time seen: the account's event-time progress.
    pub(super) max_time: Nanos,
    pub(super) next_sweep: Nanos,
    /// Events not yet processed, in time order (ties in arrival order).
    pub(super) queue: VecDeque<Ev>,
    /// Newest event time processed from the queue: an event older than it is late.
    pub(super) released: Nanos,
    /// Boxed: a key's state is about 350 bytes and most accounts have a few keys, so a table
    /// of inline entries (at least four slots) spent more on empty slots than on keys. A list
    /// while they are few ([`super::key_table`]).
    pub(super) keys: super::key_table::KeyTable,
    /// When evidence was last created in this account: until `familiar_after` after it, a
    /// sweep may have evidence to drop.
    pub(super) evidence_created: Nanos,
    /// Origins unfamiliar to the whole account while keys read from them
    /// (`unfamiliar_origin_account_volume`); each leaves `familiar_after` after its first read.
    #[serde(default)]
    pub(super) unfamiliar: Tallies,
    /// Where the account is in Azure: from the first record that names it (an account's
    /// name is its DNS name, unique in Azure), stamped on every alert of the account. Kept as
    /// its resource id alone (lowercased, as [`crate::alert::AzureResource::parse`] leaves it,
    /// packed: [`ResourceId`]): the subscription and the group are parts of it, given back by
    /// the same parse when an alert is stamped. That is 16 bytes in the accounts table instead
    /// of 72, and one small heap block instead of three; snapshots still write the whole
    /// [`crate::alert::AzureResource`].
    #[serde(default, skip_serializing_if = "Option::is_none", with = "resource_id")]
    pub(super) resource: Option<ResourceId>,
}

/// A resource id (lowercased), packed when it has the usual form of a Cosmos DB account's,
/// `/subscriptions/{guid}/resourcegroups/{group}/providers/microsoft.documentdb/databaseaccounts/{name}`:
/// the subscription as its 16 bytes, the group and the name, about 35 bytes where the text is
/// about 130 (a heap block of 48 instead of 144 for each account). Any other id is kept as
/// its text. Packed only when it unpacks to the same text.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ResourceId(Box<[u8]>);

/// The parts of the usual id around the subscription, the group and the name.
const ID_SUBSCRIPTION: &str = "/subscriptions/";
const ID_GROUP: &str = "/resourcegroups/";
const ID_ACCOUNT: &str = "/providers/microsoft.documentdb/databaseaccounts/";
/// The first byte of a packed id (a resource id's text starts with `/`).
const PACKED: u8 = 0;

impl ResourceId {
    pub(super) fn new(id: &str) -> Self {
        ResourceId::pack(id).unwrap_or_else(|| ResourceId(id.as_bytes().into()))
    }

    /// `[PACKED, subscription (16, big-endian), group length, group, name]`, when that
    /// unpacks to `id`.
    fn pack(id: &str) -> Option<Self> {
        let rest = id.strip_prefix(ID_SUBSCRIPTION)?;
        let (sub, rest) = rest.split_at_checked(36)?;
        let (group, name) = rest.strip_prefix(ID_GROUP)?.split_once(ID_ACCOUNT)?;
        let group_len = u8::try_from(group.len()).ok()?;
        let mut b = Vec::with_capacity(18 + group.len() + name.len());
        b.push(PACKED);
        b.extend_from_slice(&super::parse_guid(sub).to_be_bytes());
        b.push(group_len);
        b.extend_from_slice(group.as_bytes());
        b.extend_from_slice(name.as_bytes());
        let packed = ResourceId(b.into_boxed_slice());
        (packed.text() == id).then_some(packed)
    }

    /// The id's text.
    pub(super) fn text(&self) -> String {
        let b = &self.0;
        let unpacked = (b.first() == Some(&PACKED))
            .then(|| {
                let sub = u128::from_be_bytes(b.get(1..17)?.try_into().ok()?);
                let group_len = usize::from(*b.get(17)?);
                let group = std::str::from_utf8(b.get(18..18 + group_len)?).ok()?;
                let name = std::str::from_utf8(b.get(18 + group_len..)?).ok()?;
                Some(format!("{ID_SUBSCRIPTION}{}{ID_GROUP}{group}{ID_ACCOUNT}{name}", super::format_guid(sub)))
            })
            .flatten();
        unpacked.unwrap_or_else(|| String::from_utf8_lossy(b).into_owned())
    }
}

/// [`AccountState::resource`] written and read as the [`crate::alert::AzureResource`] it
/// stands for.
mod resource_id {
    use super::ResourceId;
    use crate::alert::AzureResource;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(id: &Option<ResourceId>, s: S) -> Result<S::Ok, S::Error> {
        id.as_ref().and_then(|id| AzureResource::parse(&id.text())).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ResourceId>, D::Error> {
        Ok(Option::<AzureResource>::deserialize(d)?.map(|r| ResourceId::new(&r.id)))
    }
}

/// An origin as the account sees it: bytes its keys read from it since the account's first
/// read from it, while no key of the account knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountOrigin {
    pub(super) first_seen: Nanos,
    /// Some key of the account already knew the origin when this entry was made.
    pub(super) familiar: bool,
    pub(super) bytes: u64,
    /// Bytes per key (credential symbol), in the order the keys came; the first inline.
    pub(super) keys: smallvec::SmallVec<[(Sym, u64); 1]>,
    pub(super) mark_level: u8,
    pub(super) mark_epoch: u32,
    pub(super) mark_at: Nanos,
}

/// An account's [`Tally`]s by origin: an IPv4 origin (its high 64 bits clear, by far the most
/// common) keyed by one word, in a slot of 32 bytes instead of 48; others (IPv6, an AS) in a
/// table of their own, made when the first comes. Written and read as one map of origins, as
/// before.
#[derive(Clone, Debug)]
pub(super) struct Tallies {
    narrow: Narrow,
    wide: Option<Box<FxHashMap<OriginKey, Tally>>>,
    /// At most the oldest tally's `first_seen` (`Nanos::MAX` when there is none): until
    /// `familiar_after` past it, [`Tallies::expire`] has nothing to drop and reads no slot.
    /// A tally started again later (`account_rule`) leaves it lower than need be, never higher.
    oldest: Nanos,
}

/// The tallies of IPv4 origins: a list searched in order while there are at most
/// [`FEW_TALLIES`] (an account holds a handful at a time: the origins its keys met in the last
/// `familiar_after`), a hash table from the first past it. A list of 4 to 7 tallies takes 128
/// to 224 bytes, the table 288.
type Narrow = FewMap<u64, Tally, FEW_TALLIES>;

/// Tallies of IPv4 origins searched in order; past this many, a hash table.
const FEW_TALLIES: usize = 32;

impl Default for Tallies {
    fn default() -> Self {
        Tallies { narrow: FewMap::default(), wide: None, oldest: Nanos::MAX }
    }
}

impl PartialEq for Tallies {
    /// The same tallies (the bound is a cache of them), however they are held.
    fn eq(&self, other: &Self) -> bool {
        self.narrow == other.narrow && self.wide == other.wide
    }
}

impl Tallies {
    pub(super) fn len(&self) -> usize {
        self.narrow.len() + self.wide.as_ref().map_or(0, |w| w.len())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn contains_key(&self, origin: &OriginKey) -> bool {
        match narrow(*origin) {
            Some(k) => self.narrow.get(&k).is_some(),
            None => self.wide.as_ref().is_some_and(|w| w.contains_key(origin)),
        }
    }

    /// The tally of `origin`, made by `new` when there is none (then also true).
    pub(super) fn get_or_insert_with(&mut self, origin: OriginKey, new: impl FnOnce() -> Tally) -> (&mut Tally, bool) {
        let (tally, made) = match narrow(origin) {
            Some(k) => self.narrow.get_or_insert_with(k, new),
            None => {
                let mut made = false;
                let t = self.wide.get_or_insert_with(Default::default).entry(origin).or_insert_with(|| {
                    made = true;
                    new()
                });
                (t, made)
            }
        };
        if made {
            self.oldest = self.oldest.min(tally.first_seen());
        }
        (tally, made)
    }

    /// Drops the tallies over at `t`: those whose first read is `familiar_after` old or more.
    pub(super) fn expire(&mut self, t: Nanos, familiar_after: Nanos) {
        if t < self.oldest.saturating_add(familiar_after) {
            return; // none is that old yet
        }
        let mut oldest = Nanos::MAX;
        let mut keep = |tally: &Tally| {
            let first_seen = tally.first_seen();
            let keep = t < first_seen + familiar_after;
            if keep {
                oldest = oldest.min(first_seen);
            }
            keep
        };
        self.narrow.retain(|_, tally| keep(tally));
        if let Some(w) = &mut self.wide {
            w.retain(|_, tally| keep(tally));
            if w.is_empty() {
                self.wide = None;
            }
        }
        self.oldest = oldest;
    }

    /// Every origin's tally, IPv4 origins first (in no particular order).
    pub(super) fn iter(&self) -> impl Iterator<Item = (OriginKey, &Tally)> {
        let wide = self.wide.iter().flat_map(|w| w.iter().map(|(o, t)| (*o, t)));
        self.narrow.iter().map(|(k, t)| (OriginKey::from(k), t)).chain(wide)
    }
}

impl FromIterator<(OriginKey, Tally)> for Tallies {
    fn from_iter<I: IntoIterator<Item = (OriginKey, Tally)>>(it: I) -> Self {
        let mut all = Tallies::default();
        for (origin, tally) in it {
            all.oldest = all.oldest.min(tally.first_seen());
            match narrow(origin) {
                Some(k) => {
                    all.narrow.insert(k, tally);
                }
                None => {
                    all.wide.get_or_insert_with(Default::default).insert(origin, tally);
                }
            };
        }
        all
    }
}

impl Serialize for Tallies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.len()))?;
        for (origin, tally) in self.iter() {
            map.serialize_entry(&origin, tally)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Tallies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FxHashMap::<OriginKey, Tally>::deserialize(d)?.into_iter().collect())
    }
}

/// An [`AccountOrigin`] as the accounts table keeps it: while one key has read the origin (the
/// common case: most new origins are one key's), its first read, that key and its bytes in 24
/// bytes; from the second key on, the whole tally, boxed. A slot of the table is 48 bytes
/// instead of 80 (32 for an IPv4 origin: [`Tallies`]). Written and read as the
/// [`AccountOrigin`] it stands for, as snapshots and models always had it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "AccountOrigin", into = "AccountOrigin")]
pub(super) enum Tally {
    /// Nothing alerted yet. `familiar`: some key of the account knew the origin when the tally
    /// was made (then nothing is counted: `bytes` is 0); otherwise `cred` read all `bytes`.
    One {
        first_seen: Nanos,
        bytes: u64,
        cred: Sym,
        familiar: bool,
    },
    Many(Box<AccountOrigin>),
}

impl Tally {
    /// A new tally of a read by `cred` at `first_seen`, nothing counted yet.
    pub(super) fn new(first_seen: Nanos, cred: Sym, familiar: bool) -> Self {
        Tally::One { first_seen, bytes: 0, cred: if familiar { 0 } else { cred }, familiar }
    }

    pub(super) fn first_seen(&self) -> Nanos {
        match self {
            Tally::One { first_seen, .. } => *first_seen,
            Tally::Many(m) => m.first_seen,
        }
    }

    pub(super) fn familiar(&self) -> bool {
        match self {
            Tally::One { familiar, .. } => *familiar,
            Tally::Many(m) => m.familiar,
        }
    }

    /// Bytes the account's keys read from the origin since `first_seen`.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> u64 {
        match self {
            Tally::One { bytes, .. } => *bytes,
            Tally::Many(m) => m.bytes,
        }
    }

    /// Counts a read of `bytes` by `cred` (of an origin not familiar to the account); the whole
    /// tally once two keys or more have read it, `None` while one has. Keys past `max_keys`
    /// count in the bytes without being named.
    pub(super) fn add(&mut self, cred: Sym, bytes: u64, max_keys: usize) -> Option<&mut AccountOrigin> {
        if let Tally::One { cred: c, bytes: b, .. } = self {
            if *c == cred {
                *b += bytes;
                return None;
            }
            *self = Tally::Many(Box::new(AccountOrigin::from(self.clone())));
        }
        let Tally::Many(m) = self else { return None };
        m.bytes += bytes;
        match m.keys.iter().position(|(c, _)| *c == cred) {
            Some(i) => m.keys[i].1 += bytes,
            None if m.keys.len() < max_keys => {
                super::grow::room_for_one_small(&mut m.keys);
                m.keys.push((cred, bytes))
            }
            None => {}
        }
        Some(m)
    }
}

impl From<Tally> for AccountOrigin {
    fn from(t: Tally) -> Self {
        match t {
            Tally::One { first_seen, bytes, cred, familiar } => AccountOrigin {
                first_seen,
                familiar,
                bytes,
                keys: if familiar { smallvec::SmallVec::new() } else { smallvec::smallvec![(cred, bytes)] },
                mark_level: 0,
                mark_epoch: 0,
                mark_at: 0,
            },
            Tally::Many(m) => *m,
        }
    }
}

impl From<AccountOrigin> for Tally {
    /// Compact whenever the tally has the shape of one key's (or of a familiar origin's) and
    /// never alerted; the whole of it otherwise.
    fn from(o: AccountOrigin) -> Self {
        let unmarked = o.mark_level == 0 && o.mark_epoch == 0 && o.mark_at == 0;
        match (o.familiar, o.keys.as_slice()) {
            (true, []) if unmarked && o.bytes == 0 => {
                Tally::One { first_seen: o.first_seen, bytes: 0, cred: 0, familiar: true }
            }
            (false, &[(cred, b)]) if unmarked && b == o.bytes => {
                Tally::One { first_seen: o.first_seen, bytes: b, cred, familiar: false }
            }
            _ => Tally::Many(Box::new(o)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records the state holds most of stay the sizes BENCHMARKS.md and the README give.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_most_numerous_records_keep_their_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<OriginEntry>(), 32, "no pointer to its rarely set part");
        assert_eq!(size_of::<OriginMap>(), 64, "two arrays, the index and the rarely set parts");
        assert_eq!(size_of::<super::super::volume::DaySummary>(), 24);
        assert_eq!(size_of::<smallvec::SmallVec<[(Sym, u64); 1]>>(), size_of::<Vec<(Sym, u64)>>());
        assert_eq!(size_of::<Tally>(), 24, "one key's tally in 24 bytes");
        assert_eq!(size_of::<super::super::agents::Agents>(), size_of::<Vec<super::super::AgentSeen>>());
        assert_eq!(size_of::<(u64, Tally)>(), 32, "a slot of an account's tallies of IPv4 origins");
    }

    /// An account keeps its resource as the id alone and writes it whole, as it always did.
    #[test]
    fn an_accounts_resource_is_kept_as_its_id_and_written_whole() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Kept {
            #[serde(with = "super::resource_id")]
            resource: Option<ResourceId>,
        }
        let id = "/SUBSCRIPTIONS/AB-12/resourceGroups/RG-1/providers/Microsoft.DocumentDB/databaseAccounts/Acct/";
        let whole = crate::alert::AzureResource::parse(id).expect("a resource id");
        let kept = Kept { resource: Some(ResourceId::new(&whole.id)) };
        let json = serde_json::to_value(&kept).expect("serializes");
        assert_eq!(json["resource"], serde_json::to_value(&whole).expect("serializes"));
        assert_eq!(
            (json["resource"]["subscription_id"].as_str(), json["resource"]["resource_group"].as_str()),
            (Some("ab-12"), Some("rg-1"))
        );
        assert_eq!(serde_json::from_value::<Kept>(json).expect("reads back"), kept);
        let none = Kept { resource: None };
        assert_eq!(serde_json::from_str::<Kept>(&serde_json::to_string(&none).expect("json")).expect("reads"), none);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<AccountState>(), 176);
    }

    /// An id of the usual form is packed and unpacks to its text; any other is kept whole.
    #[test]
    fn a_resource_id_is_packed_when_it_unpacks_to_itself() {
        let usual = "/subscriptions/bf9fb88e-9d37-4236-ae2f-c1181834462d/resourcegroups/rg-bench/providers/microsoft.documentdb/databaseaccounts/acct09388";
        let packed = ResourceId::new(usual);
        assert_eq!(packed.0.first(), Some(&PACKED));
        assert!(packed.0.len() < 40, "{} bytes", packed.0.len());
        assert_eq!(packed.text(), usual);
        for other in [
            // Upper-case digits, a GUID without hyphens, another provider, no name, no group.
            "/subscriptions/BF9FB88E-9D37-4236-AE2F-C1181834462D/resourcegroups/rg/providers/microsoft.documentdb/databaseaccounts/a",
            "/subscriptions/bf9fb88e9d374236ae2fc1181834462d0000/resourcegroups/rg/providers/microsoft.documentdb/databaseaccounts/a",
            "/subscriptions/bf9fb88e-9d37-4236-ae2f-c1181834462d/resourcegroups/rg/providers/microsoft.storage/storageaccounts/a",
            "/subscriptions/bf9fb88e-9d37-4236-ae2f-c1181834462d/resourcegroups/rg/providers/microsoft.documentdb/databaseaccounts",
            "/subscriptions/ab-12/resourcegroups/rg-1/providers/microsoft.documentdb/databaseaccounts/acct",
            "/subscriptions/bf9fb88e-9d37-4236-ae2f-c1181834462d",
            "",
        ] {
            let kept = ResourceId::new(other);
            assert_eq!(kept.text(), other);
            assert_ne!(kept.0.first(), Some(&PACKED), "{other}");
        }
        let long_group = format!("/subscriptions/bf9fb88e-9d37-4236-ae2f-c1181834462d/resourcegroups/{}/providers/microsoft.documentdb/databaseaccounts/a", "g".repeat(300));
        assert_eq!(ResourceId::new(&long_group).text(), long_group);
    }

    proptest::proptest! {
        /// Tallies made, found and expired hold what a hash table given the same would, as a
        /// list and past [`FEW_TALLIES`] as a table; their size bound stays at most the oldest.
        #[test]
        fn tallies_are_a_hash_table_of_origins(ops in proptest::collection::vec((0u8..5, 0u128..90, 0i64..1000), 0..300)) {
            let mut tallies = Tallies::default();
            let mut want: std::collections::HashMap<OriginKey, Nanos> = std::collections::HashMap::new();
            let mut clock = 0;
            for (op, k, t) in ops {
                // IPv4 origins (one word) and a few wide ones.
                let origin = if k < 80 { 0xffff_0000_0000 | k << 8 } else { (k - 79) << 100 };
                clock += t % 7;
                if op == 0 {
                    let familiar_after = 200 + t;
                    tallies.expire(clock, familiar_after);
                    want.retain(|_, first| clock < *first + familiar_after);
                } else {
                    let (tally, made) = tallies.get_or_insert_with(origin, || Tally::new(clock, 3, false));
                    proptest::prop_assert_eq!(made, !want.contains_key(&origin));
                    proptest::prop_assert_eq!(tally.first_seen(), *want.entry(origin).or_insert(clock));
                }
                proptest::prop_assert_eq!(tallies.len(), want.len());
                proptest::prop_assert!(want.values().all(|f| tallies.oldest <= *f));
                let mut held: Vec<(OriginKey, Nanos)> = tallies.iter().map(|(o, t)| (o, t.first_seen())).collect();
                let mut wanted: Vec<(OriginKey, Nanos)> = want.iter().map(|(o, f)| (*o, *f)).collect();
                held.sort_unstable();
                wanted.sort_unstable();
                proptest::prop_assert_eq!(held, wanted);
                let agree = |k: u128| {
                    let o = if k < 80 { 0xffff_0000_0000 | k << 8 } else { (k - 79) << 100 };
                    tallies.contains_key(&o) == want.contains_key(&o)
                };
                proptest::prop_assert!((0..90u128).all(agree));
                let back: Tallies = tallies.iter().map(|(o, t)| (o, t.clone())).collect();
                proptest::prop_assert!(back == tallies);
            }
        }
    }

    /// One key's tally stays compact, a second key makes it whole with both keys' bytes, and
    /// either is written as the [`AccountOrigin`] it stands for and read back the same.
    #[test]
    fn a_tally_is_compact_until_a_second_key_reads_and_written_whole() {
        let mut t = Tally::new(5, 7, false);
        assert!(t.add(7, 100, 16).is_none());
        assert!(t.add(7, 20, 16).is_none());
        assert_eq!((t.first_seen(), t.familiar(), t.bytes()), (5, false, 120));
        let whole = AccountOrigin::from(t.clone());
        assert_eq!((whole.bytes, whole.keys.to_vec()), (120, vec![(7, 120)]));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, serde_json::to_string(&whole).unwrap());
        assert_eq!(serde_json::from_str::<Tally>(&json).unwrap(), t);

        let many = t.add(9, 3, 16).expect("two keys: the whole tally");
        assert_eq!((many.bytes, many.keys.to_vec()), (123, vec![(7, 120), (9, 3)]));
        many.mark_level = 1;
        assert!(matches!(t, Tally::Many(_)));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Tally>(&json).unwrap(), t);
        assert_eq!(t.bytes(), 123);
        // Past `max_keys`, a key counts in the bytes without a name.
        let m = t.add(11, 1, 2).unwrap();
        assert_eq!((m.bytes, m.keys.len()), (124, 2));

        let familiar = Tally::new(5, 7, true);
        let json = serde_json::to_string(&familiar).unwrap();
        assert_eq!(json, serde_json::to_string(&AccountOrigin::from(familiar.clone())).unwrap());
        assert!(json.contains("\"keys\":[]"), "{json}");
        assert_eq!(serde_json::from_str::<Tally>(&json).unwrap(), familiar);
        // A tally that alerted is whole even with one key named (a key past the 16 left).
        let odd = AccountOrigin { mark_level: 2, ..AccountOrigin::from(Tally::new(1, 2, false)) };
        assert!(matches!(Tally::from(odd), Tally::Many(_)));
    }

    /// IPv4 origins' tallies in the one-word table, others in the wide one (made when the first
    /// comes, dropped when the last goes); written as the one map of origins snapshots had.
    #[test]
    fn tallies_key_ipv4_origins_by_one_word_and_write_one_map() {
        let v4: OriginKey = 0xffff_c633_6407; // ::ffff:198.51.100.7
        let v6: OriginKey = 0x2001_0db8 << 96 | 5;
        let mut all = Tallies::default();
        let (t, made) = all.get_or_insert_with(v4, || Tally::new(1, 7, false));
        assert!(made);
        t.add(7, 10, 16);
        assert!(all.wide.is_none(), "no wide table before a wide origin");
        all.get_or_insert_with(v6, || Tally::new(2, 8, false)).0.add(8, 20, 16);
        let (t, made) = all.get_or_insert_with(v4, || Tally::new(9, 9, true));
        assert!(!made && !t.familiar());
        assert_eq!(
            (all.len(), all.contains_key(&v4), all.contains_key(&v6), all.contains_key(&3)),
            (2, true, true, false)
        );

        let json = serde_json::to_string(&all).unwrap();
        let map: FxHashMap<OriginKey, AccountOrigin> = serde_json::from_str(&json).unwrap();
        assert_eq!((map[&v4].bytes, map[&v6].bytes, map.len()), (10, 20, 2));
        let back: Tallies = serde_json::from_str(&json).unwrap();
        assert_eq!(back, all);
        let mut seen: Vec<OriginKey> = back.iter().map(|(o, _)| o).collect();
        seen.sort_unstable();
        assert_eq!(seen, [v4, v6]);

        all.expire(1 + 10, 10);
        assert!(all.wide.is_some() && all.len() == 1 && all.contains_key(&v6), "over: the older one");
        all.expire(2 + 10, 10);
        assert!(all.wide.is_none() && all.is_empty(), "the wide table goes with its last tally");
    }

    proptest::proptest! {
        /// `expire` drops what a plain pass over every tally drops, however the tallies came
        /// (in any order, some started anew later, some read back from a snapshot), and its
        /// bound is never above the oldest tally's first read.
        #[test]
        fn expiry_drops_exactly_the_tallies_that_are_over(
            steps in proptest::collection::vec((0u8..4, 0u8..24, 0i64..100), 1..60),
            familiar_after in 1i64..40,
        ) {
            let mut all = Tallies::default();
            let mut plain: FxHashMap<OriginKey, Nanos> = FxHashMap::default();
            let mut now = 0;
            for (what, origin, at) in steps {
                // Wide origins too; times out of order.
                let origin: OriginKey = if origin % 3 == 0 { (1 << 100) | OriginKey::from(origin) } else { OriginKey::from(origin) };
                match what {
                    0 | 1 => {
                        let (tally, made) = all.get_or_insert_with(origin, || Tally::new(at, 1, false));
                        if made {
                            plain.insert(origin, at);
                        } else if what == 1 && at > tally.first_seen() {
                            *tally = Tally::new(at, 1, false); // started anew (account_rule)
                            plain.insert(origin, at);
                        }
                    }
                    2 => {
                        now = now.max(at);
                        all.expire(now, familiar_after);
                        plain.retain(|_, first_seen| now < *first_seen + familiar_after);
                    }
                    _ => {
                        let json = serde_json::to_string(&all).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                        all = serde_json::from_str(&json).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                    }
                }
                let mut held: Vec<(OriginKey, Nanos)> = all.iter().map(|(o, t)| (o, t.first_seen())).collect();
                held.sort_unstable();
                let mut want: Vec<(OriginKey, Nanos)> = plain.iter().map(|(o, t)| (*o, *t)).collect();
                want.sort_unstable();
                proptest::prop_assert_eq!(held, want);
                proptest::prop_assert!(all.iter().all(|(_, t)| all.oldest <= t.first_seen()), "the bound is a lower bound");
            }
        }
    }

    /// Snapshots keep the flat shape of the entry from before its cold part was set apart, and
    /// a map keeps no cold part of defaults, whatever order its fields were set and cleared in.
    #[test]
    fn origin_entry_snapshots_are_flat_and_cold_parts_tidy() {
        let mut m = OriginMap::default();
        m.insert(5, OriginEntry::new(7));
        assert!(m.cold_is_empty());
        m.evidence_or_new(5);
        m.set_mark_at(5, 9);
        m.drop_evidence(&5);
        assert_eq!((m.mark_at(&5), m.evidence(&5).is_none()), (9, true));
        let text = serde_json::to_string(&m).unwrap();
        let fields =
            ["first_seen", "last_seen", "bytes", "requests", "mark_level", "mark_epoch", "mark_at", "evidence"];
        let at: Vec<usize> = fields.iter().map(|f| text.find(&format!("\"{f}\":")).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(!text.contains("verdict") && !text.contains("cold"), "{text}");
        let back: OriginMap = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.mark_at(&5), 9);

        let mut plain = OriginMap::default();
        plain.insert(5, OriginEntry::new(7));
        plain.evidence_or_new(5);
        plain.drop_evidence(&5);
        assert!(plain.cold_is_empty(), "no cold part once evidence is dropped and no alert was marked");
        let old = r#"{"5":{"first_seen":1,"last_seen":2,"bytes":3,"requests":4,"mark_level":0,"mark_epoch":0,"mark_at":0,"evidence":null}}"#;
        let read: OriginMap = serde_json::from_str(old).unwrap();
        assert!(read.cold_is_empty());
        let e = read.get(&5).unwrap();
        assert_eq!((e.first_seen, e.last_seen, e.bytes, e.requests), (1, 2, 3, 4));
        assert_eq!(serde_json::to_string(&read).unwrap(), old);
    }
}

//! Decode: bytes of one unit (a JSON line, a Kafka message, a whole pre-2018 blob) into
//! normalized [`Event`]s, skipped categories and malformed records.
//!
//! **Architecture invariant:** decoding never fails as a whole. Every record yields exactly one
//! [`Decoded`] item; a unit that is not JSON yields one `Malformed` item. Nothing here does I/O.

mod raw;
mod scan;

pub use raw::{column_kind, trim, ColumnKind, Num, RawRecord, Text};

use crate::time::{parse_timestamp, Nanos};
use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// Diagnostic log categories. Only the request categories feed the detector; the others are
/// counted and skipped. The set is closed so that it can label a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    DataPlaneRequests,
    MongoRequests,
    CassandraRequests,
    GremlinRequests,
    TableApiRequests,
    QueryRuntimeStatistics,
    PartitionKeyStatistics,
    PartitionKeyRUConsumption,
    ControlPlaneRequests,
    Other,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::DataPlaneRequests,
        Category::MongoRequests,
        Category::CassandraRequests,
        Category::GremlinRequests,
        Category::TableApiRequests,
        Category::QueryRuntimeStatistics,
        Category::PartitionKeyStatistics,
        Category::PartitionKeyRUConsumption,
        Category::ControlPlaneRequests,
        Category::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::DataPlaneRequests => "DataPlaneRequests",
            Category::MongoRequests => "MongoRequests",
            Category::CassandraRequests => "CassandraRequests",
            Category::GremlinRequests => "GremlinRequests",
            Category::TableApiRequests => "TableApiRequests",
            Category::QueryRuntimeStatistics => "QueryRuntimeStatistics",
            Category::PartitionKeyStatistics => "PartitionKeyStatistics",
            Category::PartitionKeyRUConsumption => "PartitionKeyRUConsumption",
            Category::ControlPlaneRequests => "ControlPlaneRequests",
            Category::Other => "Other",
        }
    }

    /// From a `category` value or a table name (`CDBMongoRequests`), case-insensitively.
    pub fn from_name(name: &str) -> Category {
        let n = name.trim();
        let n = match n.get(..3) {
            Some(p) if n.len() > 3 && p.eq_ignore_ascii_case("cdb") => &n[3..],
            _ => n,
        };
        Category::ALL[..9].iter().copied().find(|c| c.as_str().eq_ignore_ascii_case(n)).unwrap_or(Category::Other)
    }

    /// Whether records of this category are requests that move data (and feed the detector).
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Category::DataPlaneRequests
                | Category::MongoRequests
                | Category::CassandraRequests
                | Category::GremlinRequests
                | Category::TableApiRequests
        )
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record was set aside. A closed set: it labels a metric and keys the once-per-reason log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// Not JSON, or JSON cut short.
    InvalidJson,
    /// JSON, but not an object (or an envelope whose `records` is not an array).
    NotAnObject,
    MissingTime,
    BadTime,
    BadIp,
    /// A request or response length that is negative or not a number.
    BadLength,
    BadStatus,
    /// Neither `resourceId` nor `AccountName`.
    MissingAccount,
    /// A unit larger than the configured maximum.
    TooLarge,
    /// Stamped more than `max_clock_skew` ahead of the newest plausible event time.
    FutureTime,
    /// Older than `history_window` behind its account's progress.
    StaleTime,
    /// A file that ends in the middle of its data (a gzip stream cut short, a read error):
    /// counted once per file; the records before the damage are used.
    TruncatedInput,
    /// A file or directory that could not be opened or listed (permissions, removed while
    /// the replay ran): counted once per file or directory.
    UnreadableInput,
}

impl Malformed {
    pub const ALL: [Malformed; 13] = [
        Malformed::InvalidJson,
        Malformed::NotAnObject,
        Malformed::MissingTime,
        Malformed::BadTime,
        Malformed::BadIp,
        Malformed::BadLength,
        Malformed::BadStatus,
        Malformed::MissingAccount,
        Malformed::TooLarge,
        Malformed::FutureTime,
        Malformed::StaleTime,
        Malformed::TruncatedInput,
        Malformed::UnreadableInput,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Malformed::InvalidJson => "invalid_json",
            Malformed::NotAnObject => "not_an_object",
            Malformed::MissingTime => "missing_time",
            Malformed::BadTime => "bad_time",
            Malformed::BadIp => "bad_ip",
            Malformed::BadLength => "bad_length",
            Malformed::BadStatus => "bad_status",
            Malformed::MissingAccount => "missing_account",
            Malformed::TooLarge => "too_large",
            Malformed::FutureTime => "future_time",
            Malformed::StaleTime => "stale_time",
            Malformed::TruncatedInput => "truncated_input",
            Malformed::UnreadableInput => "unreadable_input",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The kind of identity a request was authorized with, most specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    Aad,
    Token,
    Key,
    Unknown,
}

/// The identity a baseline belongs to (with the account). Canonical text form, relied on by
/// tests and other tools: `aad:<principal>`, `token:<permission or user rid>`,
/// `key:<class>` (lowercased), or `unknown`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    pub kind: CredentialKind,
    pub id: Cow<'a, str>,
}

impl Credential<'_> {
    /// Whether this is a read-write account master key (the ChaosDB case).
    pub fn is_read_write_master_key(&self) -> bool {
        self.kind == CredentialKind::Key && matches!(&*self.id, "primarymasterkey" | "secondarymasterkey")
    }
}

impl Credential<'_> {
    /// Writes the canonical form into `out` (cleared first), without the formatting machinery.
    pub fn write_canonical(&self, out: &mut String) {
        out.clear();
        match self.kind {
            CredentialKind::Aad => out.push_str("aad:"),
            CredentialKind::Token => out.push_str("token:"),
            CredentialKind::Key => out.push_str("key:"),
            CredentialKind::Unknown => {
                out.push_str("unknown");
                return;
            }
        }
        out.push_str(&self.id);
    }
}

impl fmt::Display for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CredentialKind::Aad => write!(f, "aad:{}", self.id),
            CredentialKind::Token => write!(f, "token:{}", self.id),
            CredentialKind::Key => write!(f, "key:{}", self.id),
            CredentialKind::Unknown => f.write_str("unknown"),
        }
    }
}

/// Key and token classes of the SDK's `AuthorizationTokenType`, lowercased: matching them
/// avoids an allocation per record for the common case.
const KEY_CLASSES: [&str; 12] = [
    "primarymasterkey",
    "primaryreadonlymasterkey",
    "secondarymasterkey",
    "secondaryreadonlymasterkey",
    "systemreadonly",
    "systemreadwrite",
    "systemall",
    "resourcetoken",
    "computegatewaykey",
    "aadtoken",
    "compoundtoken",
    "sastoken",
];

/// `s` lowercased, borrowed when it already is.
pub fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn key_class(s: &str) -> Cow<'static, str> {
    // The documentation spells `PrimaryReadOnlyMasterKey`, the SDK `PrimaryReadonlyMasterKey`.
    match KEY_CLASSES.iter().find(|k| k.eq_ignore_ascii_case(s)) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s.to_ascii_lowercase()),
    }
}

impl Event<'_> {
    /// The same event owning its strings (to keep it past the input buffer).
    pub fn into_owned(self) -> Event<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Event {
            time: self.time,
            category: self.category,
            account: own(self.account),
            credential: Credential { kind: self.credential.kind, id: own(self.credential.id) },
            client_ip: self.client_ip,
            operation: own(self.operation),
            status: self.status,
            success: self.success,
            response_bytes: self.response_bytes,
            request_bytes: self.request_bytes,
            request_charge: self.request_charge,
            user_agent: own(self.user_agent),
            database: own(self.database),
            collection: own(self.collection),
            activity_id: own(self.activity_id),
            resource_id: own(self.resource_id),
        }
    }
}

/// A request, normalized. Strings borrow from the input where possible.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    pub time: Nanos,
    pub category: Category,
    /// Last segment of `resourceId` (or `AccountName`), lowercased.
    pub account: Cow<'a, str>,
    pub credential: Credential<'a>,
    /// `None` when the record names no caller (some API categories do not).
    pub client_ip: Option<IpAddr>,
    pub operation: Cow<'a, str>,
    /// HTTP status; 0 when the record carries none.
    pub status: u16,
    /// 2xx or 304 (or, without a status, an `errorCode` of 0 or none at all).
    pub success: bool,
    /// Bytes sent to the client; 0 for failed requests, which move no data.
    pub response_bytes: u64,
    pub request_bytes: u64,
    pub request_charge: f64,
    pub user_agent: Cow<'a, str>,
    pub database: Cow<'a, str>,
    pub collection: Cow<'a, str>,
    pub activity_id: Cow<'a, str>,
    /// `resourceId` (`_ResourceId`) as the record gives it, e.g.
    /// `/SUBSCRIPTIONS/<id>/RESOURCEGROUPS/<rg>/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/<name>`;
    /// empty when the record has none. See [`crate::alert::AzureResource::parse`].
    pub resource_id: Cow<'a, str>,
}

/// What one record decoded to. (Not boxed: it lives only for one callback.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded<'a> {
    Event(Event<'a>),
    /// A record of a category the detector does not use.
    Skipped(Category),
    /// Set aside; `index` is the record's position in an envelope (None for the unit itself).
    Malformed {
        reason: Malformed,
        index: Option<usize>,
    },
}

/// Decodes units. Holds the buffers simd-json parses into and the direct scanner's notes
/// (`scan.rs`), so that decoding allocates nothing per record once warm; events borrow from
/// them, or from the unit, until the next call.
pub struct Decoder {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Vec<simd_json::Node<'static>>,
    scan: Box<scan::Scan>,
    /// Whether the direct scanner is tried first (always, but in the tests that compare it
    /// with simd-json's tape: [`Decoder::tape_only`]).
    scanner: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            input: Vec::with_capacity(8192),
            buffers: simd_json::Buffers::new(8192),
            tape: Vec::new(),
            scan: Box::default(),
            scanner: true,
        }
    }

    /// A decoder that parses every unit with simd-json, never with the direct scanner: what the
    /// tests and the fuzz target compare the scanner with. Not for use.
    #[doc(hidden)]
    pub fn tape_only() -> Self {
        Decoder { scanner: false, ..Decoder::new() }
    }

    /// Decodes one unit (one JSON value: a record or an envelope) and calls `emit` once per
    /// record. A leading UTF-8 byte order mark (files saved by Windows tools) is skipped.
    ///
    /// Most units are read by the direct scanner (`scan.rs`), straight from their bytes; a unit
    /// outside its subset of JSON (escapes, exponents, ...) is parsed by simd-json into a
    /// tape. Both give the same items.
    ///
    /// A unit larger than [`MAX_RECORD_BYTES`] is an envelope or a record too large to use:
    /// it is not parsed whole (simd-json's copies and tape would take several times its size)
    /// but checked and split with serde_json, and each record of it decoded on its own; a
    /// record larger than [`MAX_RECORD_BYTES`] is [`Malformed::TooLarge`]. Memory stays within
    /// the unit's own size and a small multiple of one record's.
    pub fn decode<'s>(&'s mut self, unit: &'s [u8], mut emit: impl FnMut(Decoded<'s>)) {
        let unit = strip_bom(unit);
        if unit.len() > MAX_RECORD_BYTES && decode_large(unit, &mut emit) {
            return;
        }
        let Decoder { input, buffers, tape: stored, scan, scanner } = self;
        // The scanner reads the unit where it is (its items borrow from it); simd-json parses
        // in place, so it gets a copy.
        if *scanner && scan.scan(unit) {
            match scan.text(unit) {
                Some(text) => scan.emit(text, &mut emit),
                // simd-json checks the whole unit's UTF-8 too.
                None => emit(Decoded::Malformed { reason: Malformed::InvalidJson, index: None }),
            }
            return;
        }
        input.clear();
        input.extend_from_slice(unit);
        // The stored tape is empty; `Tape::reset` gives its allocation back a new lifetime.
        let mut t: simd_json::Tape<'s> = simd_json::Tape(std::mem::take(stored)).reset();
        if simd_json::fill_tape(input.as_mut_slice(), buffers, &mut t).is_ok() {
            walk_unit(&t.0, &mut emit);
        } else {
            emit(Decoded::Malformed { reason: Malformed::InvalidJson, index: None });
        }
        *stored = t.reset().0;
    }

    /// Decodes `record`, record `index` of an envelope: one item.
    fn decode_record<'s>(&'s mut self, record: &[u8], index: usize, emit: impl FnOnce(Decoded<'s>)) {
        let Decoder { input, buffers, tape: stored, .. } = self;
        input.clear();
        input.extend_from_slice(record);
        let mut t: simd_json::Tape<'s> = simd_json::Tape(std::mem::take(stored)).reset();
        let item = if simd_json::fill_tape(input.as_mut_slice(), buffers, &mut t).is_ok() {
            let (rec, nested) = raw::read_object(&t.0, 0);
            record_at(&t.0, rec, nested, Some(index))
        } else {
            Decoded::Malformed { reason: Malformed::InvalidJson, index: Some(index) }
        };
        emit(item);
        *stored = t.reset().0;
    }
}

/// The largest record used (and the size above which a unit is split rather than parsed
/// whole): Cosmos DB's diagnostic records are a few kilobytes; a larger one is set aside as
/// [`Malformed::TooLarge`].
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A unit larger than [`MAX_RECORD_BYTES`]: see [`Decoder::decode`]. False (nothing emitted)
/// for the one form serde_json does not read as simd-json does, an object with `records`
/// twice (the last one wins): the caller parses it whole.
fn decode_large<'s>(unit: &[u8], emit: &mut impl FnMut(Decoded<'s>)) -> bool {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        records: Option<&'a RawValue>,
    }
    let unit_item = |reason| Decoded::Malformed { reason, index: None };
    if unit.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let valid = serde_json::from_slice::<serde::de::IgnoredAny>(unit).is_ok();
        emit(unit_item(if valid { Malformed::NotAnObject } else { Malformed::InvalidJson }));
        return true;
    }
    // The whole unit is checked as JSON here (serde_json checks what it skips).
    let top = match serde_json::from_slice::<Top>(unit) {
        Ok(top) => top,
        // An object with `records` twice.
        Err(e) if e.classify() == serde_json::error::Category::Data => return false,
        Err(_) => {
            emit(unit_item(Malformed::InvalidJson));
            return true;
        }
    };
    let Some(records) = top.records else {
        // One record, larger than any this program uses.
        emit(unit_item(Malformed::TooLarge));
        return true;
    };
    let Ok(records) = serde_json::from_str::<Vec<&RawValue>>(records.get()) else {
        emit(unit_item(Malformed::NotAnObject));
        return true;
    };
    let mut decoder = Decoder::new();
    for (index, r) in records.into_iter().enumerate() {
        let text = r.get().as_bytes();
        if !text.starts_with(b"{") {
            emit(Decoded::Malformed { reason: Malformed::NotAnObject, index: Some(index) });
        } else if text.len() > MAX_RECORD_BYTES {
            emit(Decoded::Malformed { reason: Malformed::TooLarge, index: Some(index) });
        } else {
            // Owned: the next record reuses the buffers its strings borrow from.
            decoder.decode_record(text, index, |d| emit(d.into_owned()));
        }
    }
    true
}

impl Decoded<'_> {
    /// The same item owning its strings.
    pub fn into_owned(self) -> Decoded<'static> {
        match self {
            Decoded::Event(e) => Decoded::Event(e.into_owned()),
            Decoded::Skipped(c) => Decoded::Skipped(c),
            Decoded::Malformed { reason, index } => Decoded::Malformed { reason, index },
        }
    }
}

fn walk_unit<'a>(tape: &[simd_json::Node<'a>], emit: &mut impl FnMut(Decoded<'a>)) {
    let (top, nested) = raw::read_object(tape, 0);
    if !matches!(tape.first(), Some(simd_json::Node::Object { .. })) {
        emit(Decoded::Malformed { reason: Malformed::NotAnObject, index: None });
        return;
    }
    match nested.records {
        None => emit(record_at(tape, top, nested, None)),
        Some(None) => emit(Decoded::Malformed { reason: Malformed::NotAnObject, index: None }),
        Some(Some(at)) => {
            let Some(simd_json::Node::Array { len, .. }) = tape.get(at) else { return };
            let mut i = at + 1;
            for index in 0..*len {
                let Some(node) = tape.get(i) else { break };
                if matches!(node, simd_json::Node::Object { .. }) {
                    let (rec, inner) = raw::read_object(tape, i);
                    emit(record_at(tape, rec, inner, Some(index)));
                } else {
                    emit(Decoded::Malformed { reason: Malformed::NotAnObject, index: Some(index) });
                }
                i += raw::span(node);
            }
        }
    }
}

fn record_at<'a>(
    tape: &[simd_json::Node<'a>],
    rec: RawRecord<'a>,
    nested: raw::Nested,
    index: Option<usize>,
) -> Decoded<'a> {
    match nested.properties {
        Some(p) => {
            let (props, _) = raw::read_object(tape, p);
            normalize(&rec, Some(&props), index)
        }
        None => normalize(&rec, None, index),
    }
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `unit` without a leading UTF-8 byte order mark. Windows tools start a file with one, so a
/// file's first line (or a message produced from such a file) carries it; JSON does not allow it.
pub fn strip_bom(unit: &[u8]) -> &[u8] {
    unit.strip_prefix(BOM).unwrap_or(unit)
}

/// The raw text of record `index` of an envelope unit (or the unit itself), for dead letters.
/// A record larger than [`MAX_RECORD_BYTES`] is cut to its first [`TOO_LARGE_TEXT`] bytes.
pub fn raw_record_text(unit: &[u8], index: Option<usize>) -> Cow<'_, str> {
    let unit = strip_bom(unit);
    #[derive(serde::Deserialize)]
    struct Env<'a> {
        #[serde(borrow)]
        records: Vec<&'a serde_json::value::RawValue>,
    }
    if let Some(i) = index {
        if let Ok(env) = serde_json::from_slice::<Env>(unit) {
            if let Some(r) = env.records.get(i) {
                return cut_text(r.get().as_bytes());
            }
        }
    }
    cut_text(unit)
}

fn cut_text(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(if b.len() > MAX_RECORD_BYTES { &b[..TOO_LARGE_TEXT] } else { b })
}

/// How much of a record larger than [`MAX_RECORD_BYTES`] its dead letter keeps.
pub const TOO_LARGE_TEXT: usize = 4096;

/// Looks a field up in `properties` first, then at the top level.
macro_rules! field {
    ($rec:expr, $props:expr, $f:ident) => {
        match $props.and_then(|p| p.$f.non_empty()) {
            Some(v) => Some(v),
            None => $rec.$f.non_empty(),
        }
    };
}

macro_rules! num {
    ($rec:expr, $props:expr, $f:ident) => {
        match $props.map(|p| p.$f) {
            Some(n) if n != Num::Absent => n,
            _ => $rec.$f,
        }
    };
}

fn cow_field<'a>(
    rec: &RawRecord<'a>,
    props: Option<&RawRecord<'a>>,
    pick: impl for<'r> Fn(&'r RawRecord<'a>) -> &'r Text<'a>,
) -> Cow<'a, str> {
    let take = |t: &Text<'a>| -> Option<Cow<'a, str>> {
        match &t.0 {
            Some(c) if !trim(c).is_empty() => Some(match c {
                Cow::Borrowed(b) => Cow::Borrowed(trim(b)),
                Cow::Owned(o) => Cow::Owned(trim(o).to_owned()),
            }),
            _ => None,
        }
    };
    props.and_then(|p| take(pick(p))).or_else(|| take(pick(rec))).unwrap_or(Cow::Borrowed(""))
}

/// Parses a client address: v4, v6, v4-mapped v6 (as v4), with or without a port.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = trim(s);
    let ip = if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else if let Some(rest) = s.strip_prefix('[') {
        // [v6] or [v6]:port, the bracket closed
        let (host, port) = rest.split_once(']')?;
        if !port.is_empty() && port.strip_prefix(':').is_none_or(|p| p.parse::<u16>().is_err()) {
            return None;
        }
        host.parse().ok()?
    } else if let Some((host, port)) = s.rsplit_once(':') {
        // v4:port (a v6 address has more than one colon and parsed above)
        if host.contains(':') || port.parse::<u16>().is_err() {
            return None;
        }
        host.parse().ok()?
    } else {
        return None;
    };
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    })
}

fn account_of<'a>(rec: &RawRecord<'a>, props: Option<&RawRecord<'a>>) -> Option<Cow<'a, str>> {
    let lower = |c: &Cow<'a, str>| -> Cow<'a, str> {
        match c {
            Cow::Borrowed(b) => lowercase(b),
            Cow::Owned(o) => Cow::Owned(o.to_ascii_lowercase()),
        }
    };
    let seg = |c: &Cow<'a, str>| -> Option<Cow<'a, str>> {
        let t = trim(c).trim_end_matches('/');
        let last = trim(t.rsplit('/').next().unwrap_or(t));
        if last.is_empty() {
            return None;
        }
        Some(match c {
            Cow::Borrowed(b) => {
                let start = last.as_ptr() as usize - b.as_ptr() as usize;
                lowercase(&b[start..start + last.len()])
            }
            Cow::Owned(_) => Cow::Owned(last.to_ascii_lowercase()),
        })
    };
    for t in [&rec.resource_id, &rec.account_name] {
        if let Some(c) = &t.0 {
            if let Some(a) = seg(c) {
                return Some(a);
            }
        }
    }
    if let Some(p) = props {
        if let Some(c) = &p.account_name.0 {
            if !c.trim().is_empty() {
                return Some(lower(c));
            }
        }
    }
    None
}

fn credential_of<'a>(rec: &RawRecord<'a>, props: Option<&RawRecord<'a>>) -> Credential<'a> {
    let pick = |f: for<'r> fn(&'r RawRecord<'a>) -> &'r Text<'a>| cow_field(rec, props, f);
    let aad = pick(|r| &r.aad_principal_id);
    if !aad.is_empty() {
        let id = match aad {
            Cow::Borrowed(b) => lowercase(b),
            Cow::Owned(o) => Cow::Owned(o.to_ascii_lowercase()),
        };
        return Credential { kind: CredentialKind::Aad, id };
    }
    let perm = pick(|r| &r.resource_token_permission_id);
    if !perm.is_empty() {
        return Credential { kind: CredentialKind::Token, id: perm };
    }
    let user = pick(|r| &r.resource_token_user_rid);
    if !user.is_empty() {
        return Credential { kind: CredentialKind::Token, id: user };
    }
    let class = field!(rec, props, key_type).or_else(|| field!(rec, props, auth_token_type));
    match class {
        Some(c) => Credential { kind: CredentialKind::Key, id: key_class(c) },
        None => Credential { kind: CredentialKind::Unknown, id: Cow::Borrowed("") },
    }
}

fn category_of(rec: &RawRecord<'_>, props: Option<&RawRecord<'_>>) -> Category {
    if let Some(c) = rec.category.non_empty() {
        return Category::from_name(c);
    }
    if let Some(t) = rec.table.non_empty() {
        if !t.eq_ignore_ascii_case("AzureDiagnostics") {
            return Category::from_name(t);
        }
    }
    // A re-published record stripped of its category: a request if it names a caller.
    if field!(rec, props, client_ip).is_some() {
        Category::DataPlaneRequests
    } else {
        Category::Other
    }
}

fn normalize<'a>(rec: &RawRecord<'a>, props: Option<&RawRecord<'a>>, index: Option<usize>) -> Decoded<'a> {
    let bad = |reason| Decoded::Malformed { reason, index };
    let category = category_of(rec, props);
    if !category.is_request() {
        return Decoded::Skipped(category);
    }
    let time = match rec.time.non_empty().or_else(|| props.and_then(|p| p.time.non_empty())) {
        None => return bad(Malformed::MissingTime),
        Some(t) => match parse_timestamp(t) {
            Some(t) => t,
            None => return bad(Malformed::BadTime),
        },
    };
    let Some(account) = account_of(rec, props) else {
        return bad(Malformed::MissingAccount);
    };
    let client_ip = match field!(rec, props, client_ip) {
        None => None,
        Some(s) => match parse_ip(s) {
            Some(ip) => Some(ip),
            None => return bad(Malformed::BadIp),
        },
    };
    let (Ok(response), Ok(request)) =
        (num!(rec, props, response_length).count(), num!(rec, props, request_length).count())
    else {
        return bad(Malformed::BadLength);
    };
    let status = match num!(rec, props, status_code).count() {
        Ok(Some(s)) if s <= 999 => s as u16,
        Ok(None) => 0,
        _ => return bad(Malformed::BadStatus),
    };
    let success = if status != 0 {
        (200..300).contains(&status) || status == 304
    } else {
        matches!(num!(rec, props, error_code), Num::Absent | Num::Int(0))
    };
    let credential = credential_of(rec, props);
    let pick = |f: for<'r> fn(&'r RawRecord<'a>) -> &'r Text<'a>| cow_field(rec, props, f);
    Decoded::Event(Event {
        time,
        category,
        account,
        credential,
        client_ip,
        operation: pick(|r| &r.operation_name),
        status,
        success,
        response_bytes: if success { response.unwrap_or(0) } else { 0 },
        request_bytes: request.unwrap_or(0),
        request_charge: num!(rec, props, request_charge).as_f64().unwrap_or(0.0),
        user_agent: pick(|r| &r.user_agent),
        database: pick(|r| &r.database),
        collection: pick(|r| &r.collection),
        activity_id: pick(|r| &r.activity_id),
        resource_id: pick(|r| &r.resource_id),
    })
}

#[cfg(test)]
mod tests;
